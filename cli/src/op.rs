//! Backup, restore and release on a backup restorer: events as JSON lines or a progress bar,
//! a one-line summary, Ctrl-C cancels.

use crate::args::{BackupArgs, ReleaseArgs, RestoreArgs};
use crate::Failure;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wmlicense::result::{hresult_of, wm_hresult, WM_S_FALSE, WM_S_OK};
use wmlicense_core::engine::{Counters, Event};
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{
    BackupOptions, Notice, Operation, ReleaseOptions, RestoreOptions, Restorer,
};
use wmlicense_core::service::hex;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Windows: the console runs this on a thread of its own for Ctrl-C and Ctrl-Break.
#[cfg(windows)]
unsafe extern "system" fn on_console_ctrl(kind: u32) -> windows_sys::core::BOOL {
    use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT};
    if kind == CTRL_C_EVENT || kind == CTRL_BREAK_EVENT {
        INTERRUPTED.store(true, Ordering::SeqCst);
        1 // handled: the process goes on and cancels
    } else {
        0 // closing the console, logging off: the default (the process ends)
    }
}

/// Ctrl-C sets a flag the waiting thread turns into a cancel.
fn catch_ctrl_c() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    #[cfg(windows)]
    // SAFETY: the handler only stores to an atomic; it stays valid for the process's life.
    unsafe {
        windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_console_ctrl), 1);
    }
}

/// What END said.
#[derive(Default)]
struct Ending {
    hr: wm_hresult,
    message: Option<String>,
    counters: Counters,
}

