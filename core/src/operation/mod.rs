//! An operation of a backup restorer (a backup, a restore, a release) as one object, and the
//! restorer's one slot for it.
//!
//! - [`OperationKind`]: what it does; [`Status`] and [`Notice`]: the events it reports.
//! - [`Phase`]: where the restorer's operation is in its life — queued, running, ending (END
//!   being delivered), idle, closed. The phase changes in one place, [`slot`]'s `enter`; every
//!   question "is an operation in flight, may one start, is the restorer idle" reads it.
//! - [`Outcome`]: how it ended, mapped to END's result code in one function; [`LastResult`]:
//!   the record of the last one that finished, which the C layer, the command-line tool and the
//!   bindings read instead of tracking events.
//! - [`Control`]: the cancel token, apart from the SQLite interrupts and the after-END work.
//! - [`wait`]: which callback waits for which restorer (a wait that would close a cycle is
//!   refused), and the operation started during END that runs after it on the same worker (the
//!   pool's follow-up) is the slot's `held` operation.

mod control;
mod event;
mod outcome;
pub(crate) mod slot;
pub(crate) mod wait;

pub use control::{AfterEnd, CancelToken, Control, Interrupts};
pub use event::{Counters, Event, Reporter};
pub use outcome::{LastResult, Outcome};

use crate::code::{self, Code};

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Backup,
    Restore,
    Release,
}

impl OperationKind {
    pub fn name(self) -> &'static str {
        match self {
            OperationKind::Backup => "backup",
            OperationKind::Restore => "restore",
            OperationKind::Release => "release",
        }
    }
}

/// Where a restorer's operation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started, waiting for a worker (or, started during END, for END to return).
    Queued,
    /// A worker runs it: BEGIN and every event up to END.
    Running,
    /// Its END is being delivered. The restorer takes a new operation meanwhile, which runs once
    /// END has returned.
    Ending,
    /// No operation in flight.
    Idle,
    /// Destroyed: no event is delivered any more.
    Closed,
}

impl Phase {
    /// Whether an operation is in flight (a wait for idle waits).
    pub fn in_flight(self) -> bool {
        matches!(self, Phase::Queued | Phase::Running | Phase::Ending)
    }
}

/// What an event reports: the Windows Media Format SDK's WMT_STATUS values, plus PROGRESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Begin = 0x15,
    End = 0x1B,
    Connecting = 0x1C,
    Disconnecting = 0x1D,
    ErrorWithUrl = 0x1E,
    RestrictedLicense = 0x1F,
    Progress = 0x100,
}

impl Status {
    /// The name without its `WM_STATUS_` prefix, as the command-line tool prints it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Begin => "BACKUPRESTORE_BEGIN",
            Status::End => "BACKUPRESTORE_END",
            Status::Connecting => "BACKUPRESTORE_CONNECTING",
            Status::Disconnecting => "BACKUPRESTORE_DISCONNECTING",
            Status::ErrorWithUrl => "ERROR_WITHURL",
            Status::RestrictedLicense => "RESTRICTED_LICENSE",
            Status::Progress => "BACKUPRESTORE_PROGRESS",
        }
    }

    pub fn value(self) -> u32 {
        self as u32
    }
}

/// One event as the restorer's sink receives it.
#[derive(Debug)]
pub enum Notice<'a> {
    Begin,
    Op(Event<'a>),
    End(&'a Outcome),
}

impl Notice<'_> {
    pub fn status(&self) -> Status {
        match self {
            Notice::Begin => Status::Begin,
            Notice::End(_) => Status::End,
            Notice::Op(Event::Connecting) => Status::Connecting,
            Notice::Op(Event::Disconnecting) => Status::Disconnecting,
            Notice::Op(Event::ErrorWithUrl(_)) => Status::ErrorWithUrl,
            Notice::Op(Event::Progress) => Status::Progress,
            Notice::Op(Event::Restricted { .. }) => Status::RestrictedLicense,
        }
    }

    /// The event's result code: END's outcome; ERROR_WITHURL: the service's refusal; else S_OK.
    pub fn code(&self) -> Code {
        match self {
            Notice::End(outcome) => outcome.code(),
            Notice::Op(Event::ErrorWithUrl(_)) => code::E_RESTORE_FRAUD,
            _ => code::S_OK,
        }
    }
}
