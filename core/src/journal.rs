//! The request journal: requests to the License Management Service whose answer may be lost
//! (a dropped connection, a cancel, a crash) are written down before they are sent, so that a
//! retry is the same request. The service answers a replayed request ID the way it answered the
//! first time, so nothing is counted twice and a decided release or reset can be finished.
//!
//! One entry is one small file; the names and contents are those earlier versions wrote, so an
//! entry an earlier version left is read as it is:
//! - a lineage reset: `<data dir>/.reset-<backup ID in hex>.pending`, the 16-byte request ID;
//! - a release of a store's device: `<store>/release.pending`, the 16-byte request ID;
//! - a restore into a store that does not exist yet: `<parent>/.<store name>.pending`, the new
//!   store's device identity, the backup it restores and the request ID ([`PendingIdentity`]).

use crate::crypto;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::identity::{DeviceIdentity, FILE_LEN};
use crate::service::hex;
use std::path::{Path, PathBuf};

/// The name of a release's entry inside its store.
pub const RELEASE_ENTRY: &str = "release.pending";

/// Which request an entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A reset of every device of a backup's lineages.
    Reset,
    /// A release of a store's own device.
    Release,
    /// A restore into a store it creates (the new store's device).
    NewStore,
}

/// One entry of the journal: the file a request is kept in until its answer arrived.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    kind: RequestKind,
    path: PathBuf,
}

impl JournalEntry {
    /// The entry of a reset of the lineages of backup `backup_id`, kept in the data directory.
    pub fn reset(data_dir: &Path, backup_id: &[u8; 16]) -> JournalEntry {
        JournalEntry {
            kind: RequestKind::Reset,
            path: data_dir.join(format!(".reset-{}.pending", hex(backup_id))),
        }
    }

    /// The entry of a release of the device of the store in `store_dir`.
    pub fn release(store_dir: &Path) -> JournalEntry {
        JournalEntry {
            kind: RequestKind::Release,
            path: store_dir.join(RELEASE_ENTRY),
        }
    }

