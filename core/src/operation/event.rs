//! What a running operation reports: its events and the counts PROGRESS and END carry, and
//! the [`Reporter`] its engine reports them to (BEGIN and END are the restorer's to send).

/// What an operation reports while it runs (BEGIN and END are the restorer's to send).
#[derive(Debug)]
pub enum Event<'a> {
    Connecting,
    Disconnecting,
    ErrorWithUrl(&'a str),
    Progress,
    Restricted {
        key_id: &'a [u8],
        title: Option<&'a str>,
    },
}

/// Counts carried by PROGRESS and END.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Licenses written (backup) / imported (restore).
    pub processed: u64,
    /// Licenses in the operation (restore: once the backup's header has authenticated).
    pub total: u64,
    /// Restricted (backup) / kept-newer or expired (restore).
    pub skipped: u64,
    /// True once licenses started to flow: a final PROGRESS precedes END from then on.
    pub streaming: bool,
    /// Restore and release: the service's count of the lineage's devices after its decision,
    /// and its limit (0/0 when unknown).
    pub devices_used: u32,
    pub device_limit: u32,
    /// The operation succeeded without changing anything (a release of a device that was not
    /// counted): END carries WM_S_FALSE.
    pub unchanged: bool,
}

/// Receives the events of a running operation.
pub trait Reporter {
    fn event(&mut self, event: Event<'_>, counters: &Counters);
}
