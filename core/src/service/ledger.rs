//! The ledger of a License Management Service: which devices are counted for which lineage,
//! every request it decided (for idempotency), the resets, and the audit log.
//!
//! [`Ledger`] is the seam between the policy ([`super::Authority`]) and a database: the embedded
//! service and a single network service use [`SqliteLedger`]; replicas of the network service
//! use PostgreSQL (in `wmlicense-service`). Both hold the same tables:
//!
//! | table | columns |
//! |---|---|
//! | `devices` | lineage_id, device (device ID ‖ public key), first_grant |
//! | `service_requests` | request_id, kind, lineages, device, outcome, result, at |
//! | `resets` | lineage_id, at |
//! | `audit` | id, at, action, lineage_id, device, request_id, outcome, detail |

use crate::error::{Error, Result};
use crate::sync::lock;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// A decided request, kept so that a retry with the same ID gets the same decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub request_id: [u8; 16],
    /// "grant", "dry-run", "release" or "reset".
    pub kind: String,
    /// The request's lineages, 16 bytes each, ascending.
    pub lineages: Vec<u8>,
    /// Device ID ‖ public key (empty for a reset).
    pub device: Vec<u8>,
    /// "granted", "refused", "released", "reset", "too-many-resets".
    pub outcome: String,
    /// What the decision returned (a release or reset: the freed lineages; a reset: then the
    /// slots freed as 8 bytes LE).
    pub result: Vec<u8>,
    pub at: i64,
}

/// One line of the audit log. Never a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: i64,
    /// "grant", "dry-run", "release", "reset", "admin-release", "admin-reset".
    pub action: String,
    pub lineage_id: Option<[u8; 16]>,
    pub device: Option<Vec<u8>>,
    pub request_id: Option<[u8; 16]>,
    /// "granted", "refused", "released", "reset", "too-many-resets", "not-counted".
    pub outcome: String,
    pub detail: String,
}

/// A device counted for a lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: Vec<u8>,
    pub first_grant: i64,
}

/// One transaction on the ledger.
pub trait LedgerTx {
    fn request(&mut self, request_id: &[u8; 16]) -> Result<Option<RequestRecord>>;
    fn put_request(&mut self, r: &RequestRecord) -> Result<()>;
    /// Devices of `lineage` first granted at or after `since`.
    fn lineage_count(&mut self, lineage: &[u8; 16], since: i64) -> Result<u64>;
    /// Whether `device` is counted for `lineage` (first granted at or after `since`).
    fn device_counted(&mut self, lineage: &[u8; 16], device: &[u8], since: i64) -> Result<bool>;
    /// Counts `device` for `lineage` from `now` (a device whose window ran out starts anew).
    fn count_device(&mut self, lineage: &[u8; 16], device: &[u8], now: i64) -> Result<()>;
    /// The lineages `device` is counted for (first granted at or after `since`), ascending.
    fn device_lineages(&mut self, device: &[u8], since: i64) -> Result<Vec<[u8; 16]>>;
    /// Stops counting `device` for `lineage`; whether it was there.
    fn remove_device(&mut self, lineage: &[u8; 16], device: &[u8]) -> Result<bool>;
    /// Stops counting every device of `lineage`; how many were there.
    fn remove_lineage(&mut self, lineage: &[u8; 16]) -> Result<u64>;
    fn last_reset(&mut self, lineage: &[u8; 16]) -> Result<Option<i64>>;
    fn put_reset(&mut self, lineage: &[u8; 16], at: i64) -> Result<()>;
    fn audit(&mut self, a: &AuditRecord) -> Result<()>;

    /// For each of `lineages`, in order: whether `device` is counted for it and how many
    /// devices are (first granted at or after `since`). A ledger answers in one statement.
    fn states(
        &mut self,
        lineages: &[[u8; 16]],
        device: &[u8],
        since: i64,
    ) -> Result<Vec<(bool, u64)>> {
        lineages
            .iter()
            .map(|l| {
                Ok((
                    self.device_counted(l, device, since)?,
                    self.lineage_count(l, since)?,
                ))
            })
            .collect()
    }
    /// Counts `device` for every one of `lineages` from `now` (one statement).
    fn count_devices(&mut self, lineages: &[[u8; 16]], device: &[u8], now: i64) -> Result<()> {
        lineages
            .iter()
            .try_for_each(|l| self.count_device(l, device, now))
    }
    /// Stops counting `device` for every lineage (one statement); how many rows went.
    fn remove_device_everywhere(&mut self, device: &[u8]) -> Result<u64> {
        let mut n = 0;
        for l in self.device_lineages(device, i64::MIN)? {
            n += u64::from(self.remove_device(&l, device)?);
        }
        Ok(n)
    }
    /// Appends several audit records.
    fn audit_all(&mut self, records: &[AuditRecord]) -> Result<()> {
        records.iter().try_for_each(|a| self.audit(a))
    }
}