    /// The entry of a restore creating a store at `store_dir`: beside it, since the store does
    /// not exist yet.
    pub fn new_store(store_dir: &Path) -> JournalEntry {
        let name = store_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        JournalEntry {
            kind: RequestKind::NewStore,
            path: store_dir.with_file_name(format!(".{name}.pending")),
        }
    }

    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a request is pending here (a file of any kind at the entry's place counts).
    pub fn is_pending(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok()
    }

    /// The request ID of a reset or release: the one recorded by an earlier attempt, or a fresh
    /// one, recorded before it is returned (so before it can be sent). An entry that is not a
    /// request ID (truncated by a crash while being written the first time) is replaced.
    pub fn request_id(&self) -> Result<[u8; 16]> {
        debug_assert_ne!(self.kind, RequestKind::NewStore);
        if let Ok(bytes) = fsutil::read_small_file(&self.path, 64) {
            if let Ok(id) = <[u8; 16]>::try_from(bytes.as_slice()) {
                return Ok(id);
            }
        }
        let id: [u8; 16] = crypto::random_array()?;
        if let Some(parent) = self.path.parent() {
            if !parent.is_dir() {
                fsutil::create_private_dir_all(parent).map_err(|e| self.write_error(&e))?;
            }
        }
        self.replace(&id)?;
        Ok(id)
    }

    /// The service answered: the request is decided and is not sent again.
    pub fn forget(&self) {
        if std::fs::remove_file(&self.path).is_ok() {
            if let Some(parent) = self.path.parent() {
                let _ = fsutil::sync_dir(parent);
            }
        }
    }

    fn read(&self, max: u64) -> Result<Option<Vec<u8>>> {
        if !self.is_pending() {
            return Ok(None);
        }
        fsutil::read_small_file(&self.path, max)
            .map(Some)
            .map_err(|e| Error::store(format!("cannot read {}", self.path.display()), e))
    }

    fn replace(&self, bytes: &[u8]) -> Result<()> {
        fsutil::replace_file_atomically(&self.path, bytes).map_err(|e| self.write_error(&e))
    }

    /// Records `bytes` unless an entry is there already; `false` then.
    fn record_new(&self, bytes: &[u8]) -> Result<bool> {
        fsutil::write_new_file_atomically(&self.path, bytes).map_err(|e| self.write_error(&e))
    }

    fn write_error(&self, e: &std::io::Error) -> Error {
        Error::io(
            format!("cannot write {}", self.path.display()),
            e,
            Error::Store,
        )
    }
}

/// The identity a restore gives a store it creates, and the request ID it asks the License
/// Management Service with, kept (mode 0600) in the store's journal entry from the first attempt
/// until the store is installed. A retry after a failure, a cancel or a crash presents the same
/// device with the same request ID, so it is never counted twice; once the store is installed
/// the entry is gone, and the store's own identity file carries the device.
pub struct PendingIdentity {
    pub identity: DeviceIdentity,
    /// The backup the request ID was used for: another backup gets a new request ID.
    pub backup_id: [u8; 16],
    pub request_id: [u8; 16],
}

const PENDING_MAGIC: &[u8; 8] = b"WMLPD\x00\x00\x01";
const PENDING_LEN: usize = 8 + FILE_LEN + 16 + 16;

impl PendingIdentity {
    /// The pending identity for `store_dir`, if an earlier attempt left one (never creates it).
    pub fn load(store_dir: &Path) -> Result<Option<PendingIdentity>> {
        let entry = JournalEntry::new_store(store_dir);
        let Some(bytes) = entry.read(4096)? else {
            return Ok(None);
        };
        if bytes.len() != PENDING_LEN || &bytes[..8] != PENDING_MAGIC {
            return Err(Error::Store(format!(
                "{} is not a wmlicense pending identity",
                entry.path().display()
            )));
        }
        let identity = DeviceIdentity::decode(&bytes[8..8 + FILE_LEN], entry.path())?;
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
    /// restored another backup), else a fresh random one, recorded before it is used.
    pub fn for_restore(store_dir: &Path, backup_id: [u8; 16]) -> Result<PendingIdentity> {
        let entry = JournalEntry::new_store(store_dir);
        if let Some(mut pending) = Self::load(store_dir)? {
            if pending.backup_id != backup_id {
                pending.backup_id = backup_id;
                pending.request_id = crypto::random_array()?;
                entry.replace(&pending.encode())?;
            }
            return Ok(pending);
        }
        let fresh = PendingIdentity {
            identity: DeviceIdentity::generate()?,
            backup_id,
            request_id: crypto::random_array()?,
        };
        if entry.record_new(&fresh.encode())? {
            return Ok(fresh);
        }
        // Another attempt at the same place was first: everyone uses its identity.
        Self::load(store_dir)?
            .ok_or_else(|| Error::Store(format!("{} vanished", entry.path().display())))
    }

    /// After a definite refusal: the next attempt asks anew (a freed slot or a raised limit
    /// can change the answer, which a replayed request ID never would), as the same device.
    pub fn renew_request(store_dir: &Path) -> Result<()> {
        let Some(mut pending) = Self::load(store_dir)? else {
            return Ok(());
        };
        pending.request_id = crypto::random_array()?;
        JournalEntry::new_store(store_dir).replace(&pending.encode())
    }

    /// Forgets the pending identity of `store_dir` (its store is installed).
    pub fn remove(store_dir: &Path) {
        JournalEntry::new_store(store_dir).forget();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let d = std::env::temp_dir().join(format!(
            "wmlicense-journal-{tag}-{:016x}",
            u64::from_le_bytes(id)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The files are where earlier versions put them, so their entries are found.
    #[test]
    fn entries_keep_the_names_earlier_versions_wrote() {
        let d = Path::new("/x/data");
        assert_eq!(
            JournalEntry::reset(d, &[0xab; 16]).path(),
            Path::new("/x/data/.reset-abababababababababababababababab.pending")
        );
        assert_eq!(
            JournalEntry::release(Path::new("/x/store")).path(),
            Path::new("/x/store/release.pending")
        );
        assert_eq!(
            JournalEntry::new_store(Path::new("/x/store")).path(),
            Path::new("/x/.store.pending")
        );
    }

    #[test]
    fn a_request_id_is_recorded_before_use_and_replayed_until_forgotten() {
        let dir = temp_dir("id");
        let data = dir.join("data");
        let entry = JournalEntry::reset(&data, &[7; 16]);
        assert!(!entry.is_pending());
        // The data directory does not exist yet: the entry creates it.
        let first = entry.request_id().unwrap();
        assert_eq!(std::fs::read(entry.path()).unwrap(), first);
        assert_eq!(entry.request_id().unwrap(), first);
        entry.forget();
        assert!(!entry.is_pending());
        assert_ne!(entry.request_id().unwrap(), first);
        std::fs::remove_dir_all(dir).ok();
    }

    /// An entry left by an earlier version (the bare 16 bytes) is its request ID; a torn one is
    /// replaced by a fresh ID.
    #[test]
    fn an_entry_written_earlier_is_read_and_a_torn_one_replaced() {
        let dir = temp_dir("old");
        std::fs::write(dir.join("release.pending"), [9u8; 16]).unwrap();
        let entry = JournalEntry::release(&dir);
        assert!(entry.is_pending());
        assert_eq!(entry.request_id().unwrap(), [9u8; 16]);
        std::fs::write(entry.path(), [1u8; 5]).unwrap();
        let fresh = entry.request_id().unwrap();
        assert_eq!(std::fs::read(entry.path()).unwrap(), fresh);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_pending_identity_survives_a_retry_and_renews_only_its_request() {
        let dir = temp_dir("identity");
        let store = dir.join("store");
        let first = PendingIdentity::for_restore(&store, [1; 16]).unwrap();
        let again = PendingIdentity::for_restore(&store, [1; 16]).unwrap();
        assert_eq!(again.identity.device_id, first.identity.device_id);
        assert_eq!(again.request_id, first.request_id);
        PendingIdentity::renew_request(&store).unwrap();
        let renewed = PendingIdentity::load(&store).unwrap().unwrap();
        assert_eq!(renewed.identity.device_id, first.identity.device_id);
        assert_ne!(renewed.request_id, first.request_id);
        // Another backup: the same device, a new request.
        let other = PendingIdentity::for_restore(&store, [2; 16]).unwrap();
        assert_eq!(other.identity.device_id, first.identity.device_id);
        assert_ne!(other.request_id, renewed.request_id);
        assert!(dir.join(".store.pending").is_file());
        PendingIdentity::remove(&store);
        assert!(PendingIdentity::load(&store).unwrap().is_none());
        // Not a pending identity: an error, not a new device.
        std::fs::write(dir.join(".store.pending"), b"nonsense").unwrap();
        assert!(matches!(
            PendingIdentity::load(&store),
            Err(Error::Store(_))
        ));
        std::fs::remove_dir_all(dir).ok();
    }
}
