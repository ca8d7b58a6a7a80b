//! The core's error type. The FFI layer maps each variant to a result code.

use std::fmt;
use std::io;

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
    #[error("the license store {0} does not exist; a restore creates it only when asked to individualize")]
    NeedsIndividualization(String),
    #[error("{0}")]
    BackupRestore(String),
    #[error("a backup already exists at {0}; it is replaced only when overwriting is asked for")]
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
        /// The service's count of the lineage's devices, and its limit (0/0 when unknown).
        devices_used: u32,
        device_limit: u32,
    },
    /// A lineage reset inside its reset window.
    #[error("the License Management Service refused the reset: {0}")]
    TooManyResets(String),
    #[error("the operation was cancelled")]
    Canceled,
    #[error("the License Management Service cannot be reached: {0}")]
    ServiceUnavailable(String),
    #[error("out of memory")]
    OutOfMemory,
    #[error("internal error: {0}")]
    Internal(String),
    /// A file or directory that must exist does not (no backup at the restore path, say).
    #[error("{0}")]
    FileNotFound(String),
    /// The file system refuses access to a path.
    #[error("{0}")]
    AccessDenied(String),
    /// No space is left where a backup or a store is written.
    #[error("{0}")]
    DiskFull(String),
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

    /// A failed file-system call on behalf of `context`: a refused access and a full disk get
    /// their own variants whatever the operation; anything else becomes `other(message)`.
    pub fn io(context: impl fmt::Display, e: &io::Error, other: fn(String) -> Error) -> Error {
        let message = format!("{context}: {e}");
        match io_class(e) {
            IoClass::AccessDenied => Error::AccessDenied(message),
            IoClass::DiskFull => Error::DiskFull(message),
            IoClass::Other => other(message),
        }
    }
}

enum IoClass {
    AccessDenied,
    DiskFull,
    Other,
}

fn io_class(e: &io::Error) -> IoClass {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return IoClass::AccessDenied;
    }
    #[cfg(unix)]
    match e.raw_os_error() {
        // EFBIG: the file may not grow (a file size limit): no space for it either.
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => IoClass::DiskFull,
        Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES) => IoClass::AccessDenied,
        _ => IoClass::Other,
    }
    #[cfg(windows)]
    match e.raw_os_error() {
        // ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL, ERROR_DISK_QUOTA_EXCEEDED
        Some(39) | Some(112) | Some(1295) => IoClass::DiskFull,
        // ERROR_WRITE_PROTECT
        Some(19) => IoClass::AccessDenied,
        _ => IoClass::Other,
    }
    #[cfg(not(any(unix, windows)))]
    IoClass::Other
}

impl From<rusqlite::types::FromSqlError> for Error {
    fn from(e: rusqlite::types::FromSqlError) -> Error {
        Error::Store(format!("a stored value has the wrong type: {e}"))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode;
        let message = format!("license store error: {e}");
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Error::DiskFull(message),
            Some(ErrorCode::PermissionDenied) | Some(ErrorCode::ReadOnly) => {
                Error::AccessDenied(message)
            }
            _ => Error::Store(e.to_string()),
        }
    }
}
