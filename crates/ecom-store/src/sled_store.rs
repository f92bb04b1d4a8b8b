//! The embedded fact store: four sled trees. `order_state` is written with
//! sled's compare-and-swap, which gives the conditional semantics of a
//! Cassandra lightweight transaction; the three views keep a timestamp per
//! row (and per `attempts` cell) and apply Cassandra's last-write-wins rule,
//! deletions included, so the embedded store reconciles concurrent view
//! writes exactly as Cassandra does.
//!
//! Keys are big-endian so that a scan returns rows in `order_id` order.
//! Values are bincode.

use std::path::Path;

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderState, StoredState, ViewWrite};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Cas, FactStore, Parked, ParkedSummary, Result, StoreCounts, StoreError};

/// The embedded store. Cheap to share behind an `Arc`; several projectors in
/// one process may use one store, like several instances share a Cassandra.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    state: sled::Tree,
    facts: sled::Tree,
    audit: sled::Tree,
    parked: sled::Tree,
}

fn other(e: sled::Error) -> StoreError {
    StoreError::Other(format!("sled: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("in-memory serialization cannot fail")
}

fn decode<T: DeserializeOwned>(table: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{table} key {key:?}: {e}")))
}

fn fact_key(order_id: i64) -> [u8; 8] {
    // Flip the sign bit so negative ids (rejected upstream anyway) still sort.
    ((order_id as u64) ^ (1 << 63)).to_be_bytes()
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Order => 0,
        Kind::Payment => 1,
    }
}

fn audit_key(order_id: i64, kind: Kind, fp: Fingerprint) -> Vec<u8> {
    let mut k = fact_key(order_id).to_vec();
    k.push(kind_byte(kind));
    k.extend_from_slice(&fp.0.to_be_bytes());
    k
}

fn parked_key(order_id: i64, fp: Fingerprint) -> Vec<u8> {
    let mut k = fact_key(order_id).to_vec();
    k.extend_from_slice(&fp.0.to_be_bytes());
    k
}

/// A view row with its write timestamp; `None` is a deletion (kept, so a
/// late older write cannot resurrect the row, as a Cassandra tombstone).
#[derive(Serialize, serde::Deserialize)]
struct Cell<T> {
    ts: i64,
    value: Option<T>,
}

/// A `dlq_payments` row: the `attempts` column has its own timestamp, as a
/// Cassandra cell does.
#[derive(Serialize, serde::Deserialize)]
struct ParkedCell {
    ts: i64,
    value: Option<Parked>,
    attempts_ts: i64,
}

/// Whether a write at `ts` with `bytes` (None: a deletion) wins over the
/// cell at `cur_ts` holding `cur`: Cassandra's rule (higher timestamp; on a
/// tie a deletion, then the greater value).
fn wins(ts: i64, bytes: Option<&[u8]>, cur_ts: i64, cur: Option<&[u8]>) -> bool {
    if ts != cur_ts {
        return ts > cur_ts;
    }
    match (bytes, cur) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a > b,
    }
}

