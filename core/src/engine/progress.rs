//! The clock that paces PROGRESS and checks for cancellation on every tick.

use super::{Counters, Event, Reporter};
use crate::error::Result;
use crate::operation::Control;
use std::time::{Duration, Instant};

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
        cancel: &Control,
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
