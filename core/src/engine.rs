//! Backup and restore as plain Rust: they stream, report progress to a `Reporter`, stop when
//! it says so, and never leave a half-written backup or a half-applied restore behind.

use crate::crypto::{self, SealedKey};
use crate::error::{Error, Result};
use crate::format::{self, BackupReader, BackupWriter, Header, BACKUP_FILE, DEFAULT_CHUNK_SIZE};
use crate::fsutil;
use crate::identity::DeviceIdentity;
use crate::license::{unix_now, License};
use crate::service::{self, GrantRequest};
use crate::store::{ImportMode, Store};
use once_cell::sync::Lazy;
use rusqlite::InterruptHandle;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an operation reports while it runs (END is the caller's to send).
#[derive(Debug)]
pub enum Event<'a> {
    Connecting,
    Disconnecting,
    ErrorWithUrl(&'a str),
    Progress,
    Restricted {
        key_id: &'a [u8],
        title: Option<&'a str>,
    },
}

/// Counts carried by PROGRESS and END.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Licenses written (backup) / imported (restore).
    pub processed: u64,
    /// Licenses in the operation.
    pub total: u64,
    /// Restricted (backup) / kept-newer or expired (restore).
    pub skipped: u64,
    /// True once licenses started to flow: a final PROGRESS precedes END from then on.
    pub streaming: bool,
}

/// Receives the events of a running operation.
pub trait Reporter {
    fn event(&mut self, event: Event<'_>, counters: &Counters);
}

/// Cancellation of one operation: a flag checked between steps and per license, plus the SQLite
/// connections to interrupt so that a long statement (the snapshot's count, a commit) stops at
/// once instead of running to its end.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    set: AtomicBool,
    interrupts: Mutex<Vec<InterruptHandle>>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Requests cancellation; safe from any thread, any number of times.
    pub fn cancel(&self) {
        self.inner.set.store(true, Ordering::Release);
        for handle in crate::sync::lock(&self.inner.interrupts).iter() {
            handle.interrupt();
        }
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::Acquire)
    }

    /// `Err(Canceled)` once cancellation was requested.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            Err(Error::Canceled)
        } else {
            Ok(())
        }
    }

    /// From now on, a cancel also interrupts the statement `store` is running.
    fn watch(&self, store: &Store) -> Result<()> {
        crate::sync::lock(&self.inner.interrupts).push(store.interrupt_handle());
        // A cancel that came before the handle was registered is seen here.
        self.check()
    }
}

/// Minimum time between two PROGRESS events.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

struct ProgressClock {
    last: Instant,
    calls: u32,
}

impl ProgressClock {
    fn new() -> ProgressClock {
        ProgressClock {
            last: Instant::now(),
            calls: 0,
        }
    }

    /// Checks for cancellation and, at most every 100 ms, reports PROGRESS.
    fn tick(&mut self, rep: &mut dyn Reporter, cancel: &Cancel, c: &Counters) -> Result<()> {
        cancel.check()?;
        self.calls = self.calls.wrapping_add(1);
        if self.calls % 32 == 0 && self.last.elapsed() >= PROGRESS_INTERVAL {
            rep.event(Event::Progress, c);
            self.last = Instant::now();
        }
        Ok(())
    }
}

pub struct BackupJob {
    /// `None`: the default store.
    pub store_dir: Option<PathBuf>,
    pub backup_dir: PathBuf,
    pub overwrite: bool,
    pub service_url: Option<String>,
}

impl BackupJob {
    /// The backup file this job writes; `BackupExists` when one is there and the job may not
    /// overwrite it.
    pub fn refuse_existing_backup(&self) -> Result<PathBuf> {
        let target = self.backup_dir.join(BACKUP_FILE);
        if !self.overwrite && target.exists() {
            return Err(Error::BackupExists(target.display().to_string()));
        }
        Ok(target)
    }
}

