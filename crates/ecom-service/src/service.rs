//! One instance from start to clean stop: [`run`].
//!
//! # Shape
//!
//! One cancellation tree. The caller's `shutdown` token (the binary ties it
//! to SIGTERM/SIGINT, tests cancel it themselves) is the root; the
//! pipeline's own token is its child, so a fatal error inside (ingest's log
//! stopped, the source failed for good, the projector hit an error retrying
//! cannot fix) stops everything the same way a signal does, without
//! touching the caller's token. Background tasks (the parked gauge, the
//! source probe, the metrics endpoint) run on one [`TaskTracker`], which
//! [`run`] closes and waits for before it returns: nothing of a stopped
//! service outlives it. The notifier has a token of its own, cancelled only
//! after the projector stopped, so that it publishes what the last batch
//! parked.
//!
//! Shutdown order: the source stops pulling; ingest makes its in-flight
//! batch durable and acknowledges it; the projector stops at a checkpoint
//! (possibly with a lag: `run --source none` projects it); the notifier
//! drains; the final status file is written. A second signal exits at once
//! ([`crate::signals`]), which the log makes safe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecom_broker::{Broker, BrokerConfig, run_source};
use ecom_cassandra::{CassandraConfig, LazyCassandraStore};
use ecom_core::workload::{Generator, WorkloadSpec};
use ecom_log::Log;
use ecom_projector::ProjectorOptions;
use ecom_pubsub::PubSubConfig;
use ecom_store::{FactStore, ParkedSummary, SledStore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::instance::Instance;
use crate::retention::{self, RetentionCounters, RetentionPolicy};
use crate::status::{StatusReport, status_from_log, write_status_file};
use crate::{ServiceError, telemetry};

/// Where messages come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The in-process broker, publishing `orders` generated orders (with
    /// payments, duplicates and conflicts) from `seed` at start.
    Embedded { orders: u64, seed: u64 },
    /// Streaming pull on both subscriptions. With `notifications`, parked
    /// payments go to `dlq_payments_data` and conflicts to `duplicate_orders`.
    PubSub {
        config: PubSubConfig,
        notifications: bool,
    },
    /// Nothing new: project what the log holds (retiring an instance).
    None,
}

/// Where facts land.
#[derive(Debug, Clone)]
pub enum StoreSpec {
    /// The embedded sled store in this directory (created if missing).
    Embedded(PathBuf),
    /// Cassandra, connected lazily: Cassandra being down must not stop
    /// ingestion; the projector pauses until it answers.
    Cassandra(CassandraConfig),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Service {
    pub source: Source,
    pub store: StoreSpec,
    pub projector: ProjectorOptions,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (port 0 picks one).
    pub metrics_addr: Option<SocketAddr>,
    /// Stop cleanly once nothing arrived for this long and everything
    /// received is projected.
    pub stop_after_idle: Option<Duration>,
    /// How often the status file is written.
    pub status_every: Duration,
    /// Archive, prune and compact the log to keep it bounded
    /// ([`crate::retention`]); `None`: the log keeps everything.
    pub retention: Option<RetentionPolicy>,
}

/// How a clean stop ended.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    pub delivered: u64,
    pub appended: u64,
    pub events_projected: u64,
    pub elapsed: Duration,
    pub checkpoint: u64,
    /// Entries left unprojected (stopped at a checkpoint before the end).
    pub lag: u64,
    /// Where the endpoint was served, if it was.
    pub metrics_addr: Option<SocketAddr>,
    /// The status file's final content.
    pub status: StatusReport,
}

/// Runs one instance on `log` until `shutdown` is cancelled, the source
/// ends (`--source none`, or the embedded broker with `stop_after_idle`),
/// or a fatal error. `Ok` is a clean stop.
pub async fn run(
    log: Log,
    service: Service,
    shutdown: CancellationToken,
) -> Result<ServiceReport, ServiceError> {
    match service.store.clone() {
        StoreSpec::Embedded(dir) => {
            let store = open_embedded(&dir)?;
            run_with(log, Arc::new(store), service, shutdown).await
        }
        StoreSpec::Cassandra(cfg) => {
            run_with(
                log,
                Arc::new(LazyCassandraStore::new(cfg)),
                service,
                shutdown,
            )
            .await
        }
    }
}

