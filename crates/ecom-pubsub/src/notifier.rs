//! Publishes the projector's notifications: parked payments to
//! `dlq_payments_data`, losing versions to `duplicate_orders`.
//!
//! Message data: the content's JSON (as the producer sent it) plus
//! `message_id`, `publish_time_us` (provenance of the version) and `kind`
//! (`order` or `payment`). Attributes: `order_id`, `payment_id` (payments
//! only), `fingerprint` (16 hex digits) and `kind`.

use std::collections::HashMap;

use ecom_core::Notification;
use ecom_core::{Entry, Provenance};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use google_cloud_pubsub::model::Message;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{CONFLICT_TOPIC, DLQ_TOPIC, PubSubConfig, PubSubError, json_value, publisher};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    pub published: u64,
    pub failed: u64,
}

/// The topic and message a notification is published as.
pub fn notification_message(n: &Notification) -> (&'static str, Message) {
    let (topic, kind, mut value, provenance, fingerprint, order_id, payment_id) = match n {
        Notification::Parked(p) => (
            DLQ_TOPIC,
            "payment",
            json_value(&p.content),
            &p.provenance,
            p.fingerprint,
            p.content.order_id,
            Some(p.content.payment_id),
        ),
        Notification::Conflict(e) => {
            let (value, payment_id) = match e {
                Entry::Order(o) => (json_value(&o.content), None),
                Entry::Payment(p) => (json_value(&p.content), Some(p.content.payment_id)),
            };
            (
                CONFLICT_TOPIC,
                e.kind().as_str(),
                value,
                e.provenance(),
                e.fingerprint(),
                e.order_id(),
                payment_id,
            )
        }
    };
    let Provenance {
        message_id,
        publish_time_us,
    } = provenance;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("message_id".into(), message_id.clone().into());
        map.insert("publish_time_us".into(), (*publish_time_us).into());
        map.insert("kind".into(), kind.into());
    }
    let mut attributes = HashMap::from([
        ("order_id".to_string(), order_id.to_string()),
        ("fingerprint".to_string(), fingerprint.to_string()),
        ("kind".to_string(), kind.to_string()),
    ]);
    if let Some(p) = payment_id {
        attributes.insert("payment_id".to_string(), p.to_string());
    }
    let data = serde_json::to_vec(&value).expect("a JSON value serializes");
    (
        topic,
        Message::new().set_data(data).set_attributes(attributes),
    )
}

/// Publishes notifications until `rx` closes or `cancel` fires; on cancel it
/// publishes what is already queued, then waits for every publish result.
/// A failed publish (after retries up to `publish_timeout`) is logged and
/// counted; the store keeps the row either way (`dlq_payments`,
/// `duplicate_orders`), so the topic is a notification, not the record.
pub async fn run_notifier(
    cfg: &PubSubConfig,
    mut rx: mpsc::UnboundedReceiver<Notification>,
    cancel: CancellationToken,
) -> Result<NotifierStats, PubSubError> {
    cfg.validate()?;
    let dlq = publisher(cfg, DLQ_TOPIC).await?;
    let conflicts = publisher(cfg, CONFLICT_TOPIC).await?;
    let mut stats = NotifierStats::default();
    let mut in_flight = FuturesUnordered::new();
    let publish = |n: Notification| {
        let (topic, msg) = notification_message(&n);
        let fut = if topic == DLQ_TOPIC {
            dlq.publish(msg)
        } else {
            conflicts.publish(msg)
        };
        async move { (topic, fut.await) }
    };
    let count = |stats: &mut NotifierStats, topic: &str, r: Result<String, _>| match r {
        Ok(_) => stats.published += 1,
        Err(e) => {
            stats.failed += 1;
            let e = PubSubError::from_publish(&cfg.topic_path(topic), e);
            tracing::warn!(topic, error = %e, "notification not published");
        }
    };
    loop {
        tokio::select! {
            biased;
            Some((topic, r)) = in_flight.next(), if !in_flight.is_empty() => count(&mut stats, topic, r),
            n = rx.recv() => match n {
                Some(n) => in_flight.push(publish(n)),
                None => break,
            },
            _ = cancel.cancelled() => {
                while let Ok(n) = rx.try_recv() {
                    in_flight.push(publish(n));
                }
                break;
            }
        }
    }
    while let Some((topic, r)) = in_flight.next().await {
        count(&mut stats, topic, r);
    }
    tracing::info!(
        published = stats.published,
        failed = stats.failed,
        "notifier stopped"
    );
    Ok(stats)
}
