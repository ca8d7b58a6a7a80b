//! Backup and restore as plain Rust: they stream, report progress to a [`Reporter`], stop when
//! cancelled, and never leave a half-written backup or a half-applied restore behind.
//!
//! - [`progress`]: the clock that paces PROGRESS;
//! - [`backup_dir`]: a backup directory's writer lock and opening the backup a path names, for
//!   every operation;
//! - [`backup`]: one snapshot of a store into `licenses.wmlb`, atomically;
//! - [`restore`]: a backup into a store, in one transaction after it has authenticated;
//! - [`install`]: building a new store beside its place and moving it in; sweeping what dead
//!   writers left.

mod backup;
mod backup_dir;
mod install;
mod pipeline;
mod progress;
mod release;
mod restore;

pub use crate::operation::{Control, Counters, Event, Reporter};
pub use backup::backup;
pub use progress::PROGRESS_INTERVAL;
pub use release::release;
pub use restore::restore;

use crate::error::{Error, Result};
use crate::format::BACKUP_FILE;
use std::path::PathBuf;

/// Where an operation finds the default store and the embedded service.
#[derive(Clone, Debug, Default)]
pub struct Places {
    /// The store; `None`: the default store (the data directory).
    pub store_dir: Option<PathBuf>,
    /// The data directory; `None`: `$WMLICENSE_HOME` or the platform default.
    pub data_dir: Option<PathBuf>,
    /// The License Management Service; `None`: the embedded one in the data directory.
    pub service_url: Option<String>,
    /// The pinned public key new backups are sealed to (64 hex digits, `ServiceKey`); `None`:
    /// the service's current key.
    pub service_key: Option<String>,
}

impl Places {
    pub fn data_dir(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => crate::paths::default_data_dir(),
        }
    }

    pub fn store_dir(&self) -> Result<PathBuf> {
        match &self.store_dir {
            Some(d) => Ok(d.clone()),
            None => self.data_dir(),
        }
    }

    fn service(&self) -> Result<Box<dyn crate::service::LicenseService>> {
        crate::service::connect(self.service_url.as_deref(), &self.data_dir()?)
    }

    /// The key a backup is sealed to: the pinned `ServiceKey`, or the service's current key
    /// (fetched between CONNECTING and DISCONNECTING from a network service).
    fn backup_key(
        &self,
        rep: &mut dyn Reporter,
        cancel: &Control,
        c: &mut Counters,
    ) -> Result<crate::service::ServiceKey> {
        if let Some(k) = &self.service_key {
            return crate::service::ServiceKey::from_hex(k);
        }
        let service = self.service()?;
        if !service.is_remote() {
            return service.service_key(&|| cancel.is_set());
        }
        cancel.check()?;
        rep.event(Event::Connecting, c);
        let key = service.service_key(&|| cancel.is_set());
        rep.event(Event::Disconnecting, c);
        key
    }

    /// Asks the service, between CONNECTING and DISCONNECTING, with the cancel flag as its
    /// interrupt.
    fn ask<T>(
        &self,
        rep: &mut dyn Reporter,
        cancel: &Control,
        c: &mut Counters,
        f: impl FnOnce(&dyn crate::service::LicenseService, crate::service::Interrupt<'_>) -> Result<T>,
    ) -> Result<T> {
        cancel.check()?;
        rep.event(Event::Connecting, c);
        let answer = self
            .service()
            .and_then(|service| f(&*service, &|| cancel.is_set()));
        rep.event(Event::Disconnecting, c);
        answer
    }
}

/// A backup of the store at `places` into `<backup_dir>/licenses.wmlb`.
#[derive(Clone, Debug)]
pub struct BackupJob {
    pub places: Places,
    pub backup_dir: PathBuf,
    /// Replace a backup that is there already.
    pub overwrite: bool,
}

impl BackupJob {
    /// The backup file this job writes; `BackupExists` when one is there and the job may not
    /// overwrite it.
    pub fn refuse_existing_backup(&self) -> Result<PathBuf> {
        let target = self.backup_dir.join(BACKUP_FILE);
        if !self.overwrite && std::fs::symlink_metadata(&target).is_ok() {
            return Err(Error::BackupExists(target.display().to_string()));
        }
        Ok(target)
    }
}

/// A restore of the backup at `restore_path` (a directory holding `licenses.wmlb`, or the file)
/// into the store at `places`.
#[derive(Clone, Debug)]
pub struct RestoreJob {
    pub places: Places,
    pub restore_path: PathBuf,
    /// Create the store if it does not exist yet.
    pub individualize: bool,
    /// Do every check, change nothing.
    pub verify_only: bool,
}

/// A release of the device of the store at `places`, or (`reset_from`) a reset of every device
/// of the lineages of the backup there.
#[derive(Clone, Debug)]
pub struct ReleaseJob {
    pub places: Places,
    pub reset_from: Option<PathBuf>,
}
