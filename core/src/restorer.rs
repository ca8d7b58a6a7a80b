//! The backup restorer: its properties and its one operation slot (see [`crate::operation`]),
//! on the worker pool, with the delivery guarantees of its events:
//! - events are delivered only by the worker running the operation, one at a time, in order;
//! - END is the last event: the restorer is idle while it is delivered, and an operation started
//!   then (from the callback or from any other thread) is held and runs on the same worker once
//!   END's callback has returned, so its BEGIN always follows that return;
//! - a cancelled operation that still waits for a worker is expedited (see [`crate::pool`]): its
//!   BEGIN and END come at once and it touches nothing;
//! - destroy cancels, waits for the last END to return and closes the restorer: no callback
//!   starts after it returned. From inside a callback it cannot always wait (its own operation,
//!   or a callback waiting for the caller's restorer): then it closes without waiting, and the
//!   operation winds down on its own. Waits between callbacks that would form a cycle are
//!   refused (see [`crate::operation::wait`]) instead of deadlocking.

use crate::engine::{
    self, BackupJob, Control, Counters, Event, Places, ReleaseJob, Reporter, RestoreJob,
};
use crate::error::{Error, Result};
use crate::operation::slot::OperationSlot;
use crate::operation::{wait, Outcome};
use crate::pool::{self, Task};
use crate::props::{PropName, Props};
use crate::sync::lock;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::operation::{LastResult, Notice, OperationKind, Phase, Status};

/// What an operation does (the name the C layer and the tools use).
pub type Operation = OperationKind;

/// How a backup runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// Replace a backup that is at BackupPath already.
    pub overwrite: bool,
}

/// How a restore runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Create the store if it does not exist yet (it gets a new device identity).
    pub individualize: bool,
    /// Do every check of a restore, service grant included, and change nothing.
    pub verify_only: bool,
}

/// How a release runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseOptions {
    /// Reset the lineages of the backup at RestorePath (every device) instead of releasing
    /// the store's own device.
    pub all_devices: bool,
}

