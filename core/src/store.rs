//! The license store: a directory holding a SQLite database and the store's device identity.

use crate::crypto::{self, SecretSealer};
use crate::db;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::identity::{DeviceIdentity, IDENTITY_FILE};
use crate::license::{validate_key_id, License, LicenseRef};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DB_FILE: &str = "licenses.db";

/// Schema migrations: entry `i` upgrades schema version `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE meta (
         name  TEXT PRIMARY KEY,
         value BLOB NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE licenses (
         key_id             BLOB PRIMARY KEY,
         sealed_content_key BLOB NOT NULL,
         title              TEXT,
         rights             INTEGER NOT NULL,
         play_count         INTEGER NOT NULL,
         begin_date         INTEGER NOT NULL,
         expiration_date    INTEGER NOT NULL,
         issued_at          INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 1 -> 2: a license keeps the lineage of the store it was first put into (NULL: this
    // store's own lineage), so that any chain of backups and restores counts against it.
    "ALTER TABLE licenses ADD COLUMN lineage_id BLOB;",
    // 2 -> 3: content keys are sealed with ring's ChaCha20-Poly1305 (12-byte nonce) instead of
    // XChaCha20-Poly1305 (10 times cheaper per key, see crypto::SecretSealer). No SQL: `reseal_content_keys` rewrites every
    // row, in the migration's transaction.
    "",
];

/// The migration (its index in MIGRATIONS) that re-seals every content key.
const RESEAL_MIGRATION: usize = 2;

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const COLUMNS: &str =
    "key_id, sealed_content_key, title, rights, play_count, begin_date, expiration_date, issued_at";

/// A license put here has this store's lineage (?9 is NULL); replacing one keeps its lineage.
const UPSERT: &str = "INSERT INTO licenses (key_id, sealed_content_key, title, rights, play_count,
        begin_date, expiration_date, issued_at, lineage_id)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
     ON CONFLICT (key_id) DO UPDATE SET sealed_content_key = excluded.sealed_content_key,
        title = excluded.title, rights = excluded.rights, play_count = excluded.play_count,
        begin_date = excluded.begin_date, expiration_date = excluded.expiration_date,
        issued_at = excluded.issued_at";

/// Like UPSERT, but an existing license with `issued_at >=` the incoming one is kept.
const STORED_ISSUED_AT: &str = "SELECT issued_at FROM licenses WHERE key_id = ?1";

/// A restored license keeps its lineage (?9, NULL for this store's own); a newer copy replacing
/// one already here keeps the lineage of the one here, which was first.
const UPSERT_IF_NEWER: &str = "INSERT INTO licenses (key_id, sealed_content_key, title, rights,
        play_count, begin_date, expiration_date, issued_at, lineage_id)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
     ON CONFLICT (key_id) DO UPDATE SET sealed_content_key = excluded.sealed_content_key,
        title = excluded.title, rights = excluded.rights, play_count = excluded.play_count,
        begin_date = excluded.begin_date, expiration_date = excluded.expiration_date,
        issued_at = excluded.issued_at
     WHERE excluded.issued_at > licenses.issued_at";

/// An open license store.
pub struct Store {
    dir: PathBuf,
    conn: Connection,
    identity: DeviceIdentity,
    sealer: SecretSealer,
    lineage_id: [u8; 16],
}

