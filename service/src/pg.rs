//! The ledger in PostgreSQL, shared by any number of replicas: the same tables as the SQLite
//! ledger, decisions serialized by transaction-scoped advisory locks on the request ID and on
//! each lineage (taken in one global order, so replicas never deadlock).

use postgres::{Client, NoTls, Statement, Transaction};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use wmlicense_core::service::ledger::RequestRecord;
use wmlicense_core::service::{AuditRecord, DeviceRecord, Ledger, LedgerTx};
use wmlicense_core::{Error, Result};

/// Schema migrations: entry `i` upgrades version `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE devices (
        lineage_id  BYTEA NOT NULL,
        device      BYTEA NOT NULL,
        first_grant BIGINT NOT NULL,
        PRIMARY KEY (lineage_id, device)
    );
    CREATE INDEX devices_device ON devices (device);
    CREATE TABLE service_requests (
        request_id BYTEA PRIMARY KEY,
        kind       TEXT NOT NULL,
        lineages   BYTEA NOT NULL,
        device     BYTEA NOT NULL,
        outcome    TEXT NOT NULL,
        result     BYTEA NOT NULL,
        at         BIGINT NOT NULL
    );
    CREATE TABLE resets (
        lineage_id BYTEA PRIMARY KEY,
        at         BIGINT NOT NULL
    );
    CREATE TABLE audit (
        id         BIGSERIAL PRIMARY KEY,
        at         BIGINT NOT NULL,
        action     TEXT NOT NULL,
        lineage_id BYTEA,
        device     BYTEA,
        request_id BYTEA,
        outcome    TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX audit_lineage ON audit (lineage_id, id);
"];

/// Advisory lock classes (the two-key form), so request and lineage locks never collide.
const LOCK_MIGRATE: i32 = 0x574d_4c30;
const LOCK_REQUEST: i32 = 0x574d_4c31;
const LOCK_LINEAGE: i32 = 0x574d_4c32;

fn pg_err(e: impl std::fmt::Display) -> Error {
    Error::ServiceUnavailable(format!("the PostgreSQL ledger: {e}"))
}

/// The lock key of a 16-byte ID.
fn lock_key(id: &[u8; 16]) -> i32 {
    i32::from_le_bytes(id[..4].try_into().unwrap())
}

/// A connection and the statements prepared on it (a decision runs a dozen statements: prepared
/// once per connection, each is one round trip instead of two).
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// A small pool of connections: a decision borrows one for its transaction.
pub struct PgLedger {
    url: String,
    idle: Mutex<(Vec<Conn>, usize)>,
    freed: Condvar,
    max: usize,
}

impl PgLedger {
    /// Connects, and creates or migrates the schema (one replica at a time).
    pub fn open(url: &str, max_connections: usize) -> Result<PgLedger> {
        let ledger = PgLedger {
            url: url.to_string(),
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            max: max_connections.max(1),
        };
        // Taken like any other connection, so that it counts against the limit.
        let mut c = ledger.take()?;
        let mut tx = c.client.transaction().map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_MIGRATE])
            .map_err(pg_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        )
        .map_err(pg_err)?;
        let version: i64 = tx
            .query_opt(
                "SELECT value FROM ledger_meta WHERE name = 'schema_version'",
                &[],
            )
            .map_err(pg_err)?
            .map_or(0, |r| r.get(0));
        if version > MIGRATIONS.len() as i64 {
            return Err(pg_err(format!(
                "the schema is version {version}, newer than this service knows ({}); upgrade \
                 the service",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[version as usize..] {
            tx.batch_execute(m).map_err(pg_err)?;
        }
        tx.execute(
            "INSERT INTO ledger_meta (name, value) VALUES ('schema_version', $1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&(MIGRATIONS.len() as i64)],
        )
        .map_err(pg_err)?;
        tx.commit().map_err(pg_err)?;
        ledger.put_back(c);
        Ok(ledger)
    }

    fn connect(&self) -> Result<Conn> {
        Ok(Conn {
            client: Client::connect(&self.url, NoTls).map_err(pg_err)?,
            statements: HashMap::new(),
        })
    }

    /// A connection: an idle one, a new one under the limit, or the next one freed.
    fn take(&self) -> Result<Conn> {
        let mut g = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(c) = g.0.pop() {
                if !c.client.is_closed() {
                    return Ok(c);
                }
                g.1 -= 1;
                continue;
            }
            if g.1 < self.max {
                g.1 += 1;
                drop(g);
                return self.connect().inspect_err(|_| {
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).1 -= 1;
                    self.freed.notify_one();
                });
            }
            g = self.freed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put_back(&self, c: Conn) {
        let mut g = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if c.client.is_closed() {
            g.1 = g.1.saturating_sub(1);
        } else {
            g.0.push(c);
        }
        self.freed.notify_one();
    }

    fn with_client<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut slot = Borrowed {
            pool: self,
            conn: Some(self.take()?),
        };
        f(slot.conn.as_mut().expect("taken above"))
    }
}

/// A connection borrowed from the pool: given back when dropped, or, when a panic unwinds
/// through the decision using it (it may be inside a transaction), closed and its slot freed.
struct Borrowed<'a> {
    pool: &'a PgLedger,
    conn: Option<Conn>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(c) if !std::thread::panicking() => self.pool.put_back(c),
            _ => {
                let mut g = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                g.1 = g.1.saturating_sub(1);
                self.pool.freed.notify_one();
            }
        }
    }
}

