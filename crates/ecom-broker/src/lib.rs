//! An in-process broker with Pub/Sub's delivery contract: at least once.
//!
//! One subscription per topic. A pulled message is leased until its ack
//! deadline; if it is not acknowledged by then it is delivered again. From a
//! seed it also injects what a real broker does on a bad day: extra
//! deliveries of one message id, acknowledgements that get lost (so the
//! message comes back after the deadline), and out-of-order delivery. It is
//! the default source of `demo` and `run`, and the deterministic source of
//! tests: it is part of the product, so it is small and honest rather than a
//! mock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecom_core::workload::Rng;
use ecom_core::{RawMessage, Topic};
use ecom_ingest::{Acker, Delivery};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub ack_deadline: Duration,
    pub seed: u64,
    /// Probability that a pull also leaves a copy of the message behind (a
    /// second delivery of the same message id).
    pub duplicate_ratio: f64,
    /// Probability that an ack is lost (the message is redelivered after
    /// its deadline).
    pub lost_ack_ratio: f64,
    /// Deliver in random order instead of publish order.
    pub reorder: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            ack_deadline: Duration::from_secs(10),
            seed: 0,
            duplicate_ratio: 0.0,
            lost_ack_ratio: 0.0,
            reorder: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub published: u64,
    pub delivered: u64,
    /// Deliveries after the first of a message id.
    pub redelivered: u64,
    pub acked: u64,
    pub lost_acks: u64,
    pub nacked: u64,
    pub expired: u64,
}

/// A message waiting in a subscription, and whether it was delivered
/// before (kept with the message rather than in a set of every id ever
/// delivered, which would grow with the backlog).
struct Waiting {
    message: RawMessage,
    delivered_before: bool,
}

#[derive(Default)]
struct Subscription {
    /// A queue: pulled from the front in publish order (a `Vec` would shift
    /// the whole backlog on every pull).
    ready: VecDeque<Waiting>,
    leased: HashMap<u64, (RawMessage, Instant)>,
}

/// Messages not published yet, produced on demand: like a real server's
/// backlog, they take no memory in this process until they are pulled.
pub type Backlog = Box<dyn Iterator<Item = (Topic, Vec<u8>)> + Send>;

struct Inner {
    rng: Rng,
    /// Distinguishes this broker's message ids from another run's, like
    /// Pub/Sub's ids are unique across publishers and time.
    incarnation: i64,
    next_id: u64,
    next_ack: u64,
    last_publish_us: i64,
    subs: BTreeMap<Topic, Subscription>,
    backlog: Option<Backlog>,
    stats: BrokerStats,
}

impl Inner {
    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> RawMessage {
        let id = self.next_id;
        self.next_id += 1;
        let publish_time_us = now_us().max(self.last_publish_us + 1);
        self.last_publish_us = publish_time_us;
        let msg = RawMessage {
            message_id: format!("emb-{:x}-{id:09}", self.incarnation),
            topic,
            publish_time_us,
            data,
            attributes: Default::default(),
        };
        self.subs
            .get_mut(&topic)
            .expect("both topics exist")
            .ready
            .push_back(Waiting {
                message: msg.clone(),
                delivered_before: false,
            });
        self.stats.published += 1;
        msg
    }

    /// Publishes from the backlog until `topic` has `want` messages ready
    /// or the backlog is exhausted. The other topic's messages met on the
    /// way wait in their subscription; the generated streams interleave
    /// the topics, so that stays small.
    fn refill(&mut self, topic: Topic, want: usize) {
        while self.subs[&topic].ready.len() < want {
            let Some((t, data)) = self.backlog.as_mut().and_then(Iterator::next) else {
                self.backlog = None;
                return;
            };
            self.publish(t, data);
        }
    }
}

