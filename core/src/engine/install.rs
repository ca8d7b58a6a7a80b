//! A store created by a restore is built in a staging directory beside its place and moved in
//! only when complete. A staging directory whose writer died (a crash, a kill) is swept by the
//! next restore to that place.

use super::Control;
use crate::error::{Error, Result};
use crate::fsutil::{self, FileLock};
use crate::identity::IDENTITY_FILE;
use crate::store::DB_FILE;
use std::fs;
use std::path::{Path, PathBuf};

/// A staging directory: removed unless its store was installed. Its name is
/// `.<store name>.<pid>.<16 hex digits>.tmp` beside the store's place, and it is locked (see
/// [`StagingLock`]) for as long as it is in use, so that a sweep can tell a live writer's from a
/// dead one's whatever the process, the namespace or the machine.
pub(super) struct Staging {
    dir: PathBuf,
    installed: bool,
    /// Where a discarded staging store's deletion is left, so that it does not hold up END.
    cancel: Control,
    lock: Option<StagingLock>,
}

/// What marks a staging directory as in use. Unix: flock on the directory itself. Windows, where
/// a directory cannot be locked and a file held open inside one stops its rename: a sibling file
/// with the same tag and the extension `lock` (`.<store name>.<pid>.<hex>.lock`), locked with
/// LockFileEx; it is created before the directory and removed only after it, so a staging
/// directory without one is a dead writer's too.
struct StagingLock {
    _lock: Option<FileLock>,
    #[cfg(windows)]
    file: PathBuf,
}

impl StagingLock {
    /// Creates the directory `making` and locks it; nobody else can have it.
    fn create(making: &Path) -> std::io::Result<StagingLock> {
        let taken = || std::io::Error::other(format!("{} is locked by another", making.display()));
        #[cfg(windows)]
        {
            let file = making.with_extension("lock");
            let lock =
                FileLock::try_lock(fsutil::create_private_file(&file)?)?.ok_or_else(taken)?;
            if let Err(e) = fsutil::create_private_dir_all(making) {
                let _ = fs::remove_file(&file);
                return Err(e);
            }
            Ok(StagingLock {
                _lock: Some(lock),
                file,
            })
        }
        #[cfg(not(windows))]
        {
            fsutil::create_private_dir_all(making)?;
            let lock = FileLock::try_lock(fs::File::open(making)?)?.ok_or_else(taken)?;
            Ok(StagingLock { _lock: Some(lock) })
        }
    }

