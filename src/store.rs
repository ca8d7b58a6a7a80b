//! C API of the license store: `wm_license_store_*`.

use crate::boundary::{
    arg_bytes_max, arg_opt_str, arg_ref, call, call_void, Fail, FfiResult, Out, PATH_MAX_BYTES,
};
use crate::handle::Registry;
use crate::result::*;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wmlicense_core::license::{License, CONTENT_KEY_MAX, KEY_ID_MAX, TITLE_MAX};
use wmlicense_core::paths;
use wmlicense_core::Error;
use wmlicense_core::Store;

/// An open license store (opaque). Open with wm_license_store_open, close with
/// wm_license_store_close. One handle may be used from several threads; calls on it are
/// serialized. Separate handles (in one or several processes) may use one store at once.
#[allow(non_camel_case_types)]
pub struct wm_license_store {
    _private: [u8; 0],
}

/// A content license. In wm_license_store_put/put_many every pointer is read during the call
/// only. Handed to a wm_license_visitor, every pointer is valid only during that call.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct wm_license {
    /// Key ID bytes: 1 to 64 bytes (not a string; may hold any byte).
    pub key_id: *const u8,
    /// Length of key_id in bytes.
    pub key_id_len: usize,
    /// Content key bytes: 1 to 64 bytes. Secret: sealed at rest, never written in the clear.
    pub content_key: *const u8,
    /// Length of content_key in bytes.
    pub content_key_len: usize,
    /// NUL-terminated UTF-8 title of at most 1024 bytes, or NULL for none.
    pub title: *const c_char,
    /// WM_RIGHT_* bits; unknown bits are rejected with WM_E_INVALIDARG.
    pub rights: u32,
    /// Remaining plays; -1 = unlimited.
    pub play_count: i32,
    /// Unix seconds before which the license is not valid; 0 = no start.
    pub begin_date: i64,
    /// Unix seconds at which the license expires; 0 = never. Must not be before begin_date.
    pub expiration_date: i64,
    /// Unix seconds the license was issued; on restore, the newer copy wins.
    pub issued_at: i64,
}

/// Called once per license by wm_license_store_get / wm_license_store_for_each, on the calling
/// thread. Return 0 to continue, non-zero to stop. The license and its pointers are valid only
/// during the call. The visitor must not call functions on the store it is visiting (they return
/// WM_E_BACKUPRESTORE_BUSY).
#[allow(non_camel_case_types)]
pub type wm_license_visitor =
    Option<unsafe extern "C-unwind" fn(license: *const wm_license, context: *mut c_void) -> i32>;

/// Playback right.
pub const WM_RIGHT_PLAYBACK: u32 = 0x1;
/// Copy to a non-SDMI device.
pub const WM_RIGHT_COPY_TO_NON_SDMI_DEVICE: u32 = 0x2;
/// Burn to CD.
pub const WM_RIGHT_COPY_TO_CD: u32 = 0x8;
/// Copy to an SDMI device.
pub const WM_RIGHT_COPY_TO_SDMI_DEVICE: u32 = 0x10;
/// Play once.
pub const WM_RIGHT_ONE_TIME: u32 = 0x20;
/// Save a protected stream.
pub const WM_RIGHT_SAVE_STREAM_PROTECTED: u32 = 0x40;
/// Copy.
pub const WM_RIGHT_COPY: u32 = 0x80;
/// Collaborative play.
pub const WM_RIGHT_COLLABORATIVE_PLAY: u32 = 0x100;
/// The content owner allows backup and restore of this license (wmlicense's own right).
pub const WM_RIGHT_BACKUP: u32 = 0x200;

struct StoreHandle {
    store: Mutex<Store>,
}

static STORES: Registry<wm_license_store, StoreHandle> = Registry::new("license store");

