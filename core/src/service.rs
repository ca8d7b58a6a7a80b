//! The License Management Service: it holds the key backups are sealed to, decides whether a
//! restore may happen, and hands the data key to the restoring device.
//!
//! `LicenseService` is the seam: `LocalService` (embedded, the default) implements it here; a
//! network client implements the same trait.

use crate::crypto::{self, hpke_open_key, hpke_seal_key, KeyPair, SealedKey, KEY_LEN};
use crate::error::{Error, Result};
use crate::format::{Header, INFO_DATA_KEY, VERSION_1};
use crate::fsutil;
use crate::license::unix_now;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// HPKE `info` of the data key re-sealed to the restoring device.
pub const INFO_GRANT: &[u8] = b"wmlicense v1 restore grant";
/// HPKE `info` of a version 2 backup's verify key sealed to the device of a dry run.
pub const INFO_VERIFY_GRANT: &[u8] = b"wmlicense v2 dry-run verify key";
/// Default number of distinct devices one lineage may be restored onto.
pub const DEFAULT_DEVICE_LIMIT: u32 = 4;

/// The public half of the service key that backups are sealed to.
#[derive(Clone, Debug)]
pub struct ServiceKey {
    pub key_id: [u8; 16],
    pub public_key: [u8; 32],
}

/// A restoring device asks for the data key of one backup.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    /// Random per restore attempt; a retry with the same ID is never counted twice.
    pub request_id: [u8; 16],
    pub header: Header,
    pub device_id: [u8; 16],
    pub device_public_key: [u8; 32],
    /// Check everything, record nothing (WM_RESTORE_VERIFY_ONLY). A dry run never gets the
    /// data key.
    pub dry_run: bool,
}

/// What a granted request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// A restore: the backup's data key, sealed to the device (`INFO_GRANT`).
    DataKey(SealedKey),
    /// A dry run of a version 2 backup: its verify key (enough to check every chunk, not to
    /// decrypt one), sealed to the device (`INFO_VERIFY_GRANT`).
    VerifyKey(SealedKey),
    /// A dry run of a version 1 backup: the verdict only (version 1 has no verify key).
    Verdict,
}

impl GrantRequest {
    /// What the grant is bound to: this request and this backup's header.
    pub fn grant_aad(&self) -> Vec<u8> {
        let core = self.header.core_bytes();
        let mut aad = Vec::with_capacity(16 + core.len());
        aad.extend_from_slice(&self.request_id);
        aad.extend_from_slice(&core);
        aad
    }

    /// Opens the data key in `grant` with the device's secret key.
    pub fn open_grant(&self, device_secret: &[u8; 32], grant: &SealedKey) -> Result<[u8; KEY_LEN]> {
        self.open_sealed(device_secret, INFO_GRANT, grant)
    }

    /// Opens the verify key of a dry run's grant with the device's secret key.
    pub fn open_verify_grant(
        &self,
        device_secret: &[u8; 32],
        grant: &SealedKey,
    ) -> Result<[u8; KEY_LEN]> {
        self.open_sealed(device_secret, INFO_VERIFY_GRANT, grant)
    }

    fn open_sealed(
        &self,
        device_secret: &[u8; 32],
        info: &[u8],
        grant: &SealedKey,
    ) -> Result<[u8; KEY_LEN]> {
        hpke_open_key(device_secret, info, &self.grant_aad(), grant).ok_or_else(|| {
            Error::BackupRestore(
                "the License Management Service's grant does not open with this device's key"
                    .into(),
            )
        })
    }
}

pub trait LicenseService: Send + Sync {
    /// The key new backups are sealed to.
    fn service_key(&self) -> Result<ServiceKey>;
    /// Applies the restore policy to every lineage of the backup; on success a restore gets the
    /// backup's data key sealed to the requesting device, a dry run the verify key (version 2)
    /// or a verdict only (version 1). Refusal is `Error::RestoreFraud`.
    fn grant(&self, request: &GrantRequest) -> Result<Grant>;
}

