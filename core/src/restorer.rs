//! The backup restorer: properties, one operation at a time on the worker pool, and the
//! delivery guarantees of its events (in order, never concurrent, exactly one END and last,
//! nothing after destroy returns).

use crate::engine::{self, BackupJob, Cancel, Counters, Event, Reporter, RestoreJob};
use crate::error::{Error, Result};
use crate::pool;
use crate::props::{PropName, Props};
use crate::sync::lock;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BACKUP_OVERWRITE: u32 = 0x1;
pub const RESTORE_INDIVIDUALIZE: u32 = 0x2;
pub const RESTORE_VERIFY_ONLY: u32 = 0x100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
        }
    }
}

/// One event as the restorer's sink receives it.
#[derive(Debug)]
pub enum Notice<'a> {
    Begin,
    Op(Event<'a>),
    End(&'a Result<()>),
}

/// Receives every event of one restorer, on a worker thread, one at a time.
pub type Sink = Box<dyn Fn(Operation, &Notice<'_>, &Counters) + Send + Sync>;

struct State {
    /// The operation that runs now and its cancel flag; `None` once END is being delivered.
    running: Option<(Operation, Cancel)>,
    /// Operations started whose END has not returned from the callback yet.
    in_flight: usize,
    destroying: bool,
    /// An operation started from inside the END callback: queued once that callback returns,
    /// so that no worker sits blocked on the delivery lock meanwhile.
    pending: Option<pool::Job>,
}

struct Shared {
    props: Mutex<Props>,
    state: Mutex<State>,
    idle: Condvar,
    /// Serializes callback invocations of this restorer.
    delivery: Mutex<()>,
    /// Set by destroy: no event is delivered any more.
    closed: AtomicBool,
    sink: Sink,
}

thread_local! {
    /// The restorer whose callback runs on this thread right now (its address), or 0.
    static DELIVERING: Cell<usize> = const { Cell::new(0) };
}

impl Shared {
    fn address(&self) -> usize {
        self as *const Shared as usize
    }

    fn in_own_callback(&self) -> bool {
        DELIVERING.with(|d| d.get()) == self.address()
    }

    fn deliver(&self, op: Operation, notice: &Notice<'_>, counters: &Counters) {
        let _turn = lock(&self.delivery);
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let previous = DELIVERING.with(|d| d.replace(self.address()));
        let _ = catch_unwind(AssertUnwindSafe(|| (self.sink)(op, notice, counters)));
        DELIVERING.with(|d| d.set(previous));
    }
}

/// A backup restorer. Cloning shares the same restorer.
#[derive(Clone)]
pub struct Restorer {
    shared: Arc<Shared>,
}

struct JobReporter<'a> {
    shared: &'a Shared,
    op: Operation,
}

impl Reporter for JobReporter<'_> {
    fn event(&mut self, event: Event<'_>, counters: &Counters) {
        self.shared.deliver(self.op, &Notice::Op(event), counters);
    }
}

enum Job {
    Backup(BackupJob),
    Restore(RestoreJob),
}

impl Restorer {
    pub fn new(sink: Sink) -> Restorer {
        // Start the worker threads now, so that starting an operation never waits for them.
        let _ = pool::start();
        Restorer {
            shared: Arc::new(Shared {
                props: Mutex::new(Props::default()),
                state: Mutex::new(State {
                    running: None,
                    in_flight: 0,
                    destroying: false,
                    pending: None,
                }),
                idle: Condvar::new(),
                delivery: Mutex::new(()),
                closed: AtomicBool::new(false),
                sink,
            }),
        }
    }

    /// Runs `f` on the properties.
    pub fn with_props<R>(&self, f: impl FnOnce(&mut Props) -> R) -> R {
        f(&mut lock(&self.shared.props))
    }

    /// Starts a backup or restore on the worker pool. Only bad flags, a missing path property,
    /// an existing backup without WM_BACKUP_OVERWRITE and a running operation fail here;
    /// everything else is reported by END.
    pub fn start(&self, op: Operation, flags: u32) -> Result<()> {
        let allowed = match op {
            Operation::Backup => BACKUP_OVERWRITE,
            Operation::Restore => RESTORE_INDIVIDUALIZE | RESTORE_VERIFY_ONLY,
        };
        if flags & !allowed != 0 {
            return Err(Error::InvalidArg(format!(
                "flags 0x{flags:x} have bits 0x{:x} that a {} does not take",
                flags & !allowed,
                op.name()
            )));
        }
        let props = lock(&self.shared.props).clone();
        let path_prop = match op {
            Operation::Backup => PropName::BackupPath,
            Operation::Restore => PropName::RestorePath,
        };
        let path =
            PathBuf::from(props.get(path_prop).ok_or_else(|| {
                Error::InvalidProperty(format!("{} is not set", path_prop.as_str()))
            })?);
        // The default store is resolved by the job: a problem with it is reported in END.
        let store_dir = props.get(PropName::StorePath).map(PathBuf::from);
        let service_url = props.get(PropName::ServiceUrl).map(str::to_owned);
        let job = match op {
            Operation::Backup => Job::Backup(BackupJob {
                store_dir,
                backup_dir: path,
                overwrite: flags & BACKUP_OVERWRITE != 0,
                service_url,
            }),
            Operation::Restore => Job::Restore(RestoreJob {
                store_dir,
                restore_path: path,
                individualize: flags & RESTORE_INDIVIDUALIZE != 0,
                verify_only: flags & RESTORE_VERIFY_ONLY != 0,
                service_url,
            }),
        };

        let cancel = Cancel::new();
        {
            let mut st = lock(&self.shared.state);
            if st.destroying {
                return Err(Error::Closed("the restorer is being destroyed".into()));
            }
            if let Some((running, _)) = &st.running {
                return Err(Error::Busy(format!(
                    "a {} is already running on this restorer",
                    running.name()
                )));
            }
            if let Job::Backup(b) = &job {
                b.refuse_existing_backup()?;
            }
            st.running = Some((op, cancel.clone()));
            st.in_flight += 1;
            let shared = self.shared.clone();
            let body: pool::Job = Box::new(move || run(shared, op, job, cancel));
            if self.shared.in_own_callback() {
                // Started from END: it begins once the callback has returned.
                st.pending = Some(body);
                return Ok(());
            }
            drop(st);
            self.submit(body)
        }
    }