impl Store {
    /// True when `dir` holds a store (its database exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_FILE).is_file()
    }

    /// Opens the store in `dir`, creating the directory and the store if needed.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, true, true)
    }

    /// Opens an existing store; `Error::NotFound` when `dir` holds none.
    pub fn open_existing(dir: &Path) -> Result<Store> {
        Self::open_with(dir, false, false)
    }

    /// Creates a store in a staging directory that the caller holds locked (a store being
    /// built by a restore): it does not take the directory's lock again.
    pub fn create_staged(dir: &Path) -> Result<Store> {
        Self::open_with(dir, true, false)
    }

    fn open_with(dir: &Path, create: bool, lock_creation: bool) -> Result<Store> {
        if !create && !Self::exists(dir) {
            return Err(Error::NotFound(format!(
                "there is no license store at {}",
                dir.display()
            )));
        }
        let mut _creating = None;
        if create {
            fsutil::create_private_dir_all(dir).map_err(|e| {
                Error::io(format!("cannot create {}", dir.display()), &e, Error::Store)
            })?;
            if !Self::exists(dir) && lock_creation {
                // Creating a store holds its directory's lock, which a restore installing a new
                // store at the same place takes too: neither sees the other's half-made store.
                _creating = Some(fsutil::FileLock::lock_dir(dir, &|| false).map_err(|e| {
                    Error::io(format!("cannot lock {}", dir.display()), &e, Error::Store)
                })?);
            }
        }
        // An identity is created only with the store: a database whose identity file is gone
        // cannot open its content keys, and a fresh identity would hide that.
        let holds_data = fs::metadata(dir.join(DB_FILE)).is_ok_and(|m| m.len() > 0);
        let identity = if create && !holds_data {
            DeviceIdentity::load_or_create(dir)?
        } else {
            DeviceIdentity::load(dir)?
        };
        let mut conn = db::open_wal(&dir.join(DB_FILE))?;
        migrate(&mut conn, &identity.storage_key)?;
        let lineage_id = read_lineage(&conn)?;
        let sealer = SecretSealer::new(&identity.storage_key)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            conn,
            identity,
            sealer,
            lineage_id,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }
    pub fn lineage_id(&self) -> [u8; 16] {
        self.lineage_id
    }

    /// Copies the write-ahead log into the database and empties it, so that closing the store
    /// has nothing left to do. Interruptible (see [`Store::interrupt_handle`]).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// For a store that no other connection can see yet (a restore's staging store): no
    /// rollback journal and no flushes while it fills, so every page is written once. A
    /// failure leaves the database unusable, which is fine only because the whole store is
    /// then discarded. [`Store::end_bulk_load`] makes it an ordinary store again.
    pub fn begin_bulk_load(&mut self) -> Result<()> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = OFF", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("off") {
            return Err(Error::Store(format!(
                "cannot switch the new store's journal off (journal mode {mode})"
            )));
        }
        self.conn.pragma_update(None, "synchronous", "OFF")?;
        Ok(())
    }

    /// Back to write-ahead logging after [`Store::begin_bulk_load`], then flushes the database
    /// to disk (the flush ends as soon as `cancelled` says so, with `Error::Canceled`).
    pub fn end_bulk_load(&mut self, cancelled: &dyn Fn() -> bool) -> Result<()> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store(format!(
                "cannot switch the new store back to write-ahead logging (journal mode {mode})"
            )));
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let path = self.dir.join(DB_FILE);
        fsutil::sync_file_cancellable(&path, cancelled).map_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                Error::Canceled
            } else {
                Error::io(format!("cannot flush {}", path.display()), &e, Error::Store)
            }
        })
    }

    /// A handle that makes the statement this store runs now (on any thread) stop with an
    /// error; used to cancel long operations.
    pub fn interrupt_handle(&self) -> rusqlite::InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// Inserts the license, or replaces the one with the same key ID.
    pub fn put(&mut self, license: &License) -> Result<()> {
        self.put_many(std::slice::from_ref(license))
    }

    /// Inserts or replaces every license in one transaction: all or none.
    pub fn put_many(&mut self, licenses: &[License]) -> Result<()> {
        for l in licenses {
            l.validate()?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT)?;
            for l in licenses {
                let sealed = self.sealer.seal(&l.key_id, &l.content_key)?;
                bind_and_run(&mut stmt, l, &sealed, None)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, key_id: &[u8]) -> Result<License> {
        validate_key_id(key_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM licenses WHERE key_id = ?1"))?;
        let row = stmt
            .query_row([key_id], |r| Ok(RawRow::read(r)))
            .optional()?;
        match row {
            Some(raw) => raw?.into_license(&self.sealer),
            None => Err(Error::NotFound("no license with that key ID".into())),
        }
    }

    pub fn remove(&mut self, key_id: &[u8]) -> Result<()> {
        validate_key_id(key_id)?;
        let n = self
            .conn
            .execute("DELETE FROM licenses WHERE key_id = ?1", [key_id])?;
        if n == 0 {
            return Err(Error::NotFound("no license with that key ID".into()));
        }
        Ok(())
    }

    /// Removes every license of the given lineages, in one transaction; how many went.
    pub fn remove_lineages(&mut self, lineages: &[[u8; 16]]) -> Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for l in lineages {
            n += if *l == self.lineage_id {
                tx.execute(
                    "DELETE FROM licenses WHERE lineage_id IS NULL OR lineage_id = ?1",
                    [&l[..]],
                )?
            } else {
                tx.execute("DELETE FROM licenses WHERE lineage_id = ?1", [&l[..]])?
            };
        }
        tx.commit()?;
        Ok(n as u64)
    }

    pub fn count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM licenses", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Streams every license, in key-ID order, from one consistent snapshot. `visit` returns
    /// `Ok(false)` to stop early.
    pub fn for_each(&self, visit: impl FnMut(&License) -> Result<bool>) -> Result<()> {
        for_each_in(&self.conn, &self.sealer, visit)
    }

    /// Runs `f` inside one read transaction: everything it reads comes from the same snapshot,
    /// whatever other connections commit meanwhile.
    pub fn read_snapshot<R>(&mut self, f: impl FnOnce(&Snapshot<'_>) -> Result<R>) -> Result<R> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let snap = Snapshot {
            conn: &tx,
            sealer: &self.sealer,
            own_lineage: self.lineage_id,
        };
        let r = f(&snap)?;
        tx.commit()?;
        Ok(r)
    }

    /// Starts a read transaction: from here until [`Store::end_read`], everything
    /// [`Store::current_snapshot`] reads comes from one snapshot, whatever other connections
    /// commit meanwhile (and they are never held up). Unlike [`Store::read_snapshot`], the store
    /// may move to another thread with the transaction open.
    pub fn begin_read(&self) -> Result<()> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        // A read transaction takes its snapshot at its first read.
        let started = self
            .conn
            .query_row("SELECT COUNT(*) FROM meta", [], |_| Ok(()));
        if started.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        Ok(started?)
    }

    /// The snapshot of the read transaction [`Store::begin_read`] started.
    pub fn current_snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            conn: &self.conn,
            sealer: &self.sealer,
            own_lineage: self.lineage_id,
        }
    }

    /// Ends the read transaction [`Store::begin_read`] started.
    pub fn end_read(&self) -> Result<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    /// Offers licenses to the store inside one transaction that `f` fills. `Write` commits when
    /// `f` returns `Ok` and rolls everything back on an error; `CheckOnly` reads only (no write
    /// lock) and tells what a write would do. Waiting for another writer's lock ends as soon as
    /// `cancelled` says so.
    pub fn import<R>(
        &mut self,
        mode: ImportMode,
        cancelled: &dyn Fn() -> bool,
        f: impl FnOnce(&mut Importer<'_>) -> Result<R>,
    ) -> Result<R> {
        let begin = match mode {
            ImportMode::Write => "BEGIN IMMEDIATE",
            ImportMode::CheckOnly => "BEGIN DEFERRED",
        };
        self.begin_cancellable(begin, cancelled)?;
        let mut open = OpenTransaction {
            conn: &self.conn,
            open: true,
        };
        let r = {
            let mut imp = Importer {
                stmt: match mode {
                    ImportMode::Write => self.conn.prepare_cached(UPSERT_IF_NEWER)?,
                    ImportMode::CheckOnly => self.conn.prepare_cached(STORED_ISSUED_AT)?,
                },
                mode,
                sealer: &self.sealer,
                own_lineage: self.lineage_id,
            };
            f(&mut imp)?
        };
        self.conn.execute_batch(match mode {
            ImportMode::Write => "COMMIT",
            ImportMode::CheckOnly => "ROLLBACK",
        })?;
        open.open = false;
        Ok(r)
    }

    fn begin_cancellable(&self, begin: &str, cancelled: &dyn Fn() -> bool) -> Result<()> {
        begin_cancellable(&self.conn, begin, cancelled)
    }
}

