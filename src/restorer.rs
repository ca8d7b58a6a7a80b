//! C API of the backup restorer: `wm_backup_restorer_*`.

use crate::boundary::{arg_bytes, arg_str, call, call_void, Fail, FfiResult, Out, SizedOut};
use crate::event::{sink_for, wm_operation, wm_status_callback};
use crate::handle::Registry;
use crate::result::*;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{
    BackupOptions, Operation, ReleaseOptions, RestoreOptions, Restorer,
};
use wmlicense_core::Error;

/// A backup restorer (opaque): the Windows Media Format SDK's backup restorer object. Create
/// with wm_backup_restorer_create, destroy with wm_backup_restorer_destroy.
#[allow(non_camel_case_types)]
pub struct wm_backup_restorer {
    _private: [u8; 0],
}

/// Data type of a property value: a 32-bit unsigned integer (not accepted by any property).
pub const WM_TYPE_DWORD: u32 = 0;
/// Data type of a property value: UTF-8 text. Every property takes this type.
pub const WM_TYPE_STRING: u32 = 1;
/// Data type of a property value: bytes (not accepted by any property).
pub const WM_TYPE_BINARY: u32 = 2;
/// Data type of a property value: a boolean (not accepted by any property).
pub const WM_TYPE_BOOL: u32 = 3;
/// Data type of a property value: a 64-bit unsigned integer (not accepted by any property).
pub const WM_TYPE_QWORD: u32 = 4;
/// Data type of a property value: a 16-bit unsigned integer (not accepted by any property).
pub const WM_TYPE_WORD: u32 = 5;
/// Data type of a property value: a GUID (not accepted by any property).
pub const WM_TYPE_GUID: u32 = 6;

/// Backup flag: replace an existing backup at BackupPath.
pub const WM_BACKUP_OVERWRITE: u32 = 0x1;
/// Restore flag: create the store if it does not exist yet. It gets a new random device
/// identity (kept beside its place until it is installed, so a retry is the same device) and a
/// lineage of its own; the restored licenses keep theirs.
pub const WM_RESTORE_INDIVIDUALIZE: u32 = 0x2;
/// Restore flag: do every check of a restore and change nothing. The License Management
/// Service gives its verdict without counting a device and hands out no key that decrypts a
/// license; a version 2 backup is authenticated chunk by chunk all the same (END: processed =
/// total = licenses verified, skipped 0), a version 1 backup only in its structure.
pub const WM_RESTORE_VERIFY_ONLY: u32 = 0x100;
/// Release flag: instead of the store's own device, free every device of the lineages of the
/// backup at RestorePath (a reset: once per reset window, else WM_E_TOO_MANY_RESETS).
pub const WM_RELEASE_ALL_DEVICES: u32 = 0x1;
/// wm_backup_restorer_wait timeout that never expires.
pub const WM_INFINITE: u32 = 0xFFFF_FFFF;

static RESTORERS: Registry<wm_backup_restorer, Restorer> = Registry::new("backup restorer");

/// The live restorer behind a handle; a destroyed one (still winding down) is WM_E_HANDLE.
fn live_restorer(r: *mut wm_backup_restorer) -> FfiResult<Arc<Restorer>> {
    let restorer = RESTORERS.get(r, "restorer")?;
    if restorer.is_destroyed() {
        return Err(Fail::Handle("backup restorer"));
    }
    Ok(restorer)
}

/// Creates a backup restorer whose events go to `callback` with `context`.
///
/// Errors: WM_E_POINTER (out_restorer NULL), WM_E_INVALIDARG (callback NULL).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_create(
    callback: wm_status_callback,
    context: *mut c_void,
    out_restorer: *mut *mut wm_backup_restorer,
) -> wm_hresult {
    call("wm_backup_restorer_create", || {
        // SAFETY: out_restorer is NULL or valid for writes (the C contract).
        let out = unsafe { Out::new(out_restorer, "out_restorer") }?;
        let callback = callback.ok_or_else(|| Fail::invalid("callback is NULL"))?;
        let r = Restorer::new(sink_for(callback, context));
        out.write(RESTORERS.insert(Arc::new(r)));
        Ok(WM_S_OK)
    })
}

