//! `ecom-pipeline`: argument parsing and wiring. Everything with behaviour
//! lives in the library crates; this binary chooses the source and the store
//! and turns their reports into output and exit codes.

mod bench;
mod commands;
mod config;
mod demo;
mod progress;
mod pubsub;
mod run;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, GlobalArgs};

/// Exactly-once landing of e-commerce orders and payments, from Pub/Sub (or
/// the embedded broker) through a durable sled log into a fact store
/// (embedded sled, or Cassandra).
#[derive(Debug, Parser)]
#[command(
    name = "ecom-pipeline",
    version,
    about,
    after_help = "Every setting flag also has an environment variable and a key in the --config file (defaults < file < environment < flags): see the README's configuration table."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    pubsub: pubsub::PubSubArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on the embedded default with faults, and check
    /// that every business event took effect exactly once.
    Demo(demo::DemoArgs),
    /// The long-running pipeline: source → durable log → projector → store.
    Run(run::RunArgs),
    /// Rebuild a store from one or more log directories.
    Replay(commands::ReplayArgs),
    /// Compare the store with the fold of one or more log directories.
    Verify(commands::VerifyArgs),
    /// Payments parked because their order has not arrived.
    Dlq {
        #[command(subcommand)]
        command: commands::DlqCommand,
    },
    /// Messages rejected as invalid (kept in the log's quarantine).
    Rejected {
        #[command(subcommand)]
        command: commands::RejectedCommand,
    },
    /// Durable log maintenance.
    Log {
        #[command(subcommand)]
        command: commands::LogCommand,
    },
    /// Log entries, checkpoint and lag, parked, rejected and duplicate counts.
    Status(commands::StatusArgs),
    /// Create what the pipeline needs in external systems, idempotently.
    Setup {
        #[command(subcommand)]
        command: commands::SetupCommand,
    },
    /// Measure every stage beside a bare loop doing only its unavoidable
    /// work, in one run; print the ratios (needs the local servers:
    /// scripts/bench.sh starts them).
    Bench(bench::BenchArgs),
    /// Publish traffic shaped like today's producers to Pub/Sub.
    Produce {
        #[command(subcommand)]
        command: pubsub::ProduceCommand,
    },
}

fn init_tracing(format: config::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ECOM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,ecom_pipeline=info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => fmt.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(cli.global.log_format);
    let cfg = match Config::from_cli(&cli.global, &matches) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(cli, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Environment variable that arms failpoints, in the `fail` crate's
/// syntax: `name=actions[;name=actions…]`, e.g. `log::group_commit=return`,
/// or `apply::after_conditional_write=2*off->return(crash)` to abort the
/// process the third time it gets there. For fault-injection tests of the
/// binary.
const FAILPOINTS_ENV: &str = "ECOM_FAILPOINTS";

/// Arms the failpoints named in [`FAILPOINTS_ENV`], if it is set. Only a
/// test build has them (`cargo test` of this crate turns on the
/// `failpoints` features of ecom-log, ecom-projector and ecom-cassandra);
/// any other build, or a name this build does not have, is refused rather
/// than run without the faults it was asked for.
fn arm_failpoints() -> anyhow::Result<()> {
    let Some(spec) = std::env::var_os(FAILPOINTS_ENV) else {
        return Ok(());
    };
    let known: Vec<&str> = [
        ecom_log::FAILPOINTS,
        ecom_projector::FAILPOINTS,
        ecom_cassandra::FAILPOINTS,
    ]
    .concat();
    anyhow::ensure!(
        !known.is_empty(),
        "{FAILPOINTS_ENV} is set, but this build has no failpoints (only test builds, with the crates' `failpoints` features, do); unset {FAILPOINTS_ENV}"
    );
    let spec = spec.to_string_lossy();
    for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let (name, actions) = item.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("{FAILPOINTS_ENV}: expected `name=actions`, found {item:?}")
        })?;
        let (name, actions) = (name.trim(), actions.trim());
        anyhow::ensure!(
            known.contains(&name),
            "{FAILPOINTS_ENV}: this build has no failpoint {name:?}; it has: {}",
            known.join(", ")
        );
        fail::cfg(name, actions)
            .map_err(|e| anyhow::anyhow!("{FAILPOINTS_ENV}: failpoint {name}: {e}"))?;
        tracing::warn!(failpoint = name, actions, "failpoint armed");
    }
    Ok(())
}

async fn dispatch(cli: Cli, cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    arm_failpoints()?;
    match cli.command {
        Command::Demo(args) => commands::demo(&cfg, &args).await,
        Command::Run(args) => run::run(&cfg, &args).await,
        Command::Replay(args) => commands::replay(&cfg, &args).await,
        Command::Verify(args) => commands::verify(&cfg, &args).await,
        Command::Dlq { command } => commands::dlq(&cfg, command).await,
        Command::Rejected { command } => commands::rejected(&cfg, command).await,
        Command::Log { command } => commands::log(&cfg, command).await,
        Command::Status(args) => commands::status(&cfg, &args).await,
        Command::Setup { command } => commands::setup(&cfg, command).await,
        Command::Produce { command } => pubsub::produce(&cfg, command).await,
        Command::Bench(args) => bench::bench(&cfg, &args).await,
    }
}
