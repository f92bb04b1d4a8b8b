//! [`CassandraStore`]: the [`FactStore`] primitives as prepared statements
//! and lightweight transactions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderVersion, PaymentVersion, Provenance};
use ecom_store::{Cas, FactStore, Parked, Result, StoreCounts, StoreError};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, FirstRowError, MaybeFirstRowError};
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::{Mutex, MutexGuard, Semaphore};

use crate::config::{serial_read_consistency, validate_keyspace};
use crate::error::{outcome_unknown, pager_error, request_error, schema_mismatch};
use crate::outcome::{
    Goal, Stamp, decide_after_unknown_outcome, entry_stamp, order_stamp, parked_stamp,
    payment_stamp,
};
use crate::rows::*;
use crate::{CassandraConfig, CassandraError};

/// Number of per-`order_id` lock stripes.
const STRIPES: usize = 1024;
/// SERIAL re-reads attempted to decide an unknown LWT outcome.
const RESOLVE_ATTEMPTS: u32 = 5;
const RESOLVE_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const RESOLVE_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// `TRUNCATE` waits for every replica to flush and snapshot.
const TRUNCATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A [`FactStore`] in Cassandra (or ScyllaDB). Cheap to clone; clones share
/// one session, one in-flight bound and one lock table.
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
    /// At most `max_in_flight` requests at a time. A permit is held for one
    /// request only, never while waiting for a stripe lock, so lock holders
    /// always make progress.
    permits: Semaphore,
    /// At most one conditional write per `order_id` at a time (per store).
    stripes: Box<[Mutex<()>]>,
}

struct Statements {
    read_fact: PreparedStatement,
    insert_fact: PreparedStatement,
    replace_order: PreparedStatement,
    set_first_payment: PreparedStatement,
    replace_payment: PreparedStatement,
    read_audit: PreparedStatement,
    insert_audit: PreparedStatement,
    replace_audit: PreparedStatement,
    delete_audit: PreparedStatement,
    parked_for: PreparedStatement,
    insert_parked: PreparedStatement,
    replace_parked: PreparedStatement,
    touch_parked: PreparedStatement,
    delete_parked: PreparedStatement,
    scan_facts: PreparedStatement,
    scan_audit: PreparedStatement,
    scan_parked: PreparedStatement,
    count_facts: PreparedStatement,
    count_audit: PreparedStatement,
    count_parked: PreparedStatement,
    any: [PreparedStatement; 3],
    truncate: [PreparedStatement; 3],
    put_fact_order: PreparedStatement,
    put_fact_full: PreparedStatement,
    put_audit: PreparedStatement,
    put_parked: PreparedStatement,
}

/// How a statement runs.
#[derive(Clone, Copy)]
enum Mode {
    /// A lightweight transaction: commit at `consistency`, Paxos at
    /// `serial_consistency`; not idempotent, never retried by the driver.
    Lwt,
    /// A single-key read linearizable with LWTs (consistency = the serial
    /// consistency).
    SerialRead,
    /// Scans and counts at `consistency`; idempotent.
    Read,
    /// Plain writes at `consistency`; idempotent (same values, same row).
    Write,
    /// `TRUNCATE`: long timeout.
    Truncate,
}

