//! The bad-input corpus (`ecom_core::bad_input`) through the real path:
//! published to the Pub/Sub server with good orders and payments around
//! every entry, consumed by `ecom-pipeline run --source pubsub`. Each
//! entry must be quarantined with its reason, acknowledged, listed by
//! `rejected list` and counted by `status`; every good message lands; the
//! process exits cleanly. Needs PUBSUB_EMULATOR_HOST; fails instead of
//! skipping in CI or with ECOM_REQUIRE_PUBSUB=1.

use ecom_core::Topic;
use ecom_core::bad_input::{BadInput, corpus};
use ecom_pubsub::PubSubConfig;
use google_cloud_pubsub::model::Message;

use super::cli::{json, run_with};
use super::pubsub::{emulator, one_at_a_time, project};

fn good_order(order_id: i64) -> Vec<u8> {
    format!(
        r#"{{"order_id": {order_id}, "customer_id": 3, "item": "Laptop", "quantity": 2, "price": 734.2183, "shipping_address": "1 Main St", "order_status": "Shipped", "creation_date": "2024-01-21"}}"#
    )
    .into_bytes()
}

fn good_payment(order_id: i64) -> Vec<u8> {
    format!(
        r#"{{"payment_id": {}, "order_id": {order_id}, "payment_method": "PayPal", "card_last_four": "0042", "payment_status": "Completed", "payment_datetime": "2024-01-21T10:01:30Z"}}"#,
        order_id + 1000
    )
    .into_bytes()
}

/// Publishes every message, in order, and waits for every result.
fn publish(project: &str, messages: &[(Topic, Vec<u8>)]) {
    let mut cfg = PubSubConfig::new(project);
    cfg.emulator_host = std::env::var("PUBSUB_EMULATOR_HOST").ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let orders = ecom_pubsub::publisher(&cfg, Topic::Orders.name())
            .await
            .unwrap();
        let payments = ecom_pubsub::publisher(&cfg, Topic::Payments.name())
            .await
            .unwrap();
        let mut pending = Vec::new();
        for (topic, data) in messages {
            let publisher = match topic {
                Topic::Orders => &orders,
                Topic::Payments => &payments,
            };
            let fut = publisher.publish(Message::new().set_data(data.clone()));
            pending.push((data.len(), fut));
        }
        for (size, fut) in pending {
            if let Err(e) = fut.await {
                let hint = if e.to_string().contains("larger than max") {
                    "\nthe Pub/Sub emulator refuses requests over 4 MiB where production takes 10 MB: \
                     it was built before dev/pubsub-emulator raised the limit; \
                     `scripts/pubsub-emulator.sh stop && scripts/pubsub-emulator.sh start` rebuilds it"
                } else {
                    ""
                };
                panic!("publishing a {size}-byte message failed: {e}{hint}");
            }
        }
    });
}

/// Runs the corpus entries `bad` through a fresh project and checks them.
fn corpus_through_pubsub(bad: &[BadInput]) {
    let _server = one_at_a_time();
    let project = project();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log").display().to_string();
    let store = tmp.path().join("store").display().to_string();
    let common = [
        "--project",
        project.as_str(),
        "--log-dir",
        &log,
        "--store-dir",
        &store,
    ];
    let with = |extra: &[&str]| run_with(extra, &common);
    assert!(with(&["setup", "pubsub"]).status.success());

    // A good order before each bad message and its payment after it.
    let mut messages = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        let id = 100 + i as i64;
        messages.push((Topic::Orders, good_order(id)));
        messages.push((b.topic, b.data.clone()));
        messages.push((Topic::Payments, good_payment(id)));
    }
    publish(&project, &messages);

    let out = with(&["run", "--source", "pubsub", "--stop-after-idle", "3s"]);
    assert!(out.status.success(), "run exits cleanly on bad input");

    let status = json(&with(&["status", "--json", "--count-rows"]));
    let n = bad.len() as u64;
    assert_eq!(
        status["rejected"], n,
        "every bad message quarantined: {status}"
    );
    assert_eq!(
        status["log_entries"],
        2 * n,
        "every good message in the log: {status}"
    );
    assert_eq!(status["orders_in_store"], n, "{status}");
    assert_eq!(status["payments_joined"], n, "{status}");
    assert_eq!(status["parked_payments"], 0, "{status}");
    assert_eq!(status["lag"], 0, "{status}");
    assert!(with(&["verify"]).status.success());

    // What the run itself counted: everything acknowledged, nothing nacked.
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("log/status.json")).unwrap())
            .unwrap();
    let ingest = &last["ingest"];
    assert_eq!(ingest["rejected"], n, "{ingest}");
    assert_eq!(ingest["nacked"], 0, "{ingest}");
    assert_eq!(ingest["acked"], ingest["delivered"], "{ingest}");

    // `rejected list` shows each with its reason and its bytes.
    let listed = json(&with(&["rejected", "list", "--json"]));
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), bad.len());
    let mut missing = Vec::new();
    for b in bad {
        let data = String::from_utf8_lossy(&b.data);
        let found = listed
            .iter()
            .find(|q| q["topic"] == b.topic.name() && q["data"].as_str() == Some(data.as_ref()));
        match found {
            None => missing.push(format!("{}: not listed", b.name)),
            Some(q) if !q["reason"].as_str().unwrap_or("").contains(&b.reason) => missing.push(
                format!("{}: reason {} lacks {:?}", b.name, q["reason"], b.reason),
            ),
            Some(_) => {}
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let human = with(&["rejected", "list"]);
    assert!(human.status.success());
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(&format!("{n} rejected messages")),
        "the human listing counts them"
    );
}

/// Every corpus entry but the 5 MiB one (see below) in one run.
#[test]
fn malformed_messages_are_quarantined_acknowledged_and_listed_while_good_ones_land() {
    if emulator().is_none() {
        return;
    }
    let bad: Vec<BadInput> = corpus()
        .into_iter()
        .filter(|b| b.data.len() < ecom_core::bad_input::LARGE_PAYLOAD_BYTES)
        .collect();
    assert!(bad.len() >= 30);
    corpus_through_pubsub(&bad);
}

/// The 5 MiB payload alone: Pub/Sub takes messages up to 10 MB, the Rust
/// subscriber decodes responses of any size, and the log stores it in
/// quarantine like any other.
#[test]
fn a_five_mib_malformed_message_is_quarantined_too() {
    if emulator().is_none() {
        return;
    }
    let big: Vec<BadInput> = corpus()
        .into_iter()
        .filter(|b| b.data.len() >= ecom_core::bad_input::LARGE_PAYLOAD_BYTES)
        .collect();
    assert_eq!(big.len(), 1);
    corpus_through_pubsub(&big);
}
