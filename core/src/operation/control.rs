//! What an operation's engine gets to stop and to clean up, as three separate things:
//! - [`CancelToken`]: the request to stop, a flag checked between steps, per license and per
//!   chunk;
//! - [`Interrupts`]: the SQLite connections a cancel interrupts, so that a long statement (the
//!   snapshot's count, a commit) stops at once instead of running to its end;
//! - [`AfterEnd`]: work the operation leaves for after its END (deleting a discarded staging
//!   store, which can take a while): it must not hold END up, but is done before the operation
//!   counts as finished.
//!
//! [`Control`] hands the engine all three; only the operation's owner cancels through it.

use crate::error::{Error, Result};
use crate::store::Store;
use crate::sync::lock;
use rusqlite::InterruptHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The request to stop one operation. Clones share the flag.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Canceled)` once cancellation was requested.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            Err(Error::Canceled)
        } else {
            Ok(())
        }
    }
}

/// The SQLite connections an operation uses; a cancel interrupts the statement each runs.
#[derive(Clone, Default)]
pub struct Interrupts(Arc<Mutex<Vec<InterruptHandle>>>);

impl Interrupts {
    fn add(&self, handle: InterruptHandle) {
        lock(&self.0).push(handle);
    }

    fn interrupt_all(&self) {
        for handle in lock(&self.0).iter() {
            handle.interrupt();
        }
    }
}

type Deferred = Box<dyn FnOnce() + Send>;

/// Work left for after an operation's END. [`AfterEnd::run`] does it (the restorer, once END has
/// returned); what is still there when the last clone goes is done then.
#[derive(Clone, Default)]
pub struct AfterEnd(Arc<AfterEndInner>);

#[derive(Default)]
struct AfterEndInner(Mutex<Vec<Deferred>>);

impl Drop for AfterEndInner {
    fn drop(&mut self) {
        for work in std::mem::take(self.0.get_mut().unwrap_or_else(|p| p.into_inner())) {
            work();
        }
    }
}

impl AfterEnd {
    fn push(&self, work: Deferred) {
        lock(&self.0 .0).push(work);
    }

    /// Does the work left so far.
    pub fn run(&self) {
        let work = std::mem::take(&mut *lock(&self.0 .0));
        for w in work {
            w();
        }
    }
}

/// One operation's cancel token, interrupts and after-END work, as its engine uses them.
/// Clones share all three.
#[derive(Clone, Default)]
pub struct Control {
    token: CancelToken,
    interrupts: Interrupts,
    after_end: AfterEnd,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Requests cancellation and interrupts the operation's SQLite statements; safe from any
    /// thread, any number of times. It may wait for a statement it interrupts: call it without
    /// holding a lock a callback could need.
    pub fn cancel(&self) {
        self.token.set();
        self.interrupts.interrupt_all();
    }

    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    pub fn after_end(&self) -> &AfterEnd {
        &self.after_end
    }

    pub fn is_set(&self) -> bool {
        self.token.is_set()
    }

    /// `Err(Canceled)` once cancellation was requested.
    pub fn check(&self) -> Result<()> {
        self.token.check()
    }

    /// Leaves `work` for after the operation's END.
    pub fn defer(&self, work: impl FnOnce() + Send + 'static) {
        self.after_end.push(Box::new(work));
    }

    /// From now on, a cancel also interrupts the statement `store` is running.
    pub(crate) fn watch(&self, store: &Store) -> Result<()> {
        self.interrupts.add(store.interrupt_handle());
        // A cancel that came before the handle was registered is seen here.
        self.check()
    }
}
