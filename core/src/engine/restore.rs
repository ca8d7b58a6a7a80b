//! Restore: a backup into a store, in one transaction that commits only after the whole backup
//! has authenticated and the License Management Service has granted it.

use super::backup_dir::{backup_file_of, open_backup, BackupDirLock};
use super::install::{self, Staging};
use super::pipeline::{self, Feed};
use super::progress::ProgressClock;
use super::{Control, Counters, Event, Reporter, RestoreJob};
use crate::crypto;
use crate::crypto::SecretSealer;
use crate::error::{Error, Result};
use crate::format::{self, BackupReader, BackupVerifier};
use crate::identity::DeviceIdentity;
use crate::journal::{JournalEntry, PendingIdentity};
use crate::license::unix_now;
use crate::service::{Grant, GrantRequest};
use crate::store::{ImportMode, Store};
use std::fs::File;
use std::io::BufReader;

/// Where restored licenses go.
enum Target {
    Existing(Store),
    /// A store being created by this restore: built in `staging`, moved to its place on success.
    New {
        store: Store,
        staging: Staging,
    },
    /// VERIFY_ONLY into a store that does not exist: a throwaway identity, no files.
    Ephemeral(DeviceIdentity),
}

/// Restores a backup into a store in one transaction that commits only after the whole backup
/// has authenticated.
pub fn restore(
    job: &RestoreJob,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    cancel.check()?;
    if job.restore_path.is_dir() && !job.verify_only {
        // An operation on a backup directory sweeps what a dead backup writer left there,
        // unless a live one is at work (a backup starting meanwhile waits for the sweep).
        BackupDirLock::sweep_if_idle(&job.restore_path);
    }
    let path = backup_file_of(&job.restore_path);
    let mut input = BufReader::with_capacity(256 * 1024, open_backup(&path)?);
    let header = format::read_header(&mut input)?;

    let store_dir = job.places.store_dir()?;
    if !job.verify_only {
        install::sweep_dead_staging(&store_dir);
    }
    let mut request_id = None;
    let target = if Store::exists(&store_dir) {
        if !job.verify_only && JournalEntry::release(&store_dir).is_pending() {
            // The service may have released this device while the store kept the licenses: a
            // grant now would count the device again and the release's retry would not know.
            return Err(Error::Busy(format!(
                "a release of the store {} has not finished; release it again before restoring \
                 into it",
                store_dir.display()
            )));
        }
        Target::Existing(Store::open_existing(&store_dir)?)
    } else if !job.individualize {
        return Err(Error::NeedsIndividualization(
            store_dir.display().to_string(),
        ));
    } else if job.verify_only {
        // A dry run writes nothing: the device an earlier attempt at this place presented, or
        // a throwaway one (a store created here would be a new device).
        Target::Ephemeral(match PendingIdentity::load(&store_dir)? {
            Some(pending) => pending.identity,
            None => DeviceIdentity::generate()?,
        })
    } else {
        let staging = Staging::create(&store_dir, cancel)?;
        // A fresh random device, kept beside the place until the store is installed, so that a
        // retry after a failure or a cancel is the same device with the same request ID.
        let pending = PendingIdentity::for_restore(&store_dir, header.backup_id)?;
        pending.identity.save_new(staging.path())?;
        request_id = Some(pending.request_id);
        // A new store has its own lineage; the licenses it receives keep theirs.
        let store = Store::create_staged(staging.path())?;
        Target::New { store, staging }
    };
    if let Target::Existing(s) | Target::New { store: s, .. } = &target {
        cancel.watch(s)?;
    }
    let identity = match &target {
        Target::Existing(s) | Target::New { store: s, .. } => s.identity().clone(),
        Target::Ephemeral(id) => id.clone(),
    };

    let request = GrantRequest {
        request_id: match request_id {
            Some(id) => id,
            None => crypto::random_array()?,
        },
        header: header.clone(),
        device_id: identity.device_id,
        device_public_key: identity.keys.public,
        dry_run: job.verify_only,
    };
    let granted = job.places.ask(rep, cancel, c, |service, interrupt| {
        service.grant(&request, interrupt)
    });
    let grant = match granted {
        Ok(reply) => {
            c.devices_used = reply.devices.used;
            c.device_limit = reply.devices.limit;
            reply.grant
        }
        Err(e) => {
            if let Error::RestoreFraud {
                help_url,
                devices_used,
                device_limit,
                ..
            } = &e
            {
                c.devices_used = *devices_used;
                c.device_limit = *device_limit;
                if let Some(url) = help_url {
                    rep.event(Event::ErrorWithUrl(url), c);
                }
                if matches!(target, Target::New { .. }) {
                    PendingIdentity::renew_request(&store_dir)?;
                }
            }
            return Err(e);
        }
    };
    cancel.check()?;
    let wrong_grant = || {
        Error::BackupRestore(
            "the License Management Service answered with another kind of grant than asked for"
                .into(),
        )
    };
    let interrupt = cancel.clone();
    let interrupt: Box<dyn Fn() -> bool + Send> = Box::new(move || interrupt.is_set());
    if job.verify_only {
        // A dry run never gets the data key: a version 2 backup is checked chunk by chunk with
        // its verify key, a version 1 backup (no verify key) by its framing only.
        let verify_key = match (grant, header.version) {
            (Grant::VerifyKey(sealed), v) if v != format::VERSION_1 => {
                Some(request.open_verify_grant(&identity.keys.secret, &sealed)?)
            }
            (Grant::Verdict, format::VERSION_1) => None,
            _ => return Err(wrong_grant()),
        };
        // The service opened the data key with the header as associated data: from here on
        // the header's count is authenticated and may be reported.
        c.total = header.license_count;
        c.streaming = true;
        let mut verifier =
            BackupVerifier::new(input, &header, verify_key.as_ref())?.with_interrupt(interrupt);
        let mut clock = ProgressClock::new();
        while let Some(n) = verifier.next_chunk()? {
            c.processed += n;
            clock.tick(rep, cancel, c)?;
        }
        return cancel.check();
    }
    let Grant::DataKey(sealed) = grant else {
        return Err(wrong_grant());
    };
    let data_key = request.open_grant(&identity.keys.secret, &sealed)?;
    // The service opened the data key with the header as associated data: from here on the
    // header's count is authenticated and may be reported.
    c.total = header.license_count;
    let reader = BackupReader::new(input, &header, &data_key).with_interrupt(interrupt);
    match target {
        Target::Existing(mut store) => import(reader, &mut store, rep, cancel, c)?,
        Target::New { mut store, staging } => {
            // Nobody sees the staging store: it fills without a journal and is flushed once.
            store.begin_bulk_load()?;
            import(reader, &mut store, rep, cancel, c)?;
            // The new store exists only once installed: until then a cancel still discards
            // it. The flush (the slow part of finishing a large store) ends at a cancel.
            cancel.check()?;
            store.end_bulk_load(&|| cancel.is_set())?;
            cancel.check()?;
            drop(store);
            install::install_staged_store(staging, &store_dir, &|| cancel.is_set())?;
            PendingIdentity::remove(&store_dir);
        }
        Target::Ephemeral(_) => return Err(Error::Internal("a restore without a store".into())),
    }
    Ok(())
}

