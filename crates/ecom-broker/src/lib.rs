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
//!
//! Time normally is the wall clock. With [`BrokerConfig::manual_clock`] it
//! stands still until [`Broker::advance_clock`] moves it, and message ids
//! derive from the seed: the same calls then give the same deliveries, ids
//! and redeliveries, whatever the machine's speed. The simulation tests
//! (`proptests/tests/simulation.rs`) run on that.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecom_core::workload::Rng;
use ecom_core::{Acker, Delivery};
use ecom_core::{RawMessage, Topic};
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
    /// Time stands still unless [`Broker::advance_clock`] moves it: ack
    /// deadlines pass and publish times advance only when the caller says
    /// so, and message ids come from the seed instead of the wall clock.
    /// For deterministic simulations; `false` (the wall clock) everywhere
    /// else.
    pub manual_clock: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            ack_deadline: Duration::from_secs(10),
            seed: 0,
            duplicate_ratio: 0.0,
            lost_ack_ratio: 0.0,
            reorder: false,
            manual_clock: false,
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
    /// Ack id -> the message and its deadline (broker time, see
    /// [`Broker::now`]).
    leased: HashMap<u64, (RawMessage, Duration)>,
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
    /// The manual clock's time since the broker was created.
    manual_now: Duration,
    subs: BTreeMap<Topic, Subscription>,
    backlog: Option<Backlog>,
    stats: BrokerStats,
}

impl Inner {
    /// Publishes with the next publish time of this publisher's clock.
    fn publish(&mut self, topic: Topic, data: Vec<u8>, clock_us: i64) -> RawMessage {
        let publish_time_us = clock_us.max(self.last_publish_us + 1);
        self.last_publish_us = publish_time_us;
        self.publish_at(topic, data, publish_time_us)
    }