    /// Locks the staging directory `dir` that a sweep found: `None` while its writer lives.
    fn try_claim(dir: &Path) -> std::io::Result<Option<StagingLock>> {
        #[cfg(windows)]
        {
            let file = dir.with_extension("lock");
            let lock = match fs::OpenOptions::new().write(true).open(&file) {
                Ok(f) => match FileLock::try_lock(f)? {
                    Some(lock) => Some(lock),
                    None => return Ok(None),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            Ok(Some(StagingLock { _lock: lock, file }))
        }
        #[cfg(not(windows))]
        {
            Ok(FileLock::try_lock(fs::File::open(dir)?)?.map(|l| StagingLock { _lock: Some(l) }))
        }
    }

    /// Called once the directory is gone: releases the lock (Windows: removes its file).
    fn release(self) {
        #[cfg(windows)]
        let _ = fs::remove_file(&self.file);
    }
}

impl Staging {
    /// Creates a fresh staging directory beside `store_dir` (creating the parent if needed).
    /// It is made and locked under another name (`….new`) that no sweep touches, then renamed:
    /// a sweep never sees it unlocked.
    pub(super) fn create(store_dir: &Path, cancel: &Control) -> Result<Staging> {
        let failed = |what: &Path, e: std::io::Error| {
            Error::io(
                format!("cannot create {}", what.display()),
                &e,
                Error::Store,
            )
        };
        if let Some(parent) = store_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::create_private_dir_all(parent).map_err(|e| failed(parent, e))?;
        }
        let dir = fsutil::temp_path_for(store_dir)
            .map_err(|e| Error::store("cannot name a staging directory", e))?;
        let making = dir.with_extension("new");
        let lock = StagingLock::create(&making).map_err(|e| failed(&making, e))?;
        if let Err(e) = fs::rename(&making, &dir) {
            let _ = fs::remove_dir_all(&making);
            lock.release();
            return Err(failed(&dir, e));
        }
        Ok(Staging {
            dir,
            installed: false,
            cancel: cancel.clone(),
            lock: Some(lock),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let lock = self.lock.take();
        if self.installed {
            // Its content was moved out and the directory removed.
            if let Some(lock) = lock {
                lock.release();
            }
        } else {
            // Renamed at once so that nothing takes it for a store being built; deleting a
            // large one takes a while, which is left for after END (locked until then).
            let hidden = self.dir.with_extension("discarded");
            let doomed = match fs::rename(&self.dir, &hidden) {
                Ok(()) => hidden,
                Err(_) => self.dir.clone(),
            };
            self.cancel.defer(move || {
                let _ = fs::remove_dir_all(doomed);
                if let Some(lock) = lock {
                    lock.release();
                }
            });
        }
    }
}

/// Whether `rest` (a name after its `.<store name>.` prefix) is `<pid>.<16 hex>.tmp`,
/// `….new` or `….discarded`: exactly what [`Staging`] names, and not a sibling store's staging directory
/// (`.<store name>.<suffix>.<pid>.<hex>.tmp`).
fn is_staging_tag(rest: &str) -> bool {
    let Some(tag) = rest
        .strip_suffix(".tmp")
        .or_else(|| rest.strip_suffix(".discarded"))
        .or_else(|| rest.strip_suffix(".new"))
    else {
        return false;
    };
    let Some((pid, hex)) = tag.split_once('.') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == 16
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes the staging directories beside `store_dir` whose writer died: nobody holds their
/// lock. A live writer's (in this process or any other) is locked and never touched.
pub(super) fn sweep_dead_staging(store_dir: &Path) {
    let (Some(parent), Some(name)) = (store_dir.parent(), store_dir.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        if !is_staging_tag(rest) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if let Ok(Some(dead)) = StagingLock::try_claim(&path) {
            // Deleted while locked: a writer starting now cannot pick it up.
            if fs::remove_dir_all(&path).is_ok() {
                dead.release();
            }
        }
    }
}

/// Moves the store built in `staging` into `store_dir` (which may exist already, e.g. the data
/// directory that also holds the embedded service). Nothing is replaced: if a store appeared at
/// `store_dir` while the restore ran, it is left as it is and the restore fails. The database
/// goes last: until it is in place, `store_dir` does not count as a store.
pub(super) fn install_staged_store(
    mut staging: Staging,
    store_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::io(
            format!("cannot move the new store into {}", store_dir.display()),
            &e,
            Error::Store,
        )
    };
    fsutil::create_private_dir_all(store_dir).map_err(fail)?;
    // No process creates a store here while the directory is locked (Store::open takes the same
    // lock to create one), so what is here now stays as it is until the database is in place.
    let _creating = FileLock::lock_dir(store_dir, cancelled).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            Error::Canceled
        } else {
            fail(e)
        }
    })?;
    let appeared = || {
        Error::BackupRestore(format!(
            "a license store appeared at {} while the restore ran; it was left as it is",
            store_dir.display()
        ))
    };
    if fs::symlink_metadata(store_dir.join(DB_FILE)).is_ok() {
        return Err(appeared());
    }
    // A write-ahead log without its database (a store whose database was deleted) would be
    // replayed into the new one. Nobody can be using it: its database is gone and no one can
    // create one here while the lock is held.
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(store_dir.join(format!("{DB_FILE}{suffix}")));
    }
    let mut names: Vec<_> = fs::read_dir(staging.path())
        .map_err(fail)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(fail)?;
    names.sort_by_key(|n| n == std::ffi::OsStr::new(DB_FILE));
    for name in names {
        let (src, dst) = (staging.path().join(&name), store_dir.join(&name));
        if fsutil::move_no_replace(&src, &dst).map_err(fail)? {
            continue;
        }
        // An earlier attempt at this place that died halfway left its identity, which is the
        // same (it is derived from the place): carry on with it.
        let same = name == IDENTITY_FILE
            && matches!((fs::read(&src), fs::read(&dst)), (Ok(a), Ok(b)) if a == b);
        if !same {
            return Err(appeared());
        }
    }
    staging.installed = true;
    let _ = fs::remove_dir_all(staging.path());
    fsutil::sync_dir(store_dir).map_err(|e| {
        Error::io(
            format!(
                "the restored store is in place in {}, but the directory could not be flushed \
                 to disk (a power loss may undo it)",
                store_dir.display()
            ),
            &e,
            Error::Store,
        )
    })
}