/// Destroys a restorer: cancels a running operation, waits for its END, and after it returns the
/// callback is never called again for this restorer. Called from inside the restorer's own
/// callback (or from a callback whose restorer the other restorer's callback is waiting for) it
/// does not wait: the callback gets no further events and the operation winds down on its own.
/// NULL or an already destroyed handle does nothing.
#[no_mangle]
pub extern "C" fn wm_backup_restorer_destroy(restorer: *mut wm_backup_restorer) {
    call_void(|| {
        if let Ok(r) = RESTORERS.get(restorer, "restorer") {
            r.destroy();
            RESTORERS.remove(restorer);
        }
    })
}

/// Sets a property. `name` is matched case-insensitively (WM_PROP_*); `type` must be
/// WM_TYPE_STRING; `value` is `value_len` bytes of UTF-8, a trailing NUL allowed.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALID_PROPERTY (unknown name),
/// WM_E_UNSUPPORTED_PROPERTY (any type other than WM_TYPE_STRING), WM_E_INVALIDARG (empty value,
/// embedded NUL, not UTF-8, over 4096 bytes, ServiceUrl not http(s)).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_set_prop(
    restorer: *mut wm_backup_restorer,
    name: *const c_char,
    type_: u32,
    value: *const u8,
    value_len: u32,
) -> wm_hresult {
    call("wm_backup_restorer_set_prop", || {
        let r = live_restorer(restorer)?;
        // SAFETY: name is NULL or a NUL-terminated string (the C contract).
        let prop = unsafe { prop_name(name) }?;
        check_type(prop, type_)?;
        // SAFETY: value is NULL or points to value_len readable bytes (the C contract).
        let bytes = unsafe { arg_bytes(value, value_len as usize, "value") }?;
        let text = prop_text(prop, bytes)?;
        r.with_props(|p| p.set(prop, text))?;
        Ok(WM_S_OK)
    })
}

/// Gets a property by name with two-call sizing: with `value` NULL, `*value_len` receives the
/// size needed (bytes including the NUL) and the call returns WM_S_OK; with a buffer of
/// `*value_len` bytes, the NUL-terminated value is copied and `*value_len` set to its size; a
/// buffer too small gives WM_E_BUFFER_TOO_SMALL with the needed size in `*value_len`.
/// `*out_type` receives WM_TYPE_STRING.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALID_PROPERTY (unknown name), WM_E_NOT_FOUND
/// (not set), WM_E_BUFFER_TOO_SMALL.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_get_prop_by_name(
    restorer: *mut wm_backup_restorer,
    name: *const c_char,
    out_type: *mut u32,
    value: *mut u8,
    value_len: *mut u32,
) -> wm_hresult {
    call("wm_backup_restorer_get_prop_by_name", || {
        let r = live_restorer(restorer)?;
        // SAFETY: name is NULL or a NUL-terminated string (the C contract).
        let prop = unsafe { prop_name(name) }?;
        // SAFETY: out_type is NULL or valid for writes (the C contract).
        let out_type = unsafe { Out::new(out_type, "out_type") }?;
        // SAFETY: value_len and its buffer are NULL or valid as documented (the C contract).
        let len = unsafe { SizedOut::new(value, value_len, "value_len") }?;
        let v = r
            .with_props(|p| p.get(prop).map(str::to_owned))
            .ok_or_else(|| Fail::Core(Error::NotFound(format!("{} is not set", prop.as_str()))))?;
        if !len.fits(&v) {
            len.write_size(&v);
            return Err(Fail::BufferTooSmall("value".into()));
        }
        len.write(&v);
        out_type.write(WM_TYPE_STRING);
        Ok(WM_S_OK)
    })
}

/// Writes the number of properties set to `*out_count`.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_get_prop_count(
    restorer: *mut wm_backup_restorer,
    out_count: *mut u32,
) -> wm_hresult {
    call("wm_backup_restorer_get_prop_count", || {
        let r = live_restorer(restorer)?;
        // SAFETY: out_count is NULL or valid for writes (the C contract).
        let out = unsafe { Out::new(out_count, "out_count") }?;
        out.write(r.with_props(|p| p.len()) as u32);
        Ok(WM_S_OK)
    })
}