thread_local! {
    /// Stores whose visitor is running on this thread: re-entering them would deadlock.
    static VISITING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn with_store<R>(
    handle: *mut wm_license_store,
    f: impl FnOnce(&mut Store) -> FfiResult<R>,
) -> FfiResult<R> {
    let h = STORES.get(handle, "store")?;
    if VISITING.with(|v| v.borrow().contains(&(handle as usize))) {
        return Err(Fail::Core(Error::Busy(
            "the store was called from inside its own visitor".into(),
        )));
    }
    // A panic inside a call (caught at the boundary) leaves the store usable: SQLite rolled back.
    let mut store = h.store.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut store)
}

/// Runs a visitor with the store marked busy for this thread.
fn visiting<R>(handle: *mut wm_license_store, f: impl FnOnce() -> R) -> R {
    struct Unmark(usize);
    impl Drop for Unmark {
        fn drop(&mut self) {
            VISITING.with(|v| v.borrow_mut().retain(|h| *h != self.0));
        }
    }
    VISITING.with(|v| v.borrow_mut().push(handle as usize));
    let _unmark = Unmark(handle as usize);
    f()
}

/// A key ID argument: checked against the 64-byte limit before it is read.
///
/// # Safety
/// A non-NULL `p` points to `len` readable bytes.
unsafe fn key_id_arg<'a>(p: *const u8, len: usize, name: &'static str) -> FfiResult<&'a [u8]> {
    // SAFETY: forwarded from this function's contract.
    unsafe { arg_bytes_max(p, len, KEY_ID_MAX, name, "key ID", Error::InvalidKid) }
}

/// # Safety
/// The pointers of `l` are valid as documented on `wm_license`.
unsafe fn license_from_c(l: &wm_license) -> FfiResult<License> {
    // SAFETY (this block and the two below): the pointers of `l` are valid as documented.
    let key_id = unsafe { key_id_arg(l.key_id, l.key_id_len, "license->key_id") }?;
    let content_key = unsafe {
        arg_bytes_max(
            l.content_key,
            l.content_key_len,
            CONTENT_KEY_MAX,
            "license->content_key",
            "content key",
            Error::InvalidArg,
        )
    }?;
    let title = unsafe { arg_opt_str(l.title, TITLE_MAX, "license->title") }?;
    let license = License {
        key_id: key_id.to_vec(),
        content_key: content_key.to_vec(),
        title: title.map(str::to_owned),
        rights: l.rights,
        play_count: l.play_count,
        begin_date: l.begin_date,
        expiration_date: l.expiration_date,
        issued_at: l.issued_at,
    };
    license.validate()?;
    Ok(license)
}

/// Calls `visitor` with a C view of `license`; returns the visitor's verdict (true = go on).
fn visit(
    license: &License,
    visitor: unsafe extern "C-unwind" fn(*const wm_license, *mut c_void) -> i32,
    context: *mut c_void,
) -> bool {
    let title = license
        .title
        .as_deref()
        .map(|t| CString::new(t).unwrap_or_default());
    let view = wm_license {
        key_id: license.key_id.as_ptr(),
        key_id_len: license.key_id.len(),
        content_key: license.content_key.as_ptr(),
        content_key_len: license.content_key.len(),
        title: title.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
        rights: license.rights,
        play_count: license.play_count,
        begin_date: license.begin_date,
        expiration_date: license.expiration_date,
        issued_at: license.issued_at,
    };
    let guard = crate::boundary::ParkOnUnwind;
    // SAFETY: the caller promised a valid function pointer; `view` outlives the call.
    let go_on = unsafe { visitor(&view, context) == 0 };
    std::mem::forget(guard);
    go_on
}