fn status_name(n: &Notice<'_>) -> &'static str {
    match n {
        Notice::Begin => "BACKUPRESTORE_BEGIN",
        Notice::End(_) => "BACKUPRESTORE_END",
        Notice::Op(Event::Connecting) => "BACKUPRESTORE_CONNECTING",
        Notice::Op(Event::Disconnecting) => "BACKUPRESTORE_DISCONNECTING",
        Notice::Op(Event::ErrorWithUrl(_)) => "ERROR_WITHURL",
        Notice::Op(Event::Progress) => "BACKUPRESTORE_PROGRESS",
        Notice::Op(Event::Restricted { .. }) => "RESTRICTED_LICENSE",
    }
}

/// The outcome END carries, as the C API reports it.
fn end_code(result: &wmlicense_core::Result<()>, c: &Counters) -> (wm_hresult, Option<String>) {
    match result {
        Ok(()) if c.unchanged => (WM_S_FALSE, None),
        Ok(()) => (WM_S_OK, None),
        Err(e) => (hresult_of(e), Some(e.to_string())),
    }
}

fn hr_text(hr: wm_hresult) -> String {
    format!("0x{:08X}", hr as u32)
}

/// Runs one operation to its END: sets `props`, starts it with `start`, waits (turning Ctrl-C
/// into a cancel), prints the summary.
fn run(
    op: Operation,
    json_events: bool,
    props: &[(PropName, Option<String>)],
    start: impl FnOnce(&Restorer) -> wmlicense_core::Result<()>,
) -> Result<(), Failure> {
    let ending = Arc::new(Mutex::new(Ending::default()));
    let bar = if !json_events && std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} licenses")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(op.name());
        Some(b)
    } else {
        None
    };
    let sink = {
        let ending = ending.clone();
        let bar = bar.clone();
        Box::new(move |op: Operation, n: &Notice<'_>, c: &Counters| {
            if json_events {
                let mut ev = json!({
                    "status": status_name(n),
                    "operation": op.name(),
                    "hr": hr_text(WM_S_OK),
                    "processed": c.processed,
                    "total": c.total,
                    "skipped": c.skipped,
                });
                match n {
                    Notice::Op(Event::Restricted { key_id, title }) => {
                        ev["key_id"] = hex(key_id).into();
                        ev["title"] = (*title).into();
                    }
                    Notice::Op(Event::ErrorWithUrl(url)) => {
                        ev["hr"] = hr_text(wmlicense::result::WM_E_RESTORE_FRAUD).into();
                        ev["message"] = (*url).into();
                        ev["devices_used"] = c.devices_used.into();
                        ev["device_limit"] = c.device_limit.into();
                    }
                    Notice::End(result) => {
                        let (hr, message) = end_code(result, c);
                        ev["hr"] = hr_text(hr).into();
                        ev["message"] = message.into();
                        ev["devices_used"] = c.devices_used.into();
                        ev["device_limit"] = c.device_limit.into();
                    }
                    _ => {}
                }
                println!("{ev}");
            }
            if let Some(b) = &bar {
                b.set_length(c.total);
                b.set_position(c.processed);
            }
            if let Notice::End(result) = n {
                let (hr, message) = end_code(result, c);
                *ending.lock().unwrap_or_else(|e| e.into_inner()) = Ending {
                    hr,
                    message,
                    counters: *c,
                };
            }
        })
    };
    let restorer = Restorer::new(sink);
    restorer.with_props(|p| -> Result<(), Failure> {
        for (name, value) in props {
            if let Some(v) = value {
                p.set(*name, v)?;
            }
        }
        Ok(())
    })?;
    catch_ctrl_c();
    start(&restorer)?;
    let mut cancelled = false;
    while !restorer.wait(Some(Duration::from_millis(50)))? {
        if INTERRUPTED.load(Ordering::SeqCst) && !cancelled {
            cancelled = true;
            restorer.cancel(op);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let e = std::mem::take(&mut *ending.lock().unwrap_or_else(|e| e.into_inner()));
    let c = &e.counters;
    if !json_events && e.hr >= 0 {
        let devices = if c.device_limit > 0 {
            format!("; {} of {} devices used", c.devices_used, c.device_limit)
        } else {
            String::new()
        };
        match op {
            Operation::Backup => println!(
                "backup: {} of {} licenses written, {} restricted",
                c.processed, c.total, c.skipped
            ),
            Operation::Restore => println!(
                "restore: {} of {} licenses imported, {} skipped{devices}",
                c.processed, c.total, c.skipped
            ),
            Operation::Release => println!(
                "release: {}{devices}",
                if e.hr == WM_S_FALSE {
                    "this device was not counted; nothing to release"
                } else {
                    "done"
                }
            ),
        }
    }
    if e.hr < 0 {
        return Err(Failure {
            hr: e.hr,
            message: e.message.unwrap_or_default(),
        });
    }
    Ok(())
}

fn path_text(p: Option<&Path>) -> Option<String> {
    p.map(|p| p.to_string_lossy().into_owned())
}

pub fn backup(a: BackupArgs, json: bool) -> Result<(), Failure> {
    let props = [
        (PropName::BackupPath, path_text(Some(&a.to))),
        (PropName::StorePath, path_text(a.store.as_deref())),
        (PropName::ServiceUrl, a.service.clone()),
        (PropName::ServiceKey, a.service_key.clone()),
    ];
    run(Operation::Backup, json, &props, |r| {
        r.backup(BackupOptions {
            overwrite: a.overwrite,
        })
    })
}

pub fn restore(a: RestoreArgs, json: bool) -> Result<(), Failure> {
    let props = [
        (PropName::RestorePath, path_text(Some(&a.from))),
        (PropName::StorePath, path_text(a.store.as_deref())),
        (PropName::ServiceUrl, a.service.clone()),
    ];
    run(Operation::Restore, json, &props, |r| {
        r.restore(RestoreOptions {
            individualize: a.individualize,
            verify_only: a.verify_only,
        })
    })
}

pub fn release(a: ReleaseArgs, json: bool) -> Result<(), Failure> {
    let props = [
        (PropName::RestorePath, path_text(a.from.as_deref())),
        (PropName::StorePath, path_text(a.store.as_deref())),
        (PropName::ServiceUrl, a.service.clone()),
    ];
    run(Operation::Release, json, &props, |r| {
        r.release(ReleaseOptions { all_devices: a.all })
    })
}
