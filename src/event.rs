//! Events as C sees them: wm_status, wm_operation, wm_event and the callback that gets them.

use crate::result::*;
use std::ffi::{c_char, c_void, CString};
use wmlicense_core::engine::{Counters, Event};
use wmlicense_core::restorer::{Notice, Operation, Sink};

/// What an event reports (the Windows Media Format SDK's WMT_STATUS values, plus PROGRESS).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum wm_status {
    /// Not sent by wmlicense; kept for ported code.
    WM_STATUS_ERROR = 0x00,
    /// An operation started. First event of every operation.
    WM_STATUS_BACKUPRESTORE_BEGIN = 0x15,
    /// An operation ended; `hr` is its outcome, `message` says why on failure. Always the last
    /// event of an operation, exactly once.
    WM_STATUS_BACKUPRESTORE_END = 0x1B,
    /// Restore and release (and a backup that fetches a network service's key): asking the
    /// License Management Service.
    WM_STATUS_BACKUPRESTORE_CONNECTING = 0x1C,
    /// The License Management Service answered, or could not be reached.
    WM_STATUS_BACKUPRESTORE_DISCONNECTING = 0x1D,
    /// Restore: the service refused (`hr`) and gives a help URL (`message`); `devices_used` and
    /// `device_limit` say why.
    WM_STATUS_ERROR_WITHURL = 0x1E,
    /// Backup: this license (`key_id`, `title`) may not be backed up and was left out.
    WM_STATUS_RESTRICTED_LICENSE = 0x1F,
    /// Progress: `processed` of `total` licenses. At most every 100 ms, plus one before END.
    WM_STATUS_BACKUPRESTORE_PROGRESS = 0x100,
}

/// Which operation an event (or a wm_result) belongs to.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum wm_operation {
    /// No operation: a wm_result before any operation has finished on the restorer.
    WM_OPERATION_NONE = 0,
    /// wm_backup_restorer_backup.
    WM_OPERATION_BACKUP = 1,
    /// wm_backup_restorer_restore.
    WM_OPERATION_RESTORE = 2,
    /// wm_backup_restorer_release.
    WM_OPERATION_RELEASE = 3,
}

impl wm_operation {
    pub(crate) fn of(op: Operation) -> wm_operation {
        match op {
            Operation::Backup => wm_operation::WM_OPERATION_BACKUP,
            Operation::Restore => wm_operation::WM_OPERATION_RESTORE,
            Operation::Release => wm_operation::WM_OPERATION_RELEASE,
        }
    }
}

/// One event of a backup restorer. The event and every pointer in it are valid only during the
/// callback: copy what you keep.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct wm_event {
    /// sizeof(wm_event) in this build; later versions only append fields.
    pub struct_size: u32,
    /// What happened.
    pub status: wm_status,
    /// END and ERROR_WITHURL: the outcome; otherwise WM_S_OK.
    pub hr: wm_hresult,
    /// The operation the event belongs to.
    pub operation: wm_operation,
    /// RESTRICTED_LICENSE: the license's key ID bytes; otherwise NULL.
    pub key_id: *const u8,
    /// Length of key_id; 0 when key_id is NULL.
    pub key_id_len: usize,
    /// RESTRICTED_LICENSE: the license's title, or NULL.
    pub title: *const c_char,
    /// PROGRESS, END: licenses written (backup) or imported (restore) so far.
    pub processed: u64,
    /// PROGRESS, END: licenses in the operation (backup: in the store; restore: in the backup).
    pub total: u64,
    /// END: licenses left out: restricted (backup), or kept because the store's copy is as new
    /// or newer, or expired (restore).
    pub skipped: u64,
    /// END on failure: what went wrong; ERROR_WITHURL: the URL; otherwise NULL.
    pub message: *const c_char,
    /// END of a restore or release, ERROR_WITHURL: the service's count of devices of the
    /// backup's lineage after its decision (several lineages: the one closest to its limit);
    /// 0 when unknown. A restore with WM_RESTORE_VERIFY_ONLY reads it without using a device.
    pub devices_used: u32,
    /// With devices_used: the lineage's device limit; 0 when unknown.
    pub device_limit: u32,
}

