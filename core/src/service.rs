//! The License Management Service: it holds the key backups are sealed to, decides whether a
//! restore may happen, and hands the data key to the restoring device.
//!
//! `LicenseService` is the seam: `LocalService` (embedded, the default) implements it here; a
//! network client implements the same trait.

use crate::crypto::{self, hpke_open_key, hpke_seal_key, KeyPair, SealedKey, KEY_LEN};
use crate::error::{Error, Result};
use crate::format::{Header, HEADER_CORE_LEN, INFO_DATA_KEY};
use crate::fsutil;
use crate::license::unix_now;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// HPKE `info` of the data key re-sealed to the restoring device.
pub const INFO_GRANT: &[u8] = b"wmlicense v1 restore grant";
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
    /// Check everything, record nothing (WM_RESTORE_VERIFY_ONLY).
    pub dry_run: bool,
}

impl GrantRequest {
    /// What the grant is bound to: this request and this backup's header.
    pub fn grant_aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + HEADER_CORE_LEN);
        aad.extend_from_slice(&self.request_id);
        aad.extend_from_slice(&self.header.core_bytes());
        aad
    }

    /// Opens the data key in `grant` with the device's secret key.
    pub fn open_grant(&self, device_secret: &[u8; 32], grant: &SealedKey) -> Result<[u8; KEY_LEN]> {
        hpke_open_key(device_secret, INFO_GRANT, &self.grant_aad(), grant).ok_or_else(|| {
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
    /// Applies the restore policy; on success returns the backup's data key sealed to the
    /// requesting device. Refusal is `Error::RestoreFraud`.
    fn grant(&self, request: &GrantRequest) -> Result<SealedKey>;
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
        lineage_id BLOB NOT NULL,
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

    /// Decides a request under the ledger's write lock; returns (granted, devices counted).
    fn decide(&self, req: &GrantRequest) -> Result<(bool, u64)> {
        let lineage = &req.header.lineage_id[..];
        let device_bytes = [&req.device_id[..], &req.device_public_key[..]].concat();
        let device = &device_bytes[..];
        let mut conn = crate::sync::lock(&self.ledger);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let count = |tx: &rusqlite::Transaction<'_>| -> Result<u64> {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM devices WHERE lineage_id = ?1",
                [lineage],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        };
        let earlier: Option<(Vec<u8>, Vec<u8>, bool)> = tx
            .query_row(
                "SELECT lineage_id, device, granted FROM requests WHERE request_id = ?1",
                [&req.request_id[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((l, d, granted)) = earlier {
            if l != lineage || d != device {
                return Err(Error::BackupRestore(
                    "the restore request ID was already used for another backup or device".into(),
                ));
            }
            return Ok((granted, count(&tx)?));
        }
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE lineage_id = ?1 AND device = ?2)",
            [lineage, device],
            |r| r.get(0),
        )?;
        let counted = count(&tx)?;
        let granted = known || counted < u64::from(self.policy.device_limit);
        if req.dry_run {
            return Ok((granted, counted));
        }
        let now = unix_now();
        if granted && !known {
            tx.execute(
                "INSERT INTO devices (lineage_id, device, first_grant) VALUES (?1, ?2, ?3)",
                params![lineage, device, now],
            )?;
        }
        tx.execute(
            "INSERT INTO requests (request_id, lineage_id, device, granted, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&req.request_id[..], lineage, device, granted, now],
        )?;
        tx.commit()?;
        Ok((granted, counted))
    }
}

impl LicenseService for LocalService {
    fn service_key(&self) -> Result<ServiceKey> {
        Ok(ServiceKey {
            key_id: self.key_id,
            public_key: self.keys.public,
        })
    }

    fn grant(&self, req: &GrantRequest) -> Result<SealedKey> {
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
        let (granted, counted) = self.decide(req).map_err(|e| match e {
            Error::Store(m) => {
                Error::ServiceUnavailable(format!("the embedded service's ledger: {m}"))
            }
            other => other,
        })?;
        if !granted {
            return Err(Error::RestoreFraud {
                message: format!(
                    "these licenses were already restored onto {counted} devices; the limit is {}",
                    self.policy.device_limit
                ),
                help_url: self.policy.help_url.clone(),
            });
        }
        hpke_seal_key(
            &req.device_public_key,
            INFO_GRANT,
            &req.grant_aad(),
            &data_key,
            &mut crypto::os_rng(),
        )
    }
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

    fn sealed_header(svc: &LocalService, lineage: [u8; 16]) -> (Header, [u8; 32]) {
        let key = svc.service_key().unwrap();
        let data_key = [7u8; 32];
        let mut h = Header {
            backup_id: [1; 16],
            lineage_id: lineage,
            source_device_id: [3; 16],
            created_at: 1,
            license_count: 0,
            service_key_id: key.key_id,
            chunk_size: 4096,
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

    fn request(h: &Header, device: &KeyPair, device_id: u8) -> GrantRequest {
        GrantRequest {
            request_id: crypto::random_array().unwrap(),
            header: h.clone(),
            device_id: [device_id; 16],
            device_public_key: device.public,
            dry_run: false,
        }
    }

    #[test]
    fn policy_limits_devices_and_retries_count_once() {
        let dir = temp_dir("svc");
        let svc = LocalService::open(
            &dir,
            Policy {
                device_limit: 2,
                help_url: Some("https://help".into()),
            },
        )
        .unwrap();
        let (h, data_key) = sealed_header(&svc, [9; 16]);
        let dev = KeyPair::generate().unwrap();
        let r1 = request(&h, &dev, 1);
        let g = svc.grant(&r1).unwrap();
        assert_eq!(r1.open_grant(&dev.secret, &g).unwrap(), data_key);
        // A retry of the same request: granted again, still one device.
        svc.grant(&r1).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // Same device, new request: free.
        svc.grant(&request(&h, &dev, 1)).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // A dry run for a new device is granted but records nothing.
        let mut dry = request(&h, &dev, 2);
        dry.dry_run = true;
        svc.grant(&dry).unwrap();
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

    #[test]
    fn altered_header_is_refused_as_corrupt() {
        let dir = temp_dir("svc-alt");
        let svc = LocalService::open(&dir, Policy::from_env()).unwrap();
        let (mut h, _) = sealed_header(&svc, [9; 16]);
        h.lineage_id[0] ^= 1; // dodge the limit with another lineage
        let dev = KeyPair::generate().unwrap();
        assert!(matches!(
            svc.grant(&request(&h, &dev, 1)),
            Err(Error::BackupCorrupt(_))
        ));
        assert_eq!(svc.devices_counted(&h.lineage_id).unwrap(), 0);
        std::fs::remove_dir_all(dir).ok();
    }
}
