//! The workloads every stage measures with, and how a log is filled with
//! them without a broker in the way.

use std::path::Path;

use ecom_core::workload::{WorkloadSpec, generate};
use ecom_core::{Event, FactRow, Order, RawMessage, Topic, Versioned, decode};
use ecom_log::{Log, LogOptions};
use ecom_pubsub::{ProduceKind, ProduceSpec, plan};

use crate::BenchError;

/// What the messages look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `demo`'s workload: distinct order ids with payments (a fifth of them
    /// before their order), 2 % business duplicates, 2 % conflicting
    /// versions, orphan payments and invalid messages.
    UniqueOrders,
    /// Today's producers: order ids 1..80 reused (every repeat a new
    /// version), payments for ids 1..500 (most never get an order).
    TodaysShape,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::UniqueOrders, Workload::TodaysShape];

    pub fn name(self) -> &'static str {
        match self {
            Workload::UniqueOrders => "unique orders",
            Workload::TodaysShape => "today's shape (ids 1..80, payments 1..500)",
        }
    }

    /// About `n` messages, in publish order.
    pub fn messages(self, n: u64) -> Vec<(Topic, Vec<u8>)> {
        match self {
            // The demo workload has about 1.97 messages per order.
            Workload::UniqueOrders => generate(&WorkloadSpec::demo((n / 2).max(1), 7))
                .into_iter()
                .map(|p| (p.topic, p.data))
                .collect(),
            Workload::TodaysShape => {
                let mut m = plan(&ProduceSpec {
                    kind: ProduceKind::Orders,
                    count: n.saturating_sub(500).max(1),
                    id_cycle: Some(80),
                    seed: 3,
                    ..ProduceSpec::default()
                });
                m.extend(plan(&ProduceSpec {
                    kind: ProduceKind::Payments,
                    count: 500,
                    seed: 4,
                    ..ProduceSpec::default()
                }));
                m
            }
        }
    }
}

/// `data` as the broker would deliver it: a message id unique within the
/// bench and publish times in order.
pub(crate) fn raw(i: usize, topic: Topic, data: Vec<u8>) -> RawMessage {
    RawMessage {
        message_id: format!("bench-{i:09}"),
        topic,
        publish_time_us: 1_700_000_000_000_000 + i as i64,
        data,
        attributes: Default::default(),
    }
}

/// A log in `dir` holding `messages` (invalid ones quarantined, as ingest
/// would), appended 1000 at a time.
pub(crate) async fn fill_log(dir: &Path, messages: &[(Topic, Vec<u8>)]) -> Result<Log, BenchError> {
    let log = Log::open(dir, LogOptions::default())?;
    for (c, chunk) in messages.chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, (t, d))| ecom_ingest::classify(raw(c * 1000 + i, *t, d.clone())))
            .collect();
        log.append(batch).await?;
    }
    Ok(log)
}

/// One `orders_payments_facts` row per valid message, keyed like the
/// message's order: the rows a pipeline without dedup, join or conflict
/// rule would write (the write ceiling's data).
pub(crate) fn rows_per_message(messages: &[(Topic, Vec<u8>)]) -> Vec<FactRow> {
    messages
        .iter()
        .enumerate()
        .filter_map(|(i, (t, d))| decode(&raw(i, *t, d.clone())).ok())
        .map(|event| match event {
            Event::Order(order) => FactRow {
                order,
                payment: None,
            },
            Event::Payment(p) => FactRow {
                order: Versioned::new(
                    Order {
                        order_id: p.content.order_id,
                        customer_id: 0,
                        item: String::new(),
                        quantity: 0,
                        price: 0.0,
                        shipping_address: String::new(),
                        order_status: String::new(),
                        creation_date: String::new(),
                        event_id: None,
                        version: None,
                    },
                    p.provenance.clone(),
                ),
                payment: Some(p),
            },
        })
        .collect()
}
