//! [`CassandraStore`]: the [`FactStore`] primitives over the scylla driver.
//!
//! Only `order_state` is written with lightweight transactions; the views
//! get plain writes with explicit timestamps (see [`crate::statements`] for
//! every statement and [`ecom_core::state`] for why that is safe).

use std::sync::Arc;
use std::time::Duration;

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderState, StoredState, ViewWrite};
use ecom_store::{Cas, FactStore, Parked, ParkedSummary, Result, StoreCounts, StoreError};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, MaybeFirstRowError};
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;

use crate::error::{outcome_unknown, pager_error, request_error, schema_mismatch};
use crate::rows::*;
use crate::session::{check_schema, open_session};
use crate::statements::Statements;
use crate::{CassandraConfig, CassandraError};

/// SERIAL re-reads attempted to settle an LWT with an unknown outcome.
const RESOLVE_ATTEMPTS: u32 = 5;
const RESOLVE_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const RESOLVE_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A [`FactStore`] in Cassandra (or ScyllaDB). Cheap to clone; clones share
/// one session and one in-flight bound.
#[derive(Clone)]
pub struct CassandraStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CassandraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraStore")
            .field("contact_points", &self.inner.cfg.contact_points)
            .field("keyspace", &self.inner.cfg.keyspace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    session: Session,
    cfg: CassandraConfig,
    st: Statements,
    /// At most `max_in_flight` requests at a time.
    permits: Semaphore,
}

/// Reads an LWT result: `[applied]`, then (when not applied) whatever
/// current columns Cassandra returned.
/// Not applied carries the current row when the result has it (`IF NOT
/// EXISTS` returns every column, `IF revision = ?` only the revision).
fn lwt_result(what: &str, order_id: i64, res: QueryResult) -> Result<Cas<StoredState>> {
    let rows = res
        .into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra {what}: LWT returned no rows: {e}")))?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    if names.first().map(String::as_str) != Some("[applied]") {
        return Err(StoreError::Other(format!(
            "Cassandra {what}: LWT result's first column is {:?}, not [applied]",
            names.first()
        )));
    }
    let row: Row = rows
        .first_row()
        .map_err(|e| StoreError::Other(format!("Cassandra {what}: LWT result: {e}")))?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(true))) => return Ok(Cas::Applied),
        Some(Some(CqlValue::Boolean(false))) => {}
        other => {
            return Err(StoreError::Other(format!(
                "Cassandra {what}: [applied] is {other:?}, not a boolean"
            )));
        }
    }
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| row.columns.get(i).cloned().flatten())
    };
    let (revision, state) = (col("revision"), col("state"));
    let current = match (revision, state) {
        (Some(CqlValue::BigInt(revision)), Some(CqlValue::Text(state))) => Some(decode_state(
            order_id,
            StateRowCols {
                revision: Some(revision),
                state: Some(state),
            },
        )?),
        _ => None,
    };
    Ok(Cas::Rejected(current))
}

fn into_rows(what: &str, res: QueryResult) -> Result<QueryRowsResult> {
    res.into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra {what}: expected rows: {e}")))
}

fn fp_order(fp: Fingerprint) -> u64 {
    // The sled store's key order: fingerprints as unsigned big-endian bytes.
    fp.0 as u64
}

fn kind_order(kind: Kind) -> u8 {
    match kind {
        Kind::Order => 0,
        Kind::Payment => 1,
    }
}

impl CassandraStore {
    /// Connects, checks that the keyspace and its tables exist, and prepares
    /// every statement.
    pub async fn connect(cfg: CassandraConfig) -> Result<Self, CassandraError> {
        let session = open_session(&cfg).await?;
        check_schema(&session, &cfg.keyspace).await?;
        let st = Statements::prepare(&session, &cfg).await?;
        tracing::info!(keyspace = %cfg.keyspace, max_in_flight = cfg.max_in_flight, "connected to Cassandra");
        Ok(CassandraStore {
            inner: Arc::new(Inner {
                permits: Semaphore::new(cfg.max_in_flight),
                session,
                cfg,
                st,
            }),
        })
    }