struct PgTx<'a, 'b> {
    tx: Transaction<'b>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl PgTx<'_, '_> {
    /// `sql`, prepared once per connection.
    fn st(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(pg_err)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

fn id16(v: Vec<u8>) -> Result<[u8; 16]> {
    v.try_into()
        .map_err(|_| pg_err("an ID in the ledger is not 16 bytes"))
}

fn slices(lineages: &[[u8; 16]]) -> Vec<&[u8]> {
    lineages.iter().map(|l| &l[..]).collect()
}

impl LedgerTx for PgTx<'_, '_> {
    fn states(
        &mut self,
        lineages: &[[u8; 16]],
        device: &[u8],
        since: i64,
    ) -> Result<Vec<(bool, u64)>> {
        // One round trip for every lineage of the request.
        let st = self.st(
            "SELECT EXISTS (SELECT 1 FROM devices d WHERE d.lineage_id = t.l AND d.device = $2
                            AND d.first_grant >= $3),
                    (SELECT COUNT(*) FROM devices d WHERE d.lineage_id = t.l
                     AND d.first_grant >= $3)
             FROM unnest($1::BYTEA[]) WITH ORDINALITY AS t(l, i) ORDER BY t.i",
        )?;
        Ok(self
            .tx
            .query(&st, &[&slices(lineages), &device, &since])
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn count_devices(&mut self, lineages: &[[u8; 16]], device: &[u8], now: i64) -> Result<()> {
        if lineages.is_empty() {
            return Ok(());
        }
        let st = self.st("INSERT INTO devices (lineage_id, device, first_grant)
             SELECT l, $2, $3 FROM unnest($1::BYTEA[]) AS t(l)
             ON CONFLICT (lineage_id, device) DO UPDATE SET first_grant = excluded.first_grant")?;
        self.tx
            .execute(&st, &[&slices(lineages), &device, &now])
            .map(drop)
            .map_err(pg_err)
    }

    fn remove_device_everywhere(&mut self, device: &[u8]) -> Result<u64> {
        let st = self.st("DELETE FROM devices WHERE device = $1")?;
        self.tx.execute(&st, &[&device]).map_err(pg_err)
    }

    fn audit_all(&mut self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let st = self.st(
            "INSERT INTO audit (at, action, lineage_id, device, request_id, outcome, detail)
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BYTEA[], $4::BYTEA[],
                                  $5::BYTEA[], $6::TEXT[], $7::TEXT[])",
        )?;
        let at: Vec<i64> = records.iter().map(|a| a.at).collect();
        let action: Vec<&str> = records.iter().map(|a| a.action.as_str()).collect();
        let lineage: Vec<Option<&[u8]>> = records
            .iter()
            .map(|a| a.lineage_id.as_ref().map(|l| &l[..]))
            .collect();
        let device: Vec<Option<&[u8]>> = records.iter().map(|a| a.device.as_deref()).collect();
        let request: Vec<Option<&[u8]>> = records
            .iter()
            .map(|a| a.request_id.as_ref().map(|l| &l[..]))
            .collect();
        let outcome: Vec<&str> = records.iter().map(|a| a.outcome.as_str()).collect();
        let detail: Vec<&str> = records.iter().map(|a| a.detail.as_str()).collect();
        self.tx
            .execute(
                &st,
                &[&at, &action, &lineage, &device, &request, &outcome, &detail],
            )
            .map(drop)
            .map_err(pg_err)
    }

    fn request(&mut self, id: &[u8; 16]) -> Result<Option<RequestRecord>> {
        let st = self.st(
            "SELECT kind, lineages, device, outcome, result, at FROM service_requests
             WHERE request_id = $1",
        )?;
        let row = self.tx.query_opt(&st, &[&&id[..]]).map_err(pg_err)?;
        Ok(row.map(|r| RequestRecord {
            request_id: *id,
            kind: r.get(0),
            lineages: r.get(1),
            device: r.get(2),
            outcome: r.get(3),
            result: r.get(4),
            at: r.get(5),
        }))
    }

    fn put_request(&mut self, r: &RequestRecord) -> Result<()> {
        let st = self.st(
            "INSERT INTO service_requests (request_id, kind, lineages, device, outcome, result,
             at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (request_id) DO UPDATE SET kind = excluded.kind,
             lineages = excluded.lineages, device = excluded.device,
             outcome = excluded.outcome, result = excluded.result, at = excluded.at",
        )?;
        self.tx
            .execute(
                &st,
                &[
                    &&r.request_id[..],
                    &r.kind,
                    &r.lineages,
                    &r.device,
                    &r.outcome,
                    &r.result,
                    &r.at,
                ],
            )
            .map(drop)
            .map_err(pg_err)
    }

    fn lineage_count(&mut self, lineage: &[u8; 16], since: i64) -> Result<u64> {
        let st =
            self.st("SELECT COUNT(*) FROM devices WHERE lineage_id = $1 AND first_grant >= $2")?;
        let n: i64 = self
            .tx
            .query_one(&st, &[&&lineage[..], &since])
            .map_err(pg_err)?
            .get(0);
        Ok(n as u64)
    }

    fn device_counted(&mut self, lineage: &[u8; 16], device: &[u8], since: i64) -> Result<bool> {
        let st = self.st(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE lineage_id = $1 AND device = $2
             AND first_grant >= $3)",
        )?;
        Ok(self
            .tx
            .query_one(&st, &[&&lineage[..], &device, &since])
            .map_err(pg_err)?
            .get(0))
    }

    fn count_device(&mut self, lineage: &[u8; 16], device: &[u8], now: i64) -> Result<()> {
        let st = self.st(
            "INSERT INTO devices (lineage_id, device, first_grant) VALUES ($1, $2, $3)
             ON CONFLICT (lineage_id, device) DO UPDATE SET first_grant = excluded.first_grant",
        )?;
        self.tx
            .execute(&st, &[&&lineage[..], &device, &now])
            .map(drop)
            .map_err(pg_err)
    }

    fn device_lineages(&mut self, device: &[u8], since: i64) -> Result<Vec<[u8; 16]>> {
        let st = self.st(
            "SELECT lineage_id FROM devices WHERE device = $1 AND first_grant >= $2
             ORDER BY lineage_id",
        )?;
        self.tx
            .query(&st, &[&device, &since])
            .map_err(pg_err)?
            .into_iter()
            .map(|r| id16(r.get(0)))
            .collect()
    }

    fn remove_device(&mut self, lineage: &[u8; 16], device: &[u8]) -> Result<bool> {
        let st = self.st("DELETE FROM devices WHERE lineage_id = $1 AND device = $2")?;
        self.tx
            .execute(&st, &[&&lineage[..], &device])
            .map(|n| n > 0)
            .map_err(pg_err)
    }

    fn remove_lineage(&mut self, lineage: &[u8; 16]) -> Result<u64> {
        let st = self.st("DELETE FROM devices WHERE lineage_id = $1")?;
        self.tx.execute(&st, &[&&lineage[..]]).map_err(pg_err)
    }

    fn last_reset(&mut self, lineage: &[u8; 16]) -> Result<Option<i64>> {
        let st = self.st("SELECT at FROM resets WHERE lineage_id = $1")?;
        Ok(self
            .tx
            .query_opt(&st, &[&&lineage[..]])
            .map_err(pg_err)?
            .map(|r| r.get(0)))
    }

    fn put_reset(&mut self, lineage: &[u8; 16], at: i64) -> Result<()> {
        let st = self.st("INSERT INTO resets (lineage_id, at) VALUES ($1, $2)
             ON CONFLICT (lineage_id) DO UPDATE SET at = excluded.at")?;
        self.tx
            .execute(&st, &[&&lineage[..], &at])
            .map(drop)
            .map_err(pg_err)
    }

    fn audit(&mut self, a: &AuditRecord) -> Result<()> {
        let st = self.st(
            "INSERT INTO audit (at, action, lineage_id, device, request_id, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        self.tx
            .execute(
                &st,
                &[
                    &a.at,
                    &a.action,
                    &a.lineage_id.as_ref().map(|l| &l[..]),
                    &a.device,
                    &a.request_id.as_ref().map(|l| &l[..]),
                    &a.outcome,
                    &a.detail,
                ],
            )
            .map(drop)
            .map_err(pg_err)
    }
}

impl Ledger for PgLedger {
    fn transaction<T>(
        &self,
        request_id: &[u8; 16],
        lineages: &[[u8; 16]],
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<T>,
    ) -> Result<T> {
        self.with_client(|c| {
            // READ COMMITTED whatever the database's default: each statement sees what the
            // previous holder of a lock committed (a snapshot taken at the first statement,
            // before the lock was granted, would not).
            let tx = c
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::ReadCommitted)
                .start()
                .map_err(pg_err)?;
            let mut t = PgTx {
                tx,
                statements: &mut c.statements,
            };
            // The request first, then the lineages in ascending key order: every transaction
            // takes its locks in one global order (unnest yields the array in its order, and
            // the function is called row by row: one round trip for all the lineages).
            let lock = t.st("SELECT pg_advisory_xact_lock($1, $2)")?;
            t.tx.execute(&lock, &[&LOCK_REQUEST, &lock_key(request_id)])
                .map_err(pg_err)?;
            let mut keys: Vec<i32> = lineages.iter().map(lock_key).collect();
            keys.sort_unstable();
            keys.dedup();
            if !keys.is_empty() {
                let locks = t.st(
                    "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::INT4[]) WITH ORDINALITY
                     AS t(k, i) ORDER BY t.i",
                )?;
                t.tx.execute(&locks, &[&LOCK_LINEAGE, &keys])
                    .map_err(pg_err)?;
            }
            let out = f(&mut t)?;
            t.tx.commit().map_err(pg_err)?;
            Ok(out)
        })
    }

    fn devices(&self, lineage: &[u8; 16], since: i64) -> Result<Vec<DeviceRecord>> {
        self.with_client(|c| {
            Ok(c.client
                .query(
                    "SELECT device, first_grant FROM devices WHERE lineage_id = $1
                 AND first_grant >= $2 ORDER BY first_grant, device",
                    &[&&lineage[..], &since],
                )
                .map_err(pg_err)?
                .into_iter()
                .map(|r| DeviceRecord {
                    device: r.get(0),
                    first_grant: r.get(1),
                })
                .collect())
        })
    }

    fn audit_log(&self, lineage: Option<&[u8; 16]>, limit: u32) -> Result<Vec<AuditRecord>> {
        self.with_client(|c| {
            c.client
                .query(
                    "SELECT at, action, lineage_id, device, request_id, outcome, detail FROM audit
                 WHERE $1::BYTEA IS NULL OR lineage_id = $1 ORDER BY id DESC LIMIT $2",
                    &[&lineage.map(|l| &l[..]), &i64::from(limit)],
                )
                .map_err(pg_err)?
                .into_iter()
                .map(|r| {
                    Ok(AuditRecord {
                        at: r.get(0),
                        action: r.get(1),
                        lineage_id: r.get::<_, Option<Vec<u8>>>(2).map(id16).transpose()?,
                        device: r.get(3),
                        request_id: r.get::<_, Option<Vec<u8>>>(4).map(id16).transpose()?,
                        outcome: r.get(5),
                        detail: r.get(6),
                    })
                })
                .collect()
        })
    }

    fn ping(&self) -> Result<()> {
        self.with_client(|c| c.client.simple_query("SELECT 1").map(drop).map_err(pg_err))
    }
}
