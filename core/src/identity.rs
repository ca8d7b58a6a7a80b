//! The device identity of a store: who this store is to the License Management Service, and the
//! key that seals its content keys at rest.

use crate::crypto::{self, KeyPair};
use crate::error::{Error, Result};
use crate::fsutil;
use std::path::Path;

pub const IDENTITY_FILE: &str = "identity";
const MAGIC: &[u8; 8] = b"WMLID\x00\x00\x01";
pub(crate) const FILE_LEN: usize = 8 + 16 + 32 + 32;

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

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FILE_LEN);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.device_id);
        v.extend_from_slice(&self.keys.secret);
        v.extend_from_slice(&self.storage_key);
        v
    }

    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<DeviceIdentity> {
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