/// Opens (creating it if missing) the embedded store in `dir`; the error
/// says that one process owns it. Every command that uses the embedded
/// store opens it here.
pub fn open_embedded(dir: &std::path::Path) -> Result<SledStore, ServiceError> {
    let open = || {
        std::fs::create_dir_all(dir).map_err(|e| ecom_store::StoreError::Other(e.to_string()))?;
        SledStore::open(dir)
    };
    open().map_err(|source| ServiceError::EmbeddedStore {
        dir: dir.to_path_buf(),
        source,
    })
}

async fn run_with<S: FactStore>(
    log: Log,
    store: Arc<S>,
    service: Service,
    shutdown: CancellationToken,
) -> Result<ServiceReport, ServiceError> {
    let cancel = shutdown.child_token();
    let tracker = TaskTracker::new();
    let notifier_cancel = CancellationToken::new();
    let pubsub = match &service.source {
        Source::PubSub { config, .. } => Some(config.clone()),
        _ => None,
    };
    let (notify_tx, notifier) = match &service.source {
        Source::PubSub {
            config,
            notifications: true,
        } => {
            let (ntx, nrx) = tokio::sync::mpsc::unbounded_channel();
            let pcfg = config.clone();
            let c = notifier_cancel.clone();
            let task = tokio::spawn(async move { ecom_pubsub::run_notifier(&pcfg, nrx, c).await });
            (Some(ntx), Some(task))
        }
        _ => (None, None),
    };
    let log_dir = log.dir().to_path_buf();
    let retention_counters = Arc::new(RetentionCounters::default());
    let hold = service.retention.clone().map(|policy| {
        retention::spawn(
            log.clone(),
            policy,
            retention_counters.clone(),
            cancel.clone(),
            &tracker,
        )
    });
    let max_bytes = service.retention.as_ref().and_then(|p| p.max_bytes);
    let retention_status = {
        let counters = retention_counters.clone();
        let enabled = service.retention.is_some();
        move |log: &Log| enabled.then(|| counters.status(log, max_bytes))
    };
    let (instance, tx) = Instance::start(
        log,
        store.clone(),
        service.projector.clone(),
        notify_tx,
        ecom_ingest::IngestOptions {
            hold,
            ..Default::default()
        },
        &cancel,
    );
    let source_counters = Arc::new(ecom_pubsub::SourceCounters::default());
    let source: tokio::task::JoinHandle<Result<(), ServiceError>> = match &service.source {
        Source::PubSub { config, .. } => {
            let pcfg = config.clone();
            let c = cancel.clone();
            let counters = source_counters.clone();
            tokio::spawn(async move {
                let r = ecom_pubsub::run_source(&pcfg, tx, counters, c.clone()).await;
                if r.is_err() {
                    // A permanent source error stops the whole pipeline cleanly.
                    c.cancel();
                }
                r.map_err(ServiceError::from)
            })
        }
        Source::None => {
            // Holds the sender until cancelled: ingest treats a closed
            // channel as its source gone for good.
            let c = cancel.clone();
            tokio::spawn(async move {
                c.cancelled().await;
                drop(tx);
                Ok(())
            })
        }
        Source::Embedded { orders, seed } => {
            // Published as it is pulled: a backlog of millions costs no
            // memory here, as it would not with a real server.
            let backlog =
                Generator::new(WorkloadSpec::demo(*orders, *seed)).map(|p| (p.topic, p.data));
            let broker = Broker::with_backlog(
                BrokerConfig {
                    seed: *seed,
                    ..Default::default()
                },
                Some(Box::new(backlog)),
            );
            let source = run_source(broker, tx, 500, Duration::from_millis(5), cancel.clone());
            tokio::spawn(async move {
                source.await;
                Ok(())
            })
        }
    };
    tracing::info!(log_dir = %log_dir.display(), "pipeline running; SIGINT/SIGTERM stops it cleanly");

    let started = Instant::now();
    let status_path = log_dir.join("status.json");
    let parked = spawn_parked_gauge(store.clone(), cancel.clone(), &tracker);
    let source_health = spawn_source_probe(pubsub.as_ref(), cancel.clone(), &tracker);
    let metrics_addr = match service.metrics_addr {
        None => None,
        Some(addr) => {
            let handle = telemetry::install()?;
            let live = live_snapshot(&instance, &parked, &source_health);
            Some(telemetry::serve(addr, handle, live, cancel.clone(), &tracker).await?)
        }
    };
    let mut tick = tokio::time::interval(service.status_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        if instance.failed() {
            cancel.cancel();
            break;
        }
        let mut report = live_status(&instance, &parked);
        report.retention = retention_status(&instance.log);
        report.metrics_addr = metrics_addr.map(|a| a.to_string());
        if let Err(e) = write_status_file(&status_path, &report) {
            tracing::warn!(path = %status_path.display(), error = %e, "cannot write the status file");
        }
        if let Some(idle) = service.stop_after_idle {
            let last = instance
                .counters
                .last_delivery_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let since_last = if last == 0 {
                started.elapsed()
            } else {
                Duration::from_millis((ecom_store::now_ms() as u64).saturating_sub(last))
            };
            // Held ingest takes no deliveries: that is not the source
            // running dry.
            let held = retention_counters
                .held
                .load(std::sync::atomic::Ordering::Relaxed);
            if since_last >= idle && started.elapsed() >= idle && instance.caught_up() && !held {
                tracing::info!(?idle, "idle: stopping");
                cancel.cancel();
            }
        }
    }
    let source_result = source.await?;
    let projector = instance.projector.clone();
    let counters = instance.counters.clone();
    let stopped = instance.shutdown().await;
    // The projector stopped, so nothing more will be queued: let the
    // notifier drain and flush what is.
    notifier_cancel.cancel();
    if let Some(task) = notifier {
        match task.await? {
            Ok(stats) => tracing::info!(?stats, "notifications published"),
            Err(e) => {
                tracing::warn!(error = %e, "some notifications were not published; the store holds them (dlq list)")
            }
        }
    }
    // Everything is stopping: the background tasks see `cancel` too.
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    // A fatal error of ingest or the projector is the cause of whatever the
    // source reports (it sees ingest's channel close), so it comes first.
    let log = stopped?;
    let mut report = status_from_log(&log);
    report.retention = retention_status(&log);
    if let Ok(p) = store.parked_summary().await {
        report.add_parked(p);
    }
    report.projector = serde_json::to_value(projector.status()).ok();
    report.ingest = serde_json::to_value(counters.snapshot()).ok();
    if let Err(e) = write_status_file(&status_path, &report) {
        tracing::warn!(path = %status_path.display(), error = %e, "cannot write the final status file");
    }
    if pubsub.is_some() {
        let s = source_counters.snapshot();
        tracing::info!(?s, "pub/sub source stopped");
    }
    source_result?;
    let ingest = counters.snapshot();
    Ok(ServiceReport {
        delivered: ingest.delivered,
        appended: ingest.appended,
        events_projected: projector.status().stats.events,
        elapsed: started.elapsed(),
        checkpoint: report.checkpoint,
        lag: report.lag,
        metrics_addr,
        status: report,
    })
}

