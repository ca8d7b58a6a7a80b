//! Opening the SQLite databases of wmlicense (the store, the embedded service's ledger) the same
//! way: private file, write-ahead log, busy timeout.

use crate::error::{Error, Result};
use crate::fsutil;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::Path;
use std::time::{Duration, Instant};

/// The page size of databases wmlicense creates.
pub const PAGE_SIZE: i64 = 16384;

/// How long a connection waits for another connection's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (creating, mode 0600) the database at `path` in WAL mode with the busy timeout.
pub fn open_wal(path: &Path) -> Result<Connection> {
    match fsutil::create_private_file(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // SQLite would block forever reading a FIFO, say: only a regular file will do.
            fsutil::open_regular_read(path).map_err(|e| {
                Error::io(format!("cannot open {}", path.display()), &e, Error::Store)
            })?;
        }
        Err(e) => {
            return Err(Error::io(
                format!("cannot create {}", path.display()),
                &e,
                Error::Store,
            ))
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::store(format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A new database gets 16 KiB pages (SQLite ignores this for one that exists): measured on a
    // million licenses, inserting them in key order takes 0.4x the time it takes with 4 KiB
    // pages and reading them back 0.8x. It must come before the switch to WAL.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // Switching a new database to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY
    // at once (without its busy handler) while another process is doing the same: retry here.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Ok(mode) => break mode,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Error::store(format!("cannot open {}", path.display()), e)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store(format!(
            "{} cannot use write-ahead logging (journal mode {mode})",
            path.display()
        )));
    }
    // WAL + NORMAL: a process crash loses nothing committed; a power loss may lose the last
    // commits but never leaves a half-applied one.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}