/// Gets the property at `index` (0 .. count-1, in the order first set): its canonical name and
/// value, each with two-call sizing as in wm_backup_restorer_get_prop_by_name (`name` and/or
/// `value` may be NULL to ask for sizes). If either buffer is too small, both needed sizes are
/// written and WM_E_BUFFER_TOO_SMALL is returned.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALIDARG (index >= count), WM_E_BUFFER_TOO_SMALL.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_get_prop_by_index(
    restorer: *mut wm_backup_restorer,
    index: u32,
    name: *mut c_char,
    name_len: *mut u32,
    out_type: *mut u32,
    value: *mut u8,
    value_len: *mut u32,
) -> wm_hresult {
    call("wm_backup_restorer_get_prop_by_index", || {
        let r = live_restorer(restorer)?;
        // SAFETY: name_len and its buffer are NULL or valid as documented (the C contract).
        let name_out = unsafe { SizedOut::new(name.cast::<u8>(), name_len, "name_len") }?;
        // SAFETY: out_type is NULL or valid for writes (the C contract).
        let out_type = unsafe { Out::new(out_type, "out_type") }?;
        // SAFETY: value_len and its buffer are NULL or valid as documented (the C contract).
        let value_out = unsafe { SizedOut::new(value, value_len, "value_len") }?;
        let (prop, v) = r
            .with_props(|p| p.at(index as usize).map(|(n, v)| (n, v.to_owned())))
            .ok_or_else(|| {
                Fail::invalid(format!("index {index} is not below the property count"))
            })?;
        if !name_out.fits(prop.as_str()) || !value_out.fits(&v) {
            name_out.write_size(prop.as_str());
            value_out.write_size(&v);
            return Err(Fail::BufferTooSmall("name or value".into()));
        }
        name_out.write(prop.as_str());
        value_out.write(&v);
        out_type.write(WM_TYPE_STRING);
        Ok(WM_S_OK)
    })
}

/// Removes a property.
///
/// Errors: WM_E_POINTER, WM_E_HANDLE, WM_E_INVALID_PROPERTY (unknown name), WM_E_NOT_FOUND
/// (not set).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_remove_prop(
    restorer: *mut wm_backup_restorer,
    name: *const c_char,
) -> wm_hresult {
    call("wm_backup_restorer_remove_prop", || {
        let r = live_restorer(restorer)?;
        // SAFETY: name is NULL or a NUL-terminated string (the C contract).
        let prop = unsafe { prop_name(name) }?;
        r.with_props(|p| p.remove(prop))?;
        Ok(WM_S_OK)
    })
}

/// Removes every property.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_remove_all_props(
    restorer: *mut wm_backup_restorer,
) -> wm_hresult {
    call("wm_backup_restorer_remove_all_props", || {
        live_restorer(restorer)?.with_props(|p| p.clear());
        Ok(WM_S_OK)
    })
}

/// Starts backing up the licenses of the store (StorePath, or the default store) that carry
/// WM_RIGHT_BACKUP into `<BackupPath>/licenses.wmlb`, and returns at once. Events: BEGIN,
/// PROGRESS and RESTRICTED_LICENSE (one per license left out), END. A failed or cancelled backup
/// leaves any previous backup untouched.
///
/// Fails without starting anything only for: WM_E_INVALIDARG (flags other than
/// WM_BACKUP_OVERWRITE), WM_E_INVALID_PROPERTY (BackupPath not set), WM_E_BACKUP_EXISTS (a backup
/// is there and WM_BACKUP_OVERWRITE is not given), WM_E_BACKUPRESTORE_BUSY (an operation runs);
/// plus WM_E_POINTER / WM_E_HANDLE. Every other outcome comes in END.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_backup(
    restorer: *mut wm_backup_restorer,
    flags: u32,
) -> wm_hresult {
    call("wm_backup_restorer_backup", || {
        check_flags(flags, WM_BACKUP_OVERWRITE, "a backup")?;
        live_restorer(restorer)?.backup(BackupOptions {
            overwrite: flags & WM_BACKUP_OVERWRITE != 0,
        })?;
        Ok(WM_S_OK)
    })
}

/// Starts restoring the backup at RestorePath (a directory holding licenses.wmlb, or the file)
/// into the store (StorePath, or the default store), and returns at once. Events: BEGIN,
/// CONNECTING, DISCONNECTING, ERROR_WITHURL (when the service refuses with a help URL), PROGRESS,
/// END. The store changes in one transaction that commits only after the whole backup verified;
/// a license already in the store with issued_at >= the backup's copy is kept, and expired
/// licenses are skipped (both counted in `skipped`).
///
/// Flags: WM_RESTORE_INDIVIDUALIZE, WM_RESTORE_VERIFY_ONLY. Fails without starting anything
/// only for: WM_E_INVALIDARG (other flags), WM_E_INVALID_PROPERTY (RestorePath not set),
/// WM_E_BACKUPRESTORE_BUSY; plus WM_E_POINTER / WM_E_HANDLE. Every other outcome comes in END.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_restore(
    restorer: *mut wm_backup_restorer,
    flags: u32,
) -> wm_hresult {
    call("wm_backup_restorer_restore", || {
        check_flags(
            flags,
            WM_RESTORE_INDIVIDUALIZE | WM_RESTORE_VERIFY_ONLY,
            "a restore",
        )?;
        live_restorer(restorer)?.restore(RestoreOptions {
            individualize: flags & WM_RESTORE_INDIVIDUALIZE != 0,
            verify_only: flags & WM_RESTORE_VERIFY_ONLY != 0,
        })?;
        Ok(WM_S_OK)
    })
}

