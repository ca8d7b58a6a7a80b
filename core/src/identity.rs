//! The device identity of a store: who this store is to the License Management Service, and the
//! key that seals its content keys at rest.

use crate::crypto::{self, KeyPair};
use crate::error::{Error, Result};
use crate::fsutil;
use std::ffi::OsString;
use std::path::Path;

/// The absolute path of `dir`, resolving symbolic links in the part that exists.
fn canonical_place(dir: &Path) -> OsString {
    if let Ok(p) = dir.canonicalize() {
        return p.into_os_string();
    }
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            match parent.canonicalize() {
                Ok(p) => p.join(name).into_os_string(),
                Err(_) => std::path::absolute(dir)
                    .unwrap_or_else(|_| dir.to_path_buf())
                    .into_os_string(),
            }
        }
        _ => dir.as_os_str().to_os_string(),
    }
}

/// This user's restore seed (32 random bytes in `<data dir>/restore.seed`, mode 0600), made on
/// first use.
pub fn restore_seed(data_dir: &Path) -> Result<[u8; 32]> {
    if let Some(seed) = read_restore_seed(data_dir)? {
        return Ok(seed);
    }
    let path = data_dir.join("restore.seed");
    fsutil::create_private_dir_all(data_dir)
        .map_err(|e| Error::store(format!("cannot create {}", data_dir.display()), e))?;
    let seed: [u8; 32] = crypto::random_array()?;
    // Another process may have made it meanwhile: whichever was first is everyone's.
    fsutil::write_new_file_atomically(&path, &seed)
        .map_err(|e| Error::store(format!("cannot create {}", path.display()), e))?;
    read_restore_seed(data_dir)?.ok_or_else(|| Error::Store(format!("{} vanished", path.display())))
}

/// This user's restore seed if it was made already; never creates it.
pub fn read_restore_seed(data_dir: &Path) -> Result<Option<[u8; 32]>> {
    let path = data_dir.join("restore.seed");
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = fsutil::read_small_file(&path, 64)
        .map_err(|e| Error::store(format!("cannot read {}", path.display()), e))?;
    bytes
        .try_into()
        .map(Some)
        .map_err(|_| Error::Store(format!("{} is malformed", path.display())))
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

    /// The identity a new store at `store_dir` gets from a restore: derived from this user's
    /// restore seed and the store's path, so that a restore retried after a failure or a cancel
    /// presents the same device to the License Management Service instead of counting another.
    pub fn for_new_store(seed: &[u8; 32], store_dir: &Path) -> DeviceIdentity {
        let place = canonical_place(store_dir);
        let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"wmlicense v1 new store identity"), seed);
        let expand = |info: &[u8], out: &mut [u8]| {
            let mut full_info = info.to_vec();
            full_info.push(0);
            full_info.extend_from_slice(place.as_encoded_bytes());
            kdf.expand(&full_info, out)
                .expect("HKDF-SHA256 expands up to 8160 bytes");
        };
        let mut device_id = [0u8; 16];
        let mut key_seed = [0u8; 32];
        let mut storage_key = [0u8; 32];
        expand(b"device id", &mut device_id);
        expand(b"device key", &mut key_seed);
        expand(b"storage key", &mut storage_key);
        DeviceIdentity {
            device_id,
            keys: KeyPair::derive(&key_seed),
            storage_key,
        }
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
