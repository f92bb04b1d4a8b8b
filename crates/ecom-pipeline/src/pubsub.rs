//! Pub/Sub wiring: connection settings, `setup pubsub` and `produce`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use ecom_pubsub::{ProduceKind, ProduceSpec, PubSubConfig};

use crate::config::Config;

/// The Pub/Sub settings' flags. Their environment variables, file keys
/// and defaults are in [`crate::config::SETTINGS`]; the resolved values in
/// [`crate::config::Config::pubsub`]. Real GCP with Application Default
/// Credentials by default; `PUBSUB_EMULATOR_HOST` switches to a local
/// emulator (plaintext, anonymous credentials).
#[derive(Debug, Clone, Args)]
pub struct PubSubArgs {
    /// Google Cloud project id.
    #[arg(long, global = true)]
    pub project: Option<String>,
    /// Subscription ack deadline set by `setup pubsub` (10s..600s).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pubsub_ack_deadline: Option<Duration>,
    /// `setup pubsub`: enable exactly-once delivery on the subscriptions.
    #[arg(long, global = true)]
    pub pubsub_exactly_once: bool,
    /// `setup pubsub`: enable message ordering on the subscriptions.
    #[arg(long, global = true)]
    pub pubsub_ordering: bool,
    /// `setup pubsub`: dead-letter policy after this many delivery attempts.
    #[arg(long, global = true)]
    pub pubsub_dead_letter_attempts: Option<i32>,
    /// Flow control: most unacknowledged messages held by this consumer.
    #[arg(long, global = true)]
    pub pubsub_max_outstanding_messages: Option<usize>,
    /// Flow control: most unacknowledged bytes held by this consumer.
    #[arg(long, global = true)]
    pub pubsub_max_outstanding_bytes: Option<usize>,
    /// How far the client extends a message's lease at a time (the crate's
    /// default is short; a batch waiting for its fsync must not expire).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pubsub_max_lease_extension: Option<Duration>,
    /// How long the client keeps extending an unsettled message's lease.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pubsub_max_lease: Option<Duration>,
    /// How long a publish is retried before it counts as failed.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pubsub_publish_timeout: Option<Duration>,
    /// On shutdown: how long to wait for deliveries handed to ingest to be
    /// settled (unsettled ones are redelivered after their lease expires).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pubsub_shutdown_timeout: Option<Duration>,
}

/// The resolved Pub/Sub settings, checked: an error says what to set.
pub fn config(cfg: &Config) -> anyhow::Result<PubSubConfig> {
    cfg.pubsub.validate()?;
    Ok(cfg.pubsub.clone())
}

pub async fn setup(cfg: &Config) -> anyhow::Result<ExitCode> {
    let cfg = config(cfg)?;
    let report = ecom_pubsub::setup(&cfg).await?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProduceCommand {
    /// Publish orders to orders_data.
    Orders(ProduceArgs),
    /// Publish payments (payment_id = order_id + 1000) to payments_data.
    Payments(ProduceArgs),
    /// Publish orders and their payments, interleaved.
    Both(ProduceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Messages (orders, or payments) to publish.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Publish at most this many messages per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Share of messages published twice with identical content (producer retries).
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_ratio: f64,
    /// First order id.
    #[arg(long, default_value_t = 1)]
    pub first_id: i64,
    /// Cycle order ids through first_id..first_id+N like today's order producer (80).
    #[arg(long)]
    pub id_cycle: Option<u64>,
    /// `both`: share of payments published before their order.
    #[arg(long, default_value_t = 0.0)]
    pub payments_first_ratio: f64,
    /// Extra payments for order ids that never get an order.
    #[arg(long, default_value_t = 0)]
    pub orphans: u64,
    /// Seed of the generated contents.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub async fn produce(cfg: &Config, cmd: ProduceCommand) -> anyhow::Result<ExitCode> {
    let cfg = config(cfg)?;
    let (kind, a) = match cmd {
        ProduceCommand::Orders(a) => (ProduceKind::Orders, a),
        ProduceCommand::Payments(a) => (ProduceKind::Payments, a),
        ProduceCommand::Both(a) => (ProduceKind::Both, a),
    };
    let spec = ProduceSpec {
        kind,
        count: a.count,
        rate_per_s: a.rate,
        duplicate_ratio: a.duplicate_ratio,
        first_id: a.first_id,
        id_cycle: a.id_cycle,
        payments_first_ratio: a.payments_first_ratio,
        orphan_payments: a.orphans,
        seed: a.seed,
    };
    let progress = crate::progress::Reporter::new("produce");
    let r = ecom_pubsub::produce_with_progress(&cfg, &spec, &|p| progress.update(p)).await?;
    progress.finish();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"published": r.published, "failed": r.failed, "elapsed_s": r.elapsed_s, "messages_per_s": r.messages_per_s})
        );
    } else {
        println!(
            "published {} messages, {} failed, in {:.2}s ({:.0} messages/s)",
            r.published, r.failed, r.elapsed_s, r.messages_per_s
        );
    }
    Ok(if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