/// Opens (creating if needed) the license store in directory `path`, or the default store when
/// `path` is NULL: `$WMLICENSE_HOME` if set, else the platform's per-user data directory +
/// `wmlicense`. `path` is UTF-8, at most 4096 bytes. On success `*out_store` receives a handle to
/// close with wm_license_store_close.
///
/// Errors: WM_E_POINTER (out_store NULL), WM_E_INVALIDARG (path not UTF-8, too long or empty),
/// WM_E_LICENSE_STORE_ERROR (cannot create or open; see wm_last_error_message).
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_open(
    path: *const c_char,
    out_store: *mut *mut wm_license_store,
) -> wm_hresult {
    call("wm_license_store_open", || {
        // SAFETY: out_store is NULL or valid for writes (the C contract).
        let out = unsafe { Out::new(out_store, "out_store") }?;
        // SAFETY: path is NULL or a NUL-terminated string (the C contract).
        let dir = match unsafe { arg_opt_str(path, PATH_MAX_BYTES, "path") }? {
            Some("") => return Err(Fail::invalid("path is empty")),
            Some(p) => PathBuf::from(p),
            None => paths::default_store_dir()?,
        };
        let store = Store::open(&dir)?;
        let handle = STORES.insert(Arc::new(StoreHandle {
            store: Mutex::new(store),
        }));
        out.write(handle);
        Ok(WM_S_OK)
    })
}

/// Closes a store handle. NULL, or a handle already closed, does nothing. A call running on the
/// handle in another thread finishes first.
#[no_mangle]
pub extern "C" fn wm_license_store_close(store: *mut wm_license_store) {
    call_void(|| {
        if !store.is_null() {
            drop(STORES.remove(store));
        }
    })
}

/// Inserts `license`, or replaces the license with the same key ID.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALID_KID (key ID of 0 or more than 64 bytes),
/// WM_E_INVALIDARG (content key of 0 or more than 64 bytes, title over 1024 bytes or not UTF-8,
/// unknown rights bits, play_count < -1, negative dates, expiration before begin),
/// WM_E_LICENSE_STORE_ERROR.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_put(
    store: *mut wm_license_store,
    license: *const wm_license,
) -> wm_hresult {
    call("wm_license_store_put", || {
        // SAFETY: license is NULL or a valid wm_license whose pointers are valid (the C contract).
        let l = unsafe { license_from_c(arg_ref(license, "license")?) }?;
        with_store(store, |s| Ok(s.put(&l)?))?;
        Ok(WM_S_OK)
    })
}

/// Inserts or replaces `count` licenses in one transaction: either all are stored or, on any
/// error (including one invalid license), none. `licenses` may be NULL only when `count` is 0.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_put_many(
    store: *mut wm_license_store,
    licenses: *const wm_license,
    count: usize,
) -> wm_hresult {
    call("wm_license_store_put_many", || {
        if count > 0 && licenses.is_null() {
            return Err(Fail::Pointer("licenses"));
        }
        if count > isize::MAX as usize / std::mem::size_of::<wm_license>() {
            return Err(Fail::invalid("count is impossibly large"));
        }
        let items: &[wm_license] = if count == 0 {
            &[]
        } else {
            // SAFETY: non-NULL and `count` readable wm_license (the C contract), size checked.
            unsafe { std::slice::from_raw_parts(licenses, count) }
        };
        let converted = items
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // SAFETY: each element's pointers are valid as documented (the C contract).
                unsafe { license_from_c(l) }.map_err(|f| match f {
                    Fail::Core(Error::InvalidArg(m)) => {
                        Fail::invalid(format!("licenses[{i}]: {m}"))
                    }
                    Fail::Core(Error::InvalidKid(m)) => {
                        Fail::Core(Error::InvalidKid(format!("licenses[{i}]: {m}")))
                    }
                    other => other,
                })
            })
            .collect::<FfiResult<Vec<_>>>()?;
        with_store(store, |s| Ok(s.put_many(&converted)?))?;
        Ok(WM_S_OK)
    })
}

