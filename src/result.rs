//! Result codes: HRESULT-compatible values, the same as the Windows Media Format SDK's. The
//! values and names are the core's (`wmlicense_core::code`); they are spelled out here for
//! cbindgen, and a test checks the header against the core.

use std::ffi::c_char;
use wmlicense_core::Error;

/// A result code: HRESULT-compatible, negative on failure. Compare with the WM_* constants or
/// test with WM_SUCCEEDED / WM_FAILED.
#[allow(non_camel_case_types)]
pub type wm_hresult = i32;

/// 0x00000000: success.
pub const WM_S_OK: wm_hresult = 0x0000_0000;
/// 0x00000001: success, nothing done (cancel with nothing running, wait timed out).
pub const WM_S_FALSE: wm_hresult = 0x0000_0001;
/// 0x80004001: not implemented.
pub const WM_E_NOTIMPL: wm_hresult = 0x8000_4001_u32 as wm_hresult;
/// 0x80004003: NULL where a pointer is required.
pub const WM_E_POINTER: wm_hresult = 0x8000_4003_u32 as wm_hresult;
/// 0x8000FFFF: internal failure or a caught panic.
pub const WM_E_UNEXPECTED: wm_hresult = 0x8000_FFFF_u32 as wm_hresult;
/// 0x80070002: there is no backup at RestorePath, or no store at a path that must exist.
pub const WM_E_FILE_NOT_FOUND: wm_hresult = 0x8007_0002_u32 as wm_hresult;
/// 0x80070005: the file system refuses access to a path (permissions, read-only file system).
pub const WM_E_ACCESS_DENIED: wm_hresult = 0x8007_0005_u32 as wm_hresult;
/// 0x80070006: the handle was destroyed/closed, or is not a handle of this type.
pub const WM_E_HANDLE: wm_hresult = 0x8007_0006_u32 as wm_hresult;
/// 0x8007000E: out of memory.
pub const WM_E_OUTOFMEMORY: wm_hresult = 0x8007_000E_u32 as wm_hresult;
/// 0x80070057: an argument is invalid (value out of range, unknown flag bits, bad string).
pub const WM_E_INVALIDARG: wm_hresult = 0x8007_0057_u32 as wm_hresult;
/// 0x80070070: no space is left where a backup or a store is written.
pub const WM_E_DISK_FULL: wm_hresult = 0x8007_0070_u32 as wm_hresult;
/// 0x8007007A: the caller's buffer is too small; the needed size was written back.
pub const WM_E_BUFFER_TOO_SMALL: wm_hresult = 0x8007_007A_u32 as wm_hresult;
/// 0x80070490: no such license or property.
pub const WM_E_NOT_FOUND: wm_hresult = 0x8007_0490_u32 as wm_hresult;
/// 0xC00D2712: the license store cannot be opened, read or written.
pub const WM_E_LICENSE_STORE_ERROR: wm_hresult = 0xC00D_2712_u32 as wm_hresult;
/// 0xC00D2728: restore into a store that does not exist yet without WM_RESTORE_INDIVIDUALIZE.
pub const WM_E_NEEDS_INDIVIDUALIZATION: wm_hresult = 0xC00D_2728_u32 as wm_hresult;
/// 0xC00D272D: backup or restore failed for a reason not listed elsewhere (the message says why).
pub const WM_E_BACKUP_RESTORE_FAILURE: wm_hresult = 0xC00D_272D_u32 as wm_hresult;
/// 0xC00D2742: a backup is present and WM_BACKUP_OVERWRITE was not given.
pub const WM_E_BACKUP_EXISTS: wm_hresult = 0xC00D_2742_u32 as wm_hresult;
/// 0xC00D2743: the backup is missing, truncated, altered or not a backup.
pub const WM_E_BACKUP_CORRUPT: wm_hresult = 0xC00D_2743_u32 as wm_hresult;
/// 0xC00D2744: an operation is already running on this restorer or backup path, or the store is
/// in use by a visitor on this thread.
pub const WM_E_BACKUPRESTORE_BUSY: wm_hresult = 0xC00D_2744_u32 as wm_hresult;
/// 0xC00D2749: a required property is not set, or the property name is unknown.
pub const WM_E_INVALID_PROPERTY: wm_hresult = 0xC00D_2749_u32 as wm_hresult;
/// 0xC00D275D: the property value has a type the property does not take.
pub const WM_E_UNSUPPORTED_PROPERTY: wm_hresult = 0xC00D_275D_u32 as wm_hresult;
/// 0xC00D2753: the License Management Service refuses: the restore limit is reached.
pub const WM_E_RESTORE_FRAUD: wm_hresult = 0xC00D_2753_u32 as wm_hresult;
/// 0xC00D2766: a reset of a lineage's devices inside its reset window (one reset per window,
/// 365 days by default).
pub const WM_E_TOO_MANY_RESETS: wm_hresult = 0xC00D_2766_u32 as wm_hresult;
/// 0xC00D2768: the operation was cancelled.
pub const WM_E_OPERATION_CANCELED: wm_hresult = 0xC00D_2768_u32 as wm_hresult;
/// 0xC00D2846: the License Management Service cannot be reached.
pub const WM_E_RESTORE_SERVICE_UNAVAILABLE: wm_hresult = 0xC00D_2846_u32 as wm_hresult;
/// 0xC00D2849: the key ID is empty or longer than 64 bytes.
pub const WM_E_INVALID_KID: wm_hresult = 0xC00D_2849_u32 as wm_hresult;

