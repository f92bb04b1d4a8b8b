//! `run`: the long-running pipeline.
//!
//! Shutdown: the first SIGINT/SIGTERM stops the source, lets ingest make the
//! in-flight batch durable and acknowledge it, lets the projector reach a
//! checkpoint, and exits 0. A second signal exits at once, which is safe:
//! nothing is acknowledged before it is on disk, and the projector resumes
//! from its checkpoint.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ecom_broker::{Broker, BrokerConfig, run_source};
use ecom_core::workload::{WorkloadSpec, generate};
use ecom_projector::ProjectorOptions;
use ecom_store::FactStore;
use tokio_util::sync::CancellationToken;

use crate::commands::{
    StatusReport, add_store_counts, open_log, projector_concurrency, status_from_log, with_store,
};
use crate::config::Config;
use crate::instance::Instance;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The in-process broker (default); `--orders` feeds it.
    Embedded,
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
}

pub async fn run(cfg: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    // The log first: its lock names the pid of a pipeline already running.
    let log = open_log(&cfg.log_dir)?;
    with_store!(cfg, |store| run_with(cfg, args, log, store).await)
}

async fn run_with<S: FactStore>(
    cfg: &Config,
    args: &RunArgs,
    log: ecom_log::Log,
    store: Arc<S>,
) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let popts = ProjectorOptions {
        batch_size: cfg.projector_batch,
        concurrency: projector_concurrency(cfg),
        ..Default::default()
    };
    let (instance, tx) = Instance::start(log, store.clone(), popts, None, &cancel);
    let source = match args.source {
        SourceKind::Embedded => {
            let broker = Broker::new(BrokerConfig {
                seed: args.seed,
                ..Default::default()
            });
            for p in generate(&WorkloadSpec::demo(args.orders, args.seed)) {
                broker.publish(p.topic, p.data);
            }
            tokio::spawn(run_source(
                broker,
                tx,
                500,
                Duration::from_millis(5),
                cancel.clone(),
            ))
        }
    };
    tracing::info!(log_dir = %cfg.log_dir.display(), store = ?cfg.store, "pipeline running; SIGINT/SIGTERM stops it cleanly");

    let signals = tokio::spawn(watch_signals(cancel.clone()));
    let started = std::time::Instant::now();
    let status_path = cfg.log_dir.join("status.json");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        if instance.projector_failed() {
            cancel.cancel();
            break;
        }
        let report = live_status(&instance, store.as_ref()).await;
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
    source.await?;
    let projector = instance.projector.clone();
    let counters = instance.counters.clone();
    let log = instance.shutdown().await?;
    signals.abort();
    let mut report = status_from_log(&log);
    add_store_counts(&mut report, store.as_ref()).await.ok();
    report.projector = serde_json::to_value(projector.status()).ok();
    report.ingest = serde_json::to_value(counters.snapshot()).ok();
    let _ = std::fs::write(&status_path, serde_json::to_string_pretty(&report)?);
    tracing::info!(
        checkpoint = report.checkpoint,
        lag = report.lag,
        "pipeline stopped cleanly"
    );
    Ok(ExitCode::SUCCESS)
}

async fn live_status<S: FactStore>(instance: &Instance<S>, store: &S) -> StatusReport {
    let mut r = status_from_log(&instance.log);
    r.source = "running pipeline".into();
    r.running_pid = Some(std::process::id());
    if let Err(e) = add_store_counts(&mut r, store).await {
        tracing::debug!(error = %e, "store counts unavailable for status");
    }
    r.projector = serde_json::to_value(instance.projector.status()).ok();
    r.ingest = serde_json::to_value(instance.counters.snapshot()).ok();
    r
}

/// First signal: cancel (clean shutdown). Second: exit at once.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
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