/// Looks up the license with the given key ID and calls `visitor` once with it.
///
/// Errors: WM_E_POINTER (store, visitor, or key_id NULL with key_id_len > 0), WM_E_HANDLE,
/// WM_E_INVALID_KID, WM_E_NOT_FOUND (no such license), WM_E_LICENSE_STORE_ERROR.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_get(
    store: *mut wm_license_store,
    key_id: *const u8,
    key_id_len: usize,
    visitor: wm_license_visitor,
    context: *mut c_void,
) -> wm_hresult {
    call("wm_license_store_get", || {
        // SAFETY: key_id is NULL or points to key_id_len readable bytes (the C contract).
        let key_id = unsafe { key_id_arg(key_id, key_id_len, "key_id") }?;
        let visitor = visitor.ok_or(Fail::Pointer("visitor"))?;
        let license = with_store(store, |s| Ok(s.get(key_id)?))?;
        visiting(store, || visit(&license, visitor, context));
        Ok(WM_S_OK)
    })
}

/// Removes the license with the given key ID.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALID_KID, WM_E_NOT_FOUND, WM_E_LICENSE_STORE_ERROR.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_remove(
    store: *mut wm_license_store,
    key_id: *const u8,
    key_id_len: usize,
) -> wm_hresult {
    call("wm_license_store_remove", || {
        // SAFETY: key_id is NULL or points to key_id_len readable bytes (the C contract).
        let key_id = unsafe { key_id_arg(key_id, key_id_len, "key_id") }?;
        with_store(store, |s| Ok(s.remove(key_id)?))?;
        Ok(WM_S_OK)
    })
}

/// Writes the number of licenses in the store to `*out_count`.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_count(
    store: *mut wm_license_store,
    out_count: *mut u64,
) -> wm_hresult {
    call("wm_license_store_count", || {
        // SAFETY: out_count is NULL or valid for writes (the C contract).
        let out = unsafe { Out::new(out_count, "out_count") }?;
        let n = with_store(store, |s| Ok(s.count()?))?;
        out.write(n);
        Ok(WM_S_OK)
    })
}

/// Calls `visitor` once for every license, in key-ID byte order, from one consistent snapshot,
/// on the calling thread; stops early (returning WM_S_OK) when the visitor returns non-zero.
/// Memory use does not grow with the store's size.
#[no_mangle]
pub unsafe extern "C" fn wm_license_store_for_each(
    store: *mut wm_license_store,
    visitor: wm_license_visitor,
    context: *mut c_void,
) -> wm_hresult {
    call("wm_license_store_for_each", || {
        let visitor = visitor.ok_or(Fail::Pointer("visitor"))?;
        with_store(store, |s| {
            visiting(store, || s.for_each(|l| Ok(visit(l, visitor, context))))?;
            Ok(())
        })?;
        Ok(WM_S_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wmlicense_core::license as l;

    #[test]
    fn rights_match_the_core() {
        let pairs = [
            (WM_RIGHT_PLAYBACK, l::RIGHT_PLAYBACK),
            (
                WM_RIGHT_COPY_TO_NON_SDMI_DEVICE,
                l::RIGHT_COPY_TO_NON_SDMI_DEVICE,
            ),
            (WM_RIGHT_COPY_TO_CD, l::RIGHT_COPY_TO_CD),
            (WM_RIGHT_COPY_TO_SDMI_DEVICE, l::RIGHT_COPY_TO_SDMI_DEVICE),
            (WM_RIGHT_ONE_TIME, l::RIGHT_ONE_TIME),
            (
                WM_RIGHT_SAVE_STREAM_PROTECTED,
                l::RIGHT_SAVE_STREAM_PROTECTED,
            ),
            (WM_RIGHT_COPY, l::RIGHT_COPY),
            (WM_RIGHT_COLLABORATIVE_PLAY, l::RIGHT_COLLABORATIVE_PLAY),
            (WM_RIGHT_BACKUP, l::RIGHT_BACKUP),
        ];
        for (c, core) in pairs {
            assert_eq!(c, core);
        }
    }
}
