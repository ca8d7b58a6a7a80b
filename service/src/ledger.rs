//! The ledger a service runs on: SQLite (one instance) or PostgreSQL (replicas).

use crate::pg::PgLedger;
use std::path::Path;
use wmlicense_core::service::{AuditRecord, DeviceRecord, Ledger, LedgerTx, SqliteLedger};
use wmlicense_core::Result;

pub enum AnyLedger {
    Sqlite(SqliteLedger),
    Postgres(PgLedger),
}

impl AnyLedger {
    /// `DIR/ledger.db`, or the PostgreSQL database at `url`.
    pub fn open(data: &Path, database: Option<&str>, connections: usize) -> Result<AnyLedger> {
        Ok(match database {
            Some(url) => AnyLedger::Postgres(PgLedger::open(url, connections)?),
            None => AnyLedger::Sqlite(SqliteLedger::open(&data.join("ledger.db"))?),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AnyLedger::Sqlite(_) => "sqlite",
            AnyLedger::Postgres(_) => "postgresql",
        }
    }
}

impl Ledger for AnyLedger {
    fn transaction<T>(
        &self,
        request_id: &[u8; 16],
        lineages: &[[u8; 16]],
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<T>,
    ) -> Result<T> {
        match self {
            AnyLedger::Sqlite(l) => l.transaction(request_id, lineages, f),
            AnyLedger::Postgres(l) => l.transaction(request_id, lineages, f),
        }
    }

    fn devices(&self, lineage: &[u8; 16], since: i64) -> Result<Vec<DeviceRecord>> {
        match self {
            AnyLedger::Sqlite(l) => l.devices(lineage, since),
            AnyLedger::Postgres(l) => l.devices(lineage, since),
        }
    }

    fn audit_log(&self, lineage: Option<&[u8; 16]>, limit: u32) -> Result<Vec<AuditRecord>> {
        match self {
            AnyLedger::Sqlite(l) => l.audit_log(lineage, limit),
            AnyLedger::Postgres(l) => l.audit_log(lineage, limit),
        }
    }

    fn ping(&self) -> Result<()> {
        match self {
            AnyLedger::Sqlite(l) => l.ping(),
            AnyLedger::Postgres(l) => l.ping(),
        }
    }
}
