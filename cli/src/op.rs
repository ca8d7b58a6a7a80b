//! Backup, restore and release on a backup restorer: events as JSON lines or a progress bar,
//! a one-line summary, Ctrl-C cancels.

use crate::args::{BackupArgs, ReleaseArgs, RestoreArgs};
use crate::Failure;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wmlicense_core::code;
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

/// Runs one operation to its END: sets `props`, starts it with `start`, waits (turning Ctrl-C
/// into a cancel), prints the summary.
fn run(
    op: Operation,
    json_events: bool,
    props: &[(PropName, Option<String>)],
    start: impl FnOnce(&Restorer) -> wmlicense_core::Result<()>,
) -> Result<(), Failure> {
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
        let bar = bar.clone();
        Box::new(move |op: Operation, n: &Notice<'_>, c: &Counters| {
            if json_events {
                let mut ev = json!({
                    "status": n.status().name(),
                    "operation": op.name(),
                    "hr": code::hex(n.code()),
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
                        ev["message"] = (*url).into();
                        ev["devices_used"] = c.devices_used.into();
                        ev["device_limit"] = c.device_limit.into();
                    }
                    Notice::End(outcome) => {
                        ev["message"] = outcome.error().map(|e| e.to_string()).into();
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
            // Said once the cancel is taken, so the person (or a script) knows the Ctrl-C
            // arrived; END follows when the operation has stopped.
            eprintln!("wmlicense: interrupted: cancelling the {}", op.name());
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // The outcome as the core recorded it (the same code END carried).
    let e = restorer.last_result().ok_or_else(|| {
        Failure::from(wmlicense_core::Error::Internal(format!(
            "the {} ended without a result",
            op.name()
        )))
    })?;
    let c = &e;
    if !json_events && e.code >= 0 {
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
                if e.code == code::S_FALSE {
                    "this device was not counted; nothing to release"
                } else {
                    "done"
                }
            ),
        }
    }
    if e.code < 0 {
        return Err(Failure {
            hr: e.code,
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