/// The service a restorer uses: the one at `url`, or the embedded one of `data_dir`.
pub fn connect(url: Option<&str>, data_dir: &Path) -> Result<Box<dyn LicenseService>> {
    match url {
        None => Ok(Box::new(LocalService::open(
            &data_dir.join(SERVICE_DIR),
            Policy::from_env(),
        )?)),
        Some(url) => Err(Error::ServiceUnavailable(format!(
            "{url}: this build of wmlicense has no network service client; unset ServiceUrl to use the embedded service"
        ))),
    }
}

/// The restore policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub device_limit: u32,
    pub help_url: Option<String>,
}

impl Policy {
    /// Defaults, overridden by `WMLICENSE_RESTORE_DEVICE_LIMIT` and `WMLICENSE_SERVICE_HELP_URL`.
    pub fn from_env() -> Policy {
        let device_limit = std::env::var("WMLICENSE_RESTORE_DEVICE_LIMIT")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(DEFAULT_DEVICE_LIMIT);
        let help_url = std::env::var("WMLICENSE_SERVICE_HELP_URL")
            .ok()
            .filter(|u| !u.is_empty());
        Policy {
            device_limit,
            help_url,
        }
    }
}

/// The embedded service's directory inside a data directory.
pub const SERVICE_DIR: &str = "service";
const KEY_FILE: &str = "service.key";
const LEDGER_FILE: &str = "ledger.db";
const KEY_MAGIC: &[u8; 8] = b"WMLSK\x00\x00\x01";

