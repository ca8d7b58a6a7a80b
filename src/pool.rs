//! The one global pool of worker threads that runs every backup and restore. Its size comes from
//! the machine (`WMLICENSE_WORKERS` overrides); a thousand restorers never mean a thousand
//! threads.

use crate::error::{Error, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use once_cell::sync::Lazy;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    size: usize,
    /// (process ID, threads started in it): a child created by fork() has none of its
    /// parent's threads and starts its own.
    spawned: Mutex<(u32, usize)>,
}

static POOL: Lazy<Pool> = Lazy::new(|| {
    let (sender, receiver) = unbounded();
    Pool {
        sender,
        receiver,
        size: configured_size(),
        spawned: Mutex::new((std::process::id(), 0)),
    }
});

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

/// Starts the worker threads if they are not running yet (restorers call it when created).
pub fn start() -> Result<()> {
    let pool = &*POOL;
    let mut spawned = pool.spawned.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if spawned.0 != pid {
        *spawned = (pid, 0);
    }
    while spawned.1 < pool.size {
        let rx = pool.receiver.clone();
        std::thread::Builder::new()
            .name(format!("wmlicense-worker-{}", spawned.1))
            .spawn(move || worker(rx))
            .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
        spawned.1 += 1;
    }
    Ok(())
}

/// Queues `job` to run on a worker thread.
pub fn submit(job: Job) -> Result<()> {
    let pool = &*POOL;
    start()?;
    pool.sender
        .send(job)
        .map_err(|_| Error::Internal("the worker pool is gone".into()))
}

fn worker(rx: Receiver<Job>) {
    for job in rx.iter() {
        // A job catches its own panics; this keeps the thread alive if one slips through.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}