impl SledStore {
    /// Opens (or creates) a store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            // Small: sled 0.34's resident set grows well past this anyway
            // (see ecom-log's `LogOptions::cache_capacity_bytes`).
            .cache_capacity(32 << 20)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                StoreError::Other(format!("cannot open store at {}: {e}", path.display()))
            })?;
        Self::from_db(db)
    }

    /// A throwaway store, for tests and benchmarks.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open().map_err(other)?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        Ok(SledStore {
            state: db.open_tree("order_state").map_err(other)?,
            facts: db.open_tree("orders_payments_facts").map_err(other)?,
            audit: db.open_tree("duplicate_orders").map_err(other)?,
            parked: db.open_tree("dlq_payments").map_err(other)?,
            db,
        })
    }

    fn get_state(&self, order_id: i64) -> Result<Option<(sled::IVec, StoredState)>> {
        let key = fact_key(order_id);
        let Some(bytes) = self.state.get(key).map_err(other)? else {
            return Ok(None);
        };
        let (revision, state): (i64, OrderState) = decode("order_state", &key, &bytes)?;
        Ok(Some((bytes, StoredState { revision, state })))
    }

    /// Last-write-wins update of one view key.
    fn lww<T: Serialize + DeserializeOwned>(
        tree: &sled::Tree,
        table: &str,
        key: &[u8],
        ts: i64,
        value: Option<&T>,
    ) -> Result<()> {
        let new_value = value.map(encode);
        loop {
            let old = tree.get(key).map_err(other)?;
            if let Some(old) = &old {
                let cur: Cell<T> = decode(table, key, old)?;
                let cur_value = cur.value.as_ref().map(encode);
                if !wins(ts, new_value.as_deref(), cur.ts, cur_value.as_deref()) {
                    return Ok(());
                }
            }
            let cell = encode(&Cell { ts, value });
            if tree
                .compare_and_swap(key, old, Some(cell))
                .map_err(other)?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Last-write-wins update of one `dlq_payments` key; `attempts` alone
    /// when `only_attempts`.
    fn lww_parked(&self, key: &[u8], ts: i64, write: ParkedWrite<'_>) -> Result<()> {
        const TABLE: &str = "dlq_payments";
        loop {
            let old = self.parked.get(key).map_err(other)?;
            let cur: Option<ParkedCell> =
                old.as_ref().map(|b| decode(TABLE, key, b)).transpose()?;
            let next = match (&write, cur) {
                (ParkedWrite::Row(p), None) => ParkedCell {
                    ts,
                    value: Some((*p).clone()),
                    attempts_ts: ts,
                },
                (ParkedWrite::Delete, None) => ParkedCell {
                    ts,
                    value: None,
                    attempts_ts: ts,
                },
                (ParkedWrite::Attempts(_), None) => return Ok(()),
                (ParkedWrite::Row(p), Some(cur)) => {
                    let a = encode(&p.payment);
                    let b = cur.value.as_ref().map(|v| encode(&v.payment));
                    if !wins(ts, Some(&a), cur.ts, b.as_deref()) {
                        return Ok(());
                    }
                    let mut value = (*p).clone();
                    let mut attempts_ts = ts;
                    if cur.attempts_ts > ts
                        && let Some(v) = &cur.value
                    {
                        value.attempts = v.attempts;
                        attempts_ts = cur.attempts_ts;
                    }
                    ParkedCell {
                        ts,
                        value: Some(value),
                        attempts_ts,
                    }
                }
                (ParkedWrite::Delete, Some(cur)) => {
                    if ts < cur.ts {
                        // The row is newer than the deletion; it stays.
                        return Ok(());
                    }
                    ParkedCell {
                        ts,
                        value: None,
                        attempts_ts: cur.attempts_ts.max(ts),
                    }
                }
                (ParkedWrite::Attempts(n), Some(cur)) => {
                    let Some(mut v) = cur.value else {
                        return Ok(());
                    };
                    if ts <= cur.attempts_ts {
                        return Ok(());
                    }
                    v.attempts = *n;
                    ParkedCell {
                        ts: cur.ts,
                        value: Some(v),
                        attempts_ts: ts,
                    }
                }
            };
            if self
                .parked
                .compare_and_swap(key, old, Some(encode(&next)))
                .map_err(other)?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    fn scan_live<T: DeserializeOwned>(tree: &sled::Tree, table: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        Self::each_live(tree, table, |row| out.push(row))?;
        Ok(out)
    }

    /// Calls `f` with every live (not deleted) row of `tree`, in key order.
    fn each_live<T: DeserializeOwned>(
        tree: &sled::Tree,
        table: &str,
        mut f: impl FnMut(T),
    ) -> Result<()> {
        for kv in tree.iter() {
            let (k, v) = kv.map_err(other)?;
            let cell: Cell<T> = decode(table, &k, &v)?;
            if let Some(row) = cell.value {
                f(row);
            }
        }
        Ok(())
    }
}

enum ParkedWrite<'a> {
    Row(&'a Parked),
    Delete,
    Attempts(i32),
}

impl FactStore for SledStore {
    async fn read_state(&self, order_id: i64) -> Result<Option<StoredState>> {
        Ok(self.get_state(order_id)?.map(|(_, s)| s))
    }

    async fn insert_state(&self, order_id: i64, state: &OrderState) -> Result<Cas<StoredState>> {
        let key = fact_key(order_id);
        let new = encode(&(1i64, state));
        match self
            .state
            .compare_and_swap(key, None as Option<&[u8]>, Some(new))
            .map_err(other)?
        {
            Ok(()) => Ok(Cas::Applied),
            Err(_) => Ok(Cas::Rejected(self.get_state(order_id)?.map(|(_, s)| s))),
        }
    }

    async fn update_state(
        &self,
        order_id: i64,
        expected_revision: i64,
        state: &OrderState,
    ) -> Result<Cas<StoredState>> {
        let key = fact_key(order_id);
        loop {
            let Some((bytes, cur)) = self.get_state(order_id)? else {
                return Ok(Cas::Rejected(None));
            };
            if cur.revision != expected_revision {
                return Ok(Cas::Rejected(Some(cur)));
            }
            let new = encode(&(expected_revision + 1, state));
            if self
                .state
                .compare_and_swap(key, Some(bytes), Some(new))
                .map_err(other)?
                .is_ok()
            {
                return Ok(Cas::Applied);
            }
        }
    }

    async fn write_views(&self, writes: &[ViewWrite]) -> Result<()> {
        for w in writes {
            match w {
                ViewWrite::Fact { row, ts } => Self::lww(
                    &self.facts,
                    "orders_payments_facts",
                    &fact_key(row.order_id()),
                    *ts,
                    Some(row),
                )?,
                ViewWrite::Audit { entry, ts } => Self::lww(
                    &self.audit,
                    "duplicate_orders",
                    &audit_key(entry.order_id(), entry.kind(), entry.fingerprint()),
                    *ts,
                    Some(entry),
                )?,
                ViewWrite::AuditDelete {
                    order_id,
                    kind,
                    fingerprint,
                    ts,
                } => Self::lww::<Entry>(
                    &self.audit,
                    "duplicate_orders",
                    &audit_key(*order_id, *kind, *fingerprint),
                    *ts,
                    None,
                )?,
                ViewWrite::Parked {
                    parked,
                    attempts,
                    ts,
                } => {
                    let p = Parked {
                        payment: parked.payment.clone(),
                        parked_at_ms: parked.parked_at_ms,
                        attempts: *attempts,
                    };
                    let key = parked_key(p.order_id(), p.payment.fingerprint);
                    self.lww_parked(&key, *ts, ParkedWrite::Row(&p))?
                }
                ViewWrite::ParkedDelete {
                    order_id,
                    fingerprint,
                    ts,
                } => self.lww_parked(
                    &parked_key(*order_id, *fingerprint),
                    *ts,
                    ParkedWrite::Delete,
                )?,
                ViewWrite::ParkedAttempts {
                    order_id,
                    fingerprint,
                    attempts,
                    ts,
                } => self.lww_parked(
                    &parked_key(*order_id, *fingerprint),
                    *ts,
                    ParkedWrite::Attempts(*attempts),
                )?,
            }
        }
        Ok(())
    }

    async fn scan_facts(&self) -> Result<Vec<FactRow>> {
        Self::scan_live(&self.facts, "orders_payments_facts")
    }

    async fn scan_audit(&self) -> Result<Vec<Entry>> {
        Self::scan_live(&self.audit, "duplicate_orders")
    }

    async fn scan_parked(&self) -> Result<Vec<Parked>> {
        let mut out = Vec::new();
        for kv in self.parked.iter() {
            let (k, v) = kv.map_err(other)?;
            let cell: ParkedCell = decode("dlq_payments", &k, &v)?;
            out.extend(cell.value);
        }
        Ok(out)
    }

    /// Counted row by row, never collected: a running pipeline refreshes
    /// these every few seconds, and collecting a large table each time made
    /// its memory grow with the table (the bench's memory stage).
    async fn counts(&self) -> Result<StoreCounts> {
        let mut counts = StoreCounts::default();
        Self::each_live(&self.facts, "orders_payments_facts", |row: FactRow| {
            counts.facts += 1;
            counts.payments_joined += u64::from(row.payment.is_some());
        })?;
        Self::each_live(&self.audit, "duplicate_orders", |_: Entry| {
            counts.audit += 1
        })?;
        for kv in self.parked.iter() {
            let (k, v) = kv.map_err(other)?;
            let cell: ParkedCell = decode("dlq_payments", &k, &v)?;
            counts.parked += u64::from(cell.value.is_some());
        }
        Ok(counts)
    }

    async fn parked_summary(&self) -> Result<ParkedSummary> {
        let mut summary = ParkedSummary::default();
        for kv in self.parked.iter() {
            let (k, v) = kv.map_err(other)?;
            let cell: ParkedCell = decode("dlq_payments", &k, &v)?;
            if let Some(p) = cell.value {
                summary.parked += 1;
                summary.oldest_parked_at_ms = Some(
                    summary
                        .oldest_parked_at_ms
                        .map_or(p.parked_at_ms, |t| t.min(p.parked_at_ms)),
                );
            }
        }
        Ok(summary)
    }

    async fn is_empty(&self) -> Result<bool> {
        Ok(self.state.is_empty()
            && self.facts.is_empty()
            && self.audit.is_empty()
            && self.parked.is_empty())
    }

    async fn truncate(&self) -> Result<()> {
        for tree in [&self.state, &self.facts, &self.audit, &self.parked] {
            tree.clear().map_err(other)?;
        }
        self.db.flush_async().await.map_err(other)?;
        Ok(())
    }

    async fn put_states(&self, states: &[(i64, OrderState)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (order_id, state) in states {
            batch.insert(&fact_key(*order_id), encode(&(1i64, state)));
        }
        self.state.apply_batch(batch).map_err(other)
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(other)?;
        Ok(())
    }
}
