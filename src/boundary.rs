//! The one way across the C boundary: the panic boundary, argument conversion and the
//! per-thread last error message. No export hand-rolls a NULL check.

use crate::result::*;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use wmlicense_core::Error;

/// Why an export failed: a core error, or a problem with the arguments themselves.
pub(crate) enum Fail {
    Core(Error),
    /// A required pointer argument (named) was NULL.
    Pointer(&'static str),
    /// The handle is not live.
    Handle(&'static str),
    /// A caller buffer is too small (the needed size was already written back).
    BufferTooSmall(String),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Core(e)
    }
}

impl Fail {
    pub(crate) fn invalid(msg: impl Into<String>) -> Fail {
        Fail::Core(Error::InvalidArg(msg.into()))
    }

    fn code(&self) -> wm_hresult {
        match self {
            Fail::Core(e) => hresult_of(e),
            Fail::Pointer(_) => WM_E_POINTER,
            Fail::Handle(_) => WM_E_HANDLE,
            Fail::BufferTooSmall(_) => WM_E_BUFFER_TOO_SMALL,
        }
    }

    fn message(&self) -> String {
        match self {
            Fail::Core(e) => message_of(e),
            Fail::Pointer(arg) => format!("argument '{arg}' is NULL"),
            Fail::Handle(kind) => format!("the {kind} handle is closed, destroyed or not a {kind}"),
            Fail::BufferTooSmall(what) => format!("the {what} buffer is too small"),
        }
    }
}

pub(crate) type FfiResult<T = wm_hresult> = std::result::Result<T, Fail>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(function: &str, message: &str) {
    let text = format!("{function}: {message}").replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
}

/// Runs the body of export `function`: catches panics (→ WM_E_UNEXPECTED), turns a failure into
/// its result code and records its message for `wm_last_error_message`.
pub(crate) fn call(function: &'static str, body: impl FnOnce() -> FfiResult) -> wm_hresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(hr)) => hr,
        Ok(Err(fail)) => {
            set_last_error(function, &fail.message());
            fail.code()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(function, &format!("internal error (panic): {what}"));
            WM_E_UNEXPECTED
        }
    }
}

/// Like [`call`] for exports that cannot fail (destroy, close): a panic is swallowed.
pub(crate) fn call_void(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

/// Returns the message of the last failure of a wm_* call on the calling thread ("" if none).
/// The string stays valid until the next failing wm_* call on this thread.
#[no_mangle]
pub extern "C" fn wm_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A required pointer argument, as a reference.
///
/// # Safety
/// `p` is NULL or points to a valid `T` for the duration of the call.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &'static str) -> FfiResult<&'a T> {
    // SAFETY: the caller guarantees `p` is NULL or valid for the call; NULL becomes None.
    unsafe { p.as_ref() }.ok_or(Fail::Pointer(name))
}

/// A required out-pointer, checked before any work is done and written only on success.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// # Safety
    /// `p` is NULL or valid for writes of `T` until the export returns.
    pub(crate) unsafe fn new(p: *mut T, name: &'static str) -> FfiResult<Out<T>> {
        if p.is_null() {
            Err(Fail::Pointer(name))
        } else {
            Ok(Out(p))
        }
    }

    pub(crate) fn write(&self, v: T) {
        // SAFETY: non-NULL (checked in `new`) and valid for writes (promised to `new`).
        unsafe { self.0.write(v) }
    }
}

/// A (buffer, length) output pair with two-call sizing for a string: the length pointer is
/// required; a NULL buffer asks for the size only (bytes including the NUL).
pub(crate) struct SizedOut {
    buf: *mut u8,
    len: *mut u32,
}

impl SizedOut {
    /// # Safety
    /// `len` is NULL or valid for reads and writes; a non-NULL `buf` is valid for writes of
    /// `*len` bytes; both until the export returns.
    pub(crate) unsafe fn new(
        buf: *mut u8,
        len: *mut u32,
        name: &'static str,
    ) -> FfiResult<SizedOut> {
        if len.is_null() {
            return Err(Fail::Pointer(name));
        }
        Ok(SizedOut { buf, len })
    }

    /// Whether `s` and its NUL fit (a size-only query always fits).
    pub(crate) fn fits(&self, s: &str) -> bool {
        // SAFETY: `len` is valid for reads (promised to `new`).
        self.buf.is_null() || unsafe { *self.len } as usize > s.len()
    }

