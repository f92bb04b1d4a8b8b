use std::time::Duration;

use ecom_core::Notification;
use ecom_core::workload::{Rng, random_order, random_payment};
use ecom_core::{Content, Entry, Provenance, Versioned};
use ecom_pubsub::{ProduceKind, ProduceSpec, produce, run_notifier, setup};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::util::{config, pull, subscribe_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_reports_published_counts_and_notifier_publishes_with_attributes() {
    let Some(cfg) = config("notifier") else {
        return;
    };
    setup(&cfg).await.unwrap();

    let spec = ProduceSpec {
        kind: ProduceKind::Both,
        count: 10,
        duplicate_ratio: 0.0,
        orphan_payments: 2,
        seed: 5,
        ..ProduceSpec::default()
    };
    let report = produce(&cfg, &spec).await.unwrap();
    assert_eq!((report.published, report.failed), (22, 0), "{report:?}");
    let orders = pull(
        &cfg,
        &cfg.subscription_path("orders_data-sub"),
        10,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        orders
            .iter()
            .all(|m| serde_json::from_slice::<ecom_core::Order>(&m.data).is_ok())
    );

    let dlq = subscribe_topic(&cfg, "test-dlq-reader", "dlq_payments_data").await;
    let conflicts = subscribe_topic(&cfg, "test-conflict-reader", "duplicate_orders").await;
    let mut rng = Rng::new(9);
    let prov = |id: &str| Provenance {
        message_id: id.to_string(),
        publish_time_us: 1_700_000_000_000_000,
    };
    let payment = random_payment(&mut rng, 77);
    let order = random_order(&mut rng, 78);
    let (payment_fp, order_fp) = (payment.fingerprint(), order.fingerprint());

    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Notification::Parked(Versioned::new(
        payment,
        prov("m-parked"),
    )))
    .unwrap();
    tx.send(Notification::Conflict(Entry::Order(Versioned::new(
        order,
        prov("m-lost"),
    ))))
    .unwrap();
    let cancel = CancellationToken::new();
    let notifier = tokio::spawn({
        let (cfg, cancel) = (cfg.clone(), cancel.clone());
        async move { run_notifier(&cfg, rx, cancel).await }
    });
    // Cancel drains what is queued and flushes.
    cancel.cancel();
    let stats = notifier.await.unwrap().unwrap();
    assert_eq!((stats.published, stats.failed), (2, 0));
    drop(tx);

    let m = pull(&cfg, &dlq, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(m.attributes["order_id"], "77");
    assert_eq!(m.attributes["payment_id"], "1077");
    assert_eq!(m.attributes["fingerprint"], payment_fp.to_string());
    let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
    assert_eq!(v["message_id"], "m-parked");
    assert_eq!(v["publish_time_us"], 1_700_000_000_000_000i64);
    assert_eq!(v["kind"], "payment");
    assert_eq!(v["payment_id"], 1077);

    let m = pull(&cfg, &conflicts, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(m.attributes["order_id"], "78");
    assert!(!m.attributes.contains_key("payment_id"));
    assert_eq!(m.attributes["fingerprint"], order_fp.to_string());
    let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["message_id"].as_str()),
        (Some("order"), Some("m-lost"))
    );
    assert_eq!(v["order_id"], 78);
}
