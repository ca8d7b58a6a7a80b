//! Backup: one snapshot of a store into `<backup dir>/licenses.wmlb`, through a temporary file,
//! fsync, rename and a flush of the directory. A failed or cancelled backup leaves the previous
//! backup as it was and nothing that could be taken for a backup.

use super::backup_dir::BackupDirLock;
use super::pipeline::{self, Feed};
use super::progress::ProgressClock;
use super::{BackupJob, Control, Counters, Event, Reporter};
use crate::crypto::{self, SealedKey, SecretSealer};
use crate::error::{Error, Result};
use crate::format::{BackupWriter, Header, DEFAULT_CHUNK_SIZE, MAX_BACKUP_LINEAGES, VERSION};
use crate::fsutil;
use crate::license::{unix_now, LicenseRef};
use crate::store::Store;
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A temporary file that is removed unless it was moved into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn open_source_store(dir: &Path) -> Result<Store> {
    Store::open_existing(dir).map_err(|e| match e {
        Error::NotFound(m) => Error::FileNotFound(m),
        other => other,
    })
}

/// Writes `<backup_dir>/licenses.wmlb` from one snapshot of the store, atomically.
pub fn backup(
    job: &BackupJob,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    cancel.check()?;
    fsutil::create_private_dir_all(&job.backup_dir).map_err(|e| {
        Error::io(
            format!(
                "cannot create the backup directory {}",
                job.backup_dir.display()
            ),
            &e,
            Error::BackupRestore,
        )
    })?;
    let dir_lock = BackupDirLock::acquire(&job.backup_dir)?;
    dir_lock.sweep_dead_writers();
    let target = job.refuse_existing_backup()?;
    let store = open_source_store(&job.places.store_dir()?)?;
    cancel.watch(&store)?;
    let key = job.places.backup_key(rep, cancel, c)?;
    cancel.check()?;

    let tmp_path = fsutil::temp_path_for(&target)
        .map_err(|e| Error::BackupRestore(format!("cannot name a temporary file: {e}")))?;
    let file = fsutil::create_private_file(&tmp_path).map_err(|e| {
        Error::io(
            format!("cannot create {}", tmp_path.display()),
            &e,
            Error::BackupRestore,
        )
    })?;
    let mut tmp = TempFile {
        path: tmp_path,
        keep: false,
    };
    let lineage_id = store.lineage_id();
    let device_id = store.identity().device_id;
    let write_failed =
        |e: &std::io::Error| Error::io("cannot write the backup", e, Error::BackupRestore);

    // One snapshot: this thread reads the header's figures from it, then a helper thread steps
    // through the licenses (SQLite) while this one opens the content keys, seals the chunks,
    // writes the file and reports every event.
    store.begin_read()?;
    let (total, backed_up, mut lineages) = store.current_snapshot().backup_summary()?;
    let sealer = SecretSealer::new(&store.identity().storage_key)?;
    let stop = cancel.clone();
    let scan = move |feed: &mut Feed| -> Result<()> {
        store.current_snapshot().for_each_sealed(|l, lineage| {
            let batch = feed.batch();
            let index = batch.lineage_index(lineage);
            batch.push_with(l, index, |out| {
                out.extend_from_slice(l.content_key);
                Ok(())
            })?;
            if batch.is_full() {
                stop.check()?;
                feed.ship()?;
            }
            Ok(true)
        })?;
        store.end_read()
    };
    let ((), out) = pipeline::produce_on_helper(scan, |drain| {
        c.total = total;
        let data_key: [u8; 32] = crypto::random_array()?;
        // Every license keeps its own lineage: the header lists them all (ascending), each
        // record names its own by index.
        if lineages.is_empty() {
            lineages.push(lineage_id);
        }
        if lineages.len() > MAX_BACKUP_LINEAGES {
            return Err(Error::InvalidArg(format!(
                "the store's licenses come from {} lineages; a backup holds at most \
                 {MAX_BACKUP_LINEAGES}",
                lineages.len()
            )));
        }
        let mut header = Header {
            version: VERSION,
            backup_id: crypto::random_array()?,
            lineage_id,
            source_device_id: device_id,
            created_at: unix_now(),
            license_count: backed_up,
            service_key_id: key.key_id,
            chunk_size: DEFAULT_CHUNK_SIZE,
            lineages,
            sealed_data_key: SealedKey {
                encapped: [0; 32],
                ciphertext: [0; 48],
            },
        };
        header.seal_data_key(&key.public_key, &data_key)?;
        let mut writer = BackupWriter::new(
            BufWriter::with_capacity(256 * 1024, fsutil::WritebackFile::new(file)),
            &header,
            &data_key,
        )?;
        c.streaming = true;
        let mut clock = ProgressClock::new();
        let mut content_key = Vec::with_capacity(64);
        while let Some(batch) = drain.next()? {
            for (l, index) in batch.iter() {
                clock.tick(rep, cancel, c)?;
                if !l.may_back_up() {
                    c.skipped += 1;
                    rep.event(
                        Event::Restricted {
                            key_id: l.key_id,
                            title: l.title,
                        },
                        c,
                    );
                    continue;
                }
                // The header's lineages come from the same snapshot: every one is there.
                let lineage = header
                    .lineages
                    .binary_search(batch.lineage(index))
                    .map_err(|_| {
                        Error::Internal(
                            "a license's lineage is missing from the backup header".into(),
                        )
                    })?;
                content_key.clear();
                sealer.open_into(l.key_id, l.content_key, &mut content_key)?;
                writer.push_ref(
                    &LicenseRef {
                        content_key: &content_key,
                        ..l
                    },
                    lineage as u16,
                )?;
                c.processed += 1;
            }
            drain.recycle(batch);
        }
        cancel.check()?;
        writer.finish()
    })?;
    drop(out.into_inner().map_err(|e| write_failed(e.error()))?);
    // Flushing a large file can take a while: a cancel ends the wait (the flush finishes on its
    // own, and the temporary file goes with this operation).
    fsutil::sync_file_cancellable(&tmp.path, &|| cancel.is_set()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            Error::Canceled
        } else {
            write_failed(&e)
        }
    })?;
    // Moving the file into place is the commit point: up to here a cancel leaves the previous
    // backup in place.
    cancel.check()?;
    if job.overwrite {
        fs::rename(&tmp.path, &target).map_err(|e| {
            Error::io(
                "cannot move the backup into place",
                &e,
                Error::BackupRestore,
            )
        })?;
    } else if !fsutil::move_no_replace(&tmp.path, &target).map_err(|e| {
        Error::io(
            "cannot move the backup into place",
            &e,
            Error::BackupRestore,
        )
    })? {
        // A backup appeared after the check at the start: it is left as it is.
        return Err(Error::BackupExists(target.display().to_string()));
    }
    tmp.keep = true;
    fsutil::sync_dir(&job.backup_dir).map_err(|e| {
        Error::io(
            format!(
                "the new backup is in place in {}, but the directory could not be flushed to disk \
                 (a power loss may undo it)",
                job.backup_dir.display()
            ),
            &e,
            Error::BackupRestore,
        )
    })?;
    drop(dir_lock);
    Ok(())
}
