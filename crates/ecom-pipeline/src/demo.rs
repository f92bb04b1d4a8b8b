//! `demo`: the whole pipeline on the embedded default, with faults, checked.
//!
//! Seed-like traffic is published to the embedded broker, which delivers it
//! at least once with redeliveries, duplicate deliveries, lost acks and
//! reordering (so many payments arrive before their order). `instances`
//! pipeline instances, each with its own durable log, compete for the
//! deliveries and project into one shared store. At the end the store is
//! compared with the reference model folded from the set of *published*
//! messages (ground truth, independent of the logs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ecom_broker::{Broker, BrokerConfig, run_source};
use ecom_core::workload::{WorkloadSpec, generate};
use ecom_core::{Model, decode};
use ecom_log::{Log, LogOptions};
use ecom_projector::{ApplyStats, ProjectorOptions};
use ecom_store::{FactStore, snapshot};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use ecom_service::Instance;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Distinct orders to produce (payments, duplicates, conflicts, orphans
    /// and invalid messages come on top).
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Pipeline instances sharing the store, each with its own log.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Seed of the workload and of the broker's fault injection.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The broker's ack deadline: unacknowledged messages come back after it.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub ack_deadline: Duration,
    /// Share of pulls that also deliver the message again later.
    #[arg(long, default_value_t = 0.05)]
    pub duplicate_ratio: f64,
    /// Share of acknowledgements the broker loses (redelivery after deadline).
    #[arg(long, default_value_t = 0.05)]
    pub lost_ack_ratio: f64,
    /// Where the instances' logs go (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Empty a non-empty target store first (Cassandra; the embedded demo
    /// store is always fresh).
    #[arg(long)]
    pub truncate: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub published: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub log_appended: u64,
    pub duplicates_message_id: u64,
    pub duplicates_business_key: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub orders_in_store: u64,
    pub payments_joined: u64,
    pub payments_parked: u64,
    pub audit_rows: u64,
    pub instances: usize,
    pub differences: u64,
    pub parked_with_order: u64,
    pub verified: bool,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub apply: ApplyStats,
}

pub async fn demo<S: FactStore>(
    args: &DemoArgs,
    store: Arc<S>,
    projector_concurrency: usize,
) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    if !store.is_empty().await? {
        anyhow::ensure!(
            args.truncate,
            "the target store is not empty; demo checks exact end state, so pass --truncate to empty it first"
        );
        store.truncate().await?;
    }
    let tmp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let broker = Broker::new(BrokerConfig {
        ack_deadline: args.ack_deadline,
        seed: args.seed,
        duplicate_ratio: args.duplicate_ratio,
        lost_ack_ratio: args.lost_ack_ratio,
        reorder: true,
        manual_clock: false,
    });
    let cancel = CancellationToken::new();
    let popts = ProjectorOptions {
        concurrency: projector_concurrency,
        ..Default::default()
    };
    let mut instances = Vec::new();
    let mut sources = Vec::new();
    for i in 0..args.instances.max(1) {
        let dir = data_dir.join(format!("instance-{i}"));
        let log = Log::open(&dir, LogOptions::default())
            .with_context(|| format!("cannot open the log in {}", dir.display()))?;
        let (instance, tx) = Instance::start(
            log,
            store.clone(),
            popts.clone(),
            None,
            ecom_ingest::IngestOptions::default(),
            &cancel,
        );
        sources.push(tokio::spawn(run_source(
            broker.clone(),
            tx,
            500,
            Duration::from_millis(2),
            cancel.clone(),
        )));
        instances.push(instance);
    }

    // Publish while the instances consume, like live producers.
    let spec = WorkloadSpec::demo(args.orders, args.seed);
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut published = Vec::new();
            for (i, p) in generate(&spec).into_iter().enumerate() {
                published.push(broker.publish(p.topic, p.data));
                if i % 2000 == 1999 {
                    tokio::task::yield_now().await;
                }
            }
            published
        })
    };
    let published = publisher.await?;

    let mut last_progress = Instant::now();
    loop {
        let settled = broker.drained() && instances.iter().all(|i| i.caught_up());
        if settled || instances.iter().any(|i| i.failed()) {
            break;
        }
        if !args.json && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let s = broker.stats();
            let projected: u64 = instances.iter().map(|i| i.log.checkpoint()).sum();
            eprintln!(
                "  … delivered {} of {} published, {} projected",
                s.delivered, s.published, projected
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    for s in sources {
        s.await?;
    }
    let mut apply = ApplyStats::default();
    let mut ingest = ecom_ingest::IngestStats::default();
    for i in instances {
        let counters = i.counters.clone();
        let projector = i.projector.clone();
        i.shutdown().await?;
        apply.add(&projector.status().stats);
        let c = counters.snapshot();
        ingest.delivered += c.delivered;
        ingest.appended += c.appended;
        ingest.duplicates_message_id += c.duplicates_message_id;
        ingest.rejected += c.rejected;
    }
    let elapsed_s = started.elapsed().as_secs_f64();

    let mut model = Model::new();
    for m in &published {
        if let Ok(event) = decode(m) {
            model.apply(&event);
        }
    }
    let expected = model.final_state();
    let actual = snapshot(store.as_ref()).await?;
    let (differences, samples) = expected.diff(&actual, 10);
    for s in &samples {
        tracing::error!("demo: difference: {s}");
    }
    let parked_with_order = actual.parked_with_order() as u64;
    let b = broker.stats();
    Ok(DemoReport {
        published: b.published,
        delivered: b.delivered,
        redelivered: b.redelivered,
        log_appended: ingest.appended,
        duplicates_message_id: ingest.duplicates_message_id,
        duplicates_business_key: apply.business_duplicates,
        conflicts: apply.conflicts,
        rejected: ingest.rejected,
        orders_in_store: actual.facts.len() as u64,
        payments_joined: actual.payments_joined() as u64,
        payments_parked: actual.parked.len() as u64,
        audit_rows: actual.audit.len() as u64,
        instances: args.instances.max(1),
        differences: differences as u64,
        parked_with_order,
        verified: differences == 0 && parked_with_order == 0,
        elapsed_s,
        events_per_s: b.published as f64 / elapsed_s.max(1e-9),
        apply,
    })
}

pub fn print_human(r: &DemoReport) {
    println!(
        "ecom-pipeline demo: {} instances, one shared store",
        r.instances
    );
    println!("  published            {:>9}", r.published);
    println!(
        "  delivered            {:>9}  ({} redeliveries)",
        r.delivered, r.redelivered
    );
    println!("  appended to logs     {:>9}", r.log_appended);
    println!(
        "  duplicate message id {:>9}  (transport duplicates, not appended)",
        r.duplicates_message_id
    );
    println!(
        "  duplicate business   {:>9}  (same content, another message id: no effect)",
        r.duplicates_business_key
    );
    println!(
        "  conflicts            {:>9}  (losing versions audited in duplicate_orders: {})",
        r.conflicts, r.audit_rows
    );
    println!(
        "  rejected             {:>9}  (quarantined: `ecom-pipeline rejected list`)",
        r.rejected
    );
    println!("  orders in store      {:>9}", r.orders_in_store);
    println!("  payments joined      {:>9}", r.payments_joined);
    println!(
        "  payments parked      {:>9}  (their order never arrived)",
        r.payments_parked
    );
    println!("  differences vs model {:>9}", r.differences);
    println!(
        "  elapsed              {:>8.2}s  ({:.0} events/s)",
        r.elapsed_s, r.events_per_s
    );
    println!("verified: {}", r.verified);
}
