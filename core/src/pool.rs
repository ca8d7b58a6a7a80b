//! The one global pool of worker threads that runs every backup and restore. Its size comes from
//! the machine (`WMLICENSE_WORKERS` overrides); a thousand restorers never mean a thousand
//! threads.
//!
//! - Workers block on their queues (no polling): an idle process has no wake-ups.
//! - A [`Task`] may be queued twice, on the normal queue and on the express queue: whichever
//!   worker takes it first runs it, once. A cancelled operation still waiting for a worker is
//!   expedited, so its END comes at once instead of after the operations ahead of it. One
//!   express worker serves only that queue; the others prefer it to the normal queue.
//! - A callback runs on a worker and may block in a wait for another restorer whose task is
//!   still queued. Such a wait goes through [`blocking`], which lends the pool one extra thread
//!   for as long as it lasts, so the queued task can still run.
//! - After fork() the child has none of its parent's threads and possibly a half-used queue:
//!   the pool is rebuilt, with fresh queues, the first time the child uses it.

use crate::error::{Error, Result};
use crate::sync::lock;
use crossbeam_channel::{select_biased, unbounded, Receiver, Sender};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The body of a task; it may hand back a follow-up task that the same worker runs next.
pub type TaskBody = Box<dyn FnOnce() -> Option<Arc<Task>> + Send + 'static>;

/// A unit of work that runs at most once, whichever queue delivers it first.
pub struct Task {
    body: Mutex<Option<TaskBody>>,
}

impl Task {
    pub fn new(body: impl FnOnce() -> Option<Arc<Task>> + Send + 'static) -> Arc<Task> {
        Arc::new(Task {
            body: Mutex::new(Some(Box::new(body))),
        })
    }

    /// Runs the task (unless it ran already) and then each follow-up it hands back, on this
    /// thread. A loop, not recursion: a chain of any length uses constant stack.
    pub fn run(self: Arc<Self>) {
        let mut next = Some(self);
        while let Some(task) = next.take() {
            next = task.run_one();
        }
    }

    /// Runs the task's own body (unless it ran already) and returns its follow-up.
    fn run_one(&self) -> Option<Arc<Task>> {
        let body = lock(&self.body).take()?;
        // A body catches its own panics; this keeps the worker alive if one slips out.
        catch_unwind(AssertUnwindSafe(body)).unwrap_or(None)
    }

    /// Takes the body of a task that has not started, so that it never runs; `false` when a
    /// worker has it already.
    pub fn take_unstarted(&self) -> bool {
        lock(&self.body).take().is_some()
    }

    /// Whether the task has been taken by a worker (or was run inline).
    pub fn started(&self) -> bool {
        lock(&self.body).is_none()
    }
}

/// How long an extra thread (lent during a blocking wait) idles before it leaves.
const EXTRA_IDLE: Duration = Duration::from_millis(500);

struct Queues {
    normal: (Sender<Arc<Task>>, Receiver<Arc<Task>>),
    express: (Sender<Arc<Task>>, Receiver<Arc<Task>>),
}

struct PoolState {
    /// The process the threads were started in.
    pid: u32,
    queues: Arc<Queues>,
    /// General workers running (the express worker is not counted).
    running: usize,
    /// Workers blocked in a wait that lent the pool an extra thread.
    blocked: usize,
    express_started: bool,
}

static POOL: Mutex<Option<PoolState>> = Mutex::new(None);

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

fn configured_size() -> usize {
    if let Some(n) = std::env::var("WMLICENSE_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

/// Number of general worker threads the pool keeps (read once per process).
pub fn size() -> usize {
    static SIZE: once_cell::sync::OnceCell<usize> = once_cell::sync::OnceCell::new();
    *SIZE.get_or_init(configured_size)
}

/// The pool of this process, rebuilt after a fork.
fn state() -> std::sync::MutexGuard<'static, Option<PoolState>> {
    let mut guard = lock(&POOL);
    let pid = std::process::id();
    if guard.as_ref().is_none_or(|s| s.pid != pid) {
        // The parent's queues may hold its tasks and the state of its threads: the child must
        // not touch them (dropping could run their destructors), so they are left alone.
        if let Some(old) = guard.take() {
            std::mem::forget(old);
        }
        *guard = Some(PoolState {
            pid,
            queues: Arc::new(Queues {
                normal: unbounded(),
                express: unbounded(),
            }),
            running: 0,
            blocked: 0,
            express_started: false,
        });
    }
    guard
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            IS_WORKER.with(|w| w.set(true));
            body()
        })
        .map(drop)
        .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))
}