    /// Writes the size `s` needs (bytes including the NUL).
    pub(crate) fn write_size(&self, s: &str) {
        // SAFETY: `len` is valid for writes (promised to `new`).
        unsafe { *self.len = u32::try_from(s.len() + 1).unwrap_or(u32::MAX) };
    }

    /// Writes the needed size, and the string with its NUL when a buffer was given that
    /// [`SizedOut::fits`].
    pub(crate) fn write(&self, s: &str) {
        if !self.buf.is_null() && self.fits(s) {
            // SAFETY: the buffer holds `*len` > s.len() bytes (checked by `fits`).
            unsafe {
                std::ptr::copy_nonoverlapping(s.as_ptr(), self.buf, s.len());
                *self.buf.add(s.len()) = 0;
            }
        }
        self.write_size(s);
    }
}

/// A (pointer, length) byte range of at most `max` bytes: a longer one fails with `too_long`
/// before any slice is made over the caller's memory.
///
/// # Safety
/// As for [`arg_bytes`].
pub(crate) unsafe fn arg_bytes_max<'a>(
    p: *const u8,
    len: usize,
    max: usize,
    name: &'static str,
    what: &str,
    too_long: impl FnOnce(String) -> Error,
) -> FfiResult<&'a [u8]> {
    if len > max {
        return Err(Fail::Core(too_long(format!(
            "{what} is {len} bytes; it must be 1 to {max} bytes"
        ))));
    }
    // SAFETY: forwarded from this function's own contract.
    unsafe { arg_bytes(p, len, name) }
}

/// A (pointer, length) byte range: (NULL, 0) is empty; (NULL, n > 0) is WM_E_POINTER.
///
/// # Safety
/// A non-NULL `p` points to `len` readable bytes for the duration of the call.
pub(crate) unsafe fn arg_bytes<'a>(
    p: *const u8,
    len: usize,
    name: &'static str,
) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::Pointer(name));
    }
    if len > isize::MAX as usize {
        return Err(Fail::invalid(format!("{name}: length {len} is impossible")));
    }
    // SAFETY: non-NULL, `len` readable bytes (the caller's promise), at most isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A NUL-terminated UTF-8 string of at most `max` bytes; NULL gives `None`. The scan stops at
/// `max + 1` bytes, so an unterminated buffer is not read far past its limit.
///
/// # Safety
/// A non-NULL `p` points to a NUL-terminated string or to at least `max + 1` readable bytes.
pub(crate) unsafe fn arg_opt_str<'a>(
    p: *const c_char,
    max: usize,
    name: &'static str,
) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    let mut len = 0usize;
    // SAFETY: the string is NUL-terminated or has `max + 1` readable bytes, and the scan stops
    // at the NUL or after `max + 1` bytes.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
        if len > max {
            return Err(Fail::invalid(format!("{name} is longer than {max} bytes")));
        }
    }
    // SAFETY: the `len` bytes before the NUL were just read.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Fail::invalid(format!("{name} is not valid UTF-8")))
}

/// A required NUL-terminated UTF-8 string (see [`arg_opt_str`]).
///
/// # Safety
/// As for [`arg_opt_str`].
pub(crate) unsafe fn arg_str<'a>(
    p: *const c_char,
    max: usize,
    name: &'static str,
) -> FfiResult<&'a str> {
    // SAFETY: forwarded from this function's own contract.
    unsafe { arg_opt_str(p, max, name) }?.ok_or(Fail::Pointer(name))
}

/// Longest path accepted from C, in bytes.
pub(crate) const PATH_MAX_BYTES: usize = 4096;

/// Armed while a C callback (a restorer's callback, a store visitor) runs. Its drop runs only when the callback unwinds, which a C
/// callback cannot do by panicking: it is a forced unwind (pthread_exit: CPython < 3.14 ends a
/// thread that wants the GIL during finalization that way) or a foreign exception. Any
/// catch_unwind above (deliver, run, the pool, std's thread root) would catch it and abort the
/// process ("FATAL: exception not rethrown"); the worker parks for good instead, which is what
/// CPython 3.14 does with such threads itself. The process exits around it.
pub(crate) struct ParkOnUnwind;

impl Drop for ParkOnUnwind {
    fn drop(&mut self) {
        loop {
            std::thread::park();
        }
    }
}