/// Runs `begin` on `conn`, waiting for another connection's lock in short steps so that
/// `cancelled` can end the wait; gives up after the busy timeout like any other statement.
fn begin_cancellable(conn: &Connection, begin: &str, cancelled: &dyn Fn() -> bool) -> Result<()> {
    conn.busy_timeout(Duration::from_millis(25))?;
    let deadline = Instant::now() + db::BUSY_TIMEOUT;
    let result = loop {
        match conn.execute_batch(begin) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                if cancelled() {
                    break Err(Error::Canceled);
                }
                if Instant::now() >= deadline {
                    break Err(Error::Store(
                        "another connection has held the store's write lock for too long".into(),
                    ));
                }
            }
            other => break other.map_err(Error::from),
        }
    };
    conn.busy_timeout(db::BUSY_TIMEOUT)?;
    result
}

/// Whether an import writes (restore) or only checks (WM_RESTORE_VERIFY_ONLY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    Write,
    CheckOnly,
}

/// Rolls back a transaction that an error left open.
struct OpenTransaction<'a> {
    conn: &'a Connection,
    open: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A consistent read view of a store (see [`Store::read_snapshot`]).
pub struct Snapshot<'a> {
    conn: &'a Connection,
    sealer: &'a SecretSealer,
    own_lineage: [u8; 16],
}

