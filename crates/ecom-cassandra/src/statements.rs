//! Every CQL statement the store runs, in one place, and how each runs.
//!
//! Text is built once from the column lists in `rows` and the
//! validated keyspace name; values are always bound (named markers), never
//! formatted in.
//!
//! | statement | CQL | mode |
//! |---|---|---|
//! | `read_state` | `SELECT revision, state … WHERE order_id = ?` | consistency (a plain read: the LWT validates what it feeds) |
//! | `read_state_serial` | the same | serial consistency (only after an LWT with an unknown outcome) |
//! | `insert_state` | `INSERT … IF NOT EXISTS` | LWT |
//! | `update_state` | `UPDATE … SET revision = ?, state = ? IF revision = ?` | LWT |
//! | `put_state` | `INSERT … USING TIMESTAMP 0` (replay) | write |
//! | `put_fact_order`, `put_fact_full` | `INSERT … USING TIMESTAMP ?` | write |
//! | `put_audit`, `put_parked` | `INSERT … USING TIMESTAMP ?` | write |
//! | `delete_audit`, `delete_parked` | `DELETE … USING TIMESTAMP ? WHERE <key>` | write |
//! | `parked_attempts` | `UPDATE … USING TIMESTAMP ? SET attempts = ?` | write |
//! | `fact_exists` | `SELECT order_id FROM orders_payments_facts WHERE order_id = ?` | consistency (`bench`: when a row became readable) |
//! | scans, counts, `any` | paged `SELECT` | consistency |
//! | `truncate` | `TRUNCATE` × 4 | long timeout |

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::statement::prepared::PreparedStatement;

use crate::config::serial_read_consistency;
use crate::rows::*;
use crate::{CassandraConfig, CassandraError};

/// `TRUNCATE` waits for every replica to flush and snapshot.
const TRUNCATE_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) struct Statements {
    pub read_state: PreparedStatement,
    pub read_state_serial: PreparedStatement,
    pub insert_state: PreparedStatement,
    pub update_state: PreparedStatement,
    pub put_state: PreparedStatement,
    pub put_fact_order: PreparedStatement,
    pub put_fact_full: PreparedStatement,
    pub put_audit: PreparedStatement,
    pub delete_audit: PreparedStatement,
    pub put_parked: PreparedStatement,
    pub delete_parked: PreparedStatement,
    pub parked_attempts: PreparedStatement,
    pub fact_exists: PreparedStatement,
    pub scan_facts: PreparedStatement,
    pub scan_audit: PreparedStatement,
    pub scan_parked: PreparedStatement,
    pub count_facts: PreparedStatement,
    pub count_audit: PreparedStatement,
    pub count_parked: PreparedStatement,
    pub any: [PreparedStatement; 4],
    pub truncate: [PreparedStatement; 4],
}

/// How a statement runs.
#[derive(Clone, Copy)]
enum Mode {
    /// A lightweight transaction: commit at `consistency`, Paxos at
    /// `serial_consistency`; not idempotent, never retried by the driver.
    Lwt,
    /// A read at the serial consistency: finishes any in-progress Paxos
    /// round on the key first.
    SerialRead,
    /// Reads and scans at `consistency`; idempotent.
    Read,
    /// Plain writes at `consistency`; idempotent (explicit timestamps).
    Write,
    /// `TRUNCATE`: long timeout.
    Truncate,
}

