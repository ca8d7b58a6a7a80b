//! The core's error type. The FFI layer maps each variant to a result code.

use std::fmt;

/// Every way a wmlicense operation can fail, independent of the C boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArg(String),
    #[error("{0}")]
    InvalidKid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("license store error: {0}")]
    Store(String),
    #[error(
        "the license store {0} does not exist; restore with WM_RESTORE_INDIVIDUALIZE to create it"
    )]
    NeedsIndividualization(String),
    #[error("{0}")]
    BackupRestore(String),
    #[error("a backup already exists at {0}; pass WM_BACKUP_OVERWRITE to replace it")]
    BackupExists(String),
    #[error("backup is corrupt: {0}")]
    BackupCorrupt(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    InvalidProperty(String),
    #[error("{0}")]
    UnsupportedProperty(String),
    #[error("the License Management Service refused the restore: {message}")]
    RestoreFraud {
        message: String,
        help_url: Option<String>,
    },
    #[error("the operation was cancelled")]
    Canceled,
    #[error("the License Management Service cannot be reached: {0}")]
    ServiceUnavailable(String),
    #[error("out of memory")]
    OutOfMemory,
    #[error("internal error: {0}")]
    Internal(String),
    /// The object was closed or destroyed while the call ran.
    #[error("{0}")]
    Closed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn store(context: impl fmt::Display, err: impl fmt::Display) -> Error {
        Error::Store(format!("{context}: {err}"))
    }
    pub fn corrupt(msg: impl Into<String>) -> Error {
        Error::BackupCorrupt(msg.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.to_string())
    }
}
