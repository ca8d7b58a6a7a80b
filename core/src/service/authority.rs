//! The policy of a License Management Service (SPEC §5.2) over a ledger and a key ring: one
//! code path for the embedded service and the network service.

use super::keys::{KeyRing, ServiceKeyPair};
use super::ledger::{AuditRecord, DeviceRecord, Ledger, LedgerTx, RequestRecord, SqliteLedger};
use super::{
    hex, Device, DeviceCount, Grant, GrantReply, GrantRequest, Interrupt, LicenseService, Policy,
    ReleaseReply, ReleaseRequest, ResetReply, ResetRequest, ServiceKey, INFO_GRANT,
    INFO_RELEASE_PROOF, INFO_VERIFY_GRANT,
};
use crate::crypto::{self, hpke_open_key, hpke_open_key_auth, hpke_seal_key, KEY_LEN};
use crate::error::{Error, Result};
use crate::format::{Header, INFO_DATA_KEY, VERSION_1};
use crate::license::unix_now;
use std::path::Path;
use std::sync::RwLock;

const LEDGER_FILE: &str = "ledger.db";
const DAY: i64 = 86_400;
/// How often an unknown key ID may make the service read its key directory again.
const KEY_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The embedded License Management Service: a key ring and a SQLite ledger in a directory
/// (by default `<data dir>/service`), shared by every process of the user.
pub type LocalService = Authority<SqliteLedger>;

impl Authority<SqliteLedger> {
    /// The service of directory `dir`: its keys (the first one created if there is none) and
    /// its ledger `dir/ledger.db`.
    pub fn open(dir: &Path, policy: Policy) -> Result<LocalService> {
        let keys = KeyRing::open(dir, true)?;
        let ledger = SqliteLedger::open(&dir.join(LEDGER_FILE)).map_err(|e| {
            Error::ServiceUnavailable(format!("the service at {}: {e}", dir.display()))
        })?;
        Ok(Authority::new(keys, ledger, policy))
    }
}

/// What a request's lineages look like to the policy: per lineage, whether the device is
/// counted already and how many devices are.
struct LineageState {
    lineage: [u8; 16],
    known: bool,
    count: u64,
}

/// A License Management Service: keys, ledger, policy.
pub struct Authority<L: Ledger> {
    keys: RwLock<KeyRing>,
    /// When the key directory was last read again for an unknown key ID (at most every
    /// `KEY_RELOAD_INTERVAL`: unknown IDs come from unauthenticated requests).
    reloaded: std::sync::Mutex<Option<std::time::Instant>>,
    ledger: L,
    policy: Policy,
}