fn placeholders(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!(":{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Statements {
    pub(crate) async fn prepare(
        session: &Session,
        cfg: &CassandraConfig,
    ) -> Result<Self, CassandraError> {
        let ks = &cfg.keyspace;
        let state = format!("{ks}.{STATE}");
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

        let p =
            |what: &'static str, mode: Mode, text: String| prepare(session, cfg, what, mode, text);
        let tables = [&state, &facts, &audit, &parked];
        Ok(Statements {
            read_state: p(
                "read_state",
                Mode::Read,
                format!("SELECT revision, state FROM {state} WHERE order_id = :order_id"),
            )
            .await?,
            read_state_serial: p(
                "read_state_serial",
                Mode::SerialRead,
                format!("SELECT revision, state FROM {state} WHERE order_id = :order_id"),
            )
            .await?,
            insert_state: p(
                "insert_state",
                Mode::Lwt,
                format!(
                    "INSERT INTO {state} (order_id, revision, state) \
                     VALUES (:order_id, :revision, :state) IF NOT EXISTS"
                ),
            )
            .await?,
            update_state: p(
                "update_state",
                Mode::Lwt,
                format!(
                    "UPDATE {state} SET revision = :revision, state = :state \
                     WHERE order_id = :order_id IF revision = :expected_revision"
                ),
            )
            .await?,
            // Timestamp 0: below every Paxos ballot, so any later LWT on the
            // row supersedes what replay wrote (see ARCHITECTURE.md).
            put_state: p(
                "put_state",
                Mode::Write,
                format!(
                    "INSERT INTO {state} (order_id, revision, state) \
                     VALUES (:order_id, :revision, :state) USING TIMESTAMP 0"
                ),
            )
            .await?,
            put_fact_order: p(
                "put_fact",
                Mode::Write,
                format!(
                    "INSERT INTO {facts} ({}) VALUES ({}) USING TIMESTAMP :ts",
                    order_cols.join(", "),
                    placeholders(&order_cols)
                ),
            )
            .await?,
            put_fact_full: p(
                "put_fact",
                Mode::Write,
                format!(
                    "INSERT INTO {facts} ({fact_select}) VALUES ({}) USING TIMESTAMP :ts",
                    placeholders(&full_cols)
                ),
            )
            .await?,
            put_audit: p(
                "put_audit",
                Mode::Write,
                format!(
                    "INSERT INTO {audit} ({audit_cols}) VALUES ({}) USING TIMESTAMP :ts",
                    placeholders(AUDIT_COLUMNS)
                ),
            )
            .await?,
            delete_audit: p(
                "delete_audit",
                Mode::Write,
                format!("DELETE FROM {audit} USING TIMESTAMP :ts WHERE {audit_key}"),
            )
            .await?,
            put_parked: p(
                "put_parked",
                Mode::Write,
                format!(
                    "INSERT INTO {parked} ({parked_cols}) VALUES ({}) USING TIMESTAMP :ts",
                    placeholders(PARKED_COLUMNS)
                ),
            )
            .await?,
            delete_parked: p(
                "delete_parked",
                Mode::Write,
                format!("DELETE FROM {parked} USING TIMESTAMP :ts WHERE {parked_key}"),
            )
            .await?,
            parked_attempts: p(
                "parked_attempts",
                Mode::Write,
                format!(
                    "UPDATE {parked} USING TIMESTAMP :ts SET attempts = :attempts WHERE {parked_key}"
                ),
            )
            .await?,
            fact_exists: p(
                "fact_exists",
                Mode::Read,
                format!("SELECT order_id FROM {facts} WHERE order_id = :order_id"),
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
                "count_facts",
                Mode::Read,
                format!("SELECT order_id, payment_message_id FROM {facts}"),
            )
            .await?,
            count_audit: p(
                "count_audit",
                Mode::Read,
                format!("SELECT order_id FROM {audit}"),
            )
            .await?,
            count_parked: p(
                "count_parked",
                Mode::Read,
                format!("SELECT order_id, parked_at FROM {parked}"),
            )
            .await?,
            any: each_table(&tables, |t| {
                p("is_empty", Mode::Read, format!("SELECT order_id FROM {t} LIMIT 1"))
            })
            .await?,
            truncate: each_table(&tables, |t| {
                p("truncate", Mode::Truncate, format!("TRUNCATE {t}"))
            })
            .await?,
        })
    }
}

/// One statement per table, prepared in order.
async fn each_table<'a, F, Fut>(
    tables: &[&'a String; 4],
    mut f: F,
) -> Result<[PreparedStatement; 4], CassandraError>
where
    F: FnMut(&'a String) -> Fut,
    Fut: std::future::Future<Output = Result<PreparedStatement, CassandraError>>,
{
    let mut out = Vec::with_capacity(4);
    for t in tables {
        out.push(f(t).await?);
    }
    Ok(out
        .try_into()
        .unwrap_or_else(|_| unreachable!("four tables, four statements")))
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
            // An LWT that failed in an unknown way is settled by a SERIAL
            // read and a re-plan, never retried by the driver.
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
