use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ecom_pubsub::PubSubConfig;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;

/// A config with a project of its own, or `None` (skip) without an emulator.
pub fn config(test: &str) -> Option<PubSubConfig> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ecom_pubsub=info".into()),
        )
        .try_init();
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    if host.is_none() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var("ECOM_REQUIRE_PUBSUB").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "PUBSUB_EMULATOR_HOST is not set but CI or ECOM_REQUIRE_PUBSUB=1 requires the Pub/Sub tests: \
             run `scripts/pubsub-emulator.sh start` and `eval \"$(scripts/pubsub-emulator.sh env)\"`"
        );
        eprintln!(
            "skipping {test}: PUBSUB_EMULATOR_HOST is not set (scripts/pubsub-emulator.sh start)"
        );
        return None;
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut cfg = PubSubConfig::new(format!("test-{}-{n}-{test}", std::process::id()));
    cfg.emulator_host = host;
    Some(cfg)
}

pub async fn subscriber(cfg: &PubSubConfig) -> Subscriber {
    Subscriber::builder()
        .with_endpoint(cfg.emulator_endpoint().unwrap())
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap()
}

/// Creates a subscription `name` on `topic` (a test's own reader).
pub async fn subscribe_topic(cfg: &PubSubConfig, name: &str, topic: &str) -> String {
    let admin = SubscriptionAdmin::builder()
        .with_endpoint(cfg.emulator_endpoint().unwrap())
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap();
    let sub = cfg.subscription_path(name);
    admin
        .create_subscription()
        .set_name(&sub)
        .set_topic(cfg.topic_path(topic))
        .send()
        .await
        .unwrap();
    sub
}

/// Pulls `n` messages from `subscription`, acking them, within `within`.
pub async fn pull(
    cfg: &PubSubConfig,
    subscription: &str,
    n: usize,
    within: Duration,
) -> Vec<Message> {
    let subscriber = subscriber(cfg).await;
    let mut stream = subscriber.subscribe(subscription).build();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages within {within:?}", out.len()));
        let (m, h): (Message, Handler) = next.expect("stream open").expect("pull works");
        h.ack();
        out.push(m);
    }
    stream.shutdown_token().shutdown().await;
    out
}