impl<L: Ledger> Authority<L> {
    pub fn new(keys: KeyRing, ledger: L, policy: Policy) -> Authority<L> {
        Authority {
            keys: RwLock::new(keys),
            reloaded: std::sync::Mutex::new(None),
            ledger,
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The current public key.
    pub fn current_key(&self) -> ServiceKey {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current()
            .public()
    }

    /// The key named `key_id`; an unknown ID reloads the key directory once (a key rotated in
    /// by an operator).
    fn key(&self, key_id: &[u8; 16]) -> Result<Option<ServiceKeyPair>> {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(key_id)
        {
            return Ok(Some(k.clone()));
        }
        {
            let mut last = self.reloaded.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < KEY_RELOAD_INTERVAL) {
                return Ok(None);
            }
            *last = Some(std::time::Instant::now());
        }
        let mut ring = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Ok(fresh) = KeyRing::open(ring_dir(&ring), false) {
            *ring = fresh;
        }
        Ok(ring.find(key_id).cloned())
    }

    /// Opens the data key of a backup's header: only a header this service sealed opens.
    fn open_header(&self, header: &Header) -> Result<[u8; KEY_LEN]> {
        let key = self.key(&header.service_key_id)?.ok_or_else(|| {
            Error::corrupt(format!(
                "the backup is sealed to a License Management Service key this service does not \
                 have (key ID {}): it was made for another service or data directory, or its \
                 header was altered",
                hex(&header.service_key_id)
            ))
        })?;
        hpke_open_key(
            &key.keys.secret,
            INFO_DATA_KEY,
            &header.core_bytes(),
            &header.sealed_data_key,
        )
        .ok_or_else(|| {
            Error::corrupt(
                "the service cannot unseal the backup's data key: the header was altered",
            )
        })
    }

    /// Devices first granted before this no longer count (the rolling device window).
    fn since(&self, now: i64) -> i64 {
        match self.policy.device_window_days {
            Some(d) => now - i64::from(d) * DAY,
            None => i64::MIN,
        }
    }

    fn limit(&self) -> u64 {
        u64::from(self.policy.device_limit)
    }

    fn state(
        &self,
        tx: &mut dyn LedgerTx,
        lineages: &[[u8; 16]],
        device: &[u8],
        since: i64,
    ) -> Result<Vec<LineageState>> {
        let st = tx.states(lineages, device, since)?;
        if st.len() != lineages.len() {
            return Err(Error::Internal(
                "the ledger answered for other lineages than asked".into(),
            ));
        }
        Ok(lineages
            .iter()
            .zip(st)
            .map(|(l, (known, count))| LineageState {
                lineage: *l,
                known,
                count,
            })
            .collect())
    }

    /// The lineage to report: a refusing one first, else the fullest.
    fn worst<'s>(&self, st: &'s [LineageState]) -> Option<&'s LineageState> {
        let limit = self.limit();
        st.iter()
            .max_by_key(|s| (!s.known && s.count >= limit, s.count))
    }

    fn count_of(&self, st: Option<&LineageState>) -> DeviceCount {
        DeviceCount {
            used: st.map_or(0, |s| s.count.min(u64::from(u32::MAX)) as u32),
            limit: self.policy.device_limit,
        }
    }

    /// Decides a grant under the ledger's locks, for every lineage of the backup at once:
    /// granted only if, for each lineage, the device is already counted or the lineage is below
    /// its limit; then the device is counted for every lineage it was not yet counted for (all
    /// or nothing). A dry run decides the same and records nothing but its audit line.
    fn decide_grant(&self, req: &GrantRequest) -> Result<(bool, [u8; 16], DeviceCount)> {
        let lineages = req.header.policy_lineages();
        if lineages.is_empty() {
            return Err(Error::corrupt("the backup names no lineage"));
        }
        let lineages_bytes = lineages.concat();
        let device = req.device().to_bytes();
        let kind = if req.dry_run { "dry-run" } else { "grant" };
        self.ledger
            .transaction(&req.request_id, &lineages, &mut |tx| {
                let now = unix_now();
                let since = self.since(now);
                let st = self.state(tx, &lineages, &device, since)?;
                let limit = self.limit();
                let granted = st.iter().all(|s| s.known || s.count < limit);
                let w = self.worst(&st).expect("at least one lineage");
                if !req.dry_run {
                    if let Some(r) = tx.request(&req.request_id)? {
                        if r.kind != kind || r.lineages != lineages_bytes || r.device != device {
                            return Err(reused_request_id());
                        }
                        // Replayed only while it still holds: a grant whose device is still
                        // counted everywhere, a refusal that would still be refused. Else (the
                        // device released its slot since, say) it is decided anew below.
                        let holds = if r.outcome == "granted" {
                            st.iter().all(|s| s.known)
                        } else {
                            !granted
                        };
                        if holds {
                            return Ok((r.outcome == "granted", w.lineage, self.count_of(Some(w))));
                        }
                    }
                }
                let (worst_lineage, mut reported) = (w.lineage, self.count_of(Some(w)));
                let outcome = if granted { "granted" } else { "refused" };
                if !req.dry_run {
                    if granted {
                        let new: Vec<[u8; 16]> =
                            st.iter().filter(|s| !s.known).map(|s| s.lineage).collect();
                        tx.count_devices(&new, &device, now)?;
                        // Under the ledger's locks, so known without asking again.
                        let after: Vec<LineageState> = st
                            .iter()
                            .map(|s| LineageState {
                                lineage: s.lineage,
                                known: true,
                                count: s.count + u64::from(!s.known),
                            })
                            .collect();
                        reported = self.count_of(self.worst(&after));
                    }
                    tx.put_request(&RequestRecord {
                        request_id: req.request_id,
                        kind: kind.into(),
                        lineages: lineages_bytes.clone(),
                        device: device.clone(),
                        outcome: outcome.into(),
                        result: Vec::new(),
                        at: now,
                    })?;
                }
                let records: Vec<AuditRecord> = st
                    .iter()
                    .map(|s| AuditRecord {
                        at: now,
                        action: kind.into(),
                        lineage_id: Some(s.lineage),
                        device: Some(device.clone()),
                        request_id: Some(req.request_id),
                        outcome: outcome.into(),
                        detail: format!(
                            "{} of {} devices before; backup {}",
                            s.count,
                            limit,
                            hex(&req.header.backup_id)
                        ),
                    })
                    .collect();
                tx.audit_all(&records)?;
                Ok((granted, worst_lineage, reported))
            })
    }

    /// Checks a release's proof of possession of the device key.
    pub fn verify_release(&self, req: &ReleaseRequest) -> Result<()> {
        let key = self.key(&req.service_key_id)?.ok_or_else(|| {
            Error::BackupRestore(format!(
                "the release is proven to a service key this service does not have (key ID {})",
                hex(&req.service_key_id)
            ))
        })?;
        hpke_open_key_auth(
            &key.keys.secret,
            &req.device_public_key,
            INFO_RELEASE_PROOF,
            &req.proof_aad(),
            &req.proof,
        )
        .map(drop)
        .ok_or_else(|| {
            Error::BackupRestore("the release does not prove possession of the device's key".into())
        })
    }

    /// Checks that a header was sealed to this service and not altered since.
    pub fn verify_header(&self, header: &Header) -> Result<()> {
        self.open_header(header).map(drop)
    }

    /// Releases one device from every lineage it is counted for.
    fn decide_release(&self, req: &ReleaseRequest) -> Result<ReleaseReply> {
        let device = req.device().to_bytes();
        self.ledger.transaction(&req.request_id, &[], &mut |tx| {
            let now = unix_now();
            let since = self.since(now);
            let lineages = match tx.request(&req.request_id)? {
                Some(r) => {
                    if r.kind != "release" || r.device != device {
                        return Err(reused_request_id());
                    }
                    split_ids(&r.result)
                }
                None => {
                    // Rows whose device window ran out go too, but only the lineages the
                    // device still counted for were released (their licenses go).
                    let lineages = tx.device_lineages(&device, since)?;
                    let removed = tx.remove_device_everywhere(&device)?;
                    if lineages.is_empty() && removed == 0 {
                        // Changes nothing: nothing is recorded (anyone can make a device key
                        // and prove it, so recording it would let anyone grow the ledger); a
                        // retry is decided anew, to the same answer while it still holds.
                        return Ok(ReleaseReply {
                            lineages,
                            devices: DeviceCount::default(),
                        });
                    }
                    let records: Vec<AuditRecord> = lineages
                        .iter()
                        .map(|l| AuditRecord {
                            at: now,
                            action: "release".into(),
                            lineage_id: Some(*l),
                            device: Some(device.clone()),
                            request_id: Some(req.request_id),
                            outcome: "released".into(),
                            detail: String::new(),
                        })
                        .collect();
                    tx.audit_all(&records)?;
                    if lineages.is_empty() {
                        tx.audit(&AuditRecord {
                            at: now,
                            action: "release".into(),
                            lineage_id: None,
                            device: Some(device.clone()),
                            request_id: Some(req.request_id),
                            outcome: "not-counted".into(),
                            detail: "only rows past the device window were removed".into(),
                        })?;
                    }
                    tx.put_request(&RequestRecord {
                        request_id: req.request_id,
                        kind: "release".into(),
                        lineages: lineages.concat(),
                        device: device.clone(),
                        outcome: "released".into(),
                        result: lineages.concat(),
                        at: now,
                    })?;
                    lineages
                }
            };
            let st = self.state(tx, &lineages, &device, since)?;
            let devices = if st.is_empty() {
                DeviceCount::default()
            } else {
                self.count_of(self.worst(&st))
            };
            Ok(ReleaseReply { lineages, devices })
        })
    }

    /// Frees every slot of the backup's lineages, once per reset window.
    fn decide_reset(&self, req: &ResetRequest) -> Result<ResetReply> {
        let lineages = req.header.policy_lineages();
        if lineages.is_empty() {
            return Err(Error::corrupt("the backup names no lineage"));
        }
        let window = i64::from(self.policy.reset_window_days) * DAY;
        let decided = self
            .ledger
            .transaction(&req.request_id, &lineages, &mut |tx| {
                let now = unix_now();
                if let Some(r) = tx.request(&req.request_id)? {
                    if r.kind != "reset" || r.lineages != lineages.concat() {
                        return Err(reused_request_id());
                    }
                    return Ok(self.reset_outcome(&r));
                }
                let mut too_soon = None;
                for l in &lineages {
                    if let Some(at) = tx.last_reset(l)? {
                        if now - at < window {
                            too_soon = Some((*l, at));
                            break;
                        }
                    }
                }
                let mut record = RequestRecord {
                    request_id: req.request_id,
                    kind: "reset".into(),
                    lineages: lineages.concat(),
                    device: Vec::new(),
                    outcome: String::new(),
                    result: Vec::new(),
                    at: now,
                };
                if let Some((l, at)) = too_soon {
                    record.outcome = "too-many-resets".into();
                    record.result = [&l[..], &at.to_le_bytes()[..]].concat();
                    tx.audit(&AuditRecord {
                        at: now,
                        action: "reset".into(),
                        lineage_id: Some(l),
                        device: None,
                        request_id: Some(req.request_id),
                        outcome: "too-many-resets".into(),
                        detail: format!("last reset at {at}"),
                    })?;
                } else {
                    let mut freed = 0u64;
                    for l in &lineages {
                        let n = tx.remove_lineage(l)?;
                        freed += n;
                        tx.put_reset(l, now)?;
                        tx.audit(&AuditRecord {
                            at: now,
                            action: "reset".into(),
                            lineage_id: Some(*l),
                            device: None,
                            request_id: Some(req.request_id),
                            outcome: "reset".into(),
                            detail: format!("{n} devices freed"),
                        })?;
                    }
                    record.outcome = "reset".into();
                    record.result = [&lineages.concat()[..], &freed.to_le_bytes()[..]].concat();
                }
                tx.put_request(&record)?;
                Ok(self.reset_outcome(&record))
            })?;
        decided
    }

    /// The decision recorded for a reset, as its reply.
    fn reset_outcome(&self, r: &RequestRecord) -> Result<ResetReply> {
        let n = r.result.len();
        if r.outcome == "too-many-resets" && n == 24 {
            let at = i64::from_le_bytes(r.result[16..24].try_into().unwrap());
            return Err(Error::TooManyResets(format!(
                "lineage {} was reset at {} (unix time); one reset is allowed every {} days",
                hex(&r.result[..16]),
                at,
                self.policy.reset_window_days
            )));
        }
        if n < 8 {
            return Err(Error::Internal("a reset record is malformed".into()));
        }
        Ok(ResetReply {
            lineages: split_ids(&r.result[..n - 8]),
            devices_freed: u64::from_le_bytes(r.result[n - 8..].try_into().unwrap()),
            devices: DeviceCount {
                used: 0,
                limit: self.policy.device_limit,
            },
        })
    }

    /// Operator: the devices counted for a lineage now.
    pub fn lineage_devices(&self, lineage: &[u8; 16]) -> Result<Vec<DeviceRecord>> {
        self.ledger.devices(lineage, self.since(unix_now()))
    }

    /// Operator: stops counting one device for one lineage; whether it was counted.
    pub fn admin_release(&self, lineage: &[u8; 16], device: &Device) -> Result<bool> {
        let request_id: [u8; 16] = crypto::random_array()?;
        let device = device.to_bytes();
        self.ledger
            .transaction(&request_id, &[*lineage], &mut |tx| {
                let was = tx.remove_device(lineage, &device)?;
                tx.audit(&AuditRecord {
                    at: unix_now(),
                    action: "admin-release".into(),
                    lineage_id: Some(*lineage),
                    device: Some(device.clone()),
                    request_id: None,
                    outcome: if was { "released" } else { "not-counted" }.into(),
                    detail: String::new(),
                })?;
                Ok(was)
            })
    }

    /// Operator: frees every slot of a lineage, whatever its reset window says (the reset is
    /// recorded, so the user's own next reset waits for the window). Returns the slots freed.
    pub fn admin_reset(&self, lineage: &[u8; 16]) -> Result<u64> {
        let request_id: [u8; 16] = crypto::random_array()?;
        self.ledger
            .transaction(&request_id, &[*lineage], &mut |tx| {
                let now = unix_now();
                let n = tx.remove_lineage(lineage)?;
                tx.put_reset(lineage, now)?;
                tx.audit(&AuditRecord {
                    at: now,
                    action: "admin-reset".into(),
                    lineage_id: Some(*lineage),
                    device: None,
                    request_id: None,
                    outcome: "reset".into(),
                    detail: format!("{n} devices freed"),
                })?;
                Ok(n)
            })
    }

    /// Operator: the newest audit records.
    pub fn audit_log(&self, lineage: Option<&[u8; 16]>, limit: u32) -> Result<Vec<AuditRecord>> {
        self.ledger.audit_log(lineage, limit)
    }

    /// Devices counted against `lineage` now.
    pub fn devices_counted(&self, lineage: &[u8; 16]) -> Result<u64> {
        Ok(self.lineage_devices(lineage)?.len() as u64)
    }
}

