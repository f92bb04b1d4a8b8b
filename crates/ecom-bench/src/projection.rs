//! Live projection and replay into Cassandra, each beside bare loops on the
//! same session settings and concurrency:
//!
//! - **single LWTs**: one `INSERT … IF NOT EXISTS` per log entry on distinct
//!   keys (what a pipeline spending exactly one uncontended Paxos round per
//!   event would do); the target of live projection is ≥ 1.0× this;
//! - **plain writes**: one prepared plain write of one fact row per entry,
//!   keyed like the entry (the write ceiling: no dedup, no join, no conflict
//!   rule, what an at-least-once sink does); replay's target is ≥ 1.0× this.
//!
//! Ours is timed from a filled log to caught up (projection) or to the last
//! row written (replay), then checked with `verify`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use ecom_cassandra::{CassandraConfig, CassandraStore, SCHEMA_CQL, apply_schema, drop_keyspace};
use ecom_core::{FactRow, OrderState, ViewWrite, view_ts};
use ecom_log::Log;
use ecom_projector::{Applier, Projector, ProjectorOptions};
use ecom_store::FactStore;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::data::{Workload, fill_log, rows_per_message};
use crate::{BenchError, BenchOptions, Row};

pub(crate) async fn run(
    opts: &BenchOptions,
    base: &CassandraConfig,
    replay: bool,
    say: &mut impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for w in Workload::ALL {
        let messages = w.messages(opts.messages);
        let dir = tempfile::tempdir_in(&opts.work_dir)
            .map_err(BenchError::io("temporary log directory", &opts.work_dir))?;
        let log = fill_log(dir.path(), &messages).await?;
        let entries = log.next_seq();
        let facts = rows_per_message(&messages);
        let note = |ceiling: &str| {
            format!(
                "{entries} log entries; {} in flight; Cassandra {}; ceiling: {ceiling}",
                opts.concurrency,
                base.contact_points.join(",")
            )
        };
        if replay {
            say(&format!("{}: replay of {entries} entries", w.name()));
            let ours = replay_per_s(opts, base, &log, entries).await?;
            say(&format!(
                "{}: plain writes of {} rows",
                w.name(),
                facts.len()
            ));
            let plain = plain_writes_per_s(opts, base, &facts).await?;
            rows.push(Row::against_ceiling(
                "replay",
                w.name(),
                ours,
                plain,
                "events/s",
                Some(1.0),
                note("plain prepared writes, one fact row per entry"),
            ));
        } else {
            say(&format!(
                "{}: live projection of {entries} entries",
                w.name()
            ));
            let ours = project_per_s(opts, base, &log, entries).await?;
            say(&format!("{}: {} single LWTs", w.name(), facts.len()));
            let lwt = lwts_per_s(opts, base, &facts).await?;
            say(&format!(
                "{}: plain writes of {} rows",
                w.name(),
                facts.len()
            ));
            let plain = plain_writes_per_s(opts, base, &facts).await?;
            rows.push(Row::against_ceiling(
                "projection",
                w.name(),
                ours,
                lwt,
                "events/s",
                Some(1.0),
                note("single-LWT inserts on distinct keys"),
            ));
            rows.push(Row::against_ceiling(
                "projection",
                &format!("{} vs write ceiling", w.name()),
                ours,
                plain,
                "events/s",
                None,
                note("plain prepared writes, one fact row per entry"),
            ));
        }
    }
    Ok(rows)
}

/// A store on a keyspace of its own, created from `schema.cql`.
pub(crate) struct Scratch {
    pub store: Arc<CassandraStore>,
    cfg: CassandraConfig,
}

impl Scratch {
    pub(crate) async fn new(
        base: &CassandraConfig,
        max_in_flight: usize,
    ) -> Result<Scratch, BenchError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut cfg = base.clone();
        cfg.keyspace = format!(
            "ecom_bench_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        cfg.max_in_flight = max_in_flight;
        apply_schema(&cfg, SCHEMA_CQL).await?;
        let store = Arc::new(CassandraStore::connect(cfg.clone()).await?);
        Ok(Scratch { store, cfg })
    }

