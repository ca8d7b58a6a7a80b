//! `wmlicense`: the command-line tool (SPEC §6) for operators, support desks and scripts, on the
//! library's Rust API.
//!
//! Exit status: 0 success, 1 the operation failed (stderr: the result code in hex, its name,
//! the message and what to do), 2 bad usage. Ctrl-C cancels a running operation cleanly.

mod args;
mod licenses;
mod op;

use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;
use wmlicense_core::code::{self, Code};
use wmlicense_core::Error;

/// A failure as the tool reports it: the code, and the message.
pub struct Failure {
    pub hr: Code,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            hr: code::of(&e),
            // The core's words: the C flag names of the C API's messages mean nothing here.
            message: e.to_string(),
        }
    }
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            hr: code::E_INVALIDARG,
            message: message.into(),
        }
    }
}

/// What a user can do about a failure with this code.
fn what_to_do(hr: Code) -> &'static str {
    use wmlicense_core::code::*;
    match hr {
        E_BACKUP_EXISTS => "pass --overwrite to replace the backup that is there",
        E_NEEDS_INDIVIDUALIZATION => "pass --individualize to create the store",
        E_RESTORE_FRAUD => {
            "free a slot: run `wmlicense release` on a computer that no longer needs these \
             licenses, or `wmlicense release --all --from BACKUP` if that computer is gone"
        }
        E_TOO_MANY_RESETS => {
            "a lineage can be reset once per reset window: wait, or ask the service's operator"
        }
        E_RESTORE_SERVICE_UNAVAILABLE => {
            "check --service and the network, then run the command again (a retry never uses \
             another device)"
        }
        E_BACKUP_CORRUPT => {
            "use another copy of the backup, and check it was made for this License Management \
             Service"
        }
        E_FILE_NOT_FOUND => "check the path",
        E_ACCESS_DENIED => "check the permissions of the path",
        E_DISK_FULL => "free some disk space and run the command again",
        E_BACKUPRESTORE_BUSY => {
            "another operation is using this store or backup directory: wait for it, then retry"
        }
        E_OPERATION_CANCELED => "nothing was changed; run the command again to retry",
        E_INVALID_KID => "a key ID is 1 to 64 bytes, written in hex",
        E_INVALIDARG => "check the arguments (wmlicense --help)",
        E_NOT_FOUND => "`wmlicense list` shows the licenses of the store",
        E_LICENSE_STORE_ERROR => "check --store / --home and that the store is intact",
        _ => "the message says what went wrong",
    }
}

/// `0xC00D2743 E_BACKUP_CORRUPT`.
pub fn code_text(hr: Code) -> String {
    format!(
        "0x{:08X} {}",
        hr as u32,
        code::name(hr).unwrap_or("(unknown code)")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(home) = &cli.home {
        // Before any thread starts: the library reads it for the default store and service.
        std::env::set_var("WMLICENSE_HOME", home);
    }
    let what = cli.command.name();
    let result = match cli.command {
        Command::List { store } => licenses::list(store, cli.json),
        Command::Put(put) => licenses::put(put),
        Command::Import { store, file } => licenses::import(store, &file),
        Command::Remove { store, key_id } => licenses::remove(store, &key_id),
        Command::Inspect { path } => licenses::inspect(&path, cli.json),
        Command::Backup(b) => op::backup(b, cli.json),
        Command::Restore(r) => op::restore(r, cli.json),
        Command::Release(r) => op::release(r, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!(
                "wmlicense: {what} failed: {}: {}\n  what to do: {}",
                code_text(f.hr),
                f.message,
                what_to_do(f.hr)
            );
            ExitCode::from(1)
        }
    }
}