fn ring_dir(ring: &KeyRing) -> &Path {
    ring.current()
        .file
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

fn reused_request_id() -> Error {
    Error::InvalidArg("the request ID was already used for another request".into())
}

fn split_ids(b: &[u8]) -> Vec<[u8; 16]> {
    b.chunks_exact(16).map(|c| c.try_into().unwrap()).collect()
}

impl<L: Ledger> LicenseService for Authority<L> {
    fn service_key(&self, _: Interrupt<'_>) -> Result<ServiceKey> {
        Ok(self.current_key())
    }

    fn grant(&self, req: &GrantRequest, _: Interrupt<'_>) -> Result<GrantReply> {
        let data_key = self.open_header(&req.header)?;
        self.grant_opened(req, &data_key)
    }

    fn release(&self, req: &ReleaseRequest, _: Interrupt<'_>) -> Result<ReleaseReply> {
        self.verify_release(req)?;
        self.release_verified(req)
    }

    fn reset(&self, req: &ResetRequest, _: Interrupt<'_>) -> Result<ResetReply> {
        self.open_header(&req.header)?;
        self.reset_verified(req)
    }
}

impl<L: Ledger> Authority<L> {
    /// Opens the data key of a backup's header (only a header this service sealed, unaltered,
    /// opens): what [`Self::grant_opened`] and [`Self::reset_verified`] need first.
    pub fn open_data_key(&self, header: &Header) -> Result<[u8; KEY_LEN]> {
        self.open_header(header)
    }

    /// A grant whose header's data key `data_key` was opened by [`Self::open_data_key`] (one
    /// X25519 open per grant, whatever checks come before the decision).
    pub fn grant_opened(&self, req: &GrantRequest, data_key: &[u8; KEY_LEN]) -> Result<GrantReply> {
        let data_key = *data_key;
        // Sealed before the decision: a device key nothing can be sealed to (a low-order
        // point, say) is refused before the ledger hears of the request.
        let seal = |info: &[u8], key: &[u8; KEY_LEN]| {
            hpke_seal_key(
                &req.device_public_key,
                info,
                &req.grant_aad(),
                key,
                &mut crypto::os_rng(),
            )
            .map_err(|_| {
                Error::InvalidArg("the device public key is not a usable X25519 key".into())
            })
        };
        let grant = if !req.dry_run {
            Grant::DataKey(seal(INFO_GRANT, &data_key)?)
        } else if req.header.version == VERSION_1 {
            Grant::Verdict
        } else {
            let (_, verify_key) = crypto::derive_backup_keys(&data_key);
            Grant::VerifyKey(seal(INFO_VERIFY_GRANT, &verify_key)?)
        };
        let (granted, lineage, devices) = self.decide_grant(req)?;
        if !granted {
            return Err(Error::RestoreFraud {
                message: format!(
                    "licenses of this backup (lineage {}) were already restored onto {} \
                     devices; the limit is {}",
                    hex(&lineage),
                    devices.used,
                    devices.limit
                ),
                help_url: self.policy.help_url.clone(),
                devices_used: devices.used,
                device_limit: devices.limit,
            });
        }
        Ok(GrantReply { grant, devices })
    }

    /// A release whose proof [`Self::verify_release`] checked.
    pub fn release_verified(&self, req: &ReleaseRequest) -> Result<ReleaseReply> {
        self.decide_release(req)
    }

    /// A reset whose header [`Self::open_data_key`] opened.
    pub fn reset_verified(&self, req: &ResetRequest) -> Result<ResetReply> {
        self.decide_reset(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeyPair, SealedKey};
    use crate::format::Header;
    use std::path::PathBuf;

    fn never() -> bool {
        false
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let d = std::env::temp_dir().join(format!("wmlicense-{tag}-{}", u64::from_le_bytes(id)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A version 2 header over `lineages` (ascending), sealed to `svc`.
    fn sealed_header_v2(svc: &LocalService, lineages: &[[u8; 16]]) -> (Header, [u8; 32]) {
        let key = svc.service_key(&never).unwrap();
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
        h.seal_data_key(&key.public_key, &data_key).unwrap();
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
        h.seal_data_key(&svc.service_key(&never).unwrap().public_key, &data_key)
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

    fn data_key_of(req: &GrantRequest, dev: &KeyPair, g: GrantReply) -> [u8; 32] {
        match g.grant {
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
                ..Policy::default()
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
        let g = svc.grant(&r1, &never).unwrap();
        assert_eq!(data_key_of(&r1, &dev, g), data_key);
        // A retry of the same request: granted again, still one device.
        svc.grant(&r1, &never).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // Same device, new request: free.
        svc.grant(&request(&h, &dev, 1), &never).unwrap();
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        // A dry run for a new device is granted but records nothing.
        let mut dry = request(&h, &dev, 2);
        dry.dry_run = true;
        assert!(matches!(
            svc.grant(&dry, &never).unwrap().grant,
            Grant::VerifyKey(_)
        ));
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 1);
        svc.grant(&request(&h, &dev, 2), &never).unwrap();
        let refused = request(&h, &dev, 3);
        match svc.grant(&refused, &never) {
            Err(Error::RestoreFraud { help_url, .. }) => {
                assert_eq!(help_url.as_deref(), Some("https://help"))
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        // The refused request, retried, is refused again and counts nothing.
        assert!(matches!(
            svc.grant(&refused, &never),
            Err(Error::RestoreFraud { .. })
        ));
        assert_eq!(svc.devices_counted(&[9; 16]).unwrap(), 2);
        // A dry run applies the same policy.
        let mut dry = request(&h, &dev, 3);
        dry.dry_run = true;
        assert!(matches!(
            svc.grant(&dry, &never),
            Err(Error::RestoreFraud { .. })
        ));
        // A counted device may still restore.
        svc.grant(&request(&h, &dev, 1), &never).unwrap();
        // Its device ID presented with another key (to have the grant sealed to that key) is
        // another device, refused at the limit.
        let impostor = KeyPair::generate().unwrap();
        assert!(matches!(
            svc.grant(&request(&h, &impostor, 1), &never),
            Err(Error::RestoreFraud { .. })
        ));
        // Another lineage has its own count.
        let (h2, _) = sealed_header(&svc, [8; 16]);
        svc.grant(&request(&h2, &dev, 3), &never).unwrap();
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
        let Grant::VerifyKey(sealed) = svc.grant(&dry, &never).unwrap().grant else {
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
        assert_eq!(svc.grant(&dry1, &never).unwrap().grant, Grant::Verdict);
        // A real restore of the version 1 backup gets its data key.
        let r = request(&h1, &dev, 1);
        let g = svc.grant(&r, &never).unwrap();
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
        svc.grant(&request(&hab, &dev, 1), &never).unwrap();
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        assert_eq!(svc.devices_counted(&b).unwrap(), 1);
        // Fill lineage c with two other devices.
        let (hc, _) = sealed_header(&svc, c);
        svc.grant(&request(&hc, &dev, 2), &never).unwrap();
        svc.grant(&request(&hc, &dev, 3), &never).unwrap();
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 4 with a backup of a, b and c: c is at its limit → refused, nothing counted.
        let (habc, _) = sealed_header_v2(&svc, &[a, b, c]);
        let refused = request(&habc, &dev, 4);
        match svc.grant(&refused, &never) {
            Err(Error::RestoreFraud {
                message, help_url, ..
            }) => {
                assert!(message.contains(&hex(&c)), "{message}");
                assert_eq!(help_url.as_deref(), Some("https://help"));
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        assert_eq!(svc.devices_counted(&b).unwrap(), 1);
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 2 (counted for c) with the same backup: granted, counted for a and b too.
        svc.grant(&request(&habc, &dev, 2), &never).unwrap();
        assert_eq!(svc.devices_counted(&a).unwrap(), 2);
        assert_eq!(svc.devices_counted(&b).unwrap(), 2);
        assert_eq!(svc.devices_counted(&c).unwrap(), 2);
        // Device 1 (counted for a and b, not c, which is full): refused.
        assert!(matches!(
            svc.grant(&request(&habc, &dev, 1), &never),
            Err(Error::RestoreFraud { .. })
        ));
        // A request ID reused with another backup's lineages is not the same request.
        let mut reuse = request(&hab, &dev, 1);
        svc.grant(&reuse, &never).unwrap();
        reuse.header = habc.clone();
        assert!(matches!(
            svc.grant(&reuse, &never),
            Err(Error::InvalidArg(_))
        ));
        std::fs::remove_dir_all(dir).ok();
    }

    /// A device key nothing can be sealed to is refused and counts nothing.
    #[test]
    fn an_unusable_device_key_counts_nothing() {
        let (dir, svc) = open_svc("svc-lowkey", 2);
        let dev = KeyPair::generate().unwrap();
        let (h, _) = sealed_header(&svc, [3; 16]);
        let mut bad = request(&h, &dev, 1);
        bad.device_public_key = [0; 32];
        assert!(matches!(svc.grant(&bad, &never), Err(Error::InvalidArg(_))));
        assert_eq!(svc.devices_counted(&[3; 16]).unwrap(), 0);
        assert!(svc.audit_log(None, 10).unwrap().is_empty());
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
                svc.grant(&request(&h, &dev, 1), &never),
                Err(Error::BackupCorrupt(_))
            ));
            for l in h.policy_lineages() {
                assert_eq!(svc.devices_counted(&l).unwrap(), 0);
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }

    fn identity(dev: &KeyPair, id: u8) -> crate::identity::DeviceIdentity {
        crate::identity::DeviceIdentity {
            device_id: [id; 16],
            keys: dev.clone(),
            storage_key: [0; 32],
        }
    }

    /// A release proven with the device key frees its slot in every lineage, once; a retry
    /// answers the same; a proof by another key is refused and changes nothing.
    #[test]
    fn release_frees_the_device_everywhere_once() {
        let (dir, svc) = open_svc("svc-release", 2);
        let key = svc.service_key(&never).unwrap();
        let (a, b) = ([0xA; 16], [0xB; 16]);
        let dev = KeyPair::generate().unwrap();
        let (hab, _) = sealed_header_v2(&svc, &[a, b]);
        svc.grant(&request(&hab, &dev, 1), &never).unwrap();
        svc.grant(&request(&hab, &dev, 2), &never).unwrap();
        assert_eq!(svc.devices_counted(&a).unwrap(), 2);
        // Another key claiming device 1: refused.
        let thief = KeyPair::generate().unwrap();
        let mut forged = ReleaseRequest::new([5; 16], &identity(&thief, 1), &key).unwrap();
        forged.device_public_key = dev.public;
        assert!(matches!(
            svc.release(&forged, &never),
            Err(Error::BackupRestore(_))
        ));
        assert_eq!(svc.devices_counted(&a).unwrap(), 2);
        let req = ReleaseRequest::new([6; 16], &identity(&dev, 1), &key).unwrap();
        let reply = svc.release(&req, &never).unwrap();
        assert_eq!(reply.lineages, vec![a, b]);
        assert_eq!(reply.devices, DeviceCount { used: 1, limit: 2 });
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        assert_eq!(svc.devices_counted(&b).unwrap(), 1);
        // The retry gets the same answer (the lineages), frees nothing more.
        assert_eq!(svc.release(&req, &never).unwrap().lineages, vec![a, b]);
        assert_eq!(svc.devices_counted(&a).unwrap(), 1);
        // A new release of the same device: not counted any more, nothing released.
        let again = ReleaseRequest::new([7; 16], &identity(&dev, 1), &key).unwrap();
        assert!(svc.release(&again, &never).unwrap().lineages.is_empty());
        // The freed slot is usable by a new device.
        svc.grant(&request(&hab, &dev, 3), &never).unwrap();
        let log = svc.audit_log(Some(&a), 100).unwrap();
        assert!(log
            .iter()
            .any(|r| r.action == "release" && r.outcome == "released"));
        std::fs::remove_dir_all(dir).ok();
    }

    /// A reset frees every slot of the backup's lineages once per window; a second one is
    /// refused (also on retry), an altered header frees nothing.
    #[test]
    fn reset_once_per_window() {
        let (dir, svc) = open_svc("svc-reset", 2);
        let dev = KeyPair::generate().unwrap();
        let (h, _) = sealed_header(&svc, [4; 16]);
        svc.grant(&request(&h, &dev, 1), &never).unwrap();
        svc.grant(&request(&h, &dev, 2), &never).unwrap();
        assert!(matches!(
            svc.grant(&request(&h, &dev, 3), &never),
            Err(Error::RestoreFraud {
                devices_used: 2,
                device_limit: 2,
                ..
            })
        ));
        let mut altered = h.clone();
        altered.created_at += 1;
        let bad = ResetRequest {
            request_id: [1; 16],
            header: altered,
        };
        assert!(matches!(
            svc.reset(&bad, &never),
            Err(Error::BackupCorrupt(_))
        ));
        assert_eq!(svc.devices_counted(&[4; 16]).unwrap(), 2);
        let first = ResetRequest {
            request_id: [2; 16],
            header: h.clone(),
        };
        let reply = svc.reset(&first, &never).unwrap();
        assert_eq!(reply.devices_freed, 2);
        assert_eq!(reply.lineages, vec![[4; 16]]);
        assert_eq!(svc.devices_counted(&[4; 16]).unwrap(), 0);
        // Its retry: the same answer.
        assert_eq!(svc.reset(&first, &never).unwrap(), reply);
        svc.grant(&request(&h, &dev, 3), &never).unwrap();
        let second = ResetRequest {
            request_id: [3; 16],
            header: h.clone(),
        };
        assert!(matches!(
            svc.reset(&second, &never),
            Err(Error::TooManyResets(_))
        ));
        assert!(matches!(
            svc.reset(&second, &never),
            Err(Error::TooManyResets(_))
        ));
        assert_eq!(svc.devices_counted(&[4; 16]).unwrap(), 1);
        // The operator may reset anyway.
        assert_eq!(svc.admin_reset(&[4; 16]).unwrap(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    /// With a device window, a device counts only for the window after its first grant.
    #[test]
    fn device_window_rolls() {
        let dir = temp_dir("svc-window");
        let svc = LocalService::open(
            &dir,
            Policy {
                device_limit: 1,
                device_window_days: Some(30),
                ..Policy::default()
            },
        )
        .unwrap();
        let dev = KeyPair::generate().unwrap();
        let (h, _) = sealed_header(&svc, [6; 16]);
        svc.grant(&request(&h, &dev, 1), &never).unwrap();
        assert!(svc.grant(&request(&h, &dev, 2), &never).is_err());
        // Age device 1's first grant past the window.
        svc.ledger()
            .transaction(&[0; 16], &[], &mut |tx| {
                tx.count_device(
                    &[6; 16],
                    &Device {
                        device_id: [1; 16],
                        public_key: dev.public,
                    }
                    .to_bytes(),
                    unix_now() - 31 * DAY,
                )
            })
            .unwrap();
        svc.grant(&request(&h, &dev, 2), &never).unwrap();
        assert_eq!(svc.devices_counted(&[6; 16]).unwrap(), 1);
        // Device 1 no longer counts anywhere: its release releases nothing (its licenses stay).
        let key = svc.service_key(&never).unwrap();
        let rel = ReleaseRequest::new([9; 16], &identity(&dev, 1), &key).unwrap();
        assert!(svc.release(&rel, &never).unwrap().lineages.is_empty());
        std::fs::remove_dir_all(dir).ok();
    }
}