/// Removes temporary files that a backup writer which died (a crash, a power loss) left in
/// `dir`. Called under the directory's lock, when no other writer can be at work there; on
/// platforms without the cross-process lock nothing is removed.
fn sweep_stale_temp_files(dir: &Path) {
    if !cfg!(unix) {
        return;
    }
    let prefix = format!(".{BACKUP_FILE}.");
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

pub struct RestoreJob {
    /// `None`: the default store.
    pub store_dir: Option<PathBuf>,
    pub restore_path: PathBuf,
    pub individualize: bool,
    pub verify_only: bool,
    pub service_url: Option<String>,
}

/// Backup directories being written by this process: a second writer is refused.
static BACKUP_DIRS: Lazy<Mutex<HashSet<PathBuf>>> = Lazy::new(|| Mutex::new(HashSet::new()));

/// Holds a backup directory for one writer, in this process and, on Unix, across processes
/// (an advisory lock on `.licenses.wmlb.lock`).
struct BackupDirLock {
    dir: PathBuf,
    _file: File,
}

impl BackupDirLock {
    fn acquire(dir: &Path) -> Result<BackupDirLock> {
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::BackupRestore(format!("cannot resolve {}: {e}", dir.display())))?;
        let busy = || {
            Error::Busy(format!(
                "another backup is being written to {} right now",
                dir.display()
            ))
        };
        if !crate::sync::lock(&BACKUP_DIRS).insert(dir.clone()) {
            return Err(busy());
        }
        let release = |dir: &Path| {
            crate::sync::lock(&BACKUP_DIRS).remove(dir);
        };
        let file = match fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!(".{BACKUP_FILE}.lock")))
        {
            Ok(f) => f,
            Err(e) => {
                release(&dir);
                return Err(Error::BackupRestore(format!(
                    "cannot lock {}: {e}",
                    dir.display()
                )));
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                release(&dir);
                return Err(busy());
            }
        }
        Ok(BackupDirLock { dir, _file: file })
    }
}

impl Drop for BackupDirLock {
    fn drop(&mut self) {
        crate::sync::lock(&BACKUP_DIRS).remove(&self.dir);
    }
}

/// A temporary file that is removed unless it was renamed into place.
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

/// Writes `<backup_dir>/licenses.wmlb` from one snapshot of the store, atomically.
pub fn backup(
    job: &BackupJob,
    rep: &mut dyn Reporter,
    cancel: &Cancel,
    c: &mut Counters,
) -> Result<()> {
    fs::create_dir_all(&job.backup_dir).map_err(|e| {
        Error::BackupRestore(format!(
            "cannot create the backup directory {}: {e}",
            job.backup_dir.display()
        ))
    })?;
    let _lock = BackupDirLock::acquire(&job.backup_dir)?;
    sweep_stale_temp_files(&job.backup_dir);
    let target = job.refuse_existing_backup()?;
    let mut store = open_source_store(&store_dir_or_default(&job.store_dir)?)?;
    cancel.watch(&store)?;
    let service = service::connect(job.service_url.as_deref())?;
    let key = service.service_key()?;
    cancel.check()?;

    let tmp_path = fsutil::temp_path_for(&target)
        .map_err(|e| Error::BackupRestore(format!("cannot name a temporary file: {e}")))?;
    let file = fsutil::create_private_file(&tmp_path)
        .map_err(|e| Error::BackupRestore(format!("cannot create {}: {e}", tmp_path.display())))?;
    let mut tmp = TempFile {
        path: tmp_path,
        keep: false,
    };
    let lineage_id = store.lineage_id();
    let device_id = store.identity().device_id;

    let file = store.read_snapshot(|snap| {
        let (total, backed_up) = snap.counts()?;
        c.total = total;
        let data_key: [u8; 32] = crypto::random_array()?;
        let mut header = Header {
            backup_id: crypto::random_array()?,
            lineage_id,
            source_device_id: device_id,
            created_at: unix_now(),
            license_count: backed_up,
            service_key_id: key.key_id,
            chunk_size: DEFAULT_CHUNK_SIZE,
            sealed_data_key: SealedKey {
                encapped: [0; 32],
                ciphertext: [0; 48],
            },
        };
        header.sealed_data_key = crypto::hpke_seal_key(
            &key.public_key,
            format::INFO_DATA_KEY,
            &header.core_bytes(),
            &data_key,
            &mut crypto::os_rng(),
        )?;
        let mut writer = BackupWriter::new(
            BufWriter::with_capacity(256 * 1024, file),
            &header,
            &data_key,
        )?;
        c.streaming = true;
        let mut clock = ProgressClock::new();
        snap.for_each(|l| {
            clock.tick(rep, cancel, c)?;
            if l.may_back_up() {
                writer.push(l)?;
                c.processed += 1;
            } else {
                c.skipped += 1;
                rep.event(
                    Event::Restricted {
                        key_id: &l.key_id,
                        title: l.title.as_deref(),
                    },
                    c,
                );
            }
            Ok(true)
        })?;
        cancel.check()?;
        let out = writer.finish()?;
        out.into_inner()
            .map_err(|e| Error::BackupRestore(format!("cannot write the backup: {}", e.error())))
    })?;
    file.sync_all()
        .map_err(|e| Error::BackupRestore(format!("cannot flush the backup to disk: {e}")))?;
    drop(file);
    // The rename is the commit point: up to here a cancel leaves the previous backup in place.
    cancel.check()?;
    fs::rename(&tmp.path, &target)
        .map_err(|e| Error::BackupRestore(format!("cannot move the backup into place: {e}")))?;
    tmp.keep = true;
    // The new backup is in place; a directory that cannot be flushed (some file systems refuse)
    // does not make it less complete.
    let _ = fsutil::sync_dir(&job.backup_dir);
    Ok(())
}