/// The dead-letter table as last read, shared by the task that reads it
/// and the status loop.
type ParkedGauge = Arc<std::sync::Mutex<Option<ParkedSummary>>>;

/// How often a running pipeline reads the dead-letter table.
const PARKED_EVERY: Duration = Duration::from_secs(15);

/// Reads the dead-letter table's summary every [`PARKED_EVERY`] in a task
/// of its own. Only that table: the facts and the audit grow without bound,
/// and scanning them every few seconds (as `run` once did) cost a full
/// table read per instance per period; their figures are `status
/// --count-rows`, on demand. Never in the status loop: with Cassandra down
/// a read waits for its timeouts, and the status file (which says the
/// projector is paused) must go on being written meanwhile.
fn spawn_parked_gauge<S: FactStore>(
    store: Arc<S>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> ParkedGauge {
    let gauge: ParkedGauge = Arc::default();
    let shared = gauge.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(PARKED_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            match store.parked_summary().await {
                Ok(s) => *shared.lock().expect("parked gauge lock") = Some(s),
                Err(e) => tracing::debug!(error = %e, "parked payments unavailable for status"),
            }
        }
    });
    gauge
}

/// Why the source is not ready (`None`: it is, or needs no checking).
type SourceHealth = Arc<std::sync::Mutex<Option<String>>>;