/// A ledger database.
pub trait Ledger: Send + Sync {
    /// Runs `f` in one transaction, committed when it returns `Ok`. The transaction is
    /// serialized with every other one naming the same `request_id` or one of `lineages`
    /// (ascending), in this process and in every other one on the same database.
    fn transaction<T>(
        &self,
        request_id: &[u8; 16],
        lineages: &[[u8; 16]],
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<T>,
    ) -> Result<T>;
    /// The devices counted for `lineage` (first granted at or after `since`), oldest first.
    fn devices(&self, lineage: &[u8; 16], since: i64) -> Result<Vec<DeviceRecord>>;
    /// The newest `limit` audit records, of one lineage or all, newest first.
    fn audit_log(&self, lineage: Option<&[u8; 16]>, limit: u32) -> Result<Vec<AuditRecord>>;
    /// Answers when the database does (`/v1/health`).
    fn ping(&self) -> Result<()>;
}

/// Ledger schema migrations for SQLite: entry `i` upgrades version `i` to `i + 1`.
const SQLITE_MIGRATIONS: &[&str] = &[
    // 0 -> 1: devices and requests (the embedded service of earlier releases).
    "CREATE TABLE IF NOT EXISTS devices (
        lineage_id  BLOB NOT NULL,
        device      BLOB NOT NULL,
        first_grant INTEGER NOT NULL,
        PRIMARY KEY (lineage_id, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS requests (
        request_id BLOB PRIMARY KEY,
        lineage_id BLOB NOT NULL,
        device     BLOB NOT NULL,
        granted    INTEGER NOT NULL,
        at         INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 1 -> 2: requests of every kind with their result, resets, the audit log.
    "CREATE TABLE service_requests (
        request_id BLOB PRIMARY KEY,
        kind       TEXT NOT NULL,
        lineages   BLOB NOT NULL,
        device     BLOB NOT NULL,
        outcome    TEXT NOT NULL,
        result     BLOB NOT NULL,
        at         INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO service_requests
        SELECT request_id, 'grant', lineage_id, device,
               CASE granted WHEN 0 THEN 'refused' ELSE 'granted' END, x'', at FROM requests;
    DROP TABLE requests;
    CREATE TABLE resets (
        lineage_id BLOB PRIMARY KEY,
        at         INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         INTEGER NOT NULL,
        action     TEXT NOT NULL,
        lineage_id BLOB,
        device     BLOB,
        request_id BLOB,
        outcome    TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX audit_lineage ON audit (lineage_id, id);
    CREATE INDEX devices_device ON devices (device);",
];

/// The ledger in one SQLite database (one process at a time decides, under SQLite's write lock;
/// several processes may share the file).
pub struct SqliteLedger {
    conn: Mutex<Connection>,
}

fn ledger_err(e: impl std::fmt::Display) -> Error {
    Error::ServiceUnavailable(format!("the ledger: {e}"))
}

impl SqliteLedger {
    pub fn open(path: &Path) -> Result<SqliteLedger> {
        let mut conn = crate::db::open_wal(path)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ledger_err)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ledger_err)?;
        for (i, m) in SQLITE_MIGRATIONS
            .iter()
            .enumerate()
            .skip(version.max(0) as usize)
        {
            tx.execute_batch(m).map_err(ledger_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(ledger_err)?;
        }
        tx.commit().map_err(ledger_err)?;
        Ok(SqliteLedger {
            conn: Mutex::new(conn),
        })
    }
}

fn id16(v: Vec<u8>) -> rusqlite::Result<[u8; 16]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            16,
            rusqlite::types::Type::Blob,
            "an ID is not 16 bytes".into(),
        )
    })
}

