//! `run`: the long-running pipeline, from the command line.
//!
//! The service itself (wiring, status file, metrics, shutdown) is
//! `ecom_service::run`; this module turns flags and settings into an
//! `ecom_service::Service`, ties SIGTERM/SIGINT to its shutdown token,
//! and prints how it stopped. A failure returns an error, so the process
//! exits non-zero and a supervisor restarts it; opening the log on restart
//! re-verifies it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ecom_projector::ProjectorOptions;
use ecom_service::retention::{self, RetentionPolicy};
use ecom_service::signals::Signals;
use ecom_service::{Service, Source, StoreSpec, telemetry};
use tokio_util::sync::CancellationToken;

use crate::commands::{open_log, projector_concurrency};
use crate::config::{Config, StoreKind};

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

/// Segments written while running: about a minute of traffic at
/// 1 000 messages/s, a few MB compressed.
const SEGMENT_ENTRIES: usize = 50_000;

/// The archive, prune and compaction policy `run` follows, from the
/// `archive`, `log_max_bytes`, `log_retention` and `dedup_retention`
/// settings; `None` without an archive (nothing may then be pruned).
fn retention_policy(cfg: &Config) -> anyhow::Result<Option<RetentionPolicy>> {
    let Some(location) = cfg.archive.as_deref() else {
        anyhow::ensure!(
            cfg.log_max_bytes.is_none() && cfg.log_retention.is_none(),
            "log_max_bytes and log_retention need an archive: only archived entries leave the log. Set --archive DIR|URL (ECOM_ARCHIVE), or unset them"
        );
        return Ok(None);
    };
    let instance = cfg.instance_name(&cfg.log_dir);
    std::fs::create_dir_all(&cfg.log_dir)
        .with_context(|| format!("cannot create {}", cfg.log_dir.display()))?;
    retention::claim_instance(&cfg.log_dir, &instance)?;
    let archive = ecom_archive::Archive::open(location, &instance)?;
    tracing::info!(archive = %location, %instance, max_bytes = ?cfg.log_max_bytes, retention = ?cfg.log_retention, "archiving the log while running");
    Ok(Some(RetentionPolicy {
        archive: std::sync::Arc::new(archive),
        max_bytes: cfg.log_max_bytes,
        max_age: cfg.log_retention,
        keep_ids_for: cfg.dedup_retention,
        segment_entries: std::num::NonZeroUsize::new(SEGMENT_ENTRIES).expect("non-zero"),
        every: Duration::from_secs(1),
    }))
}

pub async fn run(cfg: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let source = match args.source {
        SourceKind::Pubsub => Source::PubSub {
            config: crate::pubsub::config(cfg)?,
            notifications: !args.no_notifications,
        },
        SourceKind::Embedded => Source::Embedded {
            orders: args.orders,
            seed: args.seed,
        },
        SourceKind::None => Source::None,
    };
    let service = Service {
        source,
        store: match cfg.store {
            StoreKind::Embedded => StoreSpec::Embedded(cfg.store_dir.clone()),
            StoreKind::Cassandra => StoreSpec::Cassandra(cfg.cassandra.clone()),
        },
        projector: ProjectorOptions {
            batch_size: cfg.projector_batch,
            concurrency: projector_concurrency(cfg),
            ..Default::default()
        },
        metrics_addr: telemetry::parse_metrics_addr(&cfg.metrics_addr)?,
        stop_after_idle: args.stop_after_idle,
        status_every: Duration::from_secs(1),
        retention: retention_policy(cfg)?,
    };
    // The log first: its lock names the pid of a pipeline already running.
    let log = open_log(&cfg.log_dir)?;
    // Installed before the service writes its first status file (which is
    // how tests and operators know it is up).
    let shutdown = CancellationToken::new();
    let signals = Signals::install().map(|s| tokio::spawn(s.watch(shutdown.clone())));
    let stopped = ecom_service::run(log, service, shutdown).await;
    if let Some(task) = signals {
        task.abort();
    }
    let r = stopped?;
    let secs = r.elapsed.as_secs_f64();
    println!(
        "stopped cleanly: {} delivered, {} appended, {} events projected in {:.2}s ({:.0} events/s); checkpoint {} (lag {})",
        r.delivered,
        r.appended,
        r.events_projected,
        secs,
        r.events_projected as f64 / secs.max(1e-9),
        r.checkpoint,
        r.lag
    );
    Ok(ExitCode::SUCCESS)
}
