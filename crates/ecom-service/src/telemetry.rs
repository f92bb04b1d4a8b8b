//! Prometheus metrics and health endpoints of a running pipeline.
//!
//! Why this module exists: an operator watches a fleet through scrapes and
//! probes, not through `status`. While `run` runs, `--metrics-addr` serves
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (it can do its job, or the reason it cannot).
//!
//! One source per figure. The counters `status`, the status file and
//! `demo` show live in the libraries' atomics (`IngestCounters`, the
//! projector's `ApplyStats`, the log's `LogStats`); at every scrape this
//! module reads one [`Live`] snapshot of them and publishes it into the
//! `metrics` registry (`Counter::absolute`), so the two views cannot drift.
//! What only the metrics show (latency histograms, LWT outcomes, Cassandra
//! request latency, rejections by class) the libraries record through the
//! `metrics` facade as it happens. The registry is `metrics-exporter-prometheus`'s; nothing
//! here formats the exposition text.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ecom_core::ApplyStats;
use ecom_ingest::IngestStats;
use ecom_log::LogStats;
use ecom_projector::{ProjectorState, ProjectorStatus};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ServiceError;

/// What a scrape reads: the same figures `status` shows.
#[derive(Debug, Clone)]
pub struct LiveSnapshot {
    pub ingest: IngestStats,
    pub log: LogStats,
    pub projector: ProjectorStatus,
    /// When the oldest entry the projector has not applied was appended
    /// (ms since the epoch); `None` when it is caught up.
    pub oldest_unprojected_ms: Option<i64>,
    /// Bytes the log directory holds on disk.
    pub log_bytes: u64,
    /// The dead-letter table as last read (`None`: not yet).
    pub parked: Option<ecom_store::ParkedSummary>,
    /// Why the pipeline cannot do its job, if it cannot (for `/readyz`).
    pub not_ready: Option<String>,
}

/// Reads a [`LiveSnapshot`]; called at every scrape and probe.
pub type Live = Arc<dyn Fn() -> LiveSnapshot + Send + Sync>;

/// Latency buckets, in seconds: an fsync is ~1 ms, an LWT ~5–50 ms, an
/// outage hits the 10 s request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed by the first call (the
/// `metrics` facade has one recorder per process); later calls return the
/// same handle, so a process (or a test binary) may run several services.
pub fn install() -> Result<PrometheusHandle, ServiceError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| ServiceError::Metrics(format!("latency buckets: {e}")))?
        .install_recorder()
        .map_err(|e| ServiceError::Metrics(format!("installing the Prometheus recorder: {e}")))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    // Series that move only on rare events exist from the first scrape, so
    // that `rate()` and alerts see 0 rather than nothing.
    for class in ["malformed", "impossible_value"] {
        counter!("ecom_messages_rejected_total", "class" => class).increment(0);
    }
    for result in ["applied", "not_applied", "unknown"] {
        counter!("ecom_lwt_total", "result" => result).increment(0);
    }
    Ok(handle)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `cancel`,
/// on a task of `tracker`. Returns the address it bound (port 0 picks a
/// free one).
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    live: Live,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<SocketAddr, ServiceError> {
    let bind = |source| ServiceError::MetricsBind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(Endpoints { handle, live });
    tracker.spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

#[derive(Clone)]
struct Endpoints {
    handle: PrometheusHandle,
    live: Live,
}

async fn metrics_page(State(e): State<Endpoints>) -> impl IntoResponse {
    publish(&(e.live)());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        e.handle.render(),
    )
}