    /// A second session on the same keyspace with its own in-flight bound:
    /// what an outside reader of the table uses, so its requests never take
    /// the pipeline's slots.
    pub(crate) async fn reader(&self, max_in_flight: usize) -> Result<CassandraStore, BenchError> {
        let mut cfg = self.cfg.clone();
        cfg.max_in_flight = max_in_flight;
        Ok(CassandraStore::connect(cfg).await?)
    }

    /// Drops the keyspace; a failure only warns (it is scratch).
    pub(crate) async fn drop(self) {
        drop(self.store);
        if let Err(e) = drop_keyspace(&self.cfg).await {
            tracing::warn!(keyspace = %self.cfg.keyspace, error = %e, "could not drop a bench keyspace");
        }
    }
}

async fn check(log: &Log, store: &CassandraStore, what: &str) -> Result<(), BenchError> {
    let report = ecom_projector::verify(
        std::slice::from_ref(log),
        store,
        &ecom_core::progress::ignore,
    )
    .await?;
    if !report.clean() {
        return Err(BenchError::Failed(format!(
            "{what}: the store does not match the log ({report:?}); no figure is reported for a wrong result"
        )));
    }
    Ok(())
}

async fn project_per_s(
    opts: &BenchOptions,
    base: &CassandraConfig,
    log: &Log,
    entries: u64,
) -> Result<f64, BenchError> {
    let s = Scratch::new(base, opts.concurrency).await?;
    let projector = Projector::new(
        log.clone(),
        Applier::new(s.store.clone()),
        ProjectorOptions {
            concurrency: opts.concurrency,
            ..ProjectorOptions::default()
        },
    );
    let t = Instant::now();
    projector.catch_up(&CancellationToken::new()).await?;
    let per_s = entries as f64 / t.elapsed().as_secs_f64();
    let checked = check(log, &s.store, "live projection").await;
    s.drop().await;
    checked.map(|()| per_s)
}

async fn replay_per_s(
    opts: &BenchOptions,
    base: &CassandraConfig,
    log: &Log,
    entries: u64,
) -> Result<f64, BenchError> {
    let s = Scratch::new(base, opts.concurrency).await?;
    let t = Instant::now();
    let r = ecom_projector::replay(
        std::slice::from_ref(log),
        s.store.as_ref(),
        false,
        &ecom_core::progress::ignore,
    )
    .await;
    let per_s = entries as f64 / t.elapsed().as_secs_f64();
    let checked = match r {
        Ok(_) => check(log, &s.store, "replay").await,
        Err(e) => Err(e.into()),
    };
    s.drop().await;
    checked.map(|()| per_s)
}

/// One single-LWT insert per row, each on a key of its own (a state holding
/// that row's order), offered far beyond the store's in-flight bound (which
/// is what limits them).
async fn lwts_per_s(
    opts: &BenchOptions,
    base: &CassandraConfig,
    facts: &[FactRow],
) -> Result<f64, BenchError> {
    let s = Scratch::new(base, opts.concurrency).await?;
    let states: Vec<OrderState> = facts
        .iter()
        .map(|f| OrderState {
            order: Some(f.order.clone()),
            ..OrderState::default()
        })
        .collect();
    let n = states.len();
    let store = s.store.clone();
    let t = Instant::now();
    let mut results = futures::stream::iter(states.iter().enumerate())
        .map(|(id, state)| {
            let store = &store;
            async move { store.insert_state(id as i64, state).await }
        })
        .buffer_unordered(opts.concurrency * 4);
    let mut failed = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    }
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    drop(results);
    s.drop().await;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(per_s),
    }
}

/// Plain prepared writes of `facts` (the store's own view writes, bounded
/// by its in-flight limit).
async fn plain_writes_per_s(
    opts: &BenchOptions,
    base: &CassandraConfig,
    facts: &[FactRow],
) -> Result<f64, BenchError> {
    let s = Scratch::new(base, opts.concurrency).await?;
    let writes: Vec<ViewWrite> = facts
        .iter()
        .map(|row| ViewWrite::Fact {
            row: row.clone(),
            ts: view_ts(1),
        })
        .collect();
    let t = Instant::now();
    let r = s.store.write_views(&writes).await;
    let per_s = facts.len() as f64 / t.elapsed().as_secs_f64();
    s.drop().await;
    r?;
    Ok(per_s)
}
