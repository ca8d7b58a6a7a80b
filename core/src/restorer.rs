//! The backup restorer: properties, one operation at a time on the worker pool, and the
//! delivery guarantees of its events.
//!
//! All of a restorer's state is in one [`State`] behind one mutex:
//! - events are delivered only by the worker running the operation, one at a time, in order;
//! - END is the last event: the restorer is idle while it is delivered, and an operation started
//!   then (from the callback or from any other thread) is held in `next` and runs on the same
//!   worker once END's callback has returned, so its BEGIN always follows that return;
//! - a cancelled operation that still waits for a worker is expedited (see [`crate::pool`]): its
//!   BEGIN and END come at once and it touches nothing;
//! - destroy cancels, waits for the last END to return and closes the restorer: no callback
//!   starts after it returned. From inside a callback it cannot always wait (its own operation,
//!   or a callback waiting for the caller's restorer): then it closes without waiting, and the
//!   operation winds down on its own. Waits between callbacks that would form a cycle are
//!   refused (see [`WaitGraph`]) instead of deadlocking.

use crate::engine::{
    self, BackupJob, Cancel, Counters, Event, Places, ReleaseJob, Reporter, RestoreJob,
};
use crate::error::{Error, Result};
use crate::pool::{self, Task};
use crate::props::{PropName, Props};
use crate::sync::lock;
use once_cell::sync::Lazy;
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
    Release,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Release => "release",
        }
    }
}

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