async fn readiness(State(e): State<Endpoints>) -> impl IntoResponse {
    match (e.live)().not_ready {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Why the pipeline cannot do its job now, from what it reports.
pub fn not_ready(projector: &ProjectorState, source: Option<&str>) -> Option<String> {
    let store = match projector {
        ProjectorState::Running => None,
        ProjectorState::Paused { reason, .. } => Some(format!("store unreachable: {reason}")),
        ProjectorState::Stopped => Some("stopping".into()),
    };
    match (store, source) {
        (None, None) => None,
        (Some(s), None) => Some(s),
        (None, Some(src)) => Some(src.to_owned()),
        (Some(s), Some(src)) => Some(format!("{s}; {src}")),
    }
}

/// Copies a snapshot into the registry.
fn publish(s: &LiveSnapshot) {
    let i = &s.ingest;
    counter!("ecom_messages_received_total").absolute(i.delivered);
    counter!("ecom_messages_appended_total").absolute(i.appended);
    counter!("ecom_messages_acked_total").absolute(i.acked);
    counter!("ecom_messages_nacked_total").absolute(i.nacked);
    counter!("ecom_log_append_failures_total").absolute(i.append_failures);
    counter!("ecom_ingest_batches_total").absolute(i.batches);
    counter!("ecom_duplicates_total", "kind" => "transport").absolute(i.duplicates_message_id);
    let a: &ApplyStats = &s.projector.stats;
    counter!("ecom_duplicates_total", "kind" => "business").absolute(a.business_duplicates);
    counter!("ecom_conflicts_total").absolute(a.conflicts);
    for (outcome, n) in [
        ("order_inserted", a.orders_inserted),
        ("order_replaced", a.orders_replaced),
        ("payment_applied", a.payments_applied),
        ("payment_parked", a.payments_parked),
        ("payment_joined_from_dlq", a.payments_joined_from_dlq),
        ("business_duplicate", a.business_duplicates),
        ("conflict", a.conflicts),
        ("same_message", a.same_message),
    ] {
        counter!("ecom_events_applied_total", "outcome" => outcome).absolute(n);
    }
    counter!("ecom_events_undecodable_total").absolute(s.projector.undecodable);

    gauge!("ecom_log_entries").set(s.log.entries as f64);
    gauge!("ecom_log_size_bytes").set(s.log_bytes as f64);
    gauge!("ecom_projector_lag_entries")
        .set(s.log.next_seq.saturating_sub(s.log.checkpoint) as f64);
    let lag_s = s
        .oldest_unprojected_ms
        .map(|t| (ecom_store::now_ms() - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    gauge!("ecom_projector_lag_seconds").set(lag_s);
    let state = match s.projector.state {
        ProjectorState::Running => "running",
        ProjectorState::Paused { .. } => "paused",
        ProjectorState::Stopped => "stopped",
    };
    for name in ["running", "paused", "stopped"] {
        gauge!("ecom_projector_state", "state" => name).set(f64::from(u8::from(name == state)));
    }
    if let Some(parked) = s.parked {
        gauge!("ecom_parked_payments").set(parked.parked as f64);
        let age_s = parked
            .oldest_parked_at_ms
            .map(|at| (ecom_store::now_ms() - at).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        gauge!("ecom_parked_oldest_age_seconds").set(age_s);
    }
    gauge!("ecom_ready").set(f64::from(u8::from(s.not_ready.is_none())));
}

/// Help text for every series (Prometheus shows it; the names say the unit).
fn describe() {
    describe_counter!(
        "ecom_messages_received_total",
        "Messages delivered by the source (redeliveries included)."
    );
    describe_counter!(
        "ecom_messages_appended_total",
        "Messages appended to this instance's durable log."
    );
    describe_counter!(
        "ecom_messages_acked_total",
        "Messages acknowledged to the source (after the fsync covering them)."
    );
    describe_counter!(
        "ecom_messages_nacked_total",
        "Messages handed back to the source (a failed log write)."
    );
    describe_counter!(
        "ecom_messages_rejected_total",
        "Messages quarantined as invalid (`rejected list`), by class (malformed, impossible_value); per instance: a message two instances quarantined counts in both."
    );
    describe_counter!(
        "ecom_log_append_failures_total",
        "Log group commits that failed."
    );
    describe_counter!("ecom_ingest_batches_total", "Batches ingest appended.");
    describe_counter!(
        "ecom_duplicates_total",
        "Duplicates stopped: kind=transport (same message id, not appended), kind=business (same content, no effect)."
    );
    describe_counter!(
        "ecom_conflicts_total",
        "Conflicting versions of an order id resolved (the loser is audited)."
    );
    describe_counter!(
        "ecom_events_applied_total",
        "Log entries the projector applied, by outcome."
    );
    describe_counter!(
        "ecom_events_undecodable_total",
        "Log entries that did not decode (a bug if non-zero)."
    );
    describe_counter!(
        "ecom_lwt_total",
        "Cassandra conditional writes by result: applied, not_applied, unknown (settled by a SERIAL read)."
    );
    describe_gauge!("ecom_log_entries", "Entries in the durable log.");
    describe_gauge!(
        "ecom_log_size_bytes",
        "Bytes the log directory holds on disk."
    );
    describe_gauge!(
        "ecom_projector_lag_entries",
        "Log entries not yet projected."
    );
    describe_gauge!(
        "ecom_projector_lag_seconds",
        "Age of the oldest log entry not yet projected (0 when caught up)."
    );
    describe_gauge!(
        "ecom_projector_state",
        "1 for the projector's current state (running, paused: waiting for the store, stopped)."
    );
    describe_gauge!(
        "ecom_parked_payments",
        "Payments waiting for their order in dlq_payments, store-wide (read every 15 s)."
    );
    describe_gauge!(
        "ecom_parked_oldest_age_seconds",
        "How long the longest-parked payment has waited for its order (0: none parked)."
    );
    describe_gauge!("ecom_ready", "1 when /readyz answers ready.");
    describe_histogram!(
        "ecom_log_append_seconds",
        "Time to make one ingest batch durable (append, group commit, fsync)."
    );
    describe_histogram!(
        "ecom_log_fsync_seconds",
        "Time of one group commit's flush and fdatasync."
    );
    describe_histogram!(
        "ecom_cassandra_request_seconds",
        "Cassandra request latency, by kind (lwt, write, read)."
    );
}

/// Bytes under a directory (the log's size on disk).
pub use ecom_log::dir_bytes;

/// `--metrics-addr`: an address, or `off`.
pub fn parse_metrics_addr(s: &str) -> Result<Option<SocketAddr>, ServiceError> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| ServiceError::MetricsAddr(s.to_owned()))
}