/// Receives every event of one restorer, on a worker thread, one at a time.
pub type Sink = Box<dyn Fn(Operation, &Notice<'_>, &Counters) + Send + Sync>;

struct Shared {
    props: Mutex<Props>,
    slot: OperationSlot,
    sink: Sink,
}

impl Shared {
    fn address(&self) -> usize {
        self as *const Shared as usize
    }

    fn in_own_callback(&self) -> bool {
        wait::delivering() == self.address()
    }

    fn deliver(&self, op: Operation, notice: &Notice<'_>, counters: &Counters) {
        if self.slot.is_closed() {
            return;
        }
        wait::delivering_for(self.address(), || {
            let _ = catch_unwind(AssertUnwindSafe(|| (self.sink)(op, notice, counters)));
        });
    }

    /// Waits for idle from any thread: from inside another restorer's callback, only when the
    /// wait cannot close a cycle of callbacks waiting for each other (`None` then).
    fn wait_from_anywhere(&self, timeout: Option<Duration>) -> Option<bool> {
        let waiter = wait::delivering();
        let _edge = if waiter != 0 {
            Some(wait::enter(waiter, self.address())?)
        } else {
            None
        };
        Some(pool::blocking(|| self.slot.wait_idle(timeout)))
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
    Release(ReleaseJob),
}

impl Restorer {
    pub fn new(sink: Sink) -> Restorer {
        // Start the worker threads now, so that starting an operation never waits for them.
        let _ = pool::start();
        Restorer {
            shared: Arc::new(Shared {
                props: Mutex::new(Props::default()),
                slot: OperationSlot::new(),
                sink,
            }),
        }
    }

    /// Runs `f` on the properties.
    pub fn with_props<R>(&self, f: impl FnOnce(&mut Props) -> R) -> R {
        f(&mut lock(&self.shared.props))
    }

    fn places(props: &Props) -> Places {
        Places {
            store_dir: props.get(PropName::StorePath).map(PathBuf::from),
            data_dir: props.get(PropName::DataPath).map(PathBuf::from),
            service_url: props.get(PropName::ServiceUrl).map(str::to_owned),
            service_key: props.get(PropName::ServiceKey).map(str::to_owned),
        }
    }

    fn required_path(props: &Props, name: PropName) -> Result<PathBuf> {
        props
            .get(name)
            .map(PathBuf::from)
            .ok_or_else(|| Error::InvalidProperty(format!("{} is not set", name.as_str())))
    }

    /// Starts backing up the store into BackupPath. Only an unset BackupPath, an existing
    /// backup without `overwrite` and a running operation fail here; everything else is
    /// reported by END.
    pub fn backup(&self, options: BackupOptions) -> Result<()> {
        let props = lock(&self.shared.props).clone();
        let job = BackupJob {
            places: Self::places(&props),
            backup_dir: Self::required_path(&props, PropName::BackupPath)?,
            overwrite: options.overwrite,
        };
        self.start(Operation::Backup, Job::Backup(job))
    }

    /// Starts restoring the backup at RestorePath. Only an unset RestorePath and a running
    /// operation fail here; everything else is reported by END.
    pub fn restore(&self, options: RestoreOptions) -> Result<()> {
        let props = lock(&self.shared.props).clone();
        let job = RestoreJob {
            places: Self::places(&props),
            restore_path: Self::required_path(&props, PropName::RestorePath)?,
            individualize: options.individualize,
            verify_only: options.verify_only,
        };
        self.start(Operation::Restore, Job::Restore(job))
    }

    /// Starts a release: of the store's own device, or (`all_devices`) a reset of the lineages
    /// of the backup at RestorePath. Only an unset RestorePath (for a reset) and a running
    /// operation fail here; everything else is reported by END.
    pub fn release(&self, options: ReleaseOptions) -> Result<()> {
        let props = lock(&self.shared.props).clone();
        let job = ReleaseJob {
            places: Self::places(&props),
            reset_from: if options.all_devices {
                Some(Self::required_path(&props, PropName::RestorePath)?)
            } else {
                None
            },
        };
        self.start(Operation::Release, Job::Release(job))
    }

    fn start(&self, op: Operation, job: Job) -> Result<()> {
        let shared = self.shared.clone();
        // Checked after the busy check, under the slot's lock.
        let existing_backup = match &job {
            Job::Backup(b) => Some(b.clone()),
            _ => None,
        };
        let check = || match &existing_backup {
            Some(b) => b.refuse_existing_backup().map(drop),
            None => Ok(()),
        };
        let task = self.shared.slot.start(op, check, |control| {
            Task::new(move || run(shared, op, job, control))
        })?;
        let Some(task) = task else {
            // END is being delivered: this operation runs once its callback has returned.
            return Ok(());
        };
        if let Err(e) = pool::submit(task.clone()) {
            if self.shared.slot.start_failed(&task) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Asks the running `op` to stop; `false` when no such operation runs.
    pub fn cancel(&self, op: Operation) -> bool {
        match self.shared.slot.cancel(Some(op)) {
            Some(cancel) => {
                cancel.deliver();
                true
            }
            None => false,
        }
    }

    /// Where the restorer's operation is in its life.
    pub fn phase(&self) -> Phase {
        self.shared.slot.phase()
    }

    /// The figures of the END of the last operation that finished (while one runs: the one
    /// before it); `None` before any finished. Set before END is delivered, so END's callback
    /// reads its own operation's.
    pub fn last_result(&self) -> Option<LastResult> {
        self.shared.slot.last_result()
    }

    /// Waits until no operation is in flight (its END delivered and returned). `None` waits
    /// forever. Returns whether the restorer is idle. From inside the restorer's own callback
    /// while an operation runs, or where the wait would close a cycle of callbacks waiting for
    /// each other, it is `Busy` instead of a deadlock.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.shared.in_own_callback() {
            // While END is delivered the restorer is idle, unless the callback started the next
            // operation; any other event belongs to a running operation, which the callback
            // would wait for forever.
            if !self.shared.slot.has_current() {
                return Ok(true);
            }
            return Err(Error::Busy(
                "the restorer's own callback waited for its running operation; it would wait for itself"
                    .into(),
            ));
        }
        self.shared.wait_from_anywhere(timeout).ok_or_else(|| {
            Error::Busy(
                "this callback's restorer is waited for by the callback of the restorer it waits for; the wait would never end"
                    .into(),
            )
        })
    }

    /// True once destroy was called: the restorer takes no more calls.
    pub fn is_destroyed(&self) -> bool {
        self.shared.slot.is_closing()
    }

    /// Cancels a running operation, waits for its END and closes the restorer: afterwards the
    /// sink is never called again. From inside the restorer's own callback, or where waiting
    /// would close a cycle of callbacks waiting for each other, it closes without waiting and
    /// the operation winds down on its own. Returns whether it waited.
    pub fn destroy(&self) -> bool {
        if let Some(cancel) = self.shared.slot.close_for_starts() {
            cancel.deliver();
        }
        let waited =
            !self.shared.in_own_callback() && self.shared.wait_from_anywhere(None).is_some();
        self.shared.slot.close();
        waited
    }
}

/// The body of one operation on a worker thread: BEGIN, the work, a last PROGRESS, END, the
/// work left for after END. Hands back the operation started during END, which the same worker
/// runs next.
fn run(shared: Arc<Shared>, op: Operation, job: Job, control: Control) -> Option<Arc<Task>> {
    shared.slot.begin();
    let mut counters = Counters::default();
    shared.deliver(op, &Notice::Begin, &counters);
    let result = if control.is_set() {
        // Cancelled before it started (expedited): it touches nothing.
        Err(Error::Canceled)
    } else {
        let mut rep = JobReporter {
            shared: &shared,
            op,
        };
        let c = &mut counters;
        catch_unwind(AssertUnwindSafe(|| match &job {
            Job::Backup(b) => engine::backup(b, &mut rep, &control, c),
            Job::Restore(r) => engine::restore(r, &mut rep, &control, c),
            Job::Release(r) => engine::release(r, &mut rep, &control, c),
        }))
        .unwrap_or_else(|_| Err(Error::Internal(format!("the {} panicked", op.name()))))
    };
    let outcome = Outcome::new(op, result, counters, control.is_set());
    if counters.streaming {
        shared.deliver(op, &Notice::Op(Event::Progress), &counters);
    }
    shared.slot.end(&outcome);
    shared.deliver(op, &Notice::End(&outcome), &counters);
    // What the operation left for after END (deleting a discarded store) is done before it
    // counts as finished: a wait or a destroy returns only after it.
    control.after_end().run();
    shared.slot.ended()
}
