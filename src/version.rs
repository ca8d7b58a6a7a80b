//! Library version.

use std::ffi::c_char;

/// Major version of the library this header belongs to.
pub const WM_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const WM_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const WM_VERSION_PATCH: u32 = 0;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// Returns the version of the linked library as "MAJOR.MINOR.PATCH" (static, never NULL). Compare
/// with WM_VERSION_* to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn wm_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_version_matches_cargo() {
        assert_eq!(
            super::WM_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            super::WM_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            super::WM_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
    }
}