/// The name of a result code as the header spells it (`"WM_E_BACKUP_CORRUPT"`), or `None` for a
/// code wmlicense does not define. The names live in the core (`wmlicense_core::code`).
pub fn code_name(hr: wm_hresult) -> Option<&'static str> {
    wmlicense_core::code::name(hr)
}

/// Every result code with its description, in one table so that none can be forgotten.
pub(crate) const MESSAGES: &[(wm_hresult, &str)] = &[
    (WM_S_OK, "The operation succeeded.\0"),
    (WM_S_FALSE, "The operation succeeded but had nothing to do.\0"),
    (WM_E_NOTIMPL, "The function is not implemented.\0"),
    (WM_E_POINTER, "A required pointer argument was NULL.\0"),
    (WM_E_UNEXPECTED, "An unexpected internal failure occurred in wmlicense.\0"),
    (WM_E_FILE_NOT_FOUND, "The file or directory does not exist: no backup at the restore path, or no store where one must be.\0"),
    (WM_E_ACCESS_DENIED, "The file system refuses access to a path.\0"),
    (WM_E_HANDLE, "The handle is closed, destroyed, or not a handle of the expected type.\0"),
    (WM_E_OUTOFMEMORY, "There was not enough memory to complete the operation.\0"),
    (WM_E_INVALIDARG, "An argument is invalid: out of range, unknown flag bits, or a malformed string.\0"),
    (WM_E_DISK_FULL, "No space is left on the disk where the backup or the store is written.\0"),
    (WM_E_BUFFER_TOO_SMALL, "The buffer is too small; the required size was written to the length argument.\0"),
    (WM_E_NOT_FOUND, "No license or property with that identifier exists.\0"),
    (WM_E_LICENSE_STORE_ERROR, "The license store cannot be opened, read or written.\0"),
    (WM_E_NEEDS_INDIVIDUALIZATION, "The target license store does not exist; restore with WM_RESTORE_INDIVIDUALIZE to create it.\0"),
    (WM_E_BACKUP_RESTORE_FAILURE, "The backup or restore failed.\0"),
    (WM_E_BACKUP_EXISTS, "A backup already exists at the backup path; pass WM_BACKUP_OVERWRITE to replace it.\0"),
    (WM_E_BACKUP_CORRUPT, "The backup is missing, truncated, altered, or not a wmlicense backup.\0"),
    (WM_E_BACKUPRESTORE_BUSY, "Another operation is already running on this restorer, backup path or store.\0"),
    (WM_E_INVALID_PROPERTY, "A required property is not set, or the property name is unknown.\0"),
    (WM_E_UNSUPPORTED_PROPERTY, "The property value has a type that the property does not accept.\0"),
    (WM_E_RESTORE_FRAUD, "The License Management Service refused the restore: the restore limit for these licenses is reached.\0"),
    (WM_E_TOO_MANY_RESETS, "The License Management Service refused the reset: the lineage was already reset inside its reset window.\0"),
    (WM_E_OPERATION_CANCELED, "The operation was cancelled.\0"),
    (WM_E_RESTORE_SERVICE_UNAVAILABLE, "The License Management Service cannot be reached.\0"),
    (WM_E_INVALID_KID, "The key ID is empty or longer than 64 bytes.\0"),
];

const UNKNOWN: &str = "Unknown result code.\0";

/// The message an error reports to C: the core's text, with the C spelling of the flag that
/// would have avoided the failure.
pub fn message_of(e: &Error) -> String {
    match e {
        Error::NeedsIndividualization(store) => format!(
            "the license store {store} does not exist; restore with WM_RESTORE_INDIVIDUALIZE to create it"
        ),
        Error::BackupExists(path) => format!(
            "a backup already exists at {path}; pass WM_BACKUP_OVERWRITE to replace it"
        ),
        other => other.to_string(),
    }
}

/// The result code an error reports (the core's mapping).
pub fn hresult_of(e: &Error) -> wm_hresult {
    wmlicense_core::code::of(e)
}

/// Returns a static English description of `hr` (never NULL; unknown codes get a generic text).
/// The string lives for the whole life of the program.
#[no_mangle]
pub extern "C" fn wm_hresult_message(hr: wm_hresult) -> *const c_char {
    MESSAGES
        .iter()
        .find(|(code, _)| *code == hr)
        .map_or(UNKNOWN, |(_, m)| m)
        .as_ptr()
        .cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_message_is_distinct_and_terminated() {
        let mut seen = HashSet::new();
        for (code, msg) in MESSAGES {
            assert!(msg.ends_with('\0'));
            assert!(seen.insert(*msg), "duplicate message for 0x{code:08x}");
        }
    }

    /// Every result code the header defines has its own description.
    #[test]
    fn every_code_in_the_header_has_a_message() {
        let header = include_str!("../include/wmlicense.h");
        let mut codes = 0;
        for line in header.lines() {
            let mut words = line.split_whitespace();
            let (Some("#define"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !(name.starts_with("WM_E_") || name.starts_with("WM_S_")) {
                continue;
            }
            let digits = value
                .trim_start_matches("(wm_hresult)")
                .trim_end_matches('u');
            let code = digits.parse::<u32>().expect("a decimal code") as wm_hresult;
            codes += 1;
            // SAFETY: wm_hresult_message returns a static NUL-terminated string.
            let msg = unsafe { std::ffi::CStr::from_ptr(wm_hresult_message(code)) };
            assert_ne!(
                msg.to_bytes(),
                UNKNOWN.trim_end_matches('\0').as_bytes(),
                "{name} has no message"
            );
            assert_eq!(code_name(code), Some(name), "code_name of {name}");
        }
        assert_eq!(
            codes,
            wmlicense_core::code::ALL.len(),
            "the header and the core define different sets of result codes"
        );
    }
}
