//! Release: a store gives back its device's slot (and loses the licenses of the lineages it
//! held the slot for), or the holder of a backup resets every slot of its lineages. The
//! request ID of each is kept in the request journal ([`crate::journal`]) until the service's
//! answer arrived, so a retry finishes what the service decided.

use super::backup_dir::{backup_file_of, open_backup};
use super::{Control, Counters, ReleaseJob, Reporter};
use crate::error::{Error, Result};
use crate::format;
use crate::journal::JournalEntry;
use crate::service::{ReleaseRequest, ResetRequest};
use crate::store::Store;
use std::io::BufReader;
use std::path::Path;

pub fn release(
    job: &ReleaseJob,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    cancel.check()?;
    match &job.reset_from {
        Some(path) => reset(job, path, rep, cancel, c),
        None => release_device(job, rep, cancel, c),
    }
}

/// Frees every slot of the lineages of the backup at `path`; the store is not touched.
fn reset(
    job: &ReleaseJob,
    path: &Path,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    let file = backup_file_of(path);
    let header = format::read_header(&mut BufReader::new(open_backup(&file)?))?;
    // The request ID of a reset whose answer may have been lost is kept in the journal until
    // the service's answer arrives: a retry is then the same request (a new ID would be
    // refused as a second reset inside the window).
    let pending = JournalEntry::reset(&job.places.data_dir()?, &header.backup_id);
    let request_id = pending.request_id()?;
    let request = ResetRequest { request_id, header };
    let reply = job.places.ask(rep, cancel, c, |service, interrupt| {
        service.reset(&request, interrupt)
    });
    if !matches!(reply, Err(Error::ServiceUnavailable(_) | Error::Canceled)) {
        // The service answered: the request is decided either way.
        pending.forget();
    }
    let reply = reply?;
    c.devices_used = reply.devices.used;
    c.device_limit = reply.devices.limit;
    Ok(())
}

/// Gives back the store's slot in every lineage its device is counted for, then removes the
/// store's licenses of those lineages. Nothing changes unless the service released.
fn release_device(
    job: &ReleaseJob,
    rep: &mut dyn Reporter,
    cancel: &Control,
    c: &mut Counters,
) -> Result<()> {
    let store_dir = job.places.store_dir()?;
    if !Store::exists(&store_dir) {
        return Err(Error::FileNotFound(format!(
            "there is no license store at {}",
            store_dir.display()
        )));
    }
    let mut store = Store::open_existing(&store_dir)?;
    let identity = store.identity().clone();
    let pending = JournalEntry::release(&store_dir);
    let request_id = pending.request_id()?;
    let reply = job.places.ask(rep, cancel, c, |service, interrupt| {
        let key = service.service_key(interrupt)?;
        let request = ReleaseRequest::new(request_id, &identity, &key)?;
        service.release(&request, interrupt)
    });
    if matches!(reply, Err(ref e) if !matches!(e, Error::ServiceUnavailable(_) | Error::Canceled)) {
        // Refused: nothing was released, nothing is left to finish.
        pending.forget();
    }
    let reply = reply?;
    c.devices_used = reply.devices.used;
    c.device_limit = reply.devices.limit;
    // The service has released: the removal is not cancellable (it is quick), and until it
    // commits the pending request ID stays for a retry to finish it.
    if reply.lineages.is_empty() {
        c.unchanged = true;
    } else {
        store.remove_lineages(&reply.lineages)?;
    }
    pending.forget();
    Ok(())
}