/// The broker. Share it behind an `Arc`.
pub struct Broker {
    cfg: BrokerConfig,
    inner: Mutex<Inner>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Broker {
    pub fn new(cfg: BrokerConfig) -> Arc<Self> {
        Broker::with_backlog(cfg, None)
    }

    /// A broker whose subscriptions also hold `backlog`, published lazily:
    /// a pull that finds fewer messages ready than it asks for publishes
    /// from the backlog first. Memory stays bounded by what is in flight,
    /// whatever the backlog's length.
    pub fn with_backlog(cfg: BrokerConfig, backlog: Option<Backlog>) -> Arc<Self> {
        let mut subs = BTreeMap::new();
        subs.insert(Topic::Orders, Subscription::default());
        subs.insert(Topic::Payments, Subscription::default());
        Arc::new(Broker {
            inner: Mutex::new(Inner {
                rng: Rng::new(cfg.seed),
                incarnation: now_us(),
                next_id: 1,
                next_ack: 1,
                last_publish_us: 0,
                subs,
                backlog,
                stats: BrokerStats::default(),
            }),
            cfg,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("broker lock poisoned")
    }

    /// Publishes a message; returns it as stored (with its id and publish
    /// time, strictly increasing like a real broker's per-publisher clock).
    pub fn publish(&self, topic: Topic, data: Vec<u8>) -> RawMessage {
        self.lock().publish(topic, data)
    }

    /// Leases up to `max` messages of `topic`.
    pub fn pull(&self, topic: Topic, max: usize) -> Vec<(u64, RawMessage)> {
        let now = Instant::now();
        let deadline = now + self.cfg.ack_deadline;
        let g = &mut *self.lock();
        g.refill(topic, max);
        let sub = g.subs.get_mut(&topic).expect("both topics exist");
        let expired: Vec<u64> = sub
            .leased
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            let (message, _) = sub.leased.remove(&k).expect("just listed");
            sub.ready.push_back(Waiting {
                message,
                delivered_before: true,
            });
            g.stats.expired += 1;
        }
        let mut out = Vec::new();
        while out.len() < max && !sub.ready.is_empty() {
            let waiting = if self.cfg.reorder {
                let i = g.rng.below(sub.ready.len() as u64) as usize;
                sub.ready.swap_remove_back(i)
            } else {
                sub.ready.pop_front()
            };
            let Waiting {
                message: m,
                delivered_before,
            } = waiting.expect("the queue is not empty");
            if g.rng.chance(self.cfg.duplicate_ratio) {
                sub.ready.push_back(Waiting {
                    message: m.clone(),
                    delivered_before: true,
                });
            }
            if delivered_before {
                g.stats.redelivered += 1;
            }
            g.stats.delivered += 1;
            let ack = g.next_ack;
            g.next_ack += 1;
            sub.leased.insert(ack, (m.clone(), deadline));
            out.push((ack, m));
        }
        out
    }

    pub fn ack(&self, topic: Topic, ack_id: u64) {
        let g = &mut *self.lock();
        if g.rng.chance(self.cfg.lost_ack_ratio) {
            g.stats.lost_acks += 1;
            return;
        }
        if let Some(sub) = g.subs.get_mut(&topic)
            && sub.leased.remove(&ack_id).is_some()
        {
            g.stats.acked += 1;
        }
    }

    pub fn nack(&self, topic: Topic, ack_id: u64) {
        let g = &mut *self.lock();
        if let Some(sub) = g.subs.get_mut(&topic)
            && let Some((message, _)) = sub.leased.remove(&ack_id)
        {
            sub.ready.push_back(Waiting {
                message,
                delivered_before: true,
            });
            g.stats.nacked += 1;
        }
    }

    /// Nothing ready, nothing leased and no backlog left: every message
    /// was acknowledged.
    pub fn drained(&self) -> bool {
        let g = self.lock();
        g.backlog.is_none()
            && g.subs
                .values()
                .all(|s| s.ready.is_empty() && s.leased.is_empty())
    }

    pub fn stats(&self) -> BrokerStats {
        self.lock().stats
    }
}

struct BrokerAcker {
    broker: Arc<Broker>,
    topic: Topic,
    ack_id: u64,
}

impl Acker for BrokerAcker {
    fn ack(self: Box<Self>) {
        self.broker.ack(self.topic, self.ack_id);
    }
    fn nack(self: Box<Self>) {
        self.broker.nack(self.topic, self.ack_id);
    }
}

/// Pulls both subscriptions into `tx` until `cancel` (or the receiver is
/// gone). Polls every `idle_poll` when nothing is ready.
pub async fn run_source(
    broker: Arc<Broker>,
    tx: mpsc::Sender<Delivery>,
    max_pull: usize,
    idle_poll: Duration,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        let mut got = 0;
        for topic in [Topic::Orders, Topic::Payments] {
            for (ack_id, message) in broker.pull(topic, max_pull) {
                got += 1;
                let acker = Box::new(BrokerAcker {
                    broker: broker.clone(),
                    topic,
                    ack_id,
                });
                if tx.send(Delivery { message, acker }).await.is_err() {
                    return;
                }
            }
        }
        if got == 0 {
            tokio::select! {
                _ = tokio::time::sleep(idle_poll) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_message_is_redelivered_after_its_deadline() {
        let b = Broker::new(BrokerConfig {
            ack_deadline: Duration::from_millis(0),
            ..Default::default()
        });
        let m = b.publish(Topic::Orders, b"x".to_vec());
        let first = b.pull(Topic::Orders, 10);
        assert_eq!(first.len(), 1);
        let again = b.pull(Topic::Orders, 10);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.message_id, m.message_id);
        assert_eq!(b.stats().redelivered, 1);
        b.ack(Topic::Orders, again[0].0);
        assert!(b.drained());
    }

    #[test]
    fn acked_message_is_not_redelivered_and_nack_redelivers_at_once() {
        let b = Broker::new(BrokerConfig::default());
        b.publish(Topic::Payments, b"p".to_vec());
        let (ack, _) = b.pull(Topic::Payments, 1).remove(0);
        b.nack(Topic::Payments, ack);
        let (ack, _) = b.pull(Topic::Payments, 1).remove(0);
        b.ack(Topic::Payments, ack);
        assert!(b.pull(Topic::Payments, 1).is_empty());
        assert!(b.drained());
    }

    #[test]
    fn a_backlog_is_published_as_it_is_pulled() {
        let backlog = (0..10_000u32).map(|i| {
            let topic = if i % 2 == 0 {
                Topic::Orders
            } else {
                Topic::Payments
            };
            (topic, i.to_be_bytes().to_vec())
        });
        let b = Broker::with_backlog(BrokerConfig::default(), Some(Box::new(backlog)));
        assert_eq!(b.stats().published, 0, "nothing is published before a pull");
        let mut seen = Vec::new();
        while !b.drained() {
            for topic in [Topic::Orders, Topic::Payments] {
                let pulled = b.pull(topic, 100);
                // At most what was asked for plus the other topic's share.
                assert!(b.stats().published - b.stats().acked <= 300);
                for (ack, m) in pulled {
                    seen.push(u32::from_be_bytes(m.data[..].try_into().unwrap()));
                    b.ack(topic, ack);
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
        assert_eq!(b.stats().redelivered, 0);
    }

    #[test]
    fn same_seed_gives_same_delivery_order() {
        let run = || {
            let b = Broker::new(BrokerConfig {
                seed: 42,
                reorder: true,
                duplicate_ratio: 0.3,
                ..Default::default()
            });
            for i in 0..50u8 {
                b.publish(Topic::Orders, vec![i]);
            }
            b.pull(Topic::Orders, 100)
                .into_iter()
                .map(|(_, m)| m.data)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
