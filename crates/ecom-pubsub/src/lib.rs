//! Google Cloud Pub/Sub for ecom-pipeline, over the official
//! `google-cloud-pubsub` crate (googleapis/google-cloud-rust).
//!
//! - [`setup`]: creates the topics and subscriptions (idempotent).
//! - [`produce`]: publishes seeded orders/payments shaped like today's producers.
//! - [`run_source`]: streaming pull on both subscriptions into ingest's channel;
//!   each [`ecom_core::Delivery`] carries an acker that settles the Pub/Sub
//!   message, so the message is acknowledged only after ingest appended it.
//! - [`run_notifier`]: publishes parked payments to `dlq_payments_data` and
//!   losing versions to `duplicate_orders`.
//!
//! ## Connection
//!
//! The crate does not read `PUBSUB_EMULATOR_HOST` itself. [`PubSubConfig::new`]
//! reads it; when set every client talks plaintext HTTP/2 to that address with
//! anonymous credentials. Otherwise the clients use the default endpoint and
//! Application Default Credentials. Credentials are never logged.
//!
//! ## Flow control
//!
//! Flow control is enforced here, on the client, because the emulator ignores
//! the server-side settings: one semaphore of `max_outstanding_messages` and
//! one of `max_outstanding_bytes`, shared by both subscriptions. Each delivery
//! holds its permits until it is acked, nacked or dropped.

mod error;
mod notifier;
mod produce;
mod setup;
mod source;

use std::time::Duration;

use google_cloud_auth::credentials::Credentials;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use serde::Deserialize;

pub use error::PubSubError;
pub use notifier::{NotifierStats, notification_message, run_notifier};
pub use produce::{ProduceKind, ProduceReport, ProduceSpec, plan, produce, produce_with_progress};
pub use setup::{SetupReport, SubscriptionProbe, dead_letter_topic, setup};
pub use source::{SourceCounters, SourceStats, pull_and_ack, run_source};

/// The topics the pipeline uses.
pub const TOPICS: [&str; 4] = [
    "orders_data",
    "payments_data",
    "dlq_payments_data",
    "duplicate_orders",
];

/// The subscriptions the source pulls from: (subscription, topic).
pub const SUBSCRIPTIONS: [(&str, &str); 2] = [
    ("orders_data-sub", "orders_data"),
    ("payments_data-sub", "payments_data"),
];

/// Topic of parked payments (the payment's order is missing).
pub const DLQ_TOPIC: &str = "dlq_payments_data";
/// Topic of losing versions recorded in the `duplicate_orders` audit table.
pub const CONFLICT_TOPIC: &str = "duplicate_orders";

/// Connection and tuning of every Pub/Sub client in this crate.
///
/// The one definition of these settings: the binary deserializes it from its
/// layered configuration (the TOML file's `[pubsub]` table, the
/// environment, flags); missing keys take the defaults of [`Self::new`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubConfig {
    /// Google Cloud project id (from `--project` or `GOOGLE_CLOUD_PROJECT`).
    /// Empty means not configured: [`Self::check`] says so.
    pub project: String,
    /// `PUBSUB_EMULATOR_HOST`: `Some` means plaintext HTTP to this address with
    /// anonymous credentials. Only from the environment (the client
    /// libraries' convention), never from a file.
    #[serde(skip)]
    pub emulator_host: Option<String>,
    /// Subscription ack deadline set by [`setup`] (10..=600 s). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub ack_deadline: Duration,
    /// [`setup`]: enable exactly-once delivery on new subscriptions. Default off.
    pub exactly_once: bool,
    /// [`setup`]: enable message ordering on new subscriptions. Default off.
    pub message_ordering: bool,
    /// [`setup`]: give new subscriptions a dead-letter policy to the topic
    /// `<subscription>-dead-letter` (also created) after this many delivery
    /// attempts (5..=100 on Google Cloud). Default `None`.
    pub dead_letter_max_attempts: Option<i32>,
    /// Client-side flow control: most messages handed out and not yet settled.
    pub max_outstanding_messages: usize,
    /// Client-side flow control: most bytes handed out and not yet settled.
    pub max_outstanding_bytes: usize,
    /// The stream ack deadline the client asks for and extends leases by
    /// (clamped to 10..=600 s by the client). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_lease_extension: Duration,
    /// How long the client keeps extending an unsettled message's lease.
    /// Default 1 h.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// How long a publish is retried before it counts as failed. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// [`run_source`], on cancel: how long to wait for deliveries already
    /// handed to ingest to be settled before returning. Unsettled ones are
    /// redelivered after their lease expires. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for PubSubConfig {
    /// [`Self::new`] with no project.
    fn default() -> Self {
        PubSubConfig::new("")
    }
}