/// Opens a session to the cluster (no keyspace selected; statements name it).
pub(crate) async fn open_session(cfg: &CassandraConfig) -> Result<Session, CassandraError> {
    validate_keyspace(&cfg.keyspace)?;
    if cfg.contact_points.is_empty() {
        return Err(CassandraError::InvalidConfig(
            "no contact points: give at least one host:port".into(),
        ));
    }
    if cfg.max_in_flight == 0 {
        return Err(CassandraError::InvalidConfig(
            "max_in_flight must be at least 1".into(),
        ));
    }
    if cfg.username.is_some() != cfg.password.is_some() {
        return Err(CassandraError::InvalidConfig(
            "set both username and password, or neither".into(),
        ));
    }
    tracing::info!(
        contact_points = ?cfg.contact_points,
        keyspace = %cfg.keyspace,
        tls = cfg.tls,
        authenticated = cfg.username.is_some(),
        "connecting to Cassandra"
    );
    let profile = ExecutionProfile::builder()
        .consistency(cfg.consistency)
        .serial_consistency(Some(cfg.serial_consistency))
        .request_timeout(Some(cfg.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(Duration::from_secs(5))
        .keyspaces_to_fetch([cfg.keyspace.clone()]);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.user(user, password);
    }
    if cfg.tls {
        builder = builder.tls_context(Some(crate::tls::context(cfg)?));
    }
    builder
        .build()
        .await
        .map_err(|source| CassandraError::Connect {
            contact_points: cfg.contact_points.join(","),
            auth_hint: if cfg.username.is_some() {
                ", username and password"
            } else {
                "; if the cluster requires authentication, set username and password"
            },
            source: Box::new(source),
        })
}

fn placeholders(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!(":{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn assignments(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!("{c} = :{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// LWT conditions on the expected provenance ([`Expected`] binds them).
const IF_PROVENANCE: &str =
    "IF message_id = :expected_message_id AND publish_time_us = :expected_publish_time_us";
const IF_ORDER_PROVENANCE: &str = "IF order_message_id = :expected_message_id \
     AND order_publish_time_us = :expected_publish_time_us";
const IF_PAYMENT_PROVENANCE: &str = "IF payment_message_id = :expected_message_id \
     AND payment_publish_time_us = :expected_publish_time_us";

impl Statements {
    async fn prepare(session: &Session, cfg: &CassandraConfig) -> Result<Self, CassandraError> {
        let ks = &cfg.keyspace;
        let facts = format!("{ks}.{FACTS}");
        let audit = format!("{ks}.{AUDIT}");
        let parked = format!("{ks}.{PARKED}");
        let order_cols = [&["order_id"][..], ORDER_COLUMNS].concat();
        let full_cols = [&order_cols[..], PAYMENT_COLUMNS].concat();
        let fact_select = full_cols.join(", ");
        let audit_cols = AUDIT_COLUMNS.join(", ");
        let parked_cols = PARKED_COLUMNS.join(", ");
        let audit_select = AUDIT_READ_COLUMNS.join(", ");
        let parked_select = PARKED_READ_COLUMNS.join(", ");
        let audit_key = "order_id = :order_id AND kind = :kind AND fingerprint = :fingerprint";
        let parked_key = "order_id = :order_id AND fingerprint = :fingerprint";
        let audit_set = assignments(&AUDIT_COLUMNS[3..]);
        let parked_set = assignments(&PARKED_COLUMNS[2..]);

        let p =
            |what: &'static str, mode: Mode, text: String| prepare(session, cfg, what, mode, text);
        Ok(Statements {
            read_fact: p(
                "read_fact",
                Mode::SerialRead,
                format!("SELECT {fact_select} FROM {facts} WHERE order_id = :order_id"),
            )
            .await?,
            insert_fact: p(
                "insert_fact",
                Mode::Lwt,
                format!(
                    "INSERT INTO {facts} ({}) VALUES ({}) IF NOT EXISTS",
                    order_cols.join(", "),
                    placeholders(&order_cols)
                ),
            )
            .await?,
            replace_order: p(
                "replace_order",
                Mode::Lwt,
                format!(
                    "UPDATE {facts} SET {} WHERE order_id = :order_id {IF_ORDER_PROVENANCE}",
                    assignments(ORDER_COLUMNS),
                ),
            )
            .await?,
            // The row must exist (its order columns are never null) and have
            // no payment yet. An UPDATE on a missing row would create it, so
            // the existence condition matters.
            set_first_payment: p(
                "replace_payment",
                Mode::Lwt,
                format!(
                    "UPDATE {facts} SET {} WHERE order_id = :order_id \
                     IF order_message_id != null AND payment_message_id = null",
                    assignments(PAYMENT_COLUMNS),
                ),
            )
            .await?,
            replace_payment: p(
                "replace_payment",
                Mode::Lwt,
                format!(
                    "UPDATE {facts} SET {} WHERE order_id = :order_id {IF_PAYMENT_PROVENANCE}",
                    assignments(PAYMENT_COLUMNS),
                ),
            )
            .await?,
            read_audit: p(
                "read_audit",
                Mode::SerialRead,
                format!("SELECT {audit_select} FROM {audit} WHERE {audit_key}"),
            )
            .await?,
            insert_audit: p(
                "insert_audit",
                Mode::Lwt,
                format!(
                    "INSERT INTO {audit} ({audit_cols}) VALUES ({}) IF NOT EXISTS",
                    placeholders(AUDIT_COLUMNS)
                ),
            )
            .await?,
            replace_audit: p(
                "replace_audit",
                Mode::Lwt,
                format!("UPDATE {audit} SET {audit_set} WHERE {audit_key} {IF_PROVENANCE}"),
            )
            .await?,
            delete_audit: p(
                "delete_audit",
                Mode::Lwt,
                format!("DELETE FROM {audit} WHERE {audit_key} {IF_PROVENANCE}"),
            )
            .await?,
            parked_for: p(
                "parked_for",
                Mode::SerialRead,
                format!("SELECT {parked_select} FROM {parked} WHERE order_id = :order_id"),
            )
            .await?,
            insert_parked: p(
                "insert_parked",
                Mode::Lwt,
                format!(
                    "INSERT INTO {parked} ({parked_cols}) VALUES ({}) IF NOT EXISTS",
                    placeholders(PARKED_COLUMNS)
                ),
            )
            .await?,
            replace_parked: p(
                "replace_parked",
                Mode::Lwt,
                format!("UPDATE {parked} SET {parked_set} WHERE {parked_key} {IF_PROVENANCE}"),
            )
            .await?,
            // Conditional on existence so that touching a row deleted
            // meanwhile does not leave a payload-less row behind.
            touch_parked: p(
                "touch_parked",
                Mode::Lwt,
                format!("UPDATE {parked} SET attempts = :attempts WHERE {parked_key} IF EXISTS"),
            )
            .await?,
            delete_parked: p(
                "delete_parked",
                Mode::Write,
                format!("DELETE FROM {parked} WHERE {parked_key}"),
            )
            .await?,
            scan_facts: p(
                "scan_facts",
                Mode::Read,
                format!("SELECT {fact_select} FROM {facts}"),
            )
            .await?,
            scan_audit: p(
                "scan_audit",
                Mode::Read,
                format!("SELECT {audit_select} FROM {audit}"),
            )
            .await?,
            scan_parked: p(
                "scan_parked",
                Mode::Read,
                format!("SELECT {parked_select} FROM {parked}"),
            )
            .await?,
            count_facts: p(
                "counts",
                Mode::Read,
                format!("SELECT order_id, payment_fingerprint FROM {facts}"),
            )
            .await?,
            count_audit: p(
                "counts",
                Mode::Read,
                format!("SELECT order_id FROM {audit}"),
            )
            .await?,
            count_parked: p(
                "counts",
                Mode::Read,
                format!("SELECT order_id FROM {parked}"),
            )
            .await?,
            any: [
                p(
                    "is_empty",
                    Mode::Read,
                    format!("SELECT order_id FROM {facts} LIMIT 1"),
                )
                .await?,
                p(
                    "is_empty",
                    Mode::Read,
                    format!("SELECT order_id FROM {audit} LIMIT 1"),
                )
                .await?,
                p(
                    "is_empty",
                    Mode::Read,
                    format!("SELECT order_id FROM {parked} LIMIT 1"),
                )
                .await?,
            ],
            truncate: [
                p("truncate", Mode::Truncate, format!("TRUNCATE {facts}")).await?,
                p("truncate", Mode::Truncate, format!("TRUNCATE {audit}")).await?,
                p("truncate", Mode::Truncate, format!("TRUNCATE {parked}")).await?,
            ],
            put_fact_order: p(
                "put_final",
                Mode::Write,
                format!(
                    "INSERT INTO {facts} ({}) VALUES ({})",
                    order_cols.join(", "),
                    placeholders(&order_cols)
                ),
            )
            .await?,
            put_fact_full: p(
                "put_final",
                Mode::Write,
                format!(
                    "INSERT INTO {facts} ({fact_select}) VALUES ({})",
                    placeholders(&full_cols)
                ),
            )
            .await?,
            put_audit: p(
                "put_final",
                Mode::Write,
                format!(
                    "INSERT INTO {audit} ({audit_cols}) VALUES ({})",
                    placeholders(AUDIT_COLUMNS)
                ),
            )
            .await?,
            put_parked: p(
                "put_final",
                Mode::Write,
                format!(
                    "INSERT INTO {parked} ({parked_cols}) VALUES ({})",
                    placeholders(PARKED_COLUMNS)
                ),
            )
            .await?,
        })
    }
}

async fn prepare(
    session: &Session,
    cfg: &CassandraConfig,
    what: &'static str,
    mode: Mode,
    text: String,
) -> Result<PreparedStatement, CassandraError> {
    let mut st = session
        .prepare(text)
        .await
        .map_err(|source| CassandraError::Prepare {
            what,
            source: Box::new(source),
        })?;
    match mode {
        Mode::Lwt => {
            st.set_consistency(cfg.consistency);
            st.set_serial_consistency(Some(cfg.serial_consistency));
            st.set_is_idempotent(false);
            // An LWT that failed in an unknown way is decided by a SERIAL
            // read, never retried by the driver.
            st.set_retry_policy(Some(Arc::new(FallthroughRetryPolicy)));
        }
        Mode::SerialRead => {
            st.set_consistency(serial_read_consistency(cfg.serial_consistency));
            st.set_serial_consistency(Some(cfg.serial_consistency));
            st.set_is_idempotent(true);
        }
        Mode::Read | Mode::Write => {
            st.set_consistency(cfg.consistency);
            st.set_serial_consistency(Some(cfg.serial_consistency));
            st.set_is_idempotent(true);
        }
        Mode::Truncate => {
            st.set_consistency(cfg.consistency);
            st.set_is_idempotent(true);
            st.set_request_timeout(Some(TRUNCATE_TIMEOUT.max(cfg.request_timeout)));
        }
    }
    Ok(st)
}

/// Outcome of one LWT execution.
enum Lwt {
    Applied,
    NotApplied,
    /// Timed out or similar: may or may not have been applied.
    Unknown(Box<ExecutionError>),
}

/// Reads the `[applied]` column of an LWT result. When not applied the row
/// also carries current values (all columns for `IF NOT EXISTS`, only the
/// condition's columns for `IF col = ?`); they are ignored, the caller
/// re-reads at SERIAL instead, which covers every statement the same way.
fn was_applied(what: &str, res: QueryResult) -> Result<bool> {
    let rows = res
        .into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra {what}: LWT returned no rows: {e}")))?;
    let first = rows
        .column_specs()
        .get_by_index(0)
        .map(|c| c.name().to_owned());
    if first.as_deref() != Some("[applied]") {
        return Err(StoreError::Other(format!(
            "Cassandra {what}: LWT result's first column is {first:?}, not [applied]"
        )));
    }
    let row: Row = rows.first_row().map_err(|e| match e {
        FirstRowError::TypeCheckFailed(t) => schema_mismatch(what, t),
        other => StoreError::Other(format!("Cassandra {what}: LWT result: {other}")),
    })?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(StoreError::Other(format!(
            "Cassandra {what}: [applied] is {other:?}, not a boolean"
        ))),
    }
}

fn into_rows(what: &str, res: QueryResult) -> Result<QueryRowsResult> {
    res.into_rows_result()
        .map_err(|e| StoreError::Other(format!("Cassandra {what}: expected rows: {e}")))
}

fn maybe_one<R, T>(what: &str, res: QueryResult, conv: fn(R) -> Result<T>) -> Result<Option<T>>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = into_rows(what, res)?;
    match rows.maybe_first_row::<R>() {
        Ok(Some(r)) => conv(r).map(Some),
        Ok(None) => Ok(None),
        Err(MaybeFirstRowError::TypeCheckFailed(t)) => Err(schema_mismatch(what, t)),
        Err(MaybeFirstRowError::DeserializationFailed(d)) => Err(StoreError::Corrupt(format!(
            "Cassandra {what}: cannot decode a row: {d}"
        ))),
    }
}

fn all_rows<R, T>(what: &str, res: QueryResult, conv: fn(R) -> Result<T>) -> Result<Vec<T>>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = into_rows(what, res)?;
    let iter = rows.rows::<R>().map_err(|e| schema_mismatch(what, e))?;
    iter.map(|r| {
        let r = r.map_err(|d| {
            StoreError::Corrupt(format!("Cassandra {what}: cannot decode a row: {d}"))
        })?;
        conv(r)
    })
    .collect()
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
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
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

    async fn lock(&self, order_id: i64) -> MutexGuard<'_, ()> {
        let i = ((order_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % STRIPES;
        self.inner.stripes[i].lock().await
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
        self.inner.session.execute_unpaged(st, values).await
    }

    async fn lwt(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Lwt> {
        match self.exec(st, values).await {
            Ok(res) => Ok(if was_applied(what, res)? {
                Lwt::Applied
            } else {
                Lwt::NotApplied
            }),
            Err(e) if outcome_unknown(&e) => Ok(Lwt::Unknown(Box::new(e))),
            Err(e) => Err(request_error(what, e)),
        }
    }

    /// One conditional write on `order_id`'s partition: the LWT, then on
    /// rejection the current value (SERIAL read), or on an unknown outcome
    /// the decision of [`decide_after_unknown_outcome`].
    #[allow(clippy::too_many_arguments)]
    async fn conditional<T, F, Fut>(
        &self,
        what: &'static str,
        order_id: i64,
        st: &PreparedStatement,
        values: impl SerializeRow,
        goal: Goal,
        read: F,
        stamp: fn(&T) -> Option<Stamp>,
    ) -> Result<Cas<T>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let _guard = self.lock(order_id).await;
        match self.lwt(what, st, values).await? {
            Lwt::Applied => Ok(Cas::Applied),
            Lwt::NotApplied => {
                tracing::debug!(what, order_id, "conditional write not applied");
                Ok(Cas::Rejected(read().await?))
            }
            Lwt::Unknown(err) => {
                tracing::warn!(what, order_id, error = %err, "conditional write outcome unknown; deciding by a SERIAL read");
                let mut backoff = RESOLVE_FIRST_BACKOFF;
                let mut attempt = 1;
                loop {
                    match read().await {
                        Ok(current) => {
                            let cas = decide_after_unknown_outcome(&goal, current, stamp);
                            tracing::info!(
                                what,
                                order_id,
                                applied = cas.applied(),
                                "unknown outcome decided"
                            );
                            return Ok(cas);
                        }
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

    /// Runs `f` on every item, `max_in_flight` at a time; stops at the
    /// first error.
    async fn run_all<'a, T, F, Fut>(&self, items: &'a [T], f: F) -> Result<()>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut pending = FuturesUnordered::new();
        for item in items {
            if pending.len() >= self.inner.cfg.max_in_flight
                && let Some(r) = pending.next().await
            {
                r?;
            }
            pending.push(f(item));
        }
        while let Some(r) = pending.next().await {
            r?;
        }
        Ok(())
    }

    async fn put_fact_row(&self, row: &FactRow) -> Result<()> {
        let st = self.st();
        let order_id = row.order_id();
        let order = OrderCols::new(&row.order, true);
        let res = match &row.payment {
            None => {
                self.exec(&st.put_fact_order, InsertOrder { order_id, order })
                    .await
            }
            Some(p) => {
                let payment = PaymentCols::new(p, true);
                let values = InsertFull {
                    order_id,
                    order,
                    payment,
                };
                self.exec(&st.put_fact_full, values).await
            }
        };
        res.map(drop).map_err(|e| request_error("put_final", e))
    }

    async fn put_audit_row(&self, entry: &Entry) -> Result<()> {
        self.exec(&self.st().put_audit, AuditCols::new(entry, true))
            .await
            .map(drop)
            .map_err(|e| request_error("put_final", e))
    }

    async fn put_parked_row(&self, parked: &Parked) -> Result<()> {
        self.exec(&self.st().put_parked, ParkedCols::new(parked, true))
            .await
            .map(drop)
            .map_err(|e| request_error("put_final", e))
    }
}

/// Fails with a helpful error if the keyspace or one of the tables is
/// missing.
async fn check_schema(session: &Session, keyspace: &str) -> Result<(), CassandraError> {
    let request = |source| CassandraError::Request {
        what: "checking the schema".into(),
        source: Box::new(source),
    };
    let res = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(request)?;
    let tables: Vec<String> = res
        .into_rows_result()
        .ok()
        .and_then(|r| {
            r.rows::<(String,)>()
                .ok()
                .map(|it| it.filter_map(|r| r.ok()).map(|r| r.0).collect())
        })
        .unwrap_or_default();
    let missing: Vec<String> = [FACTS, AUDIT, PARKED]
        .iter()
        .filter(|t| !tables.iter().any(|x| x == *t))
        .map(|t| t.to_string())
        .collect();
    if missing.len() == 3 {
        let res = session
            .query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .map_err(request)?;
        let exists = res.into_rows_result().is_ok_and(|r| r.rows_num() > 0);
        if !exists {
            return Err(CassandraError::KeyspaceMissing(keyspace.to_owned()));
        }
    }
    if !missing.is_empty() {
        return Err(CassandraError::TablesMissing {
            keyspace: keyspace.to_owned(),
            tables: missing,
        });
    }
    Ok(())
}

impl FactStore for CassandraStore {
    async fn read_fact(&self, order_id: i64) -> Result<Option<FactRow>> {
        let res = self
            .exec(&self.st().read_fact, OrderIdKey { order_id })
            .await
            .map_err(|e| request_error("read_fact", e))?;
        maybe_one("read_fact", res, FactRowCols::into_fact)
    }

    async fn insert_fact(&self, order: &OrderVersion) -> Result<Cas<FactRow>> {
        let order_id = order.content.order_id;
        let values = InsertOrder {
            order_id,
            order: OrderCols::new(order, true),
        };
        let goal = Goal::Holds(Stamp::new(&order.provenance.message_id, order.fingerprint));
        self.conditional(
            "insert_fact",
            order_id,
            &self.st().insert_fact,
            values,
            goal,
            || self.read_fact(order_id),
            order_stamp,
        )
        .await
    }

    async fn replace_order(
        &self,
        expected: &Provenance,
        order: &OrderVersion,
    ) -> Result<Cas<FactRow>> {
        let order_id = order.content.order_id;
        let values = ReplaceOrder {
            order_id,
            order: OrderCols::new(order, false),
            expected: Expected::new(expected),
        };
        let goal = Goal::Holds(Stamp::new(&order.provenance.message_id, order.fingerprint));
        self.conditional(
            "replace_order",
            order_id,
            &self.st().replace_order,
            values,
            goal,
            || self.read_fact(order_id),
            order_stamp,
        )
        .await
    }

    async fn replace_payment(
        &self,
        expected: Option<&Provenance>,
        payment: &PaymentVersion,
    ) -> Result<Cas<FactRow>> {
        let order_id = payment.content.order_id;
        let goal = Goal::Holds(Stamp::new(
            &payment.provenance.message_id,
            payment.fingerprint,
        ));
        let read = || self.read_fact(order_id);
        match expected {
            None => {
                // No payment yet: its columns are all empty, nothing to clear.
                let values = SetFirstPayment {
                    order_id,
                    payment: PaymentCols::new(payment, true),
                };
                let st = &self.st().set_first_payment;
                self.conditional(
                    "replace_payment",
                    order_id,
                    st,
                    values,
                    goal,
                    read,
                    payment_stamp,
                )
                .await
            }
            Some(expected) => {
                let values = ReplacePayment {
                    order_id,
                    payment: PaymentCols::new(payment, false),
                    expected: Expected::new(expected),
                };
                let st = &self.st().replace_payment;
                self.conditional(
                    "replace_payment",
                    order_id,
                    st,
                    values,
                    goal,
                    read,
                    payment_stamp,
                )
                .await
            }
        }
    }

    async fn read_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fingerprint: Fingerprint,
    ) -> Result<Option<Entry>> {
        let res = self
            .exec(
                &self.st().read_audit,
                AuditKey::new(order_id, kind, fingerprint),
            )
            .await
            .map_err(|e| request_error("read_audit", e))?;
        maybe_one("read_audit", res, AuditRowCols::into_entry)
    }

    async fn insert_audit(&self, entry: &Entry) -> Result<Cas<Entry>> {
        let (order_id, kind, fp) = (entry.order_id(), entry.kind(), entry.fingerprint());
        self.conditional(
            "insert_audit",
            order_id,
            &self.st().insert_audit,
            AuditCols::new(entry, true),
            Goal::Holds(Stamp::new(&entry.provenance().message_id, fp)),
            || self.read_audit(order_id, kind, fp),
            entry_stamp,
        )
        .await
    }

    async fn replace_audit(&self, expected: &Provenance, entry: &Entry) -> Result<Cas<Entry>> {
        let (order_id, kind, fp) = (entry.order_id(), entry.kind(), entry.fingerprint());
        let values = ReplaceAudit {
            cols: AuditCols::new(entry, false),
            expected: Expected::new(expected),
        };
        self.conditional(
            "replace_audit",
            order_id,
            &self.st().replace_audit,
            values,
            Goal::Holds(Stamp::new(&entry.provenance().message_id, fp)),
            || self.read_audit(order_id, kind, fp),
            entry_stamp,
        )
        .await
    }

    async fn delete_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fingerprint: Fingerprint,
        expected: &Provenance,
    ) -> Result<Cas<Entry>> {
        let values = DeleteAudit {
            key: AuditKey::new(order_id, kind, fingerprint),
            expected: Expected::new(expected),
        };
        self.conditional(
            "delete_audit",
            order_id,
            &self.st().delete_audit,
            values,
            Goal::Absent,
            || self.read_audit(order_id, kind, fingerprint),
            entry_stamp,
        )
        .await
    }

    async fn parked_for(&self, order_id: i64) -> Result<Vec<Parked>> {
        let res = self
            .exec(&self.st().parked_for, OrderIdKey { order_id })
            .await
            .map_err(|e| request_error("parked_for", e))?;
        let mut parked = all_rows("parked_for", res, ParkedRowCols::into_parked)?;
        parked.sort_by_key(|p| fp_order(p.payment.fingerprint));
        Ok(parked)
    }

    async fn insert_parked(&self, parked: &Parked) -> Result<Cas<Parked>> {
        let (order_id, fp) = (parked.order_id(), parked.payment.fingerprint);
        self.conditional(
            "insert_parked",
            order_id,
            &self.st().insert_parked,
            ParkedCols::new(parked, true),
            Goal::Holds(Stamp::new(&parked.payment.provenance.message_id, fp)),
            || self.parked_one(order_id, fp),
            parked_stamp,
        )
        .await
    }

    async fn replace_parked(&self, expected: &Provenance, parked: &Parked) -> Result<Cas<Parked>> {
        let (order_id, fp) = (parked.order_id(), parked.payment.fingerprint);
        let values = ReplaceParked {
            cols: ParkedCols::new(parked, false),
            expected: Expected::new(expected),
        };
        self.conditional(
            "replace_parked",
            order_id,
            &self.st().replace_parked,
            values,
            Goal::Holds(Stamp::new(&parked.payment.provenance.message_id, fp)),
            || self.parked_one(order_id, fp),
            parked_stamp,
        )
        .await
    }

    /// An LWT (`IF EXISTS`) so that it cannot resurrect a deleted row; its
    /// result and an unknown outcome are ignored (the counter is advisory).
    async fn touch_parked(
        &self,
        order_id: i64,
        fingerprint: Fingerprint,
        attempts: i32,
    ) -> Result<()> {
        let _guard = self.lock(order_id).await;
        let values = TouchParked {
            order_id,
            fingerprint: fingerprint.0,
            attempts,
        };
        match self
            .lwt("touch_parked", &self.st().touch_parked, values)
            .await?
        {
            Lwt::Applied | Lwt::NotApplied => Ok(()),
            Lwt::Unknown(e) => {
                tracing::debug!(order_id, error = %e, "touch_parked outcome unknown; ignored");
                Ok(())
            }
        }
    }

    /// A plain delete: once the order exists nothing re-parks this payment,
    /// so no condition is needed.
    async fn delete_parked(&self, order_id: i64, fingerprint: Fingerprint) -> Result<()> {
        let key = ParkedKey {
            order_id,
            fingerprint: fingerprint.0,
        };
        self.exec(&self.st().delete_parked, key)
            .await
            .map_err(|e| request_error("delete_parked", e))?;
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
            .scan("counts", &st.count_facts, |(_, p): (i64, Option<i64>)| {
                Ok(p.is_some())
            })
            .await?;
        let audit = self
            .scan("counts", &st.count_audit, |_: (i64,)| Ok(()))
            .await?
            .len();
        let parked = self
            .scan("counts", &st.count_parked, |_: (i64,)| Ok(()))
            .await?
            .len();
        Ok(StoreCounts {
            facts: facts.len() as u64,
            payments_joined: facts.iter().filter(|p| **p).count() as u64,
            audit: audit as u64,
            parked: parked as u64,
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
        for st in &self.st().truncate {
            self.exec(st, ())
                .await
                .map_err(|e| request_error("truncate", e))?;
        }
        Ok(())
    }

    /// Plain INSERTs, `max_in_flight` at a time. A fact row without payment
    /// is inserted without its payment columns (no tombstones).
    async fn put_final(&self, facts: &[FactRow], audit: &[Entry], parked: &[Parked]) -> Result<()> {
        self.run_all(facts, |row| self.put_fact_row(row)).await?;
        self.run_all(audit, |e| self.put_audit_row(e)).await?;
        self.run_all(parked, |p| self.put_parked_row(p)).await
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

impl CassandraStore {
    /// The parked payment under one key, read at SERIAL.
    async fn parked_one(&self, order_id: i64, fp: Fingerprint) -> Result<Option<Parked>> {
        Ok(self
            .parked_for(order_id)
            .await?
            .into_iter()
            .find(|p| p.payment.fingerprint == fp))
    }
}
