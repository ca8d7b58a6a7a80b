//! The License Management Service: it holds the keys backups are sealed to, decides whether a
//! restore, a release or a reset may happen, records it in its ledger, and hands the data key to
//! the restoring device.
//!
//! One policy, two deployments (SPEC §5.2):
//! - [`Authority`] is the policy over a [`Ledger`] and a [`KeyRing`]. The embedded service
//!   ([`LocalService`]) is an `Authority` over a SQLite ledger in the data directory; the network
//!   service `wmlicense-service` runs the same `Authority` over SQLite or PostgreSQL.
//! - [`LicenseService`] is what the engine talks to: a `LocalService`, or a [`NetworkService`]
//!   that carries the same requests over HTTP ([`wire`]).

mod authority;
mod client;
pub mod keys;
pub mod ledger;
pub mod wire;

pub use authority::{Authority, LocalService};
pub use client::NetworkService;
pub use keys::KeyRing;
pub use ledger::{AuditRecord, DeviceRecord, Ledger, LedgerTx, SqliteLedger};

use crate::crypto::{hpke_open_key, SealedKey, KEY_LEN};
use crate::error::{Error, Result};
use crate::format::Header;
use std::path::Path;

/// HPKE `info` of the data key re-sealed to the restoring device.
pub const INFO_GRANT: &[u8] = b"wmlicense v1 restore grant";
/// HPKE `info` of a version 2 backup's verify key sealed to the device of a dry run.
pub const INFO_VERIFY_GRANT: &[u8] = b"wmlicense v2 dry-run verify key";
/// HPKE `info` of a release's proof of possession of the device key (auth mode).
pub const INFO_RELEASE_PROOF: &[u8] = b"wmlicense v1 release proof";
/// Default number of distinct devices one lineage may be restored onto.
pub const DEFAULT_DEVICE_LIMIT: u32 = 4;
/// Default reset window: one reset of a lineage per this many days.
pub const DEFAULT_RESET_WINDOW_DAYS: u32 = 365;

/// The public half of the service key that backups are sealed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceKey {
    pub key_id: [u8; 16],
    pub public_key: [u8; 32],
}

impl ServiceKey {
    /// A pinned key (`ServiceKey` property): 64 hex digits of the X25519 public key; its key ID
    /// follows from it.
    pub fn from_hex(s: &str) -> Result<ServiceKey> {
        let public_key: [u8; 32] = hex_array(s.trim()).ok_or_else(|| {
            Error::InvalidArg(format!(
                "ServiceKey must be 64 hex digits (an X25519 public key), not {s:?}"
            ))
        })?;
        Ok(ServiceKey {
            key_id: crate::crypto::service_key_id(&public_key),
            public_key,
        })
    }
}

/// A device as the ledger knows it: its ID together with its public key. A client that presents
/// a counted device's ID with another key (to have the grant sealed to itself) is another device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub device_id: [u8; 16],
    pub public_key: [u8; 32],
}

impl Device {
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.device_id[..], &self.public_key[..]].concat()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Device> {
        (b.len() == 48).then(|| Device {
            device_id: b[..16].try_into().unwrap(),
            public_key: b[16..].try_into().unwrap(),
        })
    }
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

/// The service's count of a lineage's devices after a decision, and its limit. For several
/// lineages: the one closest to its limit. 0/0 when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCount {
    pub used: u32,
    pub limit: u32,
}

/// A granted request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantReply {
    pub grant: Grant,
    pub devices: DeviceCount,
}

impl GrantRequest {
    pub fn device(&self) -> Device {
        Device {
            device_id: self.device_id,
            public_key: self.device_public_key,
        }
    }

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

/// A store gives back its device's slot in every lineage it is counted for.
#[derive(Clone, Debug)]
pub struct ReleaseRequest {
    pub request_id: [u8; 16],
    pub device_id: [u8; 16],
    pub device_public_key: [u8; 32],
    /// The service key the proof is sealed to.
    pub service_key_id: [u8; 16],
    /// Proof of possession of the device's secret key: a random key sealed in HPKE auth mode
    /// by the device to the service key, bound to [`ReleaseRequest::proof_aad`].
    pub proof: SealedKey,
}

impl ReleaseRequest {
    /// Builds a release of `identity`'s device, proven to `service_key`.
    pub fn new(
        request_id: [u8; 16],
        identity: &crate::identity::DeviceIdentity,
        service_key: &ServiceKey,
    ) -> Result<ReleaseRequest> {
        let aad = Self::proof_aad_of(&request_id, &identity.device_id, &identity.keys.public);
        let nonce: [u8; 32] = crate::crypto::random_array()?;
        let proof = crate::crypto::hpke_seal_key_auth(
            &service_key.public_key,
            &identity.keys,
            INFO_RELEASE_PROOF,
            &aad,
            &nonce,
            &mut crate::crypto::os_rng(),
        )?;
        Ok(ReleaseRequest {
            request_id,
            device_id: identity.device_id,
            device_public_key: identity.keys.public,
            service_key_id: service_key.key_id,
            proof,
        })
    }