/// The 16-byte IDs concatenated in parameter ?1, as rows `ids(i, l)` in their order: a batch
/// of lineages in one statement.
const SQLITE_IDS: &str = "WITH RECURSIVE ids(i, l) AS (
        SELECT 0, substr(?1, 1, 16) WHERE length(?1) >= 16
        UNION ALL
        SELECT i + 1, substr(?1, (i + 1) * 16 + 1, 16) FROM ids WHERE (i + 2) * 16 <= length(?1)
    )";

struct SqliteTx<'a>(rusqlite::Transaction<'a>);

impl LedgerTx for SqliteTx<'_> {
    fn request(&mut self, id: &[u8; 16]) -> Result<Option<RequestRecord>> {
        self.0
            .query_row(
                "SELECT kind, lineages, device, outcome, result, at FROM service_requests
                 WHERE request_id = ?1",
                [&id[..]],
                |r| {
                    Ok(RequestRecord {
                        request_id: *id,
                        kind: r.get(0)?,
                        lineages: r.get(1)?,
                        device: r.get(2)?,
                        outcome: r.get(3)?,
                        result: r.get(4)?,
                        at: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(ledger_err)
    }

    fn put_request(&mut self, r: &RequestRecord) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO service_requests (request_id, kind, lineages, device, outcome,
                 result, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (request_id) DO UPDATE SET kind = excluded.kind,
                 lineages = excluded.lineages, device = excluded.device,
                 outcome = excluded.outcome, result = excluded.result, at = excluded.at",
                params![
                    &r.request_id[..],
                    r.kind,
                    r.lineages,
                    r.device,
                    r.outcome,
                    r.result,
                    r.at
                ],
            )
            .map(drop)
            .map_err(ledger_err)
    }

    fn lineage_count(&mut self, lineage: &[u8; 16], since: i64) -> Result<u64> {
        self.0
            .query_row(
                "SELECT COUNT(*) FROM devices WHERE lineage_id = ?1 AND first_grant >= ?2",
                params![&lineage[..], since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(ledger_err)
    }

    fn device_counted(&mut self, lineage: &[u8; 16], device: &[u8], since: i64) -> Result<bool> {
        self.0
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE lineage_id = ?1 AND device = ?2
                 AND first_grant >= ?3)",
                params![&lineage[..], device, since],
                |r| r.get(0),
            )
            .map_err(ledger_err)
    }

    fn count_device(&mut self, lineage: &[u8; 16], device: &[u8], now: i64) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO devices (lineage_id, device, first_grant) VALUES (?1, ?2, ?3)
                 ON CONFLICT (lineage_id, device) DO UPDATE SET first_grant = excluded.first_grant",
                params![&lineage[..], device, now],
            )
            .map(drop)
            .map_err(ledger_err)
    }

    fn device_lineages(&mut self, device: &[u8], since: i64) -> Result<Vec<[u8; 16]>> {
        let mut stmt = self
            .0
            .prepare(
                "SELECT lineage_id FROM devices WHERE device = ?1 AND first_grant >= ?2
                 ORDER BY lineage_id",
            )
            .map_err(ledger_err)?;
        let rows = stmt
            .query_map(params![device, since], |r| id16(r.get(0)?))
            .map_err(ledger_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(ledger_err)
    }

    fn remove_device(&mut self, lineage: &[u8; 16], device: &[u8]) -> Result<bool> {
        self.0
            .execute(
                "DELETE FROM devices WHERE lineage_id = ?1 AND device = ?2",
                params![&lineage[..], device],
            )
            .map(|n| n > 0)
            .map_err(ledger_err)
    }

    fn remove_lineage(&mut self, lineage: &[u8; 16]) -> Result<u64> {
        self.0
            .execute("DELETE FROM devices WHERE lineage_id = ?1", [&lineage[..]])
            .map(|n| n as u64)
            .map_err(ledger_err)
    }

    fn last_reset(&mut self, lineage: &[u8; 16]) -> Result<Option<i64>> {
        self.0
            .query_row(
                "SELECT at FROM resets WHERE lineage_id = ?1",
                [&lineage[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(ledger_err)
    }

    fn put_reset(&mut self, lineage: &[u8; 16], at: i64) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO resets (lineage_id, at) VALUES (?1, ?2)
                 ON CONFLICT (lineage_id) DO UPDATE SET at = excluded.at",
                params![&lineage[..], at],
            )
            .map(drop)
            .map_err(ledger_err)
    }

    fn states(
        &mut self,
        lineages: &[[u8; 16]],
        device: &[u8],
        since: i64,
    ) -> Result<Vec<(bool, u64)>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "{SQLITE_IDS} SELECT
                   EXISTS (SELECT 1 FROM devices d WHERE d.lineage_id = ids.l AND d.device = ?2
                           AND d.first_grant >= ?3),
                   (SELECT COUNT(*) FROM devices d WHERE d.lineage_id = ids.l
                    AND d.first_grant >= ?3)
                 FROM ids ORDER BY ids.i"
            ))
            .map_err(ledger_err)?;
        let rows = stmt
            .query_map(params![lineages.concat(), device, since], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(ledger_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(ledger_err)
    }

    fn count_devices(&mut self, lineages: &[[u8; 16]], device: &[u8], now: i64) -> Result<()> {
        if lineages.is_empty() {
            return Ok(());
        }
        self.0
            .prepare_cached(&format!(
                "{SQLITE_IDS} INSERT INTO devices (lineage_id, device, first_grant)
                 SELECT l, ?2, ?3 FROM ids WHERE true
                 ON CONFLICT (lineage_id, device) DO UPDATE SET first_grant = excluded.first_grant"
            ))
            .and_then(|mut s| s.execute(params![lineages.concat(), device, now]))
            .map(drop)
            .map_err(ledger_err)
    }

    fn remove_device_everywhere(&mut self, device: &[u8]) -> Result<u64> {
        self.0
            .execute("DELETE FROM devices WHERE device = ?1", [device])
            .map(|n| n as u64)
            .map_err(ledger_err)
    }

    fn audit_all(&mut self, records: &[AuditRecord]) -> Result<()> {
        // One prepared statement for every row (SQLite has no round trips to save).
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO audit (at, action, lineage_id, device, request_id, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(ledger_err)?;
        for a in records {
            stmt.execute(params![
                a.at,
                a.action,
                a.lineage_id.as_ref().map(|l| &l[..]),
                a.device,
                a.request_id.as_ref().map(|l| &l[..]),
                a.outcome,
                a.detail
            ])
            .map_err(ledger_err)?;
        }
        Ok(())
    }

    fn audit(&mut self, a: &AuditRecord) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO audit (at, action, lineage_id, device, request_id, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.at,
                    a.action,
                    a.lineage_id.as_ref().map(|l| &l[..]),
                    a.device,
                    a.request_id.as_ref().map(|l| &l[..]),
                    a.outcome,
                    a.detail
                ],
            )
            .map(drop)
            .map_err(ledger_err)
    }
}