/// Imports every license of an authenticated backup into `store`, each with its own lineage, in
/// one transaction. A helper thread reads, authenticates and decrypts the chunks and seals each
/// content key for the store; this thread writes the rows. Expired licenses are skipped, and a
/// newer copy already in the store wins. The transaction commits only after every chunk
/// authenticated and the count matched.
fn import(
    mut reader: BackupReader<BufReader<File>>,
    store: &mut Store,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    let sealer = SecretSealer::new(&store.identity().storage_key)?;
    let now = unix_now();
    let stop = cancel.clone();
    let produce = |feed: &mut Feed| -> Result<()> {
        while let Some((l, lineage)) = reader.next_ref()? {
            let batch = feed.batch();
            if l.is_expired(now) {
                batch.dropped += 1;
                continue;
            }
            let index = batch.lineage_index(&lineage);
            batch.push_with(&l, index, |out| {
                sealer.seal_into(l.key_id, l.content_key, out)
            })?;
            if batch.is_full() {
                if stop.is_set() {
                    return Err(Error::Canceled);
                }
                feed.ship()?;
            }
        }
        Ok(())
    };
    c.streaming = true;
    let cancelled = cancel.clone();
    store.import(ImportMode::Write, &move || cancelled.is_set(), |imp| {
        let mut clock = ProgressClock::new();
        pipeline::produce_on_helper(produce, |drain| {
            while let Some(batch) = drain.next()? {
                for (l, index) in batch.iter() {
                    if imp.put_sealed_if_newer(&l, batch.lineage(index))? {
                        c.processed += 1;
                    } else {
                        c.skipped += 1;
                    }
                    clock.tick(rep, cancel, c)?;
                }
                c.skipped += batch.dropped;
                drain.recycle(batch);
            }
            Ok(())
        })?;
        // Every chunk authenticated and the count matched: only now may an import commit.
        cancel.check()
    })
}
