//! The service's keys: one current key new backups are sealed to, and the older ones kept to
//! serve the backups sealed to them. Each is a file of mode 0600 in one directory.

use crate::crypto::{self, KeyPair};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::license::unix_now;
use std::path::{Path, PathBuf};

use super::ServiceKey;

/// Version 1 key file: magic, a random key ID, the X25519 secret key (the embedded service's
/// `service.key` of earlier releases).
const MAGIC_V1: &[u8; 8] = b"WMLSK\x00\x00\x01";
/// Version 2 key file: magic, creation time (i64 LE), the X25519 secret key. The key ID follows
/// from the public key ([`crypto::service_key_id`]).
const MAGIC_V2: &[u8; 8] = b"WMLSK\x00\x00\x02";
/// The first key of a directory: created without replacing, so that processes starting at once
/// agree on it.
const FIRST_KEY_FILE: &str = "initial.key";

/// One service key.
#[derive(Clone)]
pub struct ServiceKeyPair {
    pub key_id: [u8; 16],
    pub keys: KeyPair,
    pub created_at: i64,
    pub file: PathBuf,
}

impl ServiceKeyPair {
    pub fn public(&self) -> ServiceKey {
        ServiceKey {
            key_id: self.key_id,
            public_key: self.keys.public,
        }
    }

    /// True when a backup naming `key_id` is sealed to this key: its own ID, or the ID derived
    /// from its public key (a backup sealed to a pinned `ServiceKey`).
    fn answers_to(&self, key_id: &[u8; 16]) -> bool {
        self.key_id == *key_id || crypto::service_key_id(&self.keys.public) == *key_id
    }
}

/// All keys of a service, newest (current) last.
pub struct KeyRing {
    dir: PathBuf,
    keys: Vec<ServiceKeyPair>,
}

fn key_err(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::ServiceUnavailable(format!("service keys in {}: {what}: {e}", dir.display()))
}

impl KeyRing {
    /// Loads every `*.key` file of `dir`; with `create`, a directory without keys (or missing)
    /// gets its first key.
    pub fn open(dir: &Path, create: bool) -> Result<KeyRing> {
        if create {
            fsutil::create_private_dir_all(dir).map_err(|e| key_err(dir, "cannot create", e))?;
        }
        let mut ring = KeyRing::load(dir)?;
        if ring.keys.is_empty() && create {
            let bytes = encode_v2(&KeyPair::generate()?, unix_now());
            fsutil::write_new_file_atomically(&dir.join(FIRST_KEY_FILE), &bytes)
                .map_err(|e| key_err(dir, "cannot create the first key", e))?;
            ring = KeyRing::load(dir)?;
        }
        if ring.keys.is_empty() {
            return Err(key_err(dir, "no key", "the directory holds no *.key file"));
        }
        Ok(ring)
    }

    fn load(dir: &Path) -> Result<KeyRing> {
        let entries = std::fs::read_dir(dir).map_err(|e| key_err(dir, "cannot read", e))?;
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| key_err(dir, "cannot read", e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("key") {
                continue;
            }
            let bytes = fsutil::read_small_file(&path, 4096)
                .map_err(|e| key_err(dir, &format!("cannot read {}", path.display()), e))?;
            keys.push(decode(&bytes, &path).ok_or_else(|| {
                key_err(
                    dir,
                    &format!("{} is malformed", path.display()),
                    "bad length or magic",
                )
            })?);
        }
        keys.sort_by_key(|k| (k.created_at, k.key_id));
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// The key new backups are sealed to.
    pub fn current(&self) -> &ServiceKeyPair {
        self.keys.last().expect("a key ring is never empty")
    }

    /// The key a backup naming `key_id` is sealed to.
    pub fn find(&self, key_id: &[u8; 16]) -> Option<&ServiceKeyPair> {
        self.keys.iter().rev().find(|k| k.answers_to(key_id))
    }

    /// Every key, oldest first.
    pub fn all(&self) -> &[ServiceKeyPair] {
        &self.keys
    }

    /// Adds a new current key; older keys stay to serve their backups. Returns it.
    pub fn rotate(&mut self) -> Result<ServiceKeyPair> {
        let kp = KeyPair::generate()?;
        // Later than every key here, even with a clock that went back.
        let now = unix_now().max(self.current().created_at + 1);
        let id = crypto::service_key_id(&kp.public);
        let file = self
            .dir
            .join(format!("key-{now:012}-{}.key", super::hex(&id[..4])));
        match fsutil::write_new_file_atomically(&file, &encode_v2(&kp, now)) {
            Ok(true) => {}
            Ok(false) => return Err(key_err(&self.dir, "key file exists", file.display())),
            Err(e) => return Err(key_err(&self.dir, "cannot write the new key", e)),
        }
        *self = KeyRing::load(&self.dir)?;
        Ok(self.current().clone())
    }
}

fn encode_v2(kp: &KeyPair, created_at: i64) -> Vec<u8> {
    let mut b = MAGIC_V2.to_vec();
    b.extend_from_slice(&created_at.to_le_bytes());
    b.extend_from_slice(&kp.secret);
    b
}

fn decode(b: &[u8], path: &Path) -> Option<ServiceKeyPair> {
    if b.len() == 8 + 16 + 32 && &b[..8] == MAGIC_V1 {
        let keys = KeyPair::from_secret(b[24..56].try_into().ok()?).ok()?;
        return Some(ServiceKeyPair {
            key_id: b[8..24].try_into().ok()?,
            keys,
            created_at: 0,
            file: path.to_path_buf(),
        });
    }
    if b.len() == 8 + 8 + 32 && &b[..8] == MAGIC_V2 {
        let keys = KeyPair::from_secret(b[16..48].try_into().ok()?).ok()?;
        return Some(ServiceKeyPair {
            key_id: crypto::service_key_id(&keys.public),
            keys,
            created_at: i64::from_le_bytes(b[8..16].try_into().ok()?),
            file: path.to_path_buf(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_rotation_and_lookup() {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let dir = std::env::temp_dir().join(format!("wmlicense-keys-{}", super::super::hex(&id)));
        assert!(KeyRing::open(&dir, false).is_err());
        let mut ring = KeyRing::open(&dir, true).unwrap();
        let first = ring.current().clone();
        assert_eq!(
            KeyRing::open(&dir, true).unwrap().current().key_id,
            first.key_id
        );
        let second = ring.rotate().unwrap();
        assert_ne!(second.key_id, first.key_id);
        let ring = KeyRing::open(&dir, false).unwrap();
        assert_eq!(ring.current().key_id, second.key_id);
        assert_eq!(ring.all().len(), 2);
        assert_eq!(
            ring.find(&first.key_id).unwrap().keys.public,
            first.keys.public
        );
        assert!(ring.find(&[0; 16]).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&second.file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