    pub fn device(&self) -> Device {
        Device {
            device_id: self.device_id,
            public_key: self.device_public_key,
        }
    }

    pub fn proof_aad(&self) -> Vec<u8> {
        Self::proof_aad_of(&self.request_id, &self.device_id, &self.device_public_key)
    }

    fn proof_aad_of(request_id: &[u8; 16], device_id: &[u8; 16], public: &[u8; 32]) -> Vec<u8> {
        [&request_id[..], &device_id[..], &public[..]].concat()
    }
}

/// What a release freed: the lineages the device stopped counting for (empty: it was counted
/// for none, nothing changed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseReply {
    pub lineages: Vec<[u8; 16]>,
    pub devices: DeviceCount,
}

/// Frees every slot of the lineages of a backup, proven by the backup's header.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    pub request_id: [u8; 16],
    pub header: Header,
}

/// What a reset freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetReply {
    pub lineages: Vec<[u8; 16]>,
    /// Device slots freed, over all lineages.
    pub devices_freed: u64,
    pub devices: DeviceCount,
}

/// Lets a long call notice that its operation was cancelled.
pub type Interrupt<'a> = &'a (dyn Fn() -> bool + Sync);

/// What the engine talks to: the embedded service or a network one.
pub trait LicenseService: Send + Sync {
    /// True when requests travel over the network (CONNECTING/DISCONNECTING around them).
    fn is_remote(&self) -> bool {
        false
    }
    /// The key new backups are sealed to.
    fn service_key(&self, interrupt: Interrupt<'_>) -> Result<ServiceKey>;
    /// Applies the restore policy to every lineage of the backup; on success a restore gets the
    /// backup's data key sealed to the requesting device, a dry run the verify key (version 2)
    /// or a verdict only (version 1). Refusal is `Error::RestoreFraud`.
    fn grant(&self, request: &GrantRequest, interrupt: Interrupt<'_>) -> Result<GrantReply>;
    /// Stops counting the device for every lineage it is counted for.
    fn release(&self, request: &ReleaseRequest, interrupt: Interrupt<'_>) -> Result<ReleaseReply>;
    /// Frees every slot of the backup's lineages, once per reset window
    /// (`Error::TooManyResets`).
    fn reset(&self, request: &ResetRequest, interrupt: Interrupt<'_>) -> Result<ResetReply>;
}

/// The service a restorer uses: the one at `url`, or the embedded one of `data_dir`.
pub fn connect(url: Option<&str>, data_dir: &Path) -> Result<Box<dyn LicenseService>> {
    match url {
        None => Ok(Box::new(LocalService::open(
            &data_dir.join(SERVICE_DIR),
            Policy::from_env(),
        )?)),
        Some(url) => Ok(Box::new(NetworkService::new(url)?)),
    }
}

/// The policy of a License Management Service.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Distinct devices one lineage may be restored onto.
    pub device_limit: u32,
    /// A device counts only for this many days after its first grant (`None`: forever).
    pub device_window_days: Option<u32>,
    /// One reset of a lineage per this many days.
    pub reset_window_days: u32,
    /// Where a refused user can get help (ERROR_WITHURL).
    pub help_url: Option<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            device_limit: DEFAULT_DEVICE_LIMIT,
            device_window_days: None,
            reset_window_days: DEFAULT_RESET_WINDOW_DAYS,
            help_url: None,
        }
    }
}

impl Policy {
    /// The embedded service's policy: defaults, overridden by `WMLICENSE_RESTORE_DEVICE_LIMIT`
    /// and `WMLICENSE_SERVICE_HELP_URL`.
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
            ..Policy::default()
        }
    }
}

/// The embedded service's directory inside a data directory.
pub const SERVICE_DIR: &str = "service";

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Decodes hex (either case); `None` on an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Decodes exactly `N` bytes of hex.
pub fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    unhex(s)?.try_into().ok()
}