    fn publish_at(&mut self, topic: Topic, data: Vec<u8>, publish_time_us: i64) -> RawMessage {
        let id = self.next_id;
        self.next_id += 1;
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
    fn refill(&mut self, topic: Topic, want: usize, clock_us: i64) {
        while self.subs[&topic].ready.len() < want {
            let Some((t, data)) = self.backlog.as_mut().and_then(Iterator::next) else {
                self.backlog = None;
                return;
            };
            self.publish(t, data, clock_us);
        }
    }
}

/// The broker. Share it behind an `Arc`.
pub struct Broker {
    cfg: BrokerConfig,
    /// When the broker was created: the origin of broker time.
    started: Instant,
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
                incarnation: if cfg.manual_clock {
                    cfg.seed as i64
                } else {
                    now_us()
                },
                next_id: 1,
                next_ack: 1,
                last_publish_us: 0,
                manual_now: Duration::ZERO,
                subs,
                backlog,
                stats: BrokerStats::default(),
            }),
            started: Instant::now(),
            cfg,
        })
    }

    /// Broker time: since creation, by the wall clock or the manual one.
    fn now(&self, g: &Inner) -> Duration {
        if self.cfg.manual_clock {
            g.manual_now
        } else {
            self.started.elapsed()
        }
    }

    /// The clock publish times come from, in µs.
    fn clock_us(&self, g: &Inner) -> i64 {
        if self.cfg.manual_clock {
            g.manual_now.as_micros() as i64
        } else {
            now_us()
        }
    }

    /// Moves the manual clock forward (see [`BrokerConfig::manual_clock`]):
    /// leases whose deadline it passes are redelivered by the next pull.
    ///
    /// # Panics
    ///
    /// On a broker on the wall clock, where time is not the caller's.
    pub fn advance_clock(&self, by: Duration) {
        assert!(
            self.cfg.manual_clock,
            "advance_clock needs BrokerConfig::manual_clock"
        );
        self.lock().manual_now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("broker lock poisoned")
    }

    /// Publishes a message; returns it as stored (with its id and publish
    /// time, strictly increasing like a real broker's per-publisher clock).
    pub fn publish(&self, topic: Topic, data: Vec<u8>) -> RawMessage {
        let g = &mut *self.lock();
        let clock_us = self.clock_us(g);
        g.publish(topic, data, clock_us)
    }

    /// Publishes a message with the publish time `publish_time_us`, as
    /// stamped by another publisher's clock: several messages may share one
    /// (ties are then broken by message id), and it may be earlier than
    /// messages already published.
    pub fn publish_at(&self, topic: Topic, data: Vec<u8>, publish_time_us: i64) -> RawMessage {
        self.lock().publish_at(topic, data, publish_time_us)
    }

    /// Leases up to `max` messages of `topic`.
    pub fn pull(&self, topic: Topic, max: usize) -> Vec<(u64, RawMessage)> {
        let g = &mut *self.lock();
        let now = self.now(g);
        let deadline = now + self.cfg.ack_deadline;
        let clock_us = self.clock_us(g);
        g.refill(topic, max, clock_us);
        let sub = g.subs.get_mut(&topic).expect("both topics exist");
        let mut expired: Vec<u64> = sub
            .leased
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        // In lease order: a `HashMap`'s iteration order differs from run to
        // run, and would make a seed's redeliveries differ too.
        expired.sort_unstable();
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

impl Broker {
    /// Leases up to `max` messages of `topic` as deliveries whose ackers
    /// settle them with this broker.
    pub fn pull_deliveries(self: &Arc<Self>, topic: Topic, max: usize) -> Vec<Delivery> {
        self.pull(topic, max)
            .into_iter()
            .map(|(ack_id, message)| Delivery {
                message,
                acker: Box::new(BrokerAcker {
                    broker: self.clone(),
                    topic,
                    ack_id,
                }),
            })
            .collect()
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
            for delivery in broker.pull_deliveries(topic, max_pull) {
                got += 1;
                if tx.send(delivery).await.is_err() {
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
    fn on_a_manual_clock_leases_expire_only_when_the_clock_is_advanced() {
        let run = || {
            let b = Broker::new(BrokerConfig {
                ack_deadline: Duration::from_secs(10),
                seed: 9,
                manual_clock: true,
                ..Default::default()
            });
            let m = b.publish(Topic::Orders, b"x".to_vec());
            let tie = b.publish_at(Topic::Orders, b"y".to_vec(), m.publish_time_us);
            assert_eq!(tie.publish_time_us, m.publish_time_us);
            assert_eq!(b.pull(Topic::Orders, 10).len(), 2);
            assert!(b.pull(Topic::Orders, 10).is_empty(), "time stands still");
            b.advance_clock(Duration::from_secs(9));
            assert!(b.pull(Topic::Orders, 10).is_empty(), "deadline not passed");
            b.advance_clock(Duration::from_secs(1));
            let again = b.pull(Topic::Orders, 10);
            assert_eq!(again.len(), 2);
            assert_eq!(b.stats().redelivered, 2);
            again
                .into_iter()
                .map(|(_, m)| (m.message_id, m.publish_time_us))
                .collect::<Vec<_>>()
        };
        // Message ids and publish times come from the seed and the manual
        // clock, not from the wall clock.
        assert_eq!(run(), run());
    }

    #[test]
    fn expired_leases_come_back_in_lease_order() {
        let b = Broker::new(BrokerConfig {
            manual_clock: true,
            ..Default::default()
        });
        for i in 0..100u8 {
            b.publish(Topic::Orders, vec![i]);
        }
        let first: Vec<_> = b
            .pull(Topic::Orders, 100)
            .into_iter()
            .map(|(_, m)| m.data)
            .collect();
        b.advance_clock(BrokerConfig::default().ack_deadline);
        let again: Vec<_> = b
            .pull(Topic::Orders, 100)
            .into_iter()
            .map(|(_, m)| m.data)
            .collect();
        assert_eq!(first, again);
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
