//! Locking that survives a panic: a panic in one operation (caught at the boundary) must not
//! make every later call on the same object fail, and the data behind our locks stays
//! consistent across a panic (SQLite rolls back, counters are plain values).

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