/// Receives the events of a backup restorer, on a library worker thread (never inside the call
/// that started the operation), in order and one at a time per restorer. It may call any wm_*
/// function, including starting the next operation from END and destroying its own restorer.
/// `context` is the pointer given to wm_backup_restorer_create. It must not throw (C++) or
/// longjmp out. A thread ended from inside it (pthread_exit, as CPython before 3.14 ends threads
/// at interpreter exit) leaves that worker parked for good, its operation unfinished, and the
/// process free to exit, instead of aborting it.
#[allow(non_camel_case_types)]
pub type wm_status_callback =
    Option<unsafe extern "C-unwind" fn(event: *const wm_event, context: *mut c_void)>;

/// The C callback and its context, movable to worker threads. The caller of
/// wm_backup_restorer_create promises the context may be used from them.
struct CallbackTarget {
    callback: unsafe extern "C-unwind" fn(*const wm_event, *mut c_void),
    context: usize,
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// A sink that turns each restorer notice into a wm_event for `callback`.
pub(crate) fn sink_for(
    callback: unsafe extern "C-unwind" fn(*const wm_event, *mut c_void),
    context: *mut c_void,
) -> Sink {
    let target = CallbackTarget {
        callback,
        context: context as usize,
    };
    Box::new(move |op: Operation, notice: &Notice<'_>, c: &Counters| {
        let mut ev = wm_event {
            struct_size: std::mem::size_of::<wm_event>() as u32,
            status: wm_status::WM_STATUS_BACKUPRESTORE_BEGIN,
            hr: notice.code(),
            operation: wm_operation::of(op),
            key_id: std::ptr::null(),
            key_id_len: 0,
            title: std::ptr::null(),
            processed: c.processed,
            total: c.total,
            skipped: c.skipped,
            message: std::ptr::null(),
            devices_used: 0,
            device_limit: 0,
        };
        // Owners of the strings the event points to; they outlive the callback.
        let mut title = None;
        let mut message = None;
        match notice {
            Notice::Begin => {}
            Notice::Op(Event::Connecting) => {
                ev.status = wm_status::WM_STATUS_BACKUPRESTORE_CONNECTING
            }
            Notice::Op(Event::Disconnecting) => {
                ev.status = wm_status::WM_STATUS_BACKUPRESTORE_DISCONNECTING
            }
            Notice::Op(Event::Progress) => ev.status = wm_status::WM_STATUS_BACKUPRESTORE_PROGRESS,
            Notice::Op(Event::ErrorWithUrl(url)) => {
                ev.status = wm_status::WM_STATUS_ERROR_WITHURL;
                message = Some(c_string(url));
                ev.devices_used = c.devices_used;
                ev.device_limit = c.device_limit;
            }
            Notice::Op(Event::Restricted { key_id, title: t }) => {
                ev.status = wm_status::WM_STATUS_RESTRICTED_LICENSE;
                ev.key_id = key_id.as_ptr();
                ev.key_id_len = key_id.len();
                title = t.map(c_string);
            }
            Notice::End(outcome) => {
                ev.status = wm_status::WM_STATUS_BACKUPRESTORE_END;
                ev.devices_used = c.devices_used;
                ev.device_limit = c.device_limit;
                message = outcome.error().map(|e| c_string(&message_of(e)));
            }
        }
        ev.title = title.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
        ev.message = message.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
        let guard = crate::boundary::ParkOnUnwind;
        // SAFETY: the callback pointer came non-NULL from C; `ev` lives through the call.
        unsafe { (target.callback)(&ev, target.context as *mut c_void) };
        std::mem::forget(guard);
    })
}