/// Starts threads until the pool has its size plus one per blocked worker, and the express
/// worker. Succeeds when at least one general worker runs, even if more could not be started.
fn fill(s: &mut PoolState) -> Result<()> {
    let mut failure = None;
    while s.running < size() + s.blocked {
        let queues = s.queues.clone();
        let extra = s.running >= size();
        match spawn(format!("wmlicense-worker-{}", s.running), move || {
            worker(&queues, extra)
        }) {
            Ok(()) => s.running += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if !s.express_started {
        let queues = s.queues.clone();
        if spawn("wmlicense-express".into(), move || express_worker(&queues)).is_ok() {
            s.express_started = true;
        }
    }
    match failure {
        Some(e) if s.running == 0 => Err(e),
        _ => Ok(()),
    }
}

/// Starts the worker threads if they are not running yet (restorers call it when created).
pub fn start() -> Result<()> {
    let mut guard = state();
    fill(guard.as_mut().expect("state() always fills the pool"))
}

/// Queues `task` to run on a worker thread.
pub fn submit(task: Arc<Task>) -> Result<()> {
    let mut guard = state();
    let s = guard.as_mut().expect("state() always fills the pool");
    fill(s)?;
    s.queues
        .normal
        .0
        .send(task)
        .map_err(|_| Error::Internal("the worker pool is gone".into()))
}

/// Runs a queued `task` ahead of everything else (a cancelled operation whose END should come
/// now). Does nothing to a task that has started.
pub fn expedite(task: &Arc<Task>) {
    if task.started() {
        return;
    }
    let mut guard = state();
    let s = guard.as_mut().expect("state() always fills the pool");
    // Without an express worker, a general one still prefers the express queue.
    let _ = fill(s);
    let _ = s.queues.express.0.send(task.clone());
}

/// Runs `wait`, which may block until another task ran. On a worker thread the pool gets an
/// extra thread meanwhile, so a full pool of blocked callbacks cannot starve the task they
/// wait for.
pub fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    if !IS_WORKER.with(|w| w.get()) {
        return wait();
    }
    {
        let mut guard = state();
        let s = guard.as_mut().expect("state() always fills the pool");
        s.blocked += 1;
        // Without the extra thread the wait may still succeed; failing to start one is no error.
        let _ = fill(s);
    }
    struct Unblock;
    impl Drop for Unblock {
        fn drop(&mut self) {
            if let Some(s) = state().as_mut() {
                s.blocked = s.blocked.saturating_sub(1);
            }
        }
    }
    let _unblock = Unblock;
    wait()
}

/// A general worker: express tasks first, then normal ones. An extra worker leaves after
/// idling once the pool no longer needs it.
fn worker(q: &Queues, extra: bool) {
    loop {
        if let Ok(task) = q.express.1.try_recv() {
            task.run();
            continue;
        }
        let task = if extra {
            select_biased! {
                recv(q.express.1) -> t => t.ok(),
                recv(q.normal.1) -> t => t.ok(),
                default(EXTRA_IDLE) => {
                    let mut guard = state();
                    if let Some(s) = guard.as_mut() {
                        if s.running > size() + s.blocked {
                            s.running -= 1;
                            return;
                        }
                    }
                    continue;
                }
            }
        } else {
            select_biased! {
                recv(q.express.1) -> t => t.ok(),
                recv(q.normal.1) -> t => t.ok(),
            }
        };
        match task {
            Some(task) => task.run(),
            None => return,
        }
    }
}

/// The express worker: only expedited tasks (cancelled operations that never started), so their
/// END never waits behind running operations. A follow-up (an operation started from such an
/// END) goes to the normal queue: it is real work and must not hold the express queue up.
fn express_worker(q: &Queues) {
    while let Ok(task) = q.express.1.recv() {
        if let Some(next) = task.run_one() {
            if q.normal.0.send(next.clone()).is_err() {
                next.run();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_task_runs_once_even_when_queued_twice() {
        let (tx, rx) = mpsc::channel();
        let task = Task::new(move || {
            tx.send(()).unwrap();
            None
        });
        submit(task.clone()).unwrap();
        expedite(&task);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(task.started());
    }

    #[test]
    fn follow_up_tasks_run_in_order_on_one_thread() {
        let (tx, rx) = mpsc::channel();
        let mut next: Option<Arc<Task>> = None;
        for i in (0..10_000u32).rev() {
            let tx = tx.clone();
            let after = next.take();
            next = Some(Task::new(move || {
                tx.send((i, std::thread::current().id())).unwrap();
                after
            }));
        }
        submit(next.unwrap()).unwrap();
        let got: Vec<_> = (0..10_000)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert!(got.iter().enumerate().all(|(i, (n, _))| *n == i as u32));
        assert!(got.iter().all(|(_, t)| *t == got[0].1));
    }
}
