//! The one global pool of worker threads that runs every backup and restore. Its size comes from
//! the machine (`WMLICENSE_WORKERS` overrides); a thousand restorers never mean a thousand
//! threads.
//!
//! A callback runs on a worker and may block in `wm_backup_restorer_wait` or `_destroy` of
//! another restorer whose job is still queued. Such a wait goes through [`blocking`], which
//! lends the pool one extra thread for as long as it lasts, so the queued job can still run.

use crate::error::{Error, Result};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use once_cell::sync::Lazy;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct Threads {
    /// The process the threads were started in: a child created by fork() has none of its
    /// parent's threads and starts its own.
    pid: u32,
    /// Worker threads running.
    running: usize,
    /// Workers blocked in a wait that lent the pool an extra thread.
    blocked: usize,
}

struct Pool {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    size: usize,
    threads: Mutex<Threads>,
}

static POOL: Lazy<Pool> = Lazy::new(|| {
    let (sender, receiver) = unbounded();
    Pool {
        sender,
        receiver,
        size: configured_size(),
        threads: Mutex::new(Threads {
            pid: std::process::id(),
            running: 0,
            blocked: 0,
        }),
    }
});

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// How long an extra thread idles before it leaves.
const EXTRA_IDLE: Duration = Duration::from_millis(500);

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

/// Number of worker threads the pool runs.
pub fn size() -> usize {
    POOL.size
}

fn threads() -> MutexGuard<'static, Threads> {
    let mut t = crate::sync::lock(&POOL.threads);
    let pid = std::process::id();
    if t.pid != pid {
        *t = Threads {
            pid,
            running: 0,
            blocked: 0,
        };
    }
    t
}

/// Starts worker threads until the pool has its size plus one per blocked worker.
fn fill(t: &mut Threads) -> Result<()> {
    while t.running < POOL.size + t.blocked {
        let rx = POOL.receiver.clone();
        std::thread::Builder::new()
            .name(format!("wmlicense-worker-{}", t.running))
            .spawn(move || worker(rx))
            .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
        t.running += 1;
    }
    Ok(())
}

/// Starts the worker threads if they are not running yet (restorers call it when created).
pub fn start() -> Result<()> {
    fill(&mut threads())
}

/// Queues `job` to run on a worker thread.
pub fn submit(job: Job) -> Result<()> {
    start()?;
    POOL.sender
        .send(job)
        .map_err(|_| Error::Internal("the worker pool is gone".into()))
}

/// Runs `wait`, which may block until another job ran. On a worker thread the pool gets an
/// extra thread meanwhile, so a full pool of blocked callbacks cannot starve the job they
/// wait for.
pub fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    if !IS_WORKER.with(|w| w.get()) {
        return wait();
    }
    {
        let mut t = threads();
        t.blocked += 1;
        // Without the extra thread the wait may still succeed; failing to start one is no error.
        let _ = fill(&mut t);
    }
    struct Unblock;
    impl Drop for Unblock {
        fn drop(&mut self) {
            threads().blocked -= 1;
        }
    }
    let _unblock = Unblock;
    wait()
}

fn worker(rx: Receiver<Job>) {
    IS_WORKER.with(|w| w.set(true));
    loop {
        match rx.recv_timeout(EXTRA_IDLE) {
            // A job catches its own panics; this keeps the thread alive if one slips through.
            Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
            Err(RecvTimeoutError::Timeout) => {
                let mut t = threads();
                if t.running > POOL.size + t.blocked {
                    t.running -= 1;
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
