//! How an operation ended: its [`Outcome`], the one mapping from it to END's result code, and
//! the [`LastResult`] record a restorer keeps of the last operation that finished.

use super::{Counters, OperationKind};
use crate::code::{self, Code};
use crate::error::{Error, Result};

/// How one operation ended, as END reports it.
#[derive(Debug)]
pub struct Outcome {
    pub kind: OperationKind,
    pub result: Result<()>,
    pub counters: Counters,
}

impl Outcome {
    /// The outcome of an operation whose work returned `result`. A cancelled operation reports
    /// the cancel, whatever error the interruption surfaced as (an interrupted SQLite
    /// statement, say); one that finished before it noticed succeeded.
    pub fn new(
        kind: OperationKind,
        result: Result<()>,
        counters: Counters,
        cancelled: bool,
    ) -> Outcome {
        let result = match result {
            Err(_) if cancelled => Err(Error::Canceled),
            other => other,
        };
        Outcome {
            kind,
            result,
            counters,
        }
    }

    /// END's result code: S_OK; S_FALSE for a success that changed nothing (a release of a
    /// device that was not counted); the error's code on failure.
    pub fn code(&self) -> Code {
        match &self.result {
            Ok(()) if self.counters.unchanged => code::S_FALSE,
            Ok(()) => code::S_OK,
            Err(e) => code::of(e),
        }
    }

    /// What went wrong, on failure.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }

    pub fn record(&self) -> LastResult {
        LastResult {
            operation: self.kind,
            code: self.code(),
            processed: self.counters.processed,
            total: self.counters.total,
            skipped: self.counters.skipped,
            devices_used: self.counters.devices_used,
            device_limit: self.counters.device_limit,
            message: self.error().map(|e| e.to_string()),
        }
    }
}

/// The figures of the END of the last operation that finished on a restorer (SPEC §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastResult {
    pub operation: OperationKind,
    /// END's result code.
    pub code: Code,
    pub processed: u64,
    pub total: u64,
    pub skipped: u64,
    pub devices_used: u32,
    pub device_limit: u32,
    /// On failure: what went wrong.
    pub message: Option<String>,
}