/// One event as the restorer's sink receives it.
#[derive(Debug)]
pub enum Notice<'a> {
    Begin,
    Op(Event<'a>),
    End(&'a Result<()>),
}

/// Receives every event of one restorer, on a worker thread, one at a time.
pub type Sink = Box<dyn Fn(Operation, &Notice<'_>, &Counters) + Send + Sync>;

/// The operation a restorer has started and not yet ended.
struct Running {
    op: Operation,
    cancel: Cancel,
    task: Arc<Task>,
    /// Held in `State::next` (started during END): runs after END returns, never expedited.
    held: bool,
}

struct State {
    running: Option<Running>,
    /// Operations started whose END has not returned from the callback yet.
    in_flight: usize,
    /// END is being delivered: an operation started now is held in `next`.
    ending: bool,
    next: Option<Arc<Task>>,
    /// Destroy was called: no operation starts any more.
    destroyed: bool,
    /// No event is delivered any more.
    closed: bool,
}

struct Shared {
    props: Mutex<Props>,
    state: Mutex<State>,
    changed: Condvar,
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
        if lock(&self.state).closed {
            return;
        }
        let previous = DELIVERING.with(|d| d.replace(self.address()));
        let _ = catch_unwind(AssertUnwindSafe(|| (self.sink)(op, notice, counters)));
        DELIVERING.with(|d| d.set(previous));
    }

    /// Blocks until no operation is in flight or the timeout passes; true when idle.
    fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        while st.in_flight > 0 {
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }

    /// Waits for idle from any thread: from inside another restorer's callback, only when the
    /// wait cannot close a cycle of callbacks waiting for each other (`None` then).
    fn wait_from_anywhere(&self, timeout: Option<Duration>) -> Option<bool> {
        let waiter = DELIVERING.with(|d| d.get());
        let _edge = if waiter != 0 {
            Some(WaitGraph::enter(waiter, self.address())?)
        } else {
            None
        };
        Some(pool::blocking(|| self.wait_idle(timeout)))
    }
}

/// Which restorer's callback waits for which restorer. Callbacks of two restorers that wait for
/// each other (directly or around a longer cycle) would wait forever: the wait that would close
/// the cycle is refused.
struct WaitGraph;

static WAITS: Lazy<Mutex<HashMap<usize, usize>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// An edge of the wait graph, removed when the wait ends.
struct WaitEdge(usize);

impl WaitGraph {
    fn enter(waiter: usize, target: usize) -> Option<WaitEdge> {
        let mut waits = lock(&WAITS);
        let mut at = target;
        loop {
            if at == waiter {
                return None;
            }
            match waits.get(&at) {
                Some(next) => at = *next,
                None => break,
            }
        }
        waits.insert(waiter, target);
        Some(WaitEdge(waiter))
    }
}

impl Drop for WaitEdge {
    fn drop(&mut self) {
        lock(&WAITS).remove(&self.0);
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
                state: Mutex::new(State {
                    running: None,
                    in_flight: 0,
                    ending: false,
                    next: None,
                    destroyed: false,
                    closed: false,
                }),
                changed: Condvar::new(),
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
        let mut st = lock(&self.shared.state);
        if st.destroyed {
            return Err(Error::Closed("the restorer is being destroyed".into()));
        }
        if let Some(running) = &st.running {
            return Err(Error::Busy(format!(
                "a {} is already running on this restorer",
                running.op.name()
            )));
        }
        if let Job::Backup(b) = &job {
            b.refuse_existing_backup()?;
        }
        let cancel = Cancel::new();
        let task = {
            let shared = self.shared.clone();
            let cancel = cancel.clone();
            Task::new(move || run(shared, op, job, cancel))
        };
        let held = st.ending;
        st.running = Some(Running {
            op,
            cancel,
            task: task.clone(),
            held,
        });
        st.in_flight += 1;
        if held {
            // END is being delivered: this operation runs once its callback has returned.
            st.next = Some(task);
            return Ok(());
        }
        drop(st);
        if let Err(e) = pool::submit(task.clone()) {
            if !task.take_unstarted() {
                // Cancelled and expedited meanwhile: a worker runs it, END included.
                return Ok(());
            }
            let mut st = lock(&self.shared.state);
            st.running = None;
            st.in_flight -= 1;
            self.shared.changed.notify_all();
            return Err(e);
        }
        Ok(())
    }

    /// Asks the running `op` to stop; `false` when no such operation runs.
    pub fn cancel(&self, op: Operation) -> bool {
        let (cancel, task) = match &lock(&self.shared.state).running {
            Some(r) if r.op == op => (r.cancel.clone(), (!r.held).then(|| r.task.clone())),
            _ => return false,
        };
        // Outside the state lock: interrupting SQLite may wait for the statement it stops.
        cancel.cancel();
        if let Some(task) = task {
            pool::expedite(&task);
        }
        true
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
            if lock(&self.shared.state).running.is_none() {
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
        lock(&self.shared.state).destroyed
    }

    /// Cancels a running operation, waits for its END and closes the restorer: afterwards the
    /// sink is never called again. From inside the restorer's own callback, or where waiting
    /// would close a cycle of callbacks waiting for each other, it closes without waiting and
    /// the operation winds down on its own. Returns whether it waited.
    pub fn destroy(&self) -> bool {
        let running = {
            let mut st = lock(&self.shared.state);
            st.destroyed = true;
            st.running
                .as_ref()
                .map(|r| (r.cancel.clone(), (!r.held).then(|| r.task.clone())))
        };
        if let Some((cancel, task)) = running {
            cancel.cancel();
            if let Some(task) = task {
                pool::expedite(&task);
            }
        }
        let waited =
            !self.shared.in_own_callback() && self.shared.wait_from_anywhere(None).is_some();
        lock(&self.shared.state).closed = true;
        waited
    }
}

/// The body of one operation on a worker thread: BEGIN, the work, a last PROGRESS, END. Hands
/// back the operation started during END, which the same worker runs next.
fn run(shared: Arc<Shared>, op: Operation, job: Job, cancel: Cancel) -> Option<Arc<Task>> {
    let mut counters = Counters::default();
    shared.deliver(op, &Notice::Begin, &counters);
    let result = if cancel.is_set() {
        // Cancelled before it started (expedited): it touches nothing.
        Err(Error::Canceled)
    } else {
        let mut rep = JobReporter {
            shared: &shared,
            op,
        };
        let c = &mut counters;
        catch_unwind(AssertUnwindSafe(|| match &job {
            Job::Backup(b) => engine::backup(b, &mut rep, &cancel, c),
            Job::Restore(r) => engine::restore(r, &mut rep, &cancel, c),
            Job::Release(r) => engine::release(r, &mut rep, &cancel, c),
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
    {
        // The restorer is idle while END is delivered: an operation may start meanwhile.
        let mut st = lock(&shared.state);
        st.running = None;
        st.ending = true;
    }
    shared.deliver(op, &Notice::End(&result), &counters);
    // What the operation left for after END (deleting a discarded store) is done before it
    // counts as finished: a wait or a destroy returns only after it.
    cancel.run_deferred();
    let mut st = lock(&shared.state);
    st.ending = false;
    st.in_flight -= 1;
    shared.changed.notify_all();
    let next = st.next.take();
    if let Some(r) = st.running.as_mut() {
        r.held = false;
    }
    next
}
