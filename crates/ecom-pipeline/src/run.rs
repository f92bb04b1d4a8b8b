//! `run`: the long-running pipeline.
//!
//! Shutdown: the first SIGINT/SIGTERM stops the source, lets ingest make the
//! in-flight batch durable and acknowledge it, lets the projector reach a
//! checkpoint, and exits 0. A second signal exits at once, which is safe:
//! nothing is acknowledged before it is on disk, and the projector resumes
//! from its checkpoint.
//!
//! Failure: when ingest or the projector stops on its own (a fatal error:
//! e.g. a failed log commit stops the log writer, after which nothing can be
//! acknowledged), everything else is cancelled and stopped the same way, and
//! `run` returns that error, so the process exits non-zero and a supervisor
//! restarts it; opening the log on restart re-verifies it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ecom_broker::{Broker, BrokerConfig, run_source};
use ecom_core::workload::{Generator, WorkloadSpec};
use ecom_projector::ProjectorOptions;
use ecom_store::{FactStore, ParkedSummary};
use tokio_util::sync::CancellationToken;

use ecom_cassandra::LazyCassandraStore;

use crate::commands::{
    StatusReport, cassandra_config, open_embedded, open_log, projector_concurrency, status_from_log,
};
use crate::config::{Config, StoreKind};
use crate::instance::Instance;
use crate::telemetry;
use ecom_pubsub::PubSubConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The in-process broker (default); `--orders` feeds it.
    Embedded,
    /// Google Cloud Pub/Sub (or the emulator at PUBSUB_EMULATOR_HOST):
    /// streaming pull on orders_data-sub and payments_data-sub.
    Pubsub,
    /// Nothing new: project what the log holds. With --stop-after-idle,
    /// this retires an instance: its acknowledged tail lands in the store
    /// and the process exits.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where messages come from.
    #[arg(long, value_enum, default_value = "embedded")]
    pub source: SourceKind,
    /// Embedded source: publish this many generated orders (with payments,
    /// duplicates and conflicts) at start.
    #[arg(long, default_value_t = 0)]
    pub orders: u64,
    /// Embedded source: workload and fault-injection seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Exit cleanly once nothing has arrived for this long and everything
    /// received is projected (e.g. "5s").
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stop_after_idle: Option<Duration>,
    /// Pub/Sub source: do not publish parked payments to dlq_payments_data
    /// and recorded conflicts to duplicate_orders.
    #[arg(long)]
    pub no_notifications: bool,
}

pub async fn run(cfg: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let pubsub = match args.source {
        SourceKind::Pubsub => Some(crate::pubsub::config(cfg)?),
        SourceKind::Embedded | SourceKind::None => None,
    };
    // The log first: its lock names the pid of a pipeline already running.
    let log = open_log(&cfg.log_dir)?;
    match cfg.store {
        StoreKind::Embedded => {
            let store = Arc::new(open_embedded(cfg)?);
            run_with(cfg, args, pubsub.as_ref(), log, store).await
        }
        // Connect lazily: Cassandra being down must not stop ingestion; the
        // projector pauses until it answers.
        StoreKind::Cassandra => {
            let store = Arc::new(LazyCassandraStore::new(cassandra_config(cfg)?));
            run_with(cfg, args, pubsub.as_ref(), log, store).await
        }
    }
}