    /// The keyspace this store reads and writes.
    pub fn keyspace(&self) -> &str {
        &self.inner.cfg.keyspace
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &CassandraConfig {
        &self.inner.cfg
    }

    /// The driver session, for tooling (e.g. `status` queries).
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    fn st(&self) -> &Statements {
        &self.inner.st
    }

    /// Executes one request under an in-flight permit.
    async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, ExecutionError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .expect("semaphore is never closed");
        // Timed after the permit: the histogram is Cassandra's latency, not
        // our own queueing.
        let started = std::time::Instant::now();
        let r = self.inner.session.execute_unpaged(st, values).await;
        metrics::histogram!("ecom_cassandra_request_seconds").record(started.elapsed());
        r
    }

    async fn write(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<()> {
        self.exec(st, values)
            .await
            .map(drop)
            .map_err(|e| request_error(what, e))
    }

    /// Whether `orders_payments_facts` has a row for `order_id`, read at the
    /// configured consistency: what a reader of the table sees. `bench`
    /// uses it to time publish → readable.
    pub async fn fact_exists(&self, order_id: i64) -> Result<bool> {
        let what = "fact_exists";
        let res = self
            .exec(&self.st().fact_exists, OrderIdKey { order_id })
            .await
            .map_err(|e| request_error(what, e))?;
        let rows = into_rows(what, res)?;
        Ok(rows.rows_num() > 0)
    }

    async fn read_state_with(
        &self,
        st: &PreparedStatement,
        order_id: i64,
    ) -> Result<Option<StoredState>> {
        let what = "read_state";
        let res = self
            .exec(st, OrderIdKey { order_id })
            .await
            .map_err(|e| request_error(what, e))?;
        let rows = into_rows(what, res)?;
        match rows.maybe_first_row::<StateRowCols>() {
            Ok(Some(r)) => decode_state(order_id, r).map(Some),
            Ok(None) => Ok(None),
            Err(MaybeFirstRowError::TypeCheckFailed(t)) => Err(schema_mismatch(what, t)),
            Err(MaybeFirstRowError::DeserializationFailed(d)) => Err(StoreError::Corrupt(format!(
                "Cassandra {what}: cannot decode a row: {d}"
            ))),
        }
    }

    /// One LWT on `order_id`'s state row. An unknown outcome is settled by a
    /// SERIAL read, which completes or supersedes our proposal, and reported
    /// as a rejection carrying that final state: the caller re-plans from
    /// it, and since the fold is idempotent, a write that did land makes the
    /// re-plan a no-op.
    async fn lwt(
        &self,
        what: &'static str,
        order_id: i64,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Cas<StoredState>> {
        let err = match self.exec(st, values).await {
            Ok(res) => {
                let cas = lwt_result(what, order_id, res)?;
                let result = match cas {
                    Cas::Applied => "applied",
                    Cas::Rejected(_) => "not_applied",
                };
                metrics::counter!("ecom_lwt_total", "result" => result).increment(1);
                return Ok(cas);
            }
            Err(e) if outcome_unknown(&e) => e,
            Err(e) => return Err(request_error(what, e)),
        };
        metrics::counter!("ecom_lwt_total", "result" => "unknown").increment(1);
        tracing::warn!(what, order_id, error = %err, "LWT outcome unknown; settling it with a SERIAL read");
        let mut backoff = RESOLVE_FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self
                .read_state_with(&self.st().read_state_serial, order_id)
                .await
            {
                Ok(current) => return Ok(Cas::Rejected(current)),
                Err(e) if e.is_retryable() && attempt < RESOLVE_ATTEMPTS => {
                    tracing::debug!(what, order_id, attempt, error = %e, "SERIAL re-read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESOLVE_MAX_BACKOFF);
                    attempt += 1;
                }
                Err(StoreError::Unavailable(m)) => {
                    return Err(StoreError::Unavailable(format!(
                        "outcome of {what} for order_id {order_id} is unknown ({err}) and \
                         {RESOLVE_ATTEMPTS} SERIAL re-reads failed, last: {m}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A paged scan of a whole table at the configured consistency.
    async fn scan<R, T>(
        &self,
        what: &str,
        st: &PreparedStatement,
        conv: impl Fn(R) -> Result<T>,
    ) -> Result<Vec<T>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .expect("semaphore is never closed");
        let mut rows = self
            .inner
            .session
            .execute_iter(st.clone(), ())
            .await
            .map_err(|e| pager_error(what, e))?
            .rows_stream::<R>()
            .map_err(|e| schema_mismatch(what, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| crate::error::next_row_error(what, e))?
        {
            out.push(conv(r)?);
        }
        Ok(out)
    }

    async fn write_view(&self, w: &ViewWrite) -> Result<()> {
        let st = self.st();
        match w {
            ViewWrite::Fact { row, ts } => {
                let order_id = row.order_id();
                // Every order column is bound (NULL included): a newer
                // version must clear what an older one set. Payment columns
                // are left alone while there is no payment: a payment never
                // leaves a row once joined.
                let order = OrderCols::new(&row.order, false);
                match &row.payment {
                    None => {
                        let cols = InsertOrder { order_id, order };
                        self.write("put_fact", &st.put_fact_order, OrderAt { cols, ts: *ts })
                            .await
                    }
                    Some(p) => {
                        let payment = PaymentCols::new(p, false);
                        let cols = InsertFull {
                            order_id,
                            order,
                            payment,
                        };
                        self.write("put_fact", &st.put_fact_full, FullAt { cols, ts: *ts })
                            .await
                    }
                }
            }
            ViewWrite::Audit { entry, ts } => {
                let cols = AuditCols::new(entry, false);
                self.write("put_audit", &st.put_audit, AuditAt { cols, ts: *ts })
                    .await
            }
            ViewWrite::AuditDelete {
                order_id,
                kind,
                fingerprint,
                ts,
            } => {
                let cols = AuditKey::new(*order_id, *kind, *fingerprint);
                self.write(
                    "delete_audit",
                    &st.delete_audit,
                    AuditKeyAt { cols, ts: *ts },
                )
                .await
            }
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
                let cols = ParkedCols::new(&p, false);
                self.write("put_parked", &st.put_parked, ParkedAt { cols, ts: *ts })
                    .await
            }
            ViewWrite::ParkedDelete {
                order_id,
                fingerprint,
                ts,
            } => {
                let cols = ParkedKey {
                    order_id: *order_id,
                    fingerprint: fingerprint.0,
                };
                self.write(
                    "delete_parked",
                    &st.delete_parked,
                    ParkedKeyAt { cols, ts: *ts },
                )
                .await
            }
            ViewWrite::ParkedAttempts {
                order_id,
                fingerprint,
                attempts,
                ts,
            } => {
                let cols = ParkedAttempts {
                    order_id: *order_id,
                    fingerprint: fingerprint.0,
                    attempts: *attempts,
                };
                self.write(
                    "parked_attempts",
                    &st.parked_attempts,
                    ParkedAttemptsAt { cols, ts: *ts },
                )
                .await
            }
        }
    }
}

impl FactStore for CassandraStore {
    async fn read_state(&self, order_id: i64) -> Result<Option<StoredState>> {
        self.read_state_with(&self.st().read_state, order_id).await
    }

    async fn insert_state(&self, order_id: i64, state: &OrderState) -> Result<Cas<StoredState>> {
        let text = encode_state(state);
        let values = StateCols {
            order_id,
            revision: 1,
            state: &text,
        };
        self.lwt("insert_state", order_id, &self.st().insert_state, values)
            .await
    }

    async fn update_state(
        &self,
        order_id: i64,
        expected_revision: i64,
        state: &OrderState,
    ) -> Result<Cas<StoredState>> {
        let text = encode_state(state);
        let values = StateUpdate {
            order_id,
            revision: expected_revision + 1,
            state: &text,
            expected_revision,
        };
        self.lwt("update_state", order_id, &self.st().update_state, values)
            .await
    }

    /// Concurrently, `max_in_flight` at a time (the semaphore).
    async fn write_views(&self, writes: &[ViewWrite]) -> Result<()> {
        let mut pending: FuturesUnordered<_> = writes.iter().map(|w| self.write_view(w)).collect();
        while let Some(r) = pending.next().await {
            r?;
            // Some rows of the step written, the others in flight or queued.
            if !pending.is_empty() {
                ecom_core::failpoint!("cassandra::between_view_writes");
            }
        }
        Ok(())
    }

    async fn scan_facts(&self) -> Result<Vec<FactRow>> {
        let mut rows = self
            .scan("scan_facts", &self.st().scan_facts, FactRowCols::into_fact)
            .await?;
        rows.sort_by_key(FactRow::order_id);
        Ok(rows)
    }

    async fn scan_audit(&self) -> Result<Vec<Entry>> {
        let mut rows = self
            .scan(
                "scan_audit",
                &self.st().scan_audit,
                AuditRowCols::into_entry,
            )
            .await?;
        rows.sort_by_key(|e| {
            (
                e.order_id(),
                kind_order(e.kind()),
                fp_order(e.fingerprint()),
            )
        });
        Ok(rows)
    }

    async fn scan_parked(&self) -> Result<Vec<Parked>> {
        let mut rows = self
            .scan(
                "scan_parked",
                &self.st().scan_parked,
                ParkedRowCols::into_parked,
            )
            .await?;
        rows.sort_by_key(|p| (p.order_id(), fp_order(p.payment.fingerprint)));
        Ok(rows)
    }

    /// Counts by paged scans of the key columns: O(rows) reads, fine for
    /// `status`/`demo` sizes; a `count(*)` would do the same work server-side
    /// and risk a read timeout on big tables.
    async fn counts(&self) -> Result<StoreCounts> {
        let st = self.st();
        let facts: Vec<bool> = self
            .scan(
                "counts",
                &st.count_facts,
                |(_, p): (i64, Option<String>)| Ok(p.is_some()),
            )
            .await?;
        let audit = self
            .scan("counts", &st.count_audit, |_: (i64,)| Ok(()))
            .await?
            .len();
        let parked = self
            .scan(
                "counts",
                &st.count_parked,
                |_: (i64, Option<CqlTimestamp>)| Ok(()),
            )
            .await?
            .len();
        Ok(StoreCounts {
            facts: facts.len() as u64,
            payments_joined: facts.iter().filter(|p| **p).count() as u64,
            audit: audit as u64,
            parked: parked as u64,
        })
    }

    /// A paged scan of `dlq_payments`' key and `parked_at` only.
    async fn parked_summary(&self) -> Result<ParkedSummary> {
        let parked_at: Vec<Option<i64>> = self
            .scan(
                "parked_summary",
                &self.st().count_parked,
                |(_, at): (i64, Option<CqlTimestamp>)| Ok(at.map(|t| t.0)),
            )
            .await?;
        Ok(ParkedSummary {
            parked: parked_at.len() as u64,
            oldest_parked_at_ms: parked_at.into_iter().flatten().min(),
        })
    }

    async fn is_empty(&self) -> Result<bool> {
        for st in &self.st().any {
            let res = self
                .exec(st, ())
                .await
                .map_err(|e| request_error("is_empty", e))?;
            if into_rows("is_empty", res)?.rows_num() > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn truncate(&self) -> Result<()> {
        for (i, st) in self.st().truncate.iter().enumerate() {
            if i > 0 {
                // Some tables emptied, the others not yet.
                ecom_core::failpoint!("cassandra::between_truncates");
            }
            self.exec(st, ())
                .await
                .map_err(|e| request_error("truncate", e))?;
        }
        Ok(())
    }

    /// Plain INSERTs at timestamp 0, `max_in_flight` at a time.
    async fn put_states(&self, states: &[(i64, OrderState)]) -> Result<()> {
        let texts: Vec<(i64, String)> = states
            .iter()
            .map(|(id, s)| (*id, encode_state(s)))
            .collect();
        let mut pending: FuturesUnordered<_> = texts
            .iter()
            .map(|(order_id, text)| {
                let values = StateCols {
                    order_id: *order_id,
                    revision: 1,
                    state: text,
                };
                self.write("put_state", &self.st().put_state, values)
            })
            .collect();
        while let Some(r) = pending.next().await {
            r?;
            if !pending.is_empty() {
                ecom_core::failpoint!("cassandra::between_state_writes");
            }
        }
        Ok(())
    }

    /// Nothing to do: a write acknowledged at the configured consistency is
    /// already in the commit log of enough replicas (with the default
    /// `commitlog_sync: periodic`, a replica's commit log is fsynced every
    /// 10 s, so durability against simultaneous power loss of all those
    /// replicas rests on replication, as everywhere in Cassandra).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
