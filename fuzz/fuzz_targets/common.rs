//! What the C-API fuzz targets share: reading the input, picking a handle argument, and
//! checking a result code against the documented ones (and its message).

use std::ffi::CStr;
use std::sync::OnceLock;
use wmlicense::result::*;

/// With WMLICENSE_FUZZ_TRACE set, every call and its result go to stderr (to read a crash).
pub fn trace(function: &str, hr: wm_hresult) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WMLICENSE_FUZZ_TRACE").is_some()) {
        eprintln!("{function} -> 0x{:08x}", hr as u32);
    }
}

/// The fuzzer's bytes, read from the front; zeros once they run out.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    #[allow(dead_code)]
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    #[allow(dead_code)]
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// The handle argument of a call: mostly the live one, sometimes NULL or a foreign token.
#[derive(Clone, Copy)]
pub enum Handle {
    Live,
    Null,
    Foreign,
}

impl Handle {
    pub fn pick(inp: &mut Input) -> Handle {
        match inp.byte() {
            0..=243 => Handle::Live,
            244..=249 => Handle::Null,
            _ => Handle::Foreign,
        }
    }
    /// The pointer to pass: `live`, NULL, or a token that is never issued.
    pub fn ptr<T>(self, live: *mut T) -> *mut T {
        match self {
            Handle::Live => live,
            Handle::Null => std::ptr::null_mut(),
            // Tokens are multiples of 16 counted up from 16: this one is never issued.
            Handle::Foreign => (usize::MAX & !0xF) as *mut T,
        }
    }
    pub fn error(self) -> Option<wm_hresult> {
        match self {
            Handle::Live => None,
            Handle::Null => Some(WM_E_POINTER),
            Handle::Foreign => Some(WM_E_HANDLE),
        }
    }
}

/// `hr` must be one of `allowed`; a failure must leave a message naming the function.
pub fn check_code(function: &str, hr: wm_hresult, allowed: &[wm_hresult]) {
    trace(function, hr);
    assert!(
        allowed.contains(&hr),
        "{function} returned 0x{:08x}, allowed: {:x?}",
        hr as u32,
        allowed.iter().map(|c| *c as u32).collect::<Vec<_>>()
    );
    if hr < 0 {
        // SAFETY: wm_last_error_message returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(wmlicense::boundary::wm_last_error_message()) };
        let msg = msg.to_string_lossy();
        assert!(
            msg.starts_with(&format!("{function}: ")) && msg.len() > function.len() + 2,
            "{function} failed with the message {msg:?}"
        );
    }
}

/// Failure codes of which any may be reported; S_OK only when there is none.
pub fn expect(function: &str, hr: wm_hresult, errors: &[wm_hresult]) {
    if errors.is_empty() {
        check_code(function, hr, &[WM_S_OK]);
    } else {
        check_code(function, hr, errors);
    }
}