impl Snapshot<'_> {
    pub fn for_each(&self, visit: impl FnMut(&License) -> Result<bool>) -> Result<()> {
        for_each_in(self.conn, self.sealer, visit)
    }

    /// What a backup's header needs, in one pass over the table (no sort): (all licenses,
    /// licenses that may be backed up, their distinct lineages in ascending order). Indexes
    /// would make this a few seeks, but measured on a million licenses they cost a restore
    /// more than twice what they save a backup (+2.3 s against -0.25 s).
    pub fn backup_summary(&self) -> Result<(u64, u64, Vec<[u8; 16]>)> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rights, lineage_id FROM licenses")?;
        let mut rows = stmt.query([])?;
        let (mut all, mut backup) = (0u64, 0u64);
        let mut lineages = std::collections::BTreeSet::new();
        let mut last: Option<[u8; 16]> = None;
        while let Some(row) = rows.next()? {
            all += 1;
            if row.get_ref(0)?.as_i64()? as u32 & crate::license::RIGHT_BACKUP == 0 {
                continue;
            }
            backup += 1;
            let lineage = match row.get_ref(1)?.as_blob_or_null()? {
                None => self.own_lineage,
                Some(b) => b.try_into().map_err(|_| malformed_lineage())?,
            };
            if last != Some(lineage) {
                lineages.insert(lineage);
                last = Some(lineage);
            }
        }
        Ok((all, backup, lineages.into_iter().collect()))
    }

    /// Streams every row as stored (the content key *sealed*) with its lineage, in key-ID
    /// order, without copying anything. `visit` returns `Ok(false)` to stop early.
    pub fn for_each_sealed(
        &self,
        mut visit: impl FnMut(&LicenseRef<'_>, &[u8; 16]) -> Result<bool>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, lineage_id FROM licenses ORDER BY key_id"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let lineage = match row.get_ref(8)?.as_blob_or_null()? {
                None => self.own_lineage,
                Some(b) => b.try_into().map_err(|_| malformed_lineage())?,
            };
            let l = LicenseRef {
                key_id: row.get_ref(0)?.as_blob()?,
                content_key: row.get_ref(1)?.as_blob()?,
                title: row.get_ref(2)?.as_str_or_null()?,
                rights: row.get(3)?,
                play_count: row.get(4)?,
                begin_date: row.get(5)?,
                expiration_date: row.get(6)?,
                issued_at: row.get(7)?,
            };
            if !visit(&l, &lineage)? {
                break;
            }
        }
        Ok(())
    }

    /// Streams every license with its lineage, in key-ID order.
    pub fn for_each_with_lineage(
        &self,
        mut visit: impl FnMut(&License, &[u8; 16]) -> Result<bool>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, COALESCE(lineage_id, ?1) FROM licenses ORDER BY key_id"
        ))?;
        let mut rows = stmt.query([&self.own_lineage[..]])?;
        while let Some(row) = rows.next()? {
            let lineage: [u8; 16] = row
                .get_ref(8)?
                .as_blob()?
                .try_into()
                .map_err(|_| malformed_lineage())?;
            let license = RawRow::read(row)?.into_license(self.sealer)?;
            if !visit(&license, &lineage)? {
                break;
            }
        }
        Ok(())
    }
}

