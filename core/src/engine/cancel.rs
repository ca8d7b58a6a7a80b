//! Cancellation of one operation, and the clock that paces PROGRESS.

use super::{Counters, Event, Reporter};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::sync::lock;
use rusqlite::InterruptHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cancellation of one operation: a flag checked between steps, per license and per chunk,
/// plus the SQLite connections to interrupt so that a long statement (the snapshot's count, a
/// commit) stops at once instead of running to its end. Clones share the flag.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

/// Work an operation leaves for after its END (deleting a discarded staging store, which can
/// take a while): it must not hold up END, but should be done before the operation counts as
/// finished.
type Deferred = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct CancelInner {
    set: AtomicBool,
    interrupts: Mutex<Vec<InterruptHandle>>,
    after_end: Mutex<Vec<Deferred>>,
}

impl Drop for CancelInner {
    fn drop(&mut self) {
        for work in std::mem::take(self.after_end.get_mut().unwrap_or_else(|p| p.into_inner())) {
            work();
        }
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Requests cancellation; safe from any thread, any number of times.
    pub fn cancel(&self) {
        self.inner.set.store(true, Ordering::Release);
        for handle in lock(&self.inner.interrupts).iter() {
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

    /// Leaves `work` for after the operation's END: [`Cancel::run_deferred`] does it (the
    /// restorer calls it once END has returned), or the last clone's drop.
    pub fn defer(&self, work: impl FnOnce() + Send + 'static) {
        lock(&self.inner.after_end).push(Box::new(work));
    }

    /// Does the work left by [`Cancel::defer`].
    pub fn run_deferred(&self) {
        let work = std::mem::take(&mut *lock(&self.inner.after_end));
        for w in work {
            w();
        }
    }

    /// From now on, a cancel also interrupts the statement `store` is running.
    pub(crate) fn watch(&self, store: &Store) -> Result<()> {
        lock(&self.inner.interrupts).push(store.interrupt_handle());
        // A cancel that came before the handle was registered is seen here.
        self.check()
    }
}

/// Minimum time between two PROGRESS events.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Paces PROGRESS and checks for cancellation on every tick.
pub(super) struct ProgressClock {
    last: Instant,
    calls: u32,
}

impl ProgressClock {
    pub(super) fn new() -> ProgressClock {
        ProgressClock {
            last: Instant::now(),
            calls: 0,
        }
    }

    /// Checks for cancellation and, at most every 100 ms, reports PROGRESS.
    pub(super) fn tick(
        &mut self,
        rep: &mut dyn Reporter,
        cancel: &Cancel,
        c: &Counters,
    ) -> Result<()> {
        cancel.check()?;
        self.calls = self.calls.wrapping_add(1);
        if self.calls % 32 == 0 && self.last.elapsed() >= PROGRESS_INTERVAL {
            rep.event(Event::Progress, c);
            self.last = Instant::now();
        }
        Ok(())
    }
}
