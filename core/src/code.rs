//! Result codes: the values END carries and every call of the C API returns (HRESULT-compatible,
//! the Windows Media Format SDK's), their names, and the one mapping from an [`Error`] to its
//! code. The C layer exports the same values as `WM_*` constants (a test checks they agree);
//! the command-line tool and the bindings read them from here.

use crate::error::Error;

/// A result code: HRESULT-compatible, negative on failure.
pub type Code = i32;

pub const S_OK: Code = 0x0000_0000;
pub const S_FALSE: Code = 0x0000_0001;
pub const E_NOTIMPL: Code = 0x8000_4001_u32 as Code;
pub const E_POINTER: Code = 0x8000_4003_u32 as Code;
pub const E_UNEXPECTED: Code = 0x8000_FFFF_u32 as Code;
pub const E_FILE_NOT_FOUND: Code = 0x8007_0002_u32 as Code;
pub const E_ACCESS_DENIED: Code = 0x8007_0005_u32 as Code;
pub const E_HANDLE: Code = 0x8007_0006_u32 as Code;
pub const E_OUTOFMEMORY: Code = 0x8007_000E_u32 as Code;
pub const E_INVALIDARG: Code = 0x8007_0057_u32 as Code;
pub const E_DISK_FULL: Code = 0x8007_0070_u32 as Code;
pub const E_BUFFER_TOO_SMALL: Code = 0x8007_007A_u32 as Code;
pub const E_NOT_FOUND: Code = 0x8007_0490_u32 as Code;
pub const E_LICENSE_STORE_ERROR: Code = 0xC00D_2712_u32 as Code;
pub const E_NEEDS_INDIVIDUALIZATION: Code = 0xC00D_2728_u32 as Code;
pub const E_BACKUP_RESTORE_FAILURE: Code = 0xC00D_272D_u32 as Code;
pub const E_BACKUP_EXISTS: Code = 0xC00D_2742_u32 as Code;
pub const E_BACKUP_CORRUPT: Code = 0xC00D_2743_u32 as Code;
pub const E_BACKUPRESTORE_BUSY: Code = 0xC00D_2744_u32 as Code;
pub const E_INVALID_PROPERTY: Code = 0xC00D_2749_u32 as Code;
pub const E_UNSUPPORTED_PROPERTY: Code = 0xC00D_275D_u32 as Code;
pub const E_RESTORE_FRAUD: Code = 0xC00D_2753_u32 as Code;
pub const E_TOO_MANY_RESETS: Code = 0xC00D_2766_u32 as Code;
pub const E_OPERATION_CANCELED: Code = 0xC00D_2768_u32 as Code;
pub const E_RESTORE_SERVICE_UNAVAILABLE: Code = 0xC00D_2846_u32 as Code;
pub const E_INVALID_KID: Code = 0xC00D_2849_u32 as Code;

/// Every result code with its name as the C header spells it.
pub const ALL: &[(Code, &str)] = &[
    (S_OK, "WM_S_OK"),
    (S_FALSE, "WM_S_FALSE"),
    (E_NOTIMPL, "WM_E_NOTIMPL"),
    (E_POINTER, "WM_E_POINTER"),
    (E_UNEXPECTED, "WM_E_UNEXPECTED"),
    (E_FILE_NOT_FOUND, "WM_E_FILE_NOT_FOUND"),
    (E_ACCESS_DENIED, "WM_E_ACCESS_DENIED"),
    (E_HANDLE, "WM_E_HANDLE"),
    (E_OUTOFMEMORY, "WM_E_OUTOFMEMORY"),
    (E_INVALIDARG, "WM_E_INVALIDARG"),
    (E_DISK_FULL, "WM_E_DISK_FULL"),
    (E_BUFFER_TOO_SMALL, "WM_E_BUFFER_TOO_SMALL"),
    (E_NOT_FOUND, "WM_E_NOT_FOUND"),
    (E_LICENSE_STORE_ERROR, "WM_E_LICENSE_STORE_ERROR"),
    (E_NEEDS_INDIVIDUALIZATION, "WM_E_NEEDS_INDIVIDUALIZATION"),
    (E_BACKUP_RESTORE_FAILURE, "WM_E_BACKUP_RESTORE_FAILURE"),
    (E_BACKUP_EXISTS, "WM_E_BACKUP_EXISTS"),
    (E_BACKUP_CORRUPT, "WM_E_BACKUP_CORRUPT"),
    (E_BACKUPRESTORE_BUSY, "WM_E_BACKUPRESTORE_BUSY"),
    (E_INVALID_PROPERTY, "WM_E_INVALID_PROPERTY"),
    (E_UNSUPPORTED_PROPERTY, "WM_E_UNSUPPORTED_PROPERTY"),
    (E_RESTORE_FRAUD, "WM_E_RESTORE_FRAUD"),
    (E_TOO_MANY_RESETS, "WM_E_TOO_MANY_RESETS"),
    (E_OPERATION_CANCELED, "WM_E_OPERATION_CANCELED"),
    (
        E_RESTORE_SERVICE_UNAVAILABLE,
        "WM_E_RESTORE_SERVICE_UNAVAILABLE",
    ),
    (E_INVALID_KID, "WM_E_INVALID_KID"),
];

/// The name of a result code as the header spells it (`"WM_E_BACKUP_CORRUPT"`), or `None` for a
/// code wmlicense does not define.
pub fn name(code: Code) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The result code an error reports.
pub fn of(e: &Error) -> Code {
    match e {
        Error::InvalidArg(_) => E_INVALIDARG,
        Error::InvalidKid(_) => E_INVALID_KID,
        Error::NotFound(_) => E_NOT_FOUND,
        Error::Store(_) => E_LICENSE_STORE_ERROR,
        Error::NeedsIndividualization(_) => E_NEEDS_INDIVIDUALIZATION,
        Error::BackupRestore(_) => E_BACKUP_RESTORE_FAILURE,
        Error::BackupExists(_) => E_BACKUP_EXISTS,
        Error::BackupCorrupt(_) => E_BACKUP_CORRUPT,
        Error::Busy(_) => E_BACKUPRESTORE_BUSY,
        Error::InvalidProperty(_) => E_INVALID_PROPERTY,
        Error::UnsupportedProperty(_) => E_UNSUPPORTED_PROPERTY,
        Error::RestoreFraud { .. } => E_RESTORE_FRAUD,
        Error::TooManyResets(_) => E_TOO_MANY_RESETS,
        Error::Canceled => E_OPERATION_CANCELED,
        Error::ServiceUnavailable(_) => E_RESTORE_SERVICE_UNAVAILABLE,
        Error::OutOfMemory => E_OUTOFMEMORY,
        Error::Internal(_) => E_UNEXPECTED,
        Error::FileNotFound(_) => E_FILE_NOT_FOUND,
        Error::AccessDenied(_) => E_ACCESS_DENIED,
        Error::DiskFull(_) => E_DISK_FULL,
        Error::Closed(_) => E_HANDLE,
    }
}

/// `0x80070057`: how the command-line tool and the logs print a code.
pub fn hex(code: Code) -> String {
    format!("0x{:08X}", code as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_distinct_and_failures_are_negative() {
        let mut codes: Vec<_> = ALL.iter().map(|(c, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
        for (code, name) in ALL {
            assert_eq!(*code < 0, name.starts_with("WM_E_"), "{name}");
            assert_eq!(self::name(*code), Some(*name));
        }
        assert_eq!(hex(E_INVALIDARG), "0x80070057");
        assert_eq!(name(0x1234), None);
    }
}