impl PubSubConfig {
    /// Defaults, with `emulator_host` from `PUBSUB_EMULATOR_HOST`.
    pub fn new(project: impl Into<String>) -> Self {
        PubSubConfig {
            project: project.into(),
            emulator_host: std::env::var("PUBSUB_EMULATOR_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty()),
            ack_deadline: Duration::from_secs(60),
            exactly_once: false,
            message_ordering: false,
            dead_letter_max_attempts: None,
            max_outstanding_messages: 5000,
            max_outstanding_bytes: 100 << 20,
            max_lease_extension: Duration::from_secs(60),
            max_lease: Duration::from_secs(3600),
            publish_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// `projects/<project>/topics/<topic>`.
    pub fn topic_path(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    /// `projects/<project>/subscriptions/<subscription>`.
    pub fn subscription_path(&self, subscription: &str) -> String {
        format!("projects/{}/subscriptions/{subscription}", self.project)
    }

    /// The emulator's endpoint URL (`http://host:port`), if one is configured.
    pub fn emulator_endpoint(&self) -> Option<String> {
        self.emulator_host.as_ref().map(|h| {
            if h.contains("://") {
                h.clone()
            } else {
                format!("http://{h}")
            }
        })
    }

    /// Where the clients connect, for logs (never includes credentials).
    pub fn describe_endpoint(&self) -> String {
        match self.emulator_endpoint() {
            Some(e) => format!("emulator at {e}"),
            None => "Google Cloud (Application Default Credentials)".to_string(),
        }
    }

    /// Whether these settings are usable; the error says what to change.
    pub fn validate(&self) -> Result<(), PubSubError> {
        let bad = |m: String| Err(PubSubError::InvalidConfig(m));
        if self.project.trim().is_empty() {
            return bad("no Google Cloud project: pass --project, set GOOGLE_CLOUD_PROJECT or the file's [pubsub] project (any id works with the emulator)".into());
        }
        let ack = self.ack_deadline.as_secs();
        if !(10..=600).contains(&ack) {
            return bad(format!(
                "the ack deadline must be between 10 and 600 seconds, got {ack}"
            ));
        }
        if self.max_outstanding_messages == 0 || self.max_outstanding_bytes == 0 {
            return bad("max outstanding messages and bytes must be greater than 0".into());
        }
        if let Some(n) = self.dead_letter_max_attempts
            && !(5..=100).contains(&n)
        {
            return bad(format!(
                "dead-letter max delivery attempts must be between 5 and 100, got {n}"
            ));
        }
        Ok(())
    }
}

pub(crate) fn anonymous() -> Credentials {
    Anonymous::new().build()
}

/// Builds a client from one of the crate's builders: the emulator endpoint
/// with anonymous credentials when configured, the defaults (ADC) otherwise.
macro_rules! build_client {
    ($cfg:expr, $what:expr, $builder:expr) => {{
        let builder = $builder;
        let built = match $cfg.emulator_endpoint() {
            Some(endpoint) => {
                builder
                    .with_endpoint(endpoint)
                    .with_credentials($crate::anonymous())
                    .build()
                    .await
            }
            None => builder.build().await,
        };
        built.map_err(|source| $crate::PubSubError::Connect {
            what: $what,
            endpoint: $cfg.describe_endpoint(),
            source,
        })
    }};
}
pub(crate) use build_client;

/// A publisher to `topic` of `cfg.project`, retrying for
/// `cfg.publish_timeout` (what [`produce`] uses).
pub async fn publisher(
    cfg: &PubSubConfig,
    topic: &str,
) -> Result<google_cloud_pubsub::client::Publisher, PubSubError> {
    use google_cloud_gax::retry_policy::RetryPolicyExt as _;
    use google_cloud_pubsub::retry_policy::RetryableErrors;
    build_client!(
        cfg,
        "publisher",
        google_cloud_pubsub::client::Publisher::builder(cfg.topic_path(topic))
            .with_retry_policy(RetryableErrors.with_time_limit(cfg.publish_timeout))
    )
}

/// JSON as today's producers write it: unset optional fields are left out
/// rather than sent as null (same as `ecom_core::workload`).
pub(crate) fn json_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    let mut value = serde_json::to_value(v).expect("plain structs serialize");
    if let serde_json::Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}