fn malformed_lineage() -> Error {
    Error::Store("a license's lineage ID is malformed".into())
}

/// Writes licenses inside an import transaction (see [`Store::import`]).
pub struct Importer<'a> {
    stmt: rusqlite::CachedStatement<'a>,
    mode: ImportMode,
    sealer: &'a SecretSealer,
    own_lineage: [u8; 16],
}

impl Importer<'_> {
    /// Takes `license`, of lineage `lineage`, unless the store holds a copy with `issued_at >=`
    /// its own (in `CheckOnly` mode: tells whether it would). Returns whether it was (would be)
    /// written.
    pub fn put_if_newer(&mut self, license: &License, lineage: &[u8; 16]) -> Result<bool> {
        match self.mode {
            ImportMode::Write => {
                let sealed = self.sealer.seal(&license.key_id, &license.content_key)?;
                let lineage = (*lineage != self.own_lineage).then_some(&lineage[..]);
                Ok(bind_and_run(&mut self.stmt, license, &sealed, lineage)? > 0)
            }
            ImportMode::CheckOnly => {
                let stored: Option<i64> = self
                    .stmt
                    .query_row([&license.key_id], |r| r.get(0))
                    .optional()?;
                Ok(stored.is_none_or(|issued_at| license.issued_at > issued_at))
            }
        }
    }
}

impl Importer<'_> {
    /// [`Importer::put_if_newer`] of a license whose content key is already sealed with
    /// [`Importer::sealer`] (so that sealing can run on another thread). Write mode only.
    pub fn put_sealed_if_newer(
        &mut self,
        sealed: &LicenseRef<'_>,
        lineage: &[u8; 16],
    ) -> Result<bool> {
        if self.mode != ImportMode::Write {
            return Err(Error::Internal(
                "a sealed license offered to a check-only import".into(),
            ));
        }
        let lineage = (*lineage != self.own_lineage).then_some(&lineage[..]);
        Ok(self.stmt.execute(params![
            sealed.key_id,
            sealed.content_key,
            sealed.title,
            sealed.rights,
            sealed.play_count,
            sealed.begin_date,
            sealed.expiration_date,
            sealed.issued_at,
            lineage
        ])? > 0)
    }
}

/// Runs UPSERT or UPSERT_IF_NEWER for `l`; `lineage` None: this store's own.
fn bind_and_run(
    stmt: &mut rusqlite::CachedStatement<'_>,
    l: &License,
    sealed: &[u8],
    lineage: Option<&[u8]>,
) -> Result<usize> {
    Ok(stmt.execute(params![
        l.key_id,
        sealed,
        l.title,
        l.rights,
        l.play_count,
        l.begin_date,
        l.expiration_date,
        l.issued_at,
        lineage
    ])?)
}

fn for_each_in(
    conn: &Connection,
    sealer: &SecretSealer,
    mut visit: impl FnMut(&License) -> Result<bool>,
) -> Result<()> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM licenses ORDER BY key_id"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let license = RawRow::read(row)?.into_license(sealer)?;
        if !visit(&license)? {
            break;
        }
    }
    Ok(())
}

struct RawRow {
    key_id: Vec<u8>,
    sealed: Vec<u8>,
    title: Option<String>,
    rights: u32,
    play_count: i32,
    begin_date: i64,
    expiration_date: i64,
    issued_at: i64,
}

