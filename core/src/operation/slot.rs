//! A restorer's one operation slot: the operation in flight, its [`Phase`], and the record of
//! the last one that finished. Every change of phase goes through [`SlotState::enter`].

use super::{Control, LastResult, OperationKind, Outcome, Phase};
use crate::error::{Error, Result};
use crate::pool::Task;
use crate::sync::lock;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The operation a restorer has started and not yet ended.
struct Operation {
    kind: OperationKind,
    control: Control,
    task: Arc<Task>,
    /// Started while the previous END was delivered: it runs on that worker once END has
    /// returned (the pool's follow-up), so it is never expedited.
    held: bool,
}

struct SlotState {
    phase: Phase,
    /// The operation queued or running, or the one started during END.
    current: Option<Operation>,
    /// Destroy was called: no operation starts any more.
    closing: bool,
    last: Option<LastResult>,
}

impl SlotState {
    /// The one place the phase changes. Closed is final: a closed restorer's operation still
    /// winds down, but nobody observes its phase any more.
    fn enter(&mut self, to: Phase) {
        use Phase::*;
        if self.phase == Closed {
            return;
        }
        debug_assert!(
            matches!(
                (self.phase, to),
                (Idle, Queued)
                    | (Queued, Running)
                    | (Queued, Idle)
                    | (Running, Ending)
                    | (Ending, Idle)
                    | (Ending, Queued)
                    | (_, Closed)
            ),
            "{:?} -> {to:?}",
            self.phase
        );
        self.phase = to;
    }
}

/// A cancel to deliver outside the slot's lock: interrupting SQLite may wait for the statement
/// it stops, and expediting takes the pool's lock.
pub(crate) struct PendingCancel {
    control: Control,
    /// The queued task to run at once (its END comes without waiting for a worker).
    expedite: Option<Arc<Task>>,
}

impl PendingCancel {
    pub(crate) fn deliver(self) {
        self.control.cancel();
        if let Some(task) = self.expedite {
            crate::pool::expedite(&task);
        }
    }
}

pub(crate) struct OperationSlot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

impl OperationSlot {
    pub(crate) fn new() -> OperationSlot {
        OperationSlot {
            state: Mutex::new(SlotState {
                phase: Phase::Idle,
                current: None,
                closing: false,
                last: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.state)
    }

    pub(crate) fn phase(&self) -> Phase {
        self.state().phase
    }

    pub(crate) fn last_result(&self) -> Option<LastResult> {
        self.state().last.clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state().closing
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().phase == Phase::Closed
    }

    /// Whether an operation is queued or running (not counting one whose END is delivered).
    pub(crate) fn has_current(&self) -> bool {
        self.state().current.is_some()
    }

    /// Takes the slot for a new operation of `kind`: `check` runs first (under the slot's lock,
    /// so that two starts cannot both pass it), then `task` builds the operation's body with its
    /// control. Returns the task to submit to the pool, or `None` when it is held behind the END
    /// being delivered (it runs when that END has returned).
    pub(crate) fn start(
        &self,
        kind: OperationKind,
        check: impl FnOnce() -> Result<()>,
        task: impl FnOnce(Control) -> Arc<Task>,
    ) -> Result<Option<Arc<Task>>> {
        let mut st = self.state();
        if st.closing || st.phase == Phase::Closed {
            return Err(Error::Closed("the restorer is being destroyed".into()));
        }
        if let Some(op) = &st.current {
            return Err(Error::Busy(format!(
                "a {} is already running on this restorer",
                op.kind.name()
            )));
        }
        check()?;
        let control = Control::new();
        let task = task(control.clone());
        let held = st.phase == Phase::Ending;
        st.current = Some(Operation {
            kind,
            control,
            task: task.clone(),
            held,
        });
        if held {
            return Ok(None);
        }
        st.enter(Phase::Queued);
        Ok(Some(task))
    }

    /// The pool refused `task`: the slot is free again, unless a worker has the task already
    /// (cancelled and expedited meanwhile), which then runs it, END included. Returns whether
    /// the start failed.
    pub(crate) fn start_failed(&self, task: &Arc<Task>) -> bool {
        if !task.take_unstarted() {
            return false;
        }
        let mut st = self.state();
        st.current = None;
        st.enter(Phase::Idle);
        self.changed.notify_all();
        true
    }

    /// A worker took the operation: it runs.
    pub(crate) fn begin(&self) {
        self.state().enter(Phase::Running);
    }

    /// The operation ended with `outcome`: the slot is free for the next one while END is
    /// delivered, and the record of the last result is this one.
    pub(crate) fn end(&self, outcome: &Outcome) {
        let mut st = self.state();
        st.current = None;
        st.last = Some(outcome.record());
        st.enter(Phase::Ending);
    }

    /// END has returned (and the work left for after it is done): the operation has finished.
    /// Returns the operation started during END, which this worker runs next.
    pub(crate) fn ended(&self) -> Option<Arc<Task>> {
        let mut st = self.state();
        let next = match st.current.as_mut() {
            Some(op) => {
                op.held = false;
                Some(op.task.clone())
            }
            None => None,
        };
        st.enter(if next.is_some() {
            Phase::Queued
        } else {
            Phase::Idle
        });
        self.changed.notify_all();
        next
    }

    /// The cancel of the operation in flight of `kind` (any kind: `None`), to deliver outside
    /// the lock; `None` when no such operation is in flight.
    pub(crate) fn cancel(&self, kind: Option<OperationKind>) -> Option<PendingCancel> {
        let st = self.state();
        let op = st.current.as_ref()?;
        if kind.is_some_and(|k| k != op.kind) {
            return None;
        }
        Some(PendingCancel {
            control: op.control.clone(),
            expedite: (!op.held).then(|| op.task.clone()),
        })
    }

    /// Destroy begins: no operation starts any more. Returns the cancel of the one in flight.
    pub(crate) fn close_for_starts(&self) -> Option<PendingCancel> {
        self.state().closing = true;
        self.cancel(None)
    }

    /// Destroy ends: no event is delivered any more.
    pub(crate) fn close(&self) {
        self.state().enter(Phase::Closed);
        self.changed.notify_all();
    }

    /// Blocks until no operation is in flight or the timeout passes; true when idle.
    pub(crate) fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.state();
        while st.phase.in_flight() {
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
}