/// The device identity a restore gives a store it creates at `store_dir`: the same for every
/// attempt at that place, so failed or cancelled attempts do not count as further devices.
fn new_store_identity(store_dir: &Path) -> Result<DeviceIdentity> {
    let seed = crate::identity::restore_seed(&crate::paths::default_data_dir()?)?;
    Ok(DeviceIdentity::for_new_store(&seed, store_dir))
}

fn store_dir_or_default(dir: &Option<PathBuf>) -> Result<PathBuf> {
    match dir {
        Some(d) => Ok(d.clone()),
        None => crate::paths::default_store_dir(),
    }
}

fn open_source_store(dir: &Path) -> Result<Store> {
    Store::open_existing(dir).map_err(|e| match e {
        Error::NotFound(m) => Error::Store(m),
        other => other,
    })
}

/// Where restored licenses go.
enum Target {
    Existing(Store),
    /// A store being created by this restore: built in `staging`, moved to its place on success.
    New {
        store: Store,
        staging: PathBuf,
    },
    /// VERIFY_ONLY into a store that does not exist: a throwaway identity, no files.
    Ephemeral(DeviceIdentity),
}

/// Removes a staging directory unless the restore moved it into place.
struct StagingGuard(Option<PathBuf>);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Restores a backup into a store in one transaction that commits only after the whole backup
/// has authenticated.
pub fn restore(
    job: &RestoreJob,
    rep: &mut dyn Reporter,
    cancel: &Cancel,
    c: &mut Counters,
) -> Result<()> {
    let path = if job.restore_path.is_dir() {
        job.restore_path.join(BACKUP_FILE)
    } else {
        job.restore_path.clone()
    };
    let file = File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::corrupt(format!("there is no backup at {}", path.display()))
        } else {
            Error::BackupRestore(format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let header = format::read_header(&mut input)?;
    c.total = header.license_count;

    let store_dir = store_dir_or_default(&job.store_dir)?;
    let mut staging = StagingGuard(None);
    let target = if Store::exists(&store_dir) {
        Target::Existing(Store::open_existing(&store_dir)?)
    } else if !job.individualize {
        return Err(Error::NeedsIndividualization(
            store_dir.display().to_string(),
        ));
    } else if job.verify_only {
        Target::Ephemeral(new_store_identity(&store_dir)?)
    } else {
        // The staging directory's creation also creates the parent, so the place the identity
        // is derived from resolves the same way in every attempt.
        let dir = staging_dir_for(&store_dir)?;
        staging.0 = Some(dir.clone());
        let identity = new_store_identity(&store_dir)?;
        identity.save_new(&dir)?;
        let store = Store::create_with_lineage(&dir, header.lineage_id)?;
        Target::New {
            store,
            staging: dir,
        }
    };
    if let Target::Existing(s) | Target::New { store: s, .. } = &target {
        cancel.watch(s)?;
    }
    let identity = match &target {
        Target::Existing(s) | Target::New { store: s, .. } => s.identity().clone(),
        Target::Ephemeral(id) => id.clone(),
    };

    let service = service::connect(job.service_url.as_deref())?;
    let request = GrantRequest {
        request_id: crypto::random_array()?,
        header: header.clone(),
        device_id: identity.device_id,
        device_public_key: identity.keys.public,
        dry_run: job.verify_only,
    };
    rep.event(Event::Connecting, c);
    let granted = service.grant(&request);
    rep.event(Event::Disconnecting, c);
    let sealed = match granted {
        Ok(s) => s,
        Err(e) => {
            if let Error::RestoreFraud {
                help_url: Some(url),
                ..
            } = &e
            {
                rep.event(Event::ErrorWithUrl(url), c);
            }
            return Err(e);
        }
    };
    cancel.check()?;
    let data_key = request.open_grant(&identity.keys.secret, &sealed)?;
    let mut stream = RestoreStream {
        reader: BackupReader::new(input, &header, &data_key),
        rep,
        cancel,
        counters: c,
        clock: ProgressClock::new(),
        now: unix_now(),
    };
    let commit = !job.verify_only;
    match target {
        Target::Existing(mut store) => {
            // An empty store that receives a backup continues its lineage, as a store created by
            // the restore would: backing it up again must not start a fresh restore count.
            stream.import_into(&mut store, commit, Some(header.lineage_id))?
        }
        Target::New {
            mut store,
            staging: dir,
        } => {
            stream.import_into(&mut store, commit, None)?;
            if commit {
                // The new store exists only once installed: until then a cancel still discards it.
                // The checkpoint (the slow part of closing a large store) is interruptible.
                cancel.check()?;
                store.checkpoint()?;
                cancel.check()?;
                drop(store);
                install_staged_store(&dir, &store_dir)?;
            }
        }
        Target::Ephemeral(_) => stream.run(|_| Ok(true))?,
    }
    Ok(())
}

/// The licenses of an authenticated backup flowing into a store.
struct RestoreStream<'a> {
    reader: BackupReader<BufReader<File>>,
    rep: &'a mut dyn Reporter,
    cancel: &'a Cancel,
    counters: &'a mut Counters,
    clock: ProgressClock,
    now: i64,
}