const LEDGER_SCHEMA: &str = "
    -- A device is its device ID together with its public key: a client that presents a counted
    -- device's ID with another key (to have the grant sealed to itself) is another device.
    CREATE TABLE IF NOT EXISTS devices (
        lineage_id  BLOB NOT NULL,
        device      BLOB NOT NULL,  -- device ID || device public key
        first_grant INTEGER NOT NULL,
        PRIMARY KEY (lineage_id, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS requests (
        request_id BLOB PRIMARY KEY,
        lineage_id BLOB NOT NULL,   -- the request's lineages, 16 bytes each, ascending
        device     BLOB NOT NULL,
        granted    INTEGER NOT NULL,
        at         INTEGER NOT NULL
    ) WITHOUT ROWID;";

/// The embedded License Management Service: a key pair and a SQLite ledger in a directory
/// (by default `<data dir>/service`), shared by every process of the user.
pub struct LocalService {
    key_id: [u8; 16],
    keys: KeyPair,
    ledger: Mutex<Connection>,
    policy: Policy,
}

impl LocalService {
    pub fn open(dir: &Path, policy: Policy) -> Result<LocalService> {
        let svc_err = |what: String, e: &dyn std::fmt::Display| {
            Error::ServiceUnavailable(format!(
                "embedded service at {}: {what}: {e}",
                dir.display()
            ))
        };
        fsutil::create_private_dir_all(dir).map_err(|e| svc_err("cannot create".into(), &e))?;
        let key_path: PathBuf = dir.join(KEY_FILE);
        if !key_path.exists() {
            let kp = KeyPair::generate()?;
            let key_id: [u8; 16] = crypto::random_array()?;
            let mut bytes = KEY_MAGIC.to_vec();
            bytes.extend_from_slice(&key_id);
            bytes.extend_from_slice(&kp.secret);
            fsutil::write_new_file_atomically(&key_path, &bytes)
                .map_err(|e| svc_err("cannot create the service key".into(), &e))?;
        }
        let bytes = fsutil::read_small_file(&key_path, 4096)
            .map_err(|e| svc_err("cannot read the service key".into(), &e))?;
        if bytes.len() != 8 + 16 + 32 || &bytes[..8] != KEY_MAGIC {
            return Err(svc_err(
                "the service key file is malformed".into(),
                &"bad length or magic",
            ));
        }
        let key_id: [u8; 16] = bytes[8..24].try_into().unwrap();
        let keys = KeyPair::from_secret(bytes[24..56].try_into().unwrap())?;
        let conn = crate::db::open_wal(&dir.join(LEDGER_FILE))
            .map_err(|e| svc_err("cannot open the ledger".into(), &e))?;
        conn.execute_batch(LEDGER_SCHEMA)?;
        Ok(LocalService {
            key_id,
            keys,
            ledger: Mutex::new(conn),
            policy,
        })
    }

    /// Devices counted against `lineage_id` so far.
    pub fn devices_counted(&self, lineage_id: &[u8; 16]) -> Result<u64> {
        let conn = crate::sync::lock(&self.ledger);
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM devices WHERE lineage_id = ?1",
            [&lineage_id[..]],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Decides a request under the ledger's write lock, for every lineage of the backup at
    /// once: granted only if, for each lineage, the device is already counted or the lineage is
    /// below its limit; then the device is counted for every lineage it was not yet counted for
    /// (all or nothing). Returns (granted, the lineage closest to its limit with its count).
    fn decide(&self, req: &GrantRequest) -> Result<(bool, [u8; 16], u64)> {
        let lineages = req.header.policy_lineages();
        if lineages.is_empty() {
            return Err(Error::corrupt("the backup names no lineage"));
        }
        let lineages_bytes = lineages.concat();
        let device_bytes = [&req.device_id[..], &req.device_public_key[..]].concat();
        let device = &device_bytes[..];
        let mut conn = crate::sync::lock(&self.ledger);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Per lineage: (lineage, device already counted, devices counted).
        let state = |tx: &rusqlite::Transaction<'_>| -> Result<Vec<([u8; 16], bool, u64)>> {
            let mut out = Vec::with_capacity(lineages.len());
            for l in &lineages {
                let (known, n): (bool, i64) = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM devices WHERE lineage_id = ?1 AND device = ?2),
                            (SELECT COUNT(*) FROM devices WHERE lineage_id = ?1)",
                    [&l[..], device],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                out.push((*l, known, n as u64));
            }
            Ok(out)
        };
        let limit = u64::from(self.policy.device_limit);
        // The lineage to report: a refusing one first, else the fullest.
        let worst = |st: &[([u8; 16], bool, u64)]| -> ([u8; 16], u64) {
            let (l, _, n) = st
                .iter()
                .max_by_key(|(_, known, n)| (!known && *n >= limit, *n))
                .copied()
                .expect("at least one lineage");
            (l, n)
        };
        let earlier: Option<(Vec<u8>, Vec<u8>, bool)> = tx
            .query_row(
                "SELECT lineage_id, device, granted FROM requests WHERE request_id = ?1",
                [&req.request_id[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((l, d, granted)) = earlier {
            if l != lineages_bytes || d != device {
                return Err(Error::BackupRestore(
                    "the restore request ID was already used for another backup or device".into(),
                ));
            }
            let (l, n) = worst(&state(&tx)?);
            return Ok((granted, l, n));
        }
        let st = state(&tx)?;
        let granted = st.iter().all(|(_, known, n)| *known || *n < limit);
        let (worst_lineage, worst_count) = worst(&st);
        if req.dry_run {
            return Ok((granted, worst_lineage, worst_count));
        }
        let now = unix_now();
        if granted {
            for (l, known, _) in &st {
                if !known {
                    tx.execute(
                        "INSERT INTO devices (lineage_id, device, first_grant) VALUES (?1, ?2, ?3)",
                        params![&l[..], device, now],
                    )?;
                }
            }
        }
        tx.execute(
            "INSERT INTO requests (request_id, lineage_id, device, granted, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&req.request_id[..], &lineages_bytes, device, granted, now],
        )?;
        tx.commit()?;
        Ok((granted, worst_lineage, worst_count))
    }
}

impl LicenseService for LocalService {
    fn service_key(&self) -> Result<ServiceKey> {
        Ok(ServiceKey {
            key_id: self.key_id,
            public_key: self.keys.public,
        })
    }

    fn grant(&self, req: &GrantRequest) -> Result<Grant> {
        if req.header.service_key_id != self.key_id {
            return Err(Error::corrupt(
                "the backup is sealed to another License Management Service key (its service key ID does not match): altered, or made with another service or data directory",
            ));
        }
        let data_key = hpke_open_key(
            &self.keys.secret,
            INFO_DATA_KEY,
            &req.header.core_bytes(),
            &req.header.sealed_data_key,
        )
        .ok_or_else(|| {
            Error::corrupt(
                "the service cannot unseal the backup's data key: the header was altered",
            )
        })?;
        let (granted, lineage, counted) = self.decide(req).map_err(|e| match e {
            Error::Store(m) => {
                Error::ServiceUnavailable(format!("the embedded service's ledger: {m}"))
            }
            other => other,
        })?;
        if !granted {
            return Err(Error::RestoreFraud {
                message: format!(
                    "licenses of this backup (lineage {}) were already restored onto {counted} \
                     devices; the limit is {}",
                    hex(&lineage),
                    self.policy.device_limit
                ),
                help_url: self.policy.help_url.clone(),
            });
        }
        let seal = |info: &[u8], key: &[u8; KEY_LEN]| {
            hpke_seal_key(
                &req.device_public_key,
                info,
                &req.grant_aad(),
                key,
                &mut crypto::os_rng(),
            )
        };
        if !req.dry_run {
            Ok(Grant::DataKey(seal(INFO_GRANT, &data_key)?))
        } else if req.header.version == VERSION_1 {
            Ok(Grant::Verdict)
        } else {
            let (_, verify_key) = crypto::derive_backup_keys(&data_key);
            Ok(Grant::VerifyKey(seal(INFO_VERIFY_GRANT, &verify_key)?))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let d = std::env::temp_dir().join(format!("wmlicense-{tag}-{}", u64::from_le_bytes(id)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A version 2 header over `lineages` (ascending), sealed to `svc`.
    fn sealed_header_v2(svc: &LocalService, lineages: &[[u8; 16]]) -> (Header, [u8; 32]) {
        let key = svc.service_key().unwrap();
        let data_key = [7u8; 32];
        let mut h = Header {
            version: crate::format::VERSION,
            backup_id: [1; 16],
            lineage_id: lineages[0],
            source_device_id: [3; 16],
            created_at: 1,
            license_count: 0,
            service_key_id: key.key_id,
            chunk_size: 4096,
            lineages: lineages.to_vec(),
            sealed_data_key: SealedKey {
                encapped: [0; 32],
                ciphertext: [0; 48],
            },
        };
        h.sealed_data_key = hpke_seal_key(
            &key.public_key,
            INFO_DATA_KEY,
            &h.core_bytes(),
            &data_key,
            &mut crypto::os_rng(),
        )
        .unwrap();
        (h, data_key)
    }

    fn sealed_header(svc: &LocalService, lineage: [u8; 16]) -> (Header, [u8; 32]) {
        sealed_header_v2(svc, &[lineage])
    }

    /// A version 1 header (one lineage), sealed to `svc`.
    fn sealed_header_v1(svc: &LocalService, lineage: [u8; 16]) -> Header {
        let (mut h, data_key) = sealed_header_v2(svc, &[lineage]);
        h.version = VERSION_1;
        h.lineages.clear();
        h.sealed_data_key = hpke_seal_key(
            &svc.service_key().unwrap().public_key,
            INFO_DATA_KEY,
            &h.core_bytes(),
            &data_key,
            &mut crypto::os_rng(),
        )
        .unwrap();
        h
    }

    fn request(h: &Header, device: &KeyPair, device_id: u8) -> GrantRequest {
        GrantRequest {
            request_id: crypto::random_array().unwrap(),
            header: h.clone(),
            device_id: [device_id; 16],
            device_public_key: device.public,
            dry_run: false,
        }
    }

    fn data_key_of(req: &GrantRequest, dev: &KeyPair, g: Grant) -> [u8; 32] {
        match g {
            Grant::DataKey(sealed) => req.open_grant(&dev.secret, &sealed).unwrap(),
            other => panic!("expected the data key, got {other:?}"),
        }
    }

    fn open_svc(tag: &str, limit: u32) -> (PathBuf, LocalService) {
        let dir = temp_dir(tag);
        let svc = LocalService::open(
            &dir,
            Policy {
                device_limit: limit,
                help_url: Some("https://help".into()),
            },
        )
        .unwrap();
        (dir, svc)
    }

    #[test]
    fn policy_limits_devices_and_retries_count_once() {
        let (dir, svc) = open_svc("svc", 2);
        let (h, data_key) = sealed_header(&svc, [9; 16]);
        let dev = KeyPair::generate().unwrap();
        let r1 = request(&h, &dev, 1);
        let g = svc.grant(&r1).unwrap();
        assert_eq!(data_key_of(&r1, &dev, g), data_key);
        // A retry of the same request: granted again, still one device.
        svc.grant(&r1).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // Same device, new request: free.
        svc.grant(&request(&h, &dev, 1)).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // A dry run for a new device is granted but records nothing.
        let mut dry = request(&h, &dev, 2);
        dry.dry_run = true;
        assert!(matches!(svc.grant(&dry).unwrap(), Grant::VerifyKey(_)));
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        svc.grant(&request(&h, &dev, 2)).unwrap();
        let refused = request(&h, &dev, 3);
        match svc.grant(&refused) {
            Err(Error::RestoreFraud { help_url, .. }) => {
                assert_eq!(help_url.as_deref(), Some("https://help"))
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        // The refused request, retried, is refused again and counts nothing.
        assert!(matches!(
            svc.grant(&refused),
            Err(Error::RestoreFraud { .. })
        ));
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 2);
        // A dry run applies the same policy.
        let mut dry = request(&h, &dev, 3);
        dry.dry_run = true;
        assert!(matches!(svc.grant(&dry), Err(Error::RestoreFraud { .. })));
        // A counted device may still restore.
        svc.grant(&request(&h, &dev, 1)).unwrap();
        // Its device ID presented with another key (to have the grant sealed to that key) is
        // another device, refused at the limit.
        let impostor = KeyPair::generate().unwrap();
        assert!(matches!(
            svc.grant(&request(&h, &impostor, 1)),
            Err(Error::RestoreFraud { .. })
        ));
        // Another lineage has its own count.
        let (h2, _) = sealed_header(&svc, [8; 16]);
        svc.grant(&request(&h2, &dev, 3)).unwrap();
        std::fs::remove_dir_all(dir).ok();
    }

    /// A dry run never gets the data key: version 2 gets the verify key sealed to the device
    /// (under its own info string), version 1 a verdict only.
    #[test]
    fn a_dry_run_never_gets_the_data_key() {
        let (dir, svc) = open_svc("svc-dry", 4);
        let dev = KeyPair::generate().unwrap();
        let (h, data_key) = sealed_header_v2(&svc, &[[1; 16], [2; 16]]);
        let mut dry = request(&h, &dev, 1);
        dry.dry_run = true;
        let Grant::VerifyKey(sealed) = svc.grant(&dry).unwrap() else {
            panic!("a version 2 dry run gets the verify key");
        };
        assert_eq!(
            dry.open_verify_grant(&dev.secret, &sealed).unwrap(),
            crypto::derive_backup_keys(&data_key).1
        );
        // Not openable as a data key grant.
        assert!(dry.open_grant(&dev.secret, &sealed).is_err());
        let h1 = sealed_header_v1(&svc, [3; 16]);
        let mut dry1 = request(&h1, &dev, 1);
        dry1.dry_run = true;
        assert_eq!(svc.grant(&dry1).unwrap(), Grant::Verdict);
        // A real restore of the version 1 backup gets its data key.
        let r = request(&h1, &dev, 1);
        let g = svc.grant(&r).unwrap();
        assert_eq!(data_key_of(&r, &dev, g), data_key);
        for l in [[1; 16], [2; 16]] {
            assert_eq!(svc.devices_counted(&l).unwrap(), 0);
        }
        assert_eq!(svc.devices_counted(&[3; 16]).unwrap(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A grant counts the device against every lineage of the backup, in one transaction; one
    /// lineage at its limit refuses the whole grant and counts nothing anywhere.
    #[test]
    fn a_grant_counts_every_lineage_all_or_nothing() {
        let (dir, svc) = open_svc("svc-multi", 2);
        let (a, b, c) = ([0xA; 16], [0xB; 16], [0xC; 16]);
        let dev = KeyPair::generate().unwrap();
        let (hab, _) = sealed_header_v2(&svc, &[a, b]);
        svc.grant(&request(&hab, &dev, 1)).unwrap();
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        assert_eq!(svc.devices_counted(&b).unwrap(), 1);
        // Fill lineage c with two other devices.
        let (hc, _) = sealed_header(&svc, c);
        svc.grant(&request(&hc, &dev, 2)).unwrap();
        svc.grant(&request(&hc, &dev, 3)).unwrap();
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 4 with a backup of a, b and c: c is at its limit → refused, nothing counted.
        let (habc, _) = sealed_header_v2(&svc, &[a, b, c]);
        let refused = request(&habc, &dev, 4);
        match svc.grant(&refused) {
            Err(Error::RestoreFraud { message, help_url }) => {
                assert!(message.contains(&hex(&c)), "{message}");
                assert_eq!(help_url.as_deref(), Some("https://help"));
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        assert_eq!(svc.devices_counted(&b).unwrap(), 1);
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 2 (counted for c) with the same backup: granted, counted for a and b too.
        svc.grant(&request(&habc, &dev, 2)).unwrap();
        assert_eq!(svc.devices_counted(&a).unwrap(), 2);
        assert_eq!(svc.devices_counted(&b).unwrap(), 2);
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 1 (counted for a and b, not c, which is full): refused.
        assert!(matches!(
            svc.grant(&request(&habc, &dev, 1)),
            Err(Error::RestoreFraud { .. })
        ));
        // A request ID reused with another backup's lineages is not the same request.
        let mut reuse = request(&hab, &dev, 1);
        svc.grant(&reuse).unwrap();
        reuse.header = habc.clone();
        assert!(matches!(svc.grant(&reuse), Err(Error::BackupRestore(_))));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn altered_header_is_refused_as_corrupt() {
        let dir = temp_dir("svc-alt");
        let svc = LocalService::open(&dir, Policy::from_env()).unwrap();
        let dev = KeyPair::generate().unwrap();
        let h1 = sealed_header_v1(&svc, [9; 16]);
        let (h2, _) = sealed_header_v2(&svc, &[[5; 16], [9; 16]]);
        // Dodge the limit with another lineage: in the version 1 field, in the version 2
        // table, or by dropping a lineage from the table.
        let mut alt1 = h1.clone();
        alt1.lineage_id[0] ^= 1;
        let mut alt2 = h2.clone();
        alt2.lineages[1][0] ^= 1;
        let mut dropped = h2.clone();
        dropped.lineages.remove(1);
        for h in [alt1, alt2, dropped] {
            assert!(matches!(
                svc.grant(&request(&h, &dev, 1)),
                Err(Error::BackupCorrupt(_))
            ));
            for l in h.policy_lineages() {
                assert_eq!(svc.devices_counted(&l).unwrap(), 0);
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