async fn run_with<S: FactStore>(
    cfg: &Config,
    args: &RunArgs,
    pubsub: Option<&PubSubConfig>,
    log: ecom_log::Log,
    store: Arc<S>,
) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let popts = ProjectorOptions {
        batch_size: cfg.projector_batch,
        concurrency: projector_concurrency(cfg),
        ..Default::default()
    };
    let notifier_cancel = CancellationToken::new();
    let (notify_tx, notifier) = match pubsub {
        Some(pcfg) if !args.no_notifications => {
            let (ntx, nrx) = tokio::sync::mpsc::unbounded_channel();
            let pcfg = pcfg.clone();
            let c = notifier_cancel.clone();
            let task = tokio::spawn(async move { ecom_pubsub::run_notifier(&pcfg, nrx, c).await });
            (Some(ntx), Some(task))
        }
        _ => (None, None),
    };
    let (instance, tx) = Instance::start(log, store.clone(), popts, notify_tx, &cancel);
    let source_counters = Arc::new(ecom_pubsub::SourceCounters::default());
    let source: tokio::task::JoinHandle<anyhow::Result<()>> = match pubsub {
        Some(pcfg) => {
            let pcfg = pcfg.clone();
            let c = cancel.clone();
            let counters = source_counters.clone();
            tokio::spawn(async move {
                let r = ecom_pubsub::run_source(&pcfg, tx, counters, c.clone()).await;
                if r.is_err() {
                    // A permanent source error stops the whole pipeline cleanly.
                    c.cancel();
                }
                r.map_err(anyhow::Error::from)
            })
        }
        None if args.source == SourceKind::None => {
            // Holds the sender until cancelled: ingest treats a closed
            // channel as its source gone for good.
            let c = cancel.clone();
            tokio::spawn(async move {
                c.cancelled().await;
                drop(tx);
                Ok(())
            })
        }
        None => {
            // Published as it is pulled: a backlog of millions costs no
            // memory here, as it would not with a real server.
            let backlog = Generator::new(WorkloadSpec::demo(args.orders, args.seed))
                .map(|p| (p.topic, p.data));
            let broker = Broker::with_backlog(
                BrokerConfig {
                    seed: args.seed,
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
    tracing::info!(log_dir = %cfg.log_dir.display(), store = ?cfg.store, "pipeline running; SIGINT/SIGTERM stops it cleanly");

    // Installed here, before the first status file says the run is up: a
    // handler installed later, inside the spawned task, left a window in
    // which SIGTERM killed the process instead of stopping it cleanly.
    let signals = tokio::spawn(watch_signals(install_signal_handlers(), cancel.clone()));
    let started = std::time::Instant::now();
    let status_path = cfg.log_dir.join("status.json");
    let parked = spawn_parked_gauge(store.clone(), cancel.clone());
    let source_health = spawn_source_probe(pubsub, cancel.clone());
    let metrics_addr = match telemetry::parse_metrics_addr(&cfg.metrics_addr)? {
        None => None,
        Some(addr) => {
            let handle = telemetry::install()?;
            let live = live_snapshot(&instance, &parked, &source_health);
            Some(telemetry::serve(addr, handle, live, cancel.clone()).await?)
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
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
        report.metrics_addr = metrics_addr.map(|a| a.to_string());
        if let Ok(text) = serde_json::to_string_pretty(&report) {
            // Write-then-rename so a reader never sees half a file.
            let tmp = status_path.with_extension("json.tmp");
            if std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &status_path))
                .is_err()
            {
                tracing::warn!(path = %status_path.display(), "cannot write the status file");
            }
        }
        if let Some(idle) = args.stop_after_idle {
            let last = instance
                .counters
                .last_delivery_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let since_last = if last == 0 {
                started.elapsed()
            } else {
                Duration::from_millis((ecom_store::now_ms() as u64).saturating_sub(last))
            };
            if since_last >= idle && started.elapsed() >= idle && instance.caught_up() {
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
    signals.abort();
    // A fatal error of ingest or the projector is the cause of whatever the
    // source reports (it sees ingest's channel close), so it comes first.
    let log = stopped?;
    let mut report = status_from_log(&log);
    if let Ok(p) = store.parked_summary().await {
        report.add_parked(p);
    }
    report.projector = serde_json::to_value(projector.status()).ok();
    report.ingest = serde_json::to_value(counters.snapshot()).ok();
    let _ = std::fs::write(&status_path, serde_json::to_string_pretty(&report)?);
    if pubsub.is_some() {
        let s = source_counters.snapshot();
        tracing::info!(?s, "pub/sub source stopped");
    }
    source_result?;
    let applied = projector.status().stats.events;
    let secs = started.elapsed().as_secs_f64();
    let ingest = counters.snapshot();
    println!(
        "stopped cleanly: {} delivered, {} appended, {} events projected in {:.2}s ({:.0} events/s); checkpoint {} (lag {})",
        ingest.delivered,
        ingest.appended,
        applied,
        secs,
        applied as f64 / secs.max(1e-9),
        report.checkpoint,
        report.lag
    );
    Ok(ExitCode::SUCCESS)
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
fn spawn_parked_gauge<S: FactStore>(store: Arc<S>, cancel: CancellationToken) -> ParkedGauge {
    let gauge: ParkedGauge = Arc::default();
    let shared = gauge.clone();
    tokio::spawn(async move {
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
fn spawn_source_probe(pubsub: Option<&PubSubConfig>, cancel: CancellationToken) -> SourceHealth {
    let Some(pcfg) = pubsub.cloned() else {
        return Arc::default();
    };
    let health: SourceHealth = Arc::new(std::sync::Mutex::new(Some(
        "Pub/Sub source: not checked yet".into(),
    )));
    let shared = health.clone();
    tokio::spawn(async move {
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

type SignalHandlers = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// SIGTERM and SIGINT handlers, installed when this returns.
fn install_signal_handlers() -> Option<SignalHandlers> {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => {
            tracing::warn!("cannot install signal handlers");
            None
        }
    }
}

/// First signal: cancel (clean shutdown). Second: exit at once.
async fn watch_signals(handlers: Option<SignalHandlers>, cancel: CancellationToken) {
    let Some((mut term, mut int)) = handlers else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!(
        "signal received: finishing the in-flight batch and checkpointing (send again to exit at once)"
    );
    cancel.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now; the log makes this safe");
    std::process::exit(130);
}