impl Ledger for SqliteLedger {
    fn transaction<T>(
        &self,
        _request_id: &[u8; 16],
        _lineages: &[[u8; 16]],
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<T>,
    ) -> Result<T> {
        // SQLite's write lock (taken at once by an immediate transaction) serializes every
        // decision over the whole file.
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ledger_err)?;
        let mut tx = SqliteTx(tx);
        let out = f(&mut tx)?;
        tx.0.commit().map_err(ledger_err)?;
        Ok(out)
    }

    fn devices(&self, lineage: &[u8; 16], since: i64) -> Result<Vec<DeviceRecord>> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(
                "SELECT device, first_grant FROM devices WHERE lineage_id = ?1
                 AND first_grant >= ?2 ORDER BY first_grant, device",
            )
            .map_err(ledger_err)?;
        let rows = stmt
            .query_map(params![&lineage[..], since], |r| {
                Ok(DeviceRecord {
                    device: r.get(0)?,
                    first_grant: r.get(1)?,
                })
            })
            .map_err(ledger_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(ledger_err)
    }

    fn audit_log(&self, lineage: Option<&[u8; 16]>, limit: u32) -> Result<Vec<AuditRecord>> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(
                "SELECT at, action, lineage_id, device, request_id, outcome, detail FROM audit
                 WHERE ?1 IS NULL OR lineage_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(ledger_err)?;
        let rows = stmt
            .query_map(params![lineage.map(|l| &l[..]), limit], |r| {
                Ok(AuditRecord {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    lineage_id: r.get::<_, Option<Vec<u8>>>(2)?.map(id16).transpose()?,
                    device: r.get(3)?,
                    request_id: r.get::<_, Option<Vec<u8>>>(4)?.map(id16).transpose()?,
                    outcome: r.get(5)?,
                    detail: r.get(6)?,
                })
            })
            .map_err(ledger_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(ledger_err)
    }

    fn ping(&self) -> Result<()> {
        lock(&self.conn)
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(ledger_err)
    }
}