/// Cancels a running backup: it stops promptly and its END carries WM_E_OPERATION_CANCELED.
/// Returns WM_S_FALSE when no backup is running.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_cancel_backup(
    restorer: *mut wm_backup_restorer,
) -> wm_hresult {
    call("wm_backup_restorer_cancel_backup", || {
        cancel(restorer, Operation::Backup)
    })
}

/// Cancels a running restore: it stops promptly, the store is left as it was, and its END
/// carries WM_E_OPERATION_CANCELED. Returns WM_S_FALSE when no restore is running.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_cancel_restore(
    restorer: *mut wm_backup_restorer,
) -> wm_hresult {
    call("wm_backup_restorer_cancel_restore", || {
        cancel(restorer, Operation::Restore)
    })
}

/// Starts a release on a worker thread. Flags 0: the store at StorePath (the default store when
/// unset) gives back its device's slot in every lineage the service counts it for, and its
/// licenses of those lineages are removed; if the service cannot be reached or refuses, the
/// store is unchanged; a device that is not counted changes nothing (END WM_S_FALSE).
/// WM_RELEASE_ALL_DEVICES: frees every device of the lineages of the backup at RestorePath,
/// proven by the backup itself (for a machine that died with its store); once per reset window,
/// else END WM_E_TOO_MANY_RESETS.
/// Events: BEGIN, CONNECTING, DISCONNECTING, [ERROR_WITHURL], END (with devices_used and
/// device_limit). Fails without starting anything only for unknown flags (WM_E_INVALIDARG),
/// RestorePath unset with WM_RELEASE_ALL_DEVICES (WM_E_INVALID_PROPERTY) and an operation
/// already running (WM_E_BACKUPRESTORE_BUSY).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_release(
    restorer: *mut wm_backup_restorer,
    flags: u32,
) -> wm_hresult {
    call("wm_backup_restorer_release", || {
        check_flags(flags, WM_RELEASE_ALL_DEVICES, "a release")?;
        live_restorer(restorer)?.release(ReleaseOptions {
            all_devices: flags & WM_RELEASE_ALL_DEVICES != 0,
        })?;
        Ok(WM_S_OK)
    })
}

/// Cancels a running release: it stops promptly (a network wait included) and its END carries
/// WM_E_OPERATION_CANCELED; once the service has released, the store's licenses are removed
/// anyway (a retry would finish it). Returns WM_S_FALSE when no release is running.
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_cancel_release(
    restorer: *mut wm_backup_restorer,
) -> wm_hresult {
    call("wm_backup_restorer_cancel_release", || {
        cancel(restorer, Operation::Release)
    })
}

/// Waits up to `timeout_ms` milliseconds (WM_INFINITE: no limit) until no operation is running
/// and the callback has returned from its END. Returns WM_S_OK when idle, WM_S_FALSE on
/// timeout. From inside the restorer's own callback it returns WM_E_BACKUPRESTORE_BUSY (it would
/// wait for itself).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_wait(
    restorer: *mut wm_backup_restorer,
    timeout_ms: u32,
) -> wm_hresult {
    call("wm_backup_restorer_wait", || {
        let r = live_restorer(restorer)?;
        let timeout = (timeout_ms != WM_INFINITE).then(|| Duration::from_millis(timeout_ms.into()));
        Ok(if r.wait(timeout)? {
            WM_S_OK
        } else {
            WM_S_FALSE
        })
    })
}

/// The outcome of the last operation that finished on a restorer, without tracking events
/// (wm_backup_restorer_last_result). Set `struct_size` to sizeof(wm_result) before the call;
/// later versions only append fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct wm_result {
    /// Set by the caller: sizeof(wm_result) as the caller's header declares it.
    pub struct_size: u32,
    /// The operation that finished; WM_OPERATION_NONE (0) when none has finished yet.
    pub operation: wm_operation,
    /// END's result code.
    pub hr: wm_hresult,
    /// END's processed: licenses written (backup) or imported (restore).
    pub processed: u64,
    /// END's total: licenses in the operation.
    pub total: u64,
    /// END's skipped: restricted (backup), or kept-newer or expired (restore).
    pub skipped: u64,
    /// END's devices_used (restore, release): the service's count of the lineage's devices.
    pub devices_used: u32,
    /// END's device_limit (restore, release); 0 when unknown.
    pub device_limit: u32,
}

