//! The device identity of a store: who this store is to the License Management Service, and the
//! key that seals its content keys at rest.

use crate::crypto::{self, KeyPair};
use crate::error::{Error, Result};
use crate::fsutil;
use std::path::{Path, PathBuf};

/// The identity a restore gives a store it creates, and the request ID it asks the License
/// Management Service with, kept (mode 0600) beside the store's place in `.<name>.pending` from
/// the first attempt until the store is installed. A retry after a failure, a cancel or a crash
/// presents the same device with the same request ID, so it is never counted twice; once the
/// store is installed the file is gone, and the store's own identity file carries the device.
pub struct PendingIdentity {
    pub identity: DeviceIdentity,
    /// The backup the request ID was used for: another backup gets a new request ID.
    pub backup_id: [u8; 16],
    pub request_id: [u8; 16],
}

const PENDING_MAGIC: &[u8; 8] = b"WMLPD\x00\x00\x01";
const PENDING_LEN: usize = 8 + FILE_LEN + 16 + 16;

impl PendingIdentity {
    /// Where the pending identity of a store to be created at `store_dir` is kept.
    pub fn path(store_dir: &Path) -> PathBuf {
        let name = store_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        store_dir.with_file_name(format!(".{name}.pending"))
    }

    /// The pending identity for `store_dir`, if an earlier attempt left one (never creates it).
    pub fn load(store_dir: &Path) -> Result<Option<PendingIdentity>> {
        let path = Self::path(store_dir);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let bytes = fsutil::read_small_file(&path, 4096)
            .map_err(|e| Error::store(format!("cannot read {}", path.display()), e))?;
        if bytes.len() != PENDING_LEN || &bytes[..8] != PENDING_MAGIC {
            return Err(Error::Store(format!(
                "{} is not a wmlicense pending identity",
                path.display()
            )));
        }
        let identity = DeviceIdentity::decode(&bytes[8..8 + FILE_LEN], &path)?;
        let mut backup_id = [0u8; 16];
        backup_id.copy_from_slice(&bytes[8 + FILE_LEN..8 + FILE_LEN + 16]);
        let mut request_id = [0u8; 16];
        request_id.copy_from_slice(&bytes[8 + FILE_LEN + 16..]);
        Ok(Some(PendingIdentity {
            identity,
            backup_id,
            request_id,
        }))
    }

    /// The pending identity for a restore of backup `backup_id` into a new store at
    /// `store_dir`: the one an earlier attempt left (with a new request ID when that attempt
    /// restored another backup), else a fresh random one, kept before it is used.
    pub fn for_restore(store_dir: &Path, backup_id: [u8; 16]) -> Result<PendingIdentity> {
        let path = Self::path(store_dir);
        let failed = |e: std::io::Error| {
            Error::io(format!("cannot write {}", path.display()), &e, Error::Store)
        };
        if let Some(mut pending) = Self::load(store_dir)? {
            if pending.backup_id != backup_id {
                pending.backup_id = backup_id;
                pending.request_id = crypto::random_array()?;
                fsutil::replace_file_atomically(&path, &pending.encode()).map_err(failed)?;
            }
            return Ok(pending);
        }
        let fresh = PendingIdentity {
            identity: DeviceIdentity::generate()?,
            backup_id,
            request_id: crypto::random_array()?,
        };
        if fsutil::write_new_file_atomically(&path, &fresh.encode()).map_err(failed)? {
            return Ok(fresh);
        }
        // Another attempt at the same place was first: everyone uses its identity.
        Self::load(store_dir)?.ok_or_else(|| Error::Store(format!("{} vanished", path.display())))
    }

    /// After a definite refusal: the next attempt asks anew (a freed slot or a raised limit
    /// can change the answer, which a replayed request ID never would), as the same device.
    pub fn renew_request(store_dir: &Path) -> Result<()> {
        let Some(mut pending) = Self::load(store_dir)? else {
            return Ok(());
        };
        pending.request_id = crypto::random_array()?;
        let path = Self::path(store_dir);
        fsutil::replace_file_atomically(&path, &pending.encode())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), &e, Error::Store))
    }

    /// Forgets the pending identity of `store_dir` (its store is installed).
    pub fn remove(store_dir: &Path) {
        let path = Self::path(store_dir);
        if std::fs::remove_file(&path).is_ok() {
            if let Some(parent) = path.parent() {
                let _ = fsutil::sync_dir(parent);
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(PENDING_LEN);
        v.extend_from_slice(PENDING_MAGIC);
        v.extend_from_slice(&self.identity.encode());
        v.extend_from_slice(&self.backup_id);
        v.extend_from_slice(&self.request_id);
        v
    }
}

pub const IDENTITY_FILE: &str = "identity";
const MAGIC: &[u8; 8] = b"WMLID\x00\x00\x01";
const FILE_LEN: usize = 8 + 16 + 32 + 32;

/// A store's device ID, its X25519 key pair (restore grants are sealed to it) and its storage
/// key (content keys are sealed with it). Kept in a file of mode 0600 beside the database.
#[derive(Clone)]
pub struct DeviceIdentity {
    pub device_id: [u8; 16],
    pub keys: KeyPair,
    pub storage_key: [u8; 32],
}

impl DeviceIdentity {
    pub fn generate() -> Result<DeviceIdentity> {
        Ok(DeviceIdentity {
            device_id: crypto::random_array()?,
            keys: KeyPair::generate()?,
            storage_key: crypto::random_array()?,
        })
    }

    /// Writes this identity into `dir`, which must not have one yet.
    pub fn save_new(&self, dir: &Path) -> Result<()> {
        let path = dir.join(IDENTITY_FILE);
        match fsutil::write_new_file_atomically(&path, &self.encode()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Store(format!("{} exists already", path.display()))),
            Err(e) => Err(Error::store(format!("cannot create {}", path.display()), e)),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FILE_LEN);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.device_id);
        v.extend_from_slice(&self.keys.secret);
        v.extend_from_slice(&self.storage_key);
        v
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<DeviceIdentity> {
        if bytes.len() != FILE_LEN || &bytes[..8] != MAGIC {
            return Err(Error::Store(format!(
                "{} is not a wmlicense device identity",
                path.display()
            )));
        }
        let mut device_id = [0u8; 16];
        device_id.copy_from_slice(&bytes[8..24]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[24..56]);
        let mut storage_key = [0u8; 32];
        storage_key.copy_from_slice(&bytes[56..88]);
        Ok(DeviceIdentity {
            device_id,
            keys: KeyPair::from_secret(secret)?,
            storage_key,
        })
    }

    /// Loads the identity in `dir`, creating it first if the store has none. Safe when several
    /// processes open a new store at once: all of them end up with the same identity.
    pub fn load_or_create(dir: &Path) -> Result<DeviceIdentity> {
        let path = dir.join(IDENTITY_FILE);
        if !path.exists() {
            let fresh = DeviceIdentity::generate()?;
            fsutil::write_new_file_atomically(&path, &fresh.encode())
                .map_err(|e| Error::store(format!("cannot create {}", path.display()), e))?;
        }
        Self::load(dir)
    }

    pub fn load(dir: &Path) -> Result<DeviceIdentity> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = fsutil::read_small_file(&path, 4096)
            .map_err(|e| Error::store(format!("cannot read {}", path.display()), e))?;
        Self::decode(&bytes, &path)
    }
}
