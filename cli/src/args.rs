//! The command line (SPEC §6).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "wmlicense",
    version,
    about = "The wmlicense license store: list and edit licenses, back them up, restore them, \
             release a computer's slot",
    after_help = "Exit status: 0 success, 1 the operation failed (stderr says the result code, \
                  its name, the message and what to do), 2 bad usage. Ctrl-C cancels a running \
                  backup, restore or release cleanly."
)]
pub struct Cli {
    /// The data directory (sets WMLICENSE_HOME): the default store and the embedded License
    /// Management Service live there.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print every event as one JSON object per line on stdout (and list/inspect as JSON).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// One line per license: key ID (hex), title, rights, plays, dates. Never the content key.
    List {
        /// The store (default: the default store).
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Add or replace one license.
    Put(PutArgs),
    /// Add licenses from JSON Lines (one license per line, the fields of `put`, hex for
    /// bytes): all or nothing.
    Import {
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// The file, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Remove one license.
    Remove {
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        #[arg(long, value_name = "HEX")]
        key_id: String,
    },
    /// Back the store up into DIR/licenses.wmlb.
    Backup(BackupArgs),
    /// Restore a backup into the store.
    Restore(RestoreArgs),
    /// Give back this store's device slot (its licenses of those lineages are removed), or
    /// with --all, free every device of a backup's lineages.
    Release(ReleaseArgs),
    /// The backup header's fields (no secret).
    Inspect {
        /// A backup file, or the directory holding licenses.wmlb.
        path: PathBuf,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::List { .. } => "list",
            Command::Put(_) => "put",
            Command::Import { .. } => "import",
            Command::Remove { .. } => "remove",
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::Release(_) => "release",
            Command::Inspect { .. } => "inspect",
        }
    }
}

#[derive(Args)]
pub struct PutArgs {
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The key ID, 1 to 64 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub key_id: String,
    /// The content key, 1 to 64 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub content_key: String,
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// Comma list of playback, copy-to-non-sdmi-device, copy-to-cd, copy-to-sdmi-device,
    /// one-time, save-stream-protected, copy, collaborative-play, backup.
    #[arg(long, value_name = "LIST", default_value = "playback,backup")]
    pub rights: String,
    /// Plays left; -1 unlimited.
    #[arg(long, value_name = "N", default_value_t = -1, allow_hyphen_values = true)]
    pub plays: i32,
    /// Valid from (unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ; 0 = always).
    #[arg(long, value_name = "T")]
    pub begin: Option<String>,
    /// Valid until (same forms; 0 = never expires).
    #[arg(long, value_name = "T")]
    pub expires: Option<String>,
    /// When the license was issued (same forms; default: now). A restore keeps the newer copy.
    #[arg(long, value_name = "T")]
    pub issued_at: Option<String>,
}

#[derive(Args)]
pub struct BackupArgs {
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The backup directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Replace a backup that is there.
    #[arg(long)]
    pub overwrite: bool,
    /// A network License Management Service (http:// or https://); default: the embedded one.
    #[arg(long, value_name = "URL")]
    pub service: Option<String>,
    /// The service's public key (64 hex digits): seal to it without asking the service.
    #[arg(long, value_name = "HEX")]
    pub service_key: Option<String>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup: a file, or the directory holding licenses.wmlb.
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Create the store if it does not exist (a new device).
    #[arg(long)]
    pub individualize: bool,
    /// Do every check, the service's included, and change nothing (shows the device count).
    #[arg(long)]
    pub verify_only: bool,
    #[arg(long, value_name = "URL")]
    pub service: Option<String>,
}

#[derive(Args)]
pub struct ReleaseArgs {
    #[arg(long, value_name = "DIR", conflicts_with = "all")]
    pub store: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    pub service: Option<String>,
    /// Free every device of the lineages of the backup at --from (once per reset window).
    #[arg(long, requires = "from")]
    pub all: bool,
    /// The backup proving the lineage (with --all).
    #[arg(long, value_name = "PATH", requires = "all")]
    pub from: Option<PathBuf>,
}
