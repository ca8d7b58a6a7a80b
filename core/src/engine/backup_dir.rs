//! A backup directory and the backup file in it, as every operation that reads or writes one
//! sees them: the lock a writer holds on the directory (and the sweep of what dead writers left),
//! and opening the backup a restore path names. Backup, restore and release all use these; none
//! of them imports another.

use crate::error::{Error, Result};
use crate::format::BACKUP_FILE;
use crate::fsutil::{self, FileLock};
use crate::sync::lock;
use once_cell::sync::Lazy;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Backup directories being written by this process: a second writer is refused.
static BACKUP_DIRS: Lazy<Mutex<HashSet<PathBuf>>> = Lazy::new(|| Mutex::new(HashSet::new()));

/// Holds a backup directory for one writer, in this process and across processes (an advisory
/// lock on `.licenses.wmlb.lock`, which a process that dies releases).
pub(super) struct BackupDirLock {
    dir: PathBuf,
    _file: FileLock,
}

impl BackupDirLock {
    /// Takes the directory; `Busy` when another writer has it. A restore sweeping the
    /// directory holds it for a moment only: that is waited for.
    pub(super) fn acquire(dir: &Path) -> Result<BackupDirLock> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(250);
        loop {
            if let Some(lock) = Self::try_acquire(dir)? {
                return Ok(lock);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Busy(format!(
                    "another backup is being written to {} right now",
                    dir.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Sweeps `dir` (see [`BackupDirLock::sweep_dead_writers`]) if no writer is at work there.
    /// Creates nothing: without a lock file no backup was ever written there.
    pub(super) fn sweep_if_idle(dir: &Path) {
        if !dir.join(format!(".{BACKUP_FILE}.lock")).is_file() {
            return;
        }
        if let Ok(Some(lock)) = Self::try_acquire(dir) {
            lock.sweep_dead_writers();
        }
    }

    /// Takes the directory, or `None` when another writer has it.
    fn try_acquire(dir: &Path) -> Result<Option<BackupDirLock>> {
        let dir = dir.canonicalize().map_err(|e| {
            Error::io(
                format!("cannot resolve {}", dir.display()),
                &e,
                Error::BackupRestore,
            )
        })?;
        if !lock(&BACKUP_DIRS).insert(dir.clone()) {
            return Ok(None);
        }
        let path = dir.join(format!(".{BACKUP_FILE}.lock"));
        let locked = fsutil::open_regular(
            &path,
            OpenOptions::new().create(true).truncate(false).write(true),
        )
        .and_then(FileLock::try_lock);
        match locked {
            Ok(Some(file)) => Ok(Some(BackupDirLock { dir, _file: file })),
            Ok(None) => {
                lock(&BACKUP_DIRS).remove(&dir);
                Ok(None)
            }
            Err(e) => {
                lock(&BACKUP_DIRS).remove(&dir);
                Err(Error::io(
                    format!("cannot lock {}", path.display()),
                    &e,
                    Error::BackupRestore,
                ))
            }
        }
    }

    /// Removes the temporary files that a backup writer which died (a crash, a kill, a power
    /// loss) left here. Only the holder of the lock may: no other writer is at work.
    pub(super) fn sweep_dead_writers(&self) {
        let prefix = format!(".{BACKUP_FILE}.");
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for BackupDirLock {
    fn drop(&mut self) {
        lock(&BACKUP_DIRS).remove(&self.dir);
    }
}

/// The backup file a restore path names.
pub(super) fn backup_file_of(restore_path: &Path) -> PathBuf {
    if restore_path.is_dir() {
        restore_path.join(BACKUP_FILE)
    } else {
        restore_path.to_path_buf()
    }
}

/// Opens the backup at `path`: a missing file is `FileNotFound`, anything but a regular file
/// (a FIFO, a device) is not a backup, and nothing here blocks.
pub(super) fn open_backup(path: &Path) -> Result<File> {
    fsutil::open_regular_read(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => {
            Error::FileNotFound(format!("there is no backup at {}", path.display()))
        }
        ErrorKind::InvalidInput => Error::corrupt(format!(
            "{} is not a regular file, so not a backup",
            path.display()
        )),
        _ => Error::io(
            format!("cannot open {}", path.display()),
            &e,
            Error::BackupRestore,
        ),
    })
}