/// Writes the figures of the END of the last operation that finished on the restorer (while one
/// runs: of the one before it) to `*out`. Inside END's callback they are that END's. With
/// wm_backup_restorer_wait this is a complete synchronous use of the library: start, wait,
/// read the result.
///
/// Returns WM_S_OK; WM_S_FALSE with `operation` WM_OPERATION_NONE and every figure 0 when no
/// operation has finished yet. Errors: WM_E_POINTER (out NULL), WM_E_HANDLE, WM_E_INVALIDARG
/// (`out->struct_size` smaller than this version's wm_result).
#[no_mangle]
pub unsafe extern "C" fn wm_backup_restorer_last_result(
    restorer: *mut wm_backup_restorer,
    out: *mut wm_result,
) -> wm_hresult {
    call("wm_backup_restorer_last_result", || {
        let r = live_restorer(restorer)?;
        if out.is_null() {
            return Err(Fail::Pointer("out"));
        }
        // SAFETY: `out` is non-NULL and, by the C contract, points to a wm_result whose
        // struct_size the caller set; a later version's larger struct starts the same way.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read_unaligned() };
        if (size as usize) < std::mem::size_of::<wm_result>() {
            return Err(Fail::invalid(format!(
                "struct_size {size} is smaller than sizeof(wm_result) ({})",
                std::mem::size_of::<wm_result>()
            )));
        }
        let last = r.last_result();
        let result = wm_result {
            struct_size: size,
            operation: last.as_ref().map_or(wm_operation::WM_OPERATION_NONE, |l| {
                wm_operation::of(l.operation)
            }),
            hr: last.as_ref().map_or(WM_S_OK, |l| l.code),
            processed: last.as_ref().map_or(0, |l| l.processed),
            total: last.as_ref().map_or(0, |l| l.total),
            skipped: last.as_ref().map_or(0, |l| l.skipped),
            devices_used: last.as_ref().map_or(0, |l| l.devices_used),
            device_limit: last.as_ref().map_or(0, |l| l.device_limit),
        };
        // SAFETY: as above; the caller's struct is at least this version's size.
        unsafe { out.write(result) };
        Ok(if last.is_some() { WM_S_OK } else { WM_S_FALSE })
    })
}

fn check_flags(flags: u32, allowed: u32, what: &str) -> FfiResult<()> {
    if flags & !allowed != 0 {
        return Err(Fail::invalid(format!(
            "flags 0x{flags:x} have bits 0x{:x} that {what} does not take",
            flags & !allowed
        )));
    }
    Ok(())
}

fn cancel(r: *mut wm_backup_restorer, op: Operation) -> FfiResult {
    Ok(if live_restorer(r)?.cancel(op) {
        WM_S_OK
    } else {
        WM_S_FALSE
    })
}

/// # Safety
/// `name` is NULL or a NUL-terminated string.
unsafe fn prop_name(name: *const c_char) -> FfiResult<PropName> {
    // SAFETY: forwarded from this function's contract.
    let name = unsafe { arg_str(name, 256, "name") }.map_err(|f| match f {
        // A name too long or not UTF-8 cannot be any known property.
        Fail::Core(Error::InvalidArg(m)) => Fail::Core(Error::InvalidProperty(m)),
        other => other,
    })?;
    Ok(PropName::parse(name)?)
}

/// A property value from C: UTF-8, one trailing NUL allowed (C callers often count it), no
/// NUL inside.
fn prop_text(prop: PropName, bytes: &[u8]) -> FfiResult<&str> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.contains(&0) {
        return Err(Fail::invalid(format!(
            "the {} value contains a NUL byte",
            prop.as_str()
        )));
    }
    std::str::from_utf8(bytes)
        .map_err(|_| Fail::invalid(format!("the {} value is not valid UTF-8", prop.as_str())))
}

fn check_type(prop: PropName, type_: u32) -> FfiResult<()> {
    if type_ == WM_TYPE_STRING {
        return Ok(());
    }
    Err(Fail::Core(Error::UnsupportedProperty(format!(
        "{} takes WM_TYPE_STRING, not type {type_}",
        prop.as_str()
    ))))
}
