//! Pull → log → ack against the Pub/Sub server, beside pull → ack with the
//! same server, subscriber settings and backlog, and no log.
//!
//! Each side gets a fresh project on the emulator (its own topics and
//! subscriptions) holding the same published backlog, and is timed from
//! the first pull until every message was acknowledged. With the local
//! pstest server both sides are bounded by the server (a streaming pull
//! stream of pstest delivers a few thousand messages/s, and its work grows
//! with the backlog); the ratio says what the log costs on top.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ecom_ingest::{IngestCounters, IngestOptions, run_ingest};
use ecom_log::{Log, LogOptions};
use ecom_pubsub::{ProduceKind, ProduceSpec, PubSubConfig, SourceCounters};
use tokio_util::sync::CancellationToken;

use crate::{BenchError, BenchOptions, Row};

/// A stage that has not acknowledged anything new for this long failed.
const STALL: Duration = Duration::from_secs(60);

pub(crate) async fn run(
    opts: &BenchOptions,
    base: &PubSubConfig,
    say: &mut impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let spec = ProduceSpec {
        kind: ProduceKind::Both,
        count: (opts.messages / 2).max(1),
        seed: 11,
        ..ProduceSpec::default()
    };
    say(&format!(
        "publishing {} messages to a fresh project (ceiling)",
        spec.count * 2
    ));
    let cfg = fresh_project(base, "ceiling");
    let published = backlog(&cfg, &spec).await?;
    say("pull → ack");
    let t = Instant::now();
    let pulled = tokio::time::timeout(
        STALL * 5,
        ecom_pubsub::pull_and_ack(&cfg, published, CancellationToken::new()),
    )
    .await
    .map_err(|_| BenchError::Failed("pull → ack did not finish in 5 minutes".into()))??;
    let ceiling = pulled.acked as f64 / t.elapsed().as_secs_f64();

    say(&format!(
        "publishing {published} messages to a fresh project (ours)"
    ));
    let cfg = fresh_project(base, "ours");
    backlog(&cfg, &spec).await?;
    say("pull → log → ack");
    let ours = pull_log_ack(opts, &cfg, published).await?;
    Ok(vec![Row::against_ceiling(
        "ingest",
        "pull → log → ack",
        ours,
        ceiling,
        "messages/s",
        Some(0.9),
        format!(
            "{published} messages backlogged; server: {}; 2 streaming pulls, max {} outstanding; \
             ceiling: pull → ack, no log",
            cfg.describe_endpoint(),
            cfg.max_outstanding_messages
        ),
    )])
}

/// A copy of `base` on a project nobody else uses, so each side starts from
/// its own empty subscriptions.
pub(crate) fn fresh_project(base: &PubSubConfig, what: &str) -> PubSubConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut cfg = base.clone();
    cfg.project = format!("ecom-bench-{what}-{}-{nanos}", std::process::id());
    cfg
}

/// Creates the topics and subscriptions, then publishes `spec`; returns how
/// many messages were published (all of them, or an error).
async fn backlog(cfg: &PubSubConfig, spec: &ProduceSpec) -> Result<u64, BenchError> {
    ecom_pubsub::setup(cfg).await?;
    let report = ecom_pubsub::produce(cfg, spec).await?;
    if report.failed > 0 {
        return Err(BenchError::Failed(format!(
            "{} of {} publishes failed; the server is overloaded or down",
            report.failed,
            report.failed + report.published
        )));
    }
    Ok(report.published)
}

/// The real source and ingest into a fresh log, timed until `expected`
/// messages were acknowledged.
async fn pull_log_ack(
    opts: &BenchOptions,
    cfg: &PubSubConfig,
    expected: u64,
) -> Result<f64, BenchError> {
    let dir = tempfile::tempdir_in(&opts.work_dir)
        .map_err(BenchError::io("temporary log directory", &opts.work_dir))?;
    let log = Log::open(dir.path(), LogOptions::default())?;
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel(8192);
    let counters = Arc::new(IngestCounters::default());
    let source_counters = Arc::new(SourceCounters::default());
    let t = Instant::now();
    let ingest = tokio::spawn(run_ingest(
        rx,
        log.clone(),
        IngestOptions::default(),
        counters,
        cancel.clone(),
    ));
    let source = {
        let (cfg, c, sc) = (cfg.clone(), cancel.clone(), source_counters.clone());
        tokio::spawn(async move { ecom_pubsub::run_source(&cfg, tx, sc, c).await })
    };
    let (mut last, mut last_change) = (0, Instant::now());
    let result = loop {
        let acked = source_counters.acked.load(Ordering::Relaxed);
        if acked >= expected {
            break Ok(acked as f64 / t.elapsed().as_secs_f64());
        }
        if acked != last {
            (last, last_change) = (acked, Instant::now());
        } else if last_change.elapsed() > STALL {
            break Err(BenchError::Failed(format!(
                "pull → log → ack stalled at {acked} of {expected} acknowledged"
            )));
        }
        if source.is_finished() || ingest.is_finished() {
            break Err(BenchError::Failed(format!(
                "the source or ingest stopped at {acked} of {expected} acknowledged"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cancel.cancel();
    let source = source
        .await
        .map_err(|e| BenchError::Failed(format!("source task: {e}")))?;
    let ingest = ingest
        .await
        .map_err(|e| BenchError::Failed(format!("ingest task: {e}")))?;
    let per_s = result?;
    source?;
    ingest.map_err(|e| BenchError::Failed(format!("ingest: {e}")))?;
    let appended = log.next_seq() + log.stats().rejected;
    if appended != expected {
        return Err(BenchError::Failed(format!(
            "pull → log → ack: {appended} messages in the log after {expected} distinct ones were published"
        )));
    }
    Ok(per_s)
}
