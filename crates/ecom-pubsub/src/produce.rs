//! Seeded producers shaped like today's: orders with `order_id`, payments
//! with `payment_id = order_id + 1000`, JSON without null optional fields,
//! no attributes.

use std::time::{Duration, Instant};

use ecom_core::workload::{Rng, random_order, random_payment};
use ecom_core::{Progress, ProgressFn, Topic};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use serde::Serialize;

use crate::{PubSubConfig, PubSubError, json_value, publisher};

/// Publishes in flight at most, so a large `count` does not buffer everything.
const MAX_IN_FLIGHT: usize = 10_000;

/// Which topics [`produce`] publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProduceKind {
    Orders,
    Payments,
    Both,
}

/// What to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSpec {
    pub kind: ProduceKind,
    /// Ids to publish (an order and/or a payment per id).
    pub count: u64,
    /// Messages per second at most; `None`: as fast as the publisher goes.
    pub rate_per_s: Option<f64>,
    /// Share of messages re-published with identical content (a business
    /// duplicate: same content, new message id).
    pub duplicate_ratio: f64,
    /// The first order id (default 1).
    pub first_id: i64,
    /// Cycle ids through `first_id..first_id + n` like today's order
    /// producer (1..=80); the repeats carry new content (conflicts).
    pub id_cycle: Option<u64>,
    /// `Both`: share of payments published before their order.
    pub payments_first_ratio: f64,
    /// Payments for ids that never get an order (far above the others).
    pub orphan_payments: u64,
    pub seed: u64,
}

impl Default for ProduceSpec {
    fn default() -> Self {
        ProduceSpec {
            kind: ProduceKind::Both,
            count: 100,
            rate_per_s: None,
            duplicate_ratio: 0.0,
            first_id: 1,
            id_cycle: None,
            payments_first_ratio: 0.0,
            orphan_payments: 0,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProduceReport {
    pub published: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    pub messages_per_s: f64,
}

/// The messages of a spec, in publish order (what [`produce`] publishes;
/// `bench` appends the same messages to a log directly).
pub fn plan(spec: &ProduceSpec) -> Vec<(Topic, Vec<u8>)> {
    let mut rng = Rng::new(spec.seed);
    let mut out = Vec::new();
    let enc = |v: serde_json::Value| serde_json::to_vec(&v).expect("a JSON value serializes");
    let push = |out: &mut Vec<(Topic, Vec<u8>)>, rng: &mut Rng, topic, data: Vec<u8>| {
        let dup = rng.chance(spec.duplicate_ratio);
        out.push((topic, data.clone()));
        if dup {
            out.push((topic, data));
        }
    };
    let mut max_id = spec.first_id;
    for i in 0..spec.count {
        let offset = match spec.id_cycle {
            Some(c) if c > 0 => i % c,
            _ => i,
        };
        let id = spec.first_id + offset as i64;
        max_id = max_id.max(id);
        let order = matches!(spec.kind, ProduceKind::Orders | ProduceKind::Both)
            .then(|| enc(json_value(&random_order(&mut rng, id))));
        let payment = matches!(spec.kind, ProduceKind::Payments | ProduceKind::Both)
            .then(|| enc(json_value(&random_payment(&mut rng, id))));
        let payment_first = rng.chance(spec.payments_first_ratio);
        match (order, payment) {
            (Some(o), Some(p)) if payment_first => {
                push(&mut out, &mut rng, Topic::Payments, p);
                push(&mut out, &mut rng, Topic::Orders, o);
            }
            (o, p) => {
                if let Some(o) = o {
                    push(&mut out, &mut rng, Topic::Orders, o);
                }
                if let Some(p) = p {
                    push(&mut out, &mut rng, Topic::Payments, p);
                }
            }
        }
    }
    let base = max_id + 1_000_000;
    for i in 0..spec.orphan_payments as i64 {
        let p = enc(json_value(&random_payment(&mut rng, base + i)));
        push(&mut out, &mut rng, Topic::Payments, p);
    }
    out
}

/// Publishes `spec` and waits for every publish result. A failed publish
/// (after the publisher's retries, up to `publish_timeout`) is counted, not
/// fatal; if nothing could be published at all, the first error is returned.
pub async fn produce(cfg: &PubSubConfig, spec: &ProduceSpec) -> Result<ProduceReport, PubSubError> {
    produce_with_progress(cfg, spec, &ecom_core::progress::ignore).await
}

/// [`produce`], telling `progress` how many messages have a publish result
/// (`"messages published"`, failed ones included), every few hundred.
pub async fn produce_with_progress(
    cfg: &PubSubConfig,
    spec: &ProduceSpec,
    progress: ProgressFn<'_>,
) -> Result<ProduceReport, PubSubError> {
    cfg.validate()?;
    let orders = publisher(cfg, Topic::Orders.name()).await?;
    let payments = publisher(cfg, Topic::Payments.name()).await?;
    let pick = |t: Topic| -> &Publisher {
        match t {
            Topic::Orders => &orders,
            Topic::Payments => &payments,
        }
    };
    let messages = plan(spec);
    let total = messages.len() as u64;
    let report = |done: u64| {
        progress(Progress {
            what: "messages published",
            done,
            total: Some(total),
        })
    };
    tracing::info!(messages = messages.len(), endpoint = %cfg.describe_endpoint(), "publishing");

    let start = Instant::now();
    let interval = spec
        .rate_per_s
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut in_flight = FuturesUnordered::new();
    let (mut published, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    let mut settle = |r: Result<String, _>, topic: Topic| {
        match r {
            Ok(_) => published += 1,
            Err(e) => {
                failed += 1;
                if first_error.is_none() {
                    tracing::warn!(topic = topic.name(), error = %e, "publish failed");
                    first_error = Some(PubSubError::from_publish(&cfg.topic_path(topic.name()), e));
                }
            }
        }
        let settled = published + failed;
        if settled % 256 == 0 || settled == total {
            report(settled);
        }
    };
    for (i, (topic, data)) in messages.into_iter().enumerate() {
        if let Some(every) = interval {
            tokio::time::sleep_until((start + every * i as u32).into()).await;
        }
        let fut = pick(topic).publish(Message::new().set_data(data));
        in_flight.push(async move { (fut.await, topic) });
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((r, t)) = in_flight.next().await {
                settle(r, t);
            }
        }
    }
    while let Some((r, t)) = in_flight.next().await {
        settle(r, t);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    if published == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    Ok(ProduceReport {
        published,
        failed,
        elapsed_s,
        messages_per_s: if elapsed_s > 0.0 {
            published as f64 / elapsed_s
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_pairs_payments_with_orders_and_cycles_ids() {
        let spec = ProduceSpec {
            count: 10,
            id_cycle: Some(4),
            orphan_payments: 2,
            ..ProduceSpec::default()
        };
        let msgs = plan(&spec);
        assert_eq!(msgs.len(), 22);
        let ids: Vec<i64> = msgs
            .iter()
            .filter(|(t, _)| *t == Topic::Orders)
            .map(|(_, d)| {
                serde_json::from_slice::<serde_json::Value>(d).unwrap()["order_id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 1, 2, 3, 4, 1, 2]);
        let p: serde_json::Value = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(p["payment_id"], 1001);
        assert!(
            p.get("event_id").is_none(),
            "null optional fields are left out"
        );
    }
}