impl RawRow {
    fn read(r: &Row<'_>) -> Result<RawRow> {
        Ok(RawRow {
            key_id: r.get(0)?,
            sealed: r.get(1)?,
            title: r.get(2)?,
            rights: r.get(3)?,
            play_count: r.get(4)?,
            begin_date: r.get(5)?,
            expiration_date: r.get(6)?,
            issued_at: r.get(7)?,
        })
    }

    fn into_license(self, sealer: &SecretSealer) -> Result<License> {
        let content_key = sealer.open(&self.key_id, &self.sealed)?;
        Ok(License {
            key_id: self.key_id,
            content_key,
            title: self.title,
            rights: self.rights,
            play_count: self.play_count,
            begin_date: self.begin_date,
            expiration_date: self.expiration_date,
            issued_at: self.issued_at,
        })
    }
}

/// Brings the schema to `SCHEMA_VERSION` and gives a new store its lineage ID, all in one
/// transaction: a migration that fails (or a process killed in it) leaves the store as it was.
fn migrate(conn: &mut Connection, storage_key: &[u8; crypto::KEY_LEN]) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_lineage = version >= 1 && read_lineage(conn).is_ok();
    if version == SCHEMA_VERSION && has_lineage {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Store(format!(
            "the store has schema version {version}, newer than this wmlicense ({SCHEMA_VERSION}); upgrade wmlicense"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        if i == RESEAL_MIGRATION {
            reseal_content_keys(&tx, storage_key)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    let lineage: [u8; 16] = crypto::random_array()?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES ('lineage_id', ?1)",
        [&lineage[..]],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES ('created_at', ?1)",
        [crate::license::unix_now()],
    )?;
    tx.commit()?;
    Ok(())
}

/// Opens every content key with the sealing of schema 2 and seals it again with the current one,
/// a thousand rows at a time (no statement reads the table while another rewrites it).
fn reseal_content_keys(tx: &Connection, storage_key: &[u8; crypto::KEY_LEN]) -> Result<()> {
    let legacy = crypto::LegacySealer::new(storage_key);
    let sealer = SecretSealer::new(storage_key)?;
    let mut read = tx.prepare(
        "SELECT key_id, sealed_content_key FROM licenses WHERE key_id > ?1 ORDER BY key_id
         LIMIT 1000",
    )?;
    let mut write = tx.prepare("UPDATE licenses SET sealed_content_key = ?2 WHERE key_id = ?1")?;
    let mut after = Vec::new();
    loop {
        let batch = read
            .query_map([&after], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        after = last.clone();
        for (key_id, sealed) in &batch {
            let content_key = legacy.open(key_id, sealed)?;
            write.execute(params![key_id, sealer.seal(key_id, &content_key)?])?;
        }
    }
}

fn read_lineage(conn: &Connection) -> Result<[u8; 16]> {
    let v: Vec<u8> = conn.query_row(
        "SELECT value FROM meta WHERE name = 'lineage_id'",
        [],
        |r| r.get(0),
    )?;
    v.try_into()
        .map_err(|_| Error::Store("the store's lineage ID is malformed".into()))
}

/// Files that make up a store, for tools that copy or inspect one.
pub const STORE_FILES: &[&str] = &[DB_FILE, IDENTITY_FILE];

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let id: [u8; 8] = crypto::random_array().unwrap();
        std::env::temp_dir().join(format!("wmlicense-store-{:016x}", u64::from_le_bytes(id)))
    }

    fn license(i: u8) -> License {
        License {
            key_id: vec![i],
            content_key: vec![i; 8],
            title: None,
            rights: 0x201,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: 1,
        }
    }

    /// Makes `dir` a schema 2 store (as wmlicense 0.1 before schema 3 left it) holding
    /// `licenses`, their content keys sealed the old way.
    fn schema_2_store(dir: &Path, licenses: &[License]) -> DeviceIdentity {
        drop(Store::open(dir).unwrap());
        let identity = DeviceIdentity::load(dir).unwrap();
        let legacy = crypto::LegacySealer::new(&identity.storage_key);
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        for l in licenses {
            conn.execute(
                &format!(
                    "INSERT INTO licenses ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    l.key_id,
                    legacy.seal(&l.key_id, &l.content_key),
                    l.title,
                    l.rights,
                    l.play_count,
                    l.begin_date,
                    l.expiration_date,
                    l.issued_at
                ],
            )
            .unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        identity
    }

    fn sealed_keys(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let mut stmt = conn
            .prepare("SELECT key_id, sealed_content_key FROM licenses ORDER BY key_id")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    fn user_version(dir: &Path) -> i64 {
        Connection::open(dir.join(DB_FILE))
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_schema_2_store_is_resealed_on_open() {
        let dir = temp_dir();
        // More than one batch of the migration (1,000 rows), titles and all.
        let licenses: Vec<License> = (0..2500u32)
            .map(|i| License {
                key_id: i.to_be_bytes().to_vec(),
                content_key: vec![(i % 251) as u8; 1 + (i % 64) as usize],
                title: (i % 3 == 0).then(|| format!("Track {i}")),
                ..license(1)
            })
            .collect();
        schema_2_store(&dir, &licenses);
        let before = sealed_keys(&dir);
        assert!(before.iter().all(|(_, s)| s.len() >= 24 + crypto::TAG_LEN));

        let s = Store::open_existing(&dir).unwrap();
        assert_eq!(user_version(&dir), SCHEMA_VERSION);
        for l in &licenses {
            assert_eq!(&s.get(&l.key_id).unwrap(), l);
        }
        drop(s);
        let after = sealed_keys(&dir);
        assert_eq!(after.len(), licenses.len());
        for ((kid, old), (kid2, new)) in before.iter().zip(&after) {
            assert_eq!(kid, kid2);
            assert_ne!(old, new);
            // 12-byte nonce, the key, the tag: 12 bytes shorter than the old sealing.
            assert_eq!(new.len() + 12, old.len());
        }
        // Opening again changes nothing.
        drop(Store::open_existing(&dir).unwrap());
        assert_eq!(sealed_keys(&dir), after);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_migration_that_fails_leaves_the_store_as_it_was() {
        let dir = temp_dir();
        let licenses: Vec<License> = (1..=40u8).map(license).collect();
        schema_2_store(&dir, &licenses);
        // One content key that no longer authenticates (a damaged database).
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute(
            "UPDATE licenses SET sealed_content_key = zeroblob(40) WHERE key_id = x'1e'",
            [],
        )
        .unwrap();
        drop(conn);
        let before = sealed_keys(&dir);
        match Store::open_existing(&dir) {
            Err(Error::Store(m)) => assert!(m.contains("does not authenticate"), "{m}"),
            other => panic!("expected a store error, got {:?}", other.map(|_| ())),
        }
        assert_eq!(user_version(&dir), 2);
        assert_eq!(sealed_keys(&dir), before);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_read_keeps_its_snapshot_and_holds_no_writer_up() {
        let dir = temp_dir();
        let mut writer = Store::open(&dir).unwrap();
        writer
            .put_many(&(1..=10u8).map(license).collect::<Vec<_>>())
            .unwrap();
        let reader = Store::open_existing(&dir).unwrap();
        let count = |s: &Store| s.current_snapshot().backup_summary().unwrap().0;
        reader.begin_read().unwrap();
        writer.put(&license(11)).unwrap();
        // The read moves to another thread with its transaction and keeps its snapshot.
        let reader = std::thread::spawn(move || {
            assert_eq!(count(&reader), 10);
            reader.end_read().unwrap();
            reader
        })
        .join()
        .unwrap();
        assert_eq!(count(&reader), 11);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The header's figures are what the licenses a backup streams give, whatever mix of
    /// rights and lineages.
    #[test]
    fn backup_summary_matches_the_stream() {
        let dir = temp_dir();
        let mut s = Store::open(&dir).unwrap();
        let own = s.lineage_id();
        let never = || false;
        assert_eq!(
            s.read_snapshot(|snap| snap.backup_summary()).unwrap(),
            (0, 0, vec![])
        );
        let lineages: Vec<[u8; 16]> = (1..=5u8).map(|i| [i * 40; 16]).collect();
        s.import(ImportMode::Write, &never, |imp| {
            for i in 0..200u8 {
                let mut l = license(i);
                // Lineage 0 holds only restricted licenses: it is in no backup.
                l.rights = if i % 5 == 0 || i % 3 == 0 { 0x1 } else { 0x201 };
                imp.put_if_newer(&l, &lineages[(i % 5) as usize])?;
            }
            Ok(())
        })
        .unwrap();
        let mut own_licenses: Vec<License> = (0..30u8)
            .map(|i| License {
                key_id: vec![1, i],
                ..license(i)
            })
            .collect();
        own_licenses[0].rights = 0x1;
        s.put_many(&own_licenses).unwrap();
        let summary = s.read_snapshot(|snap| snap.backup_summary()).unwrap();
        let (mut all, mut backup, mut seen) = (0, 0, std::collections::BTreeSet::new());
        s.read_snapshot(|snap| {
            snap.for_each_with_lineage(|l, lineage| {
                all += 1;
                if l.may_back_up() {
                    backup += 1;
                    seen.insert(*lineage);
                }
                Ok(true)
            })
        })
        .unwrap();
        assert_eq!(summary, (all, backup, seen.into_iter().collect::<Vec<_>>()));
        assert!(summary.2.contains(&own) && !summary.2.contains(&lineages[0]));
        assert_eq!(summary.2.len(), 5);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn identity_and_lineage_survive_reopen() {
        let dir = temp_dir();
        let (device, lineage) = {
            let s = Store::open(&dir).unwrap();
            (s.identity().device_id, s.lineage_id())
        };
        let s = Store::open_existing(&dir).unwrap();
        assert_eq!(s.identity().device_id, device);
        assert_eq!(s.lineage_id(), lineage);
        assert!(matches!(
            Store::open_existing(&dir.join("missing")),
            Err(Error::NotFound(_))
        ));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_store_from_a_newer_wmlicense_is_refused() {
        let dir = temp_dir();
        drop(Store::open(&dir).unwrap());
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        match Store::open(&dir) {
            Err(Error::Store(m)) => assert!(m.contains("newer"), "{m}"),
            other => panic!("expected a store error, got {:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn import_commits_only_when_asked_and_licenses_keep_their_lineage() {
        let dir = temp_dir();
        let mut s = Store::open(&dir).unwrap();
        let own = s.lineage_id();
        let other = [0xAB; 16];
        s.put(&license(1)).unwrap();
        let never = || false;
        s.import(ImportMode::CheckOnly, &never, |imp| {
            assert!(imp.put_if_newer(&license(2), &other)?);
            assert!(!imp.put_if_newer(&license(1), &other)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.count().unwrap(), 1);
        let failed: Result<()> = s.import(ImportMode::Write, &never, |imp| {
            imp.put_if_newer(&license(3), &other)?;
            Err(Error::corrupt("chunk 7"))
        });
        assert!(failed.is_err());
        assert_eq!(s.count().unwrap(), 1);
        s.import(ImportMode::Write, &never, |imp| {
            // Same issued_at as the stored copy: the stored copy wins.
            assert!(!imp.put_if_newer(&license(1), &other)?);
            assert!(imp.put_if_newer(&license(4), &other)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.count().unwrap(), 2);
        // The license put here has this store's lineage; the restored one keeps its own, also
        // when this store is backed up again.
        let mut seen = Vec::new();
        s.read_snapshot(|snap| {
            assert_eq!(snap.backup_summary()?.2, {
                let mut v = vec![own, other];
                v.sort();
                v
            });
            snap.for_each_with_lineage(|l, lineage| {
                seen.push((l.key_id.clone(), *lineage));
                Ok(true)
            })
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(license(1).key_id, own), (license(4).key_id, other)]
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
