//! Which restorer's callback runs on this thread, and which callback waits for which restorer.
//! Callbacks of two restorers that wait for each other (directly or around a longer cycle)
//! would wait forever: the wait that would close the cycle is refused.

use crate::sync::lock;
use once_cell::sync::Lazy;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;

thread_local! {
    /// The restorer whose callback runs on this thread right now (its address), or 0.
    static DELIVERING: Cell<usize> = const { Cell::new(0) };
}

/// The restorer whose callback runs on this thread, or 0.
pub(crate) fn delivering() -> usize {
    DELIVERING.with(|d| d.get())
}

/// Runs `f` as the callback of restorer `address` on this thread.
pub(crate) fn delivering_for<R>(address: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            DELIVERING.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DELIVERING.with(|d| d.replace(address)));
    f()
}

/// The wait-for graph of callbacks: an edge from a restorer whose callback waits to the
/// restorer it waits for.
static WAITS: Lazy<Mutex<HashMap<usize, usize>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// An edge of the wait graph, removed when the wait ends.
pub(crate) struct WaitEdge(usize);

/// Records that `waiter`'s callback waits for `target`; `None` when that closes a cycle.
pub(crate) fn enter(waiter: usize, target: usize) -> Option<WaitEdge> {
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

impl Drop for WaitEdge {
    fn drop(&mut self) {
        lock(&WAITS).remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_closing_a_cycle_is_refused_and_edges_go_with_their_waits() {
        let a = enter(101, 102).unwrap();
        let b = enter(102, 103).unwrap();
        assert!(enter(103, 101).is_none());
        assert!(enter(103, 103).is_none());
        drop(a);
        let c = enter(103, 101).unwrap();
        drop((b, c));
        assert!(enter(102, 101).is_some());
    }
}
