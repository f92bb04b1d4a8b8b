//! `bench`: every stage beside its own ceiling, in one run (the harness is
//! `ecom-bench`; this parses arguments, prints the table, writes the JSON).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ecom_bench::{BenchOptions, Stage};

use crate::commands::cassandra_config;
use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Stages to run, comma-separated: log-append, ingest, projection,
    /// replay, latency, memory (memory also measures disk). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<Stage>,
    /// Messages per throughput measurement (log append, ingest, projection,
    /// replay).
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Messages of the memory and disk runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Requests in flight to Cassandra, for ours and the bare loops alike.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long the latency stage publishes, in seconds.
    #[arg(long, default_value_t = 20)]
    pub latency_secs: u64,
    /// Publish rate of the latency stage (messages/s); default: half the
    /// end-to-end sustained rate, which the stage measures first.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Scratch directory for logs and stores (default: the system's
    /// temporary directory); everything in it is removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

pub async fn bench(cfg: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let stages = if args.stages.is_empty() {
        Stage::ALL.to_vec()
    } else {
        args.stages.clone()
    };
    // Every measurement makes its own project; the id given (if any) is
    // only a placeholder.
    let mut pubsub = cfg.pubsub.clone();
    if pubsub.project.trim().is_empty() {
        pubsub.project = "ecom-bench".into();
    }
    pubsub.validate()?;
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create the scratch directory {}", work_dir.display()))?;
    let opts = BenchOptions {
        stages,
        messages: args.messages,
        backlog: args.backlog,
        concurrency: args.concurrency.max(1),
        latency_secs: args.latency_secs.max(1),
        latency_rate: args.latency_rate,
        work_dir,
        cassandra: Some(cassandra_config(cfg)?),
        pubsub: pubsub.emulator_host.is_some().then_some(pubsub),
        pipeline_binary: Some(
            std::env::current_exe().context("cannot find this executable for the memory runs")?,
        ),
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: warning: this is a debug build; figures from it say little (use `cargo run --release`)"
        );
    }
    eprintln!(
        "bench: {} cores; Cassandra {}; Pub/Sub {}; {} messages per throughput run, {} in the memory runs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        opts.cassandra
            .as_ref()
            .map(|c| c.contact_points.join(","))
            .unwrap_or_default(),
        opts.pubsub
            .as_ref()
            .map(|p| p.describe_endpoint())
            .unwrap_or_else(|| "not configured".into()),
        opts.messages,
        opts.backlog
    );
    let progress = crate::progress::Reporter::new("bench");
    let rows = ecom_bench::run(
        &opts,
        |line| progress.println(&format!("bench: {line}")),
        &|p| progress.update(p),
    )
    .await?;
    progress.finish();
    print!("{}", ecom_bench::table(&rows));
    for r in &rows {
        if !r.note.is_empty() {
            println!("  {} / {}: {}", r.stage, r.workload, r.note);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench: rows written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