impl RestoreStream<'_> {
    /// Applies the restore rules to every license: expired ones are skipped, `write` decides
    /// whether a newer copy already in the store wins.
    fn run(&mut self, mut write: impl FnMut(&License) -> Result<bool>) -> Result<()> {
        self.counters.streaming = true;
        while let Some(l) = self.reader.next_license()? {
            if l.is_expired(self.now) || !write(&l)? {
                self.counters.skipped += 1;
            } else {
                self.counters.processed += 1;
            }
            self.clock.tick(self.rep, self.cancel, self.counters)?;
        }
        // Every chunk authenticated and the count matched: only now may an import commit.
        self.cancel.check()
    }

    fn import_into(
        &mut self,
        store: &mut Store,
        commit: bool,
        adopt_lineage: Option<[u8; 16]>,
    ) -> Result<()> {
        let mode = if commit {
            ImportMode::Write { adopt_lineage }
        } else {
            ImportMode::CheckOnly
        };
        let cancel = self.cancel.clone();
        store.import(mode, &move || cancel.is_set(), |imp| {
            self.run(|l| imp.put_if_newer(l))
        })
    }
}

/// Moves a store built in `staging` into `store_dir` (which may exist already, e.g. the data
/// directory that also holds the embedded service). Nothing is replaced: if a store appeared at
/// `store_dir` while the restore ran, it is left as it is and the restore fails. The database
/// goes last: until it is in place, `store_dir` does not count as a store.
fn install_staged_store(staging: &Path, store_dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::Store(format!(
            "cannot move the new store into {}: {e}",
            store_dir.display()
        ))
    };
    fsutil::create_private_dir_all(store_dir).map_err(fail)?;
    let mut names: Vec<_> = fs::read_dir(staging)
        .map_err(fail)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(fail)?;
    names.sort_by_key(|n| n == std::ffi::OsStr::new(crate::store::DB_FILE));
    for name in names {
        let (src, dst) = (staging.join(&name), store_dir.join(&name));
        if name == crate::store::DB_FILE && !dst.exists() {
            // A write-ahead log without its database (left by a crash) would be replayed into
            // the new one.
            for suffix in ["-wal", "-shm"] {
                let mut stray = dst.clone().into_os_string();
                stray.push(suffix);
                let _ = fs::remove_file(stray);
            }
        }
        if fsutil::move_no_replace(&src, &dst).map_err(fail)? {
            continue;
        }
        // An earlier attempt at this place that died halfway left its identity, which is the
        // same (it is derived from the place): carry on with it.
        let same = name == crate::identity::IDENTITY_FILE
            && matches!((fs::read(&src), fs::read(&dst)), (Ok(a), Ok(b)) if a == b);
        if !same {
            return Err(Error::BackupRestore(format!(
                "a license store appeared at {} while the restore ran ({} exists); it was left as it is",
                store_dir.display(),
                name.to_string_lossy()
            )));
        }
    }
    // Installed: a directory that cannot be flushed does not make the store less complete.
    let _ = fsutil::sync_dir(store_dir);
    Ok(())
}

/// A fresh directory beside `store_dir` in which a new store is built.
fn staging_dir_for(store_dir: &Path) -> Result<PathBuf> {
    if let Some(parent) = store_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::create_private_dir_all(parent)
            .map_err(|e| Error::store(format!("cannot create {}", parent.display()), e))?;
    }
    let dir = fsutil::temp_path_for(store_dir)
        .map_err(|e| Error::store("cannot name a staging directory", e))?;
    fsutil::create_private_dir_all(&dir)
        .map_err(|e| Error::store(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}