/// How often, and how long at most, a Pub/Sub source's reachability is
/// checked for `/readyz`.
const SOURCE_PROBE_EVERY: Duration = Duration::from_secs(5);
const SOURCE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks every [`SOURCE_PROBE_EVERY`] that Pub/Sub answers and both
/// subscriptions exist ([`ecom_pubsub::SubscriptionProbe`]); the embedded
/// broker and `--source none` are always reachable. Not ready until the
/// first check passed. A task of its own, for the same reason as
/// [`spawn_parked_gauge`]: a probe that hangs must not hold up anything else.
fn spawn_source_probe(
    pubsub: Option<&PubSubConfig>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> SourceHealth {
    let Some(pcfg) = pubsub.cloned() else {
        return Arc::default();
    };
    let health: SourceHealth = Arc::new(std::sync::Mutex::new(Some(
        "Pub/Sub source: not checked yet".into(),
    )));
    let shared = health.clone();
    tracker.spawn(async move {
        let mut probe = None;
        let mut tick = tokio::time::interval(SOURCE_PROBE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let outcome = tokio::time::timeout(SOURCE_PROBE_TIMEOUT, async {
                if probe.is_none() {
                    probe = Some(ecom_pubsub::SubscriptionProbe::new(&pcfg).await?);
                }
                probe.as_ref().expect("just built").check().await
            })
            .await;
            let reason = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("Pub/Sub source unreachable: {e}")),
                Err(_) => Some(format!(
                    "Pub/Sub source unreachable: no answer in {}s",
                    SOURCE_PROBE_TIMEOUT.as_secs()
                )),
            };
            let mut current = shared.lock().expect("source health lock");
            if *current != reason {
                match &reason {
                    Some(r) => tracing::warn!(reason = %r, "not ready"),
                    None => tracing::info!("Pub/Sub source reachable"),
                }
                *current = reason;
            }
        }
    });
    health
}

/// What a scrape or probe reads: the figures the status file shows, from
/// the same atomics.
fn live_snapshot<S: FactStore>(
    instance: &Instance<S>,
    parked: &ParkedGauge,
    source_health: &SourceHealth,
) -> telemetry::Live {
    let log = instance.log.clone();
    let projector = instance.projector.clone();
    let counters = instance.counters.clone();
    let parked = parked.clone();
    let source_health = source_health.clone();
    Arc::new(move || {
        let stats = log.stats();
        let projector = projector.status();
        let oldest_unprojected_ms = if stats.checkpoint < stats.next_seq {
            log.read_from(stats.checkpoint, 1)
                .ok()
                .and_then(|e| e.first().map(|e| e.appended_at_ms))
        } else {
            None
        };
        telemetry::LiveSnapshot {
            ingest: counters.snapshot(),
            log: stats,
            oldest_unprojected_ms,
            log_bytes: telemetry::dir_bytes(log.dir()),
            parked: *parked.lock().expect("parked gauge lock"),
            not_ready: telemetry::not_ready(
                &projector.state,
                source_health.lock().expect("source health lock").as_deref(),
            ),
            projector,
        }
    })
}

fn live_status<S: FactStore>(instance: &Instance<S>, parked: &ParkedGauge) -> StatusReport {
    let mut r = status_from_log(&instance.log);
    r.source = "running pipeline".into();
    r.running_pid = Some(std::process::id());
    if let Some(p) = *parked.lock().expect("parked gauge lock") {
        r.add_parked(p);
    }
    r.projector = serde_json::to_value(instance.projector.status()).ok();
    r.ingest = serde_json::to_value(instance.counters.snapshot()).ok();
    r
}