    fn submit(&self, body: pool::Job) -> Result<()> {
        let submitted = pool::submit(body);
        if let Err(e) = submitted {
            let mut st = lock(&self.shared.state);
            st.running = None;
            st.in_flight -= 1;
            self.shared.idle.notify_all();
            return Err(e);
        }
        Ok(())
    }

    /// Asks the running `op` to stop; `false` when no such operation runs.
    pub fn cancel(&self, op: Operation) -> bool {
        let cancel = match &lock(&self.shared.state).running {
            Some((running, cancel)) if *running == op => cancel.clone(),
            _ => return false,
        };
        // Outside the state lock: interrupting SQLite may wait for the statement it stops.
        cancel.cancel();
        true
    }

    /// Waits until no operation is in flight (its END delivered and returned). `None` waits
    /// forever. Returns whether the restorer is idle.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.shared.in_own_callback() {
            // While END is delivered the restorer is idle, unless the callback started the next
            // operation; any other event belongs to a running operation, which the callback
            // would wait for forever.
            if lock(&self.shared.state).running.is_none() {
                return Ok(true);
            }
            return Err(Error::Busy(
                "wm_backup_restorer_wait was called from the restorer's own callback while an operation runs; it would wait for itself".into(),
            ));
        }
        Ok(pool::blocking(|| self.wait_idle(timeout)))
    }

    /// Blocks until no operation is in flight or the timeout passes; true when idle.
    fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.shared.state);
        while st.in_flight > 0 {
            match deadline {
                None => st = self.shared.idle.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    st = self
                        .shared
                        .idle
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }

    /// True once destroy was called: the restorer takes no more calls.
    pub fn is_destroyed(&self) -> bool {
        lock(&self.shared.state).destroying
    }

    /// Cancels a running operation and waits for its END; afterwards the sink is never called
    /// again. From inside the restorer's own callback it cannot wait: it cancels, silences the
    /// sink, and the operation winds down after the callback returns; it then returns `false`
    /// (use [`Restorer::wait_destroyed`] to know when it has).
    pub fn destroy(&self) -> bool {
        let running = {
            let mut st = lock(&self.shared.state);
            st.destroying = true;
            st.running.as_ref().map(|(_, cancel)| cancel.clone())
        };
        if let Some(cancel) = running {
            cancel.cancel();
        }
        if self.shared.in_own_callback() {
            self.shared.closed.store(true, Ordering::Release);
            return false;
        }
        pool::blocking(|| self.wait_idle(None));
        self.shared.closed.store(true, Ordering::Release);
        true
    }

    /// After a destroy from inside the callback: blocks until the operation has wound down.
    pub fn wait_destroyed(&self) {
        pool::blocking(|| self.wait_idle(None));
    }
}

/// The body of one operation on a worker thread: BEGIN, the work, a last PROGRESS, END.
fn run(shared: Arc<Shared>, op: Operation, job: Job, cancel: Cancel) {
    let mut counters = Counters::default();
    shared.deliver(op, &Notice::Begin, &counters);
    let result = {
        let mut rep = JobReporter {
            shared: &shared,
            op,
        };
        let c = &mut counters;
        catch_unwind(AssertUnwindSafe(|| match &job {
            Job::Backup(b) => engine::backup(b, &mut rep, &cancel, c),
            Job::Restore(r) => engine::restore(r, &mut rep, &cancel, c),
        }))
        .unwrap_or_else(|_| Err(Error::Internal(format!("the {} panicked", op.name()))))
    };
    // A cancelled operation reports the cancel, whatever error the interruption surfaced as
    // (an interrupted SQLite statement, say). One that finished before it noticed succeeded.
    let result = match result {
        Err(_) if cancel.is_set() => Err(Error::Canceled),
        other => other,
    };
    if counters.streaming {
        shared.deliver(op, &Notice::Op(Event::Progress), &counters);
    }
    // The restorer is idle while END is delivered: the callback may start the next operation.
    lock(&shared.state).running = None;
    shared.deliver(op, &Notice::End(&result), &counters);
    let pending = {
        let mut st = lock(&shared.state);
        st.in_flight -= 1;
        shared.idle.notify_all();
        st.pending.take()
    };
    if let Some(next) = pending {
        let _ = Restorer { shared }.submit(next);
    }
}
