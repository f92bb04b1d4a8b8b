//! The behaviour suite: model-based property tests written against the
//! [`FactStore`] trait, so the same properties run against every store
//! (`tests/embedded.rs` for sled, `tests/cassandra.rs` for Cassandra).
//!
//! Generated streams use a tiny key space on purpose (a handful of order ids,
//! few distinct field values, colliding publish times) so that business
//! duplicates, conflicting versions, ties, payments before orders and
//! orphan payments all occur in most cases.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ecom_core::{
    Entry, FactRow, FinalState, Fingerprint, Kind, Model, OrderVersion, PaymentVersion, Provenance,
    RawMessage, Topic, decode,
};
use ecom_ingest::classify;
use ecom_log::{Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions, replay};
use ecom_store::{Cas, FactStore, Parked, Result, StoreCounts, StoreError, snapshot};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

/// A message as a producer published it (before any redelivery).
#[derive(Debug, Clone)]
pub struct Published(pub RawMessage);

fn order_json(
    order_id: i64,
    status: usize,
    qty: i64,
    version: Option<i64>,
    event_id: Option<u8>,
) -> Vec<u8> {
    let mut v = serde_json::json!({
        "order_id": order_id, "customer_id": 7, "item": "Book", "quantity": qty,
        "price": 734.2183, "shipping_address": "1 Main St",
        "order_status": (["Shipped", "Pending", "Delivered"][status]), "creation_date": "2024-01-21",
    });
    if let Some(ver) = version {
        v["version"] = ver.into();
    }
    if let Some(e) = event_id {
        v["event_id"] = format!("ev-{order_id}-{e}").into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn payment_json(order_id: i64, method: usize, version: Option<i64>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "payment_id": order_id + 1000, "order_id": order_id,
        "payment_method": (["PayPal", "Apple Pay"][method]), "card_last_four": "0042",
        "payment_status": "Completed", "payment_datetime": "2024-01-21T25:01:30Z",
    });
    if let Some(ver) = version {
        v["version"] = ver.into();
    }
    serde_json::to_vec(&v).unwrap()
}

/// One published message's content, before ids are assigned.
#[derive(Debug, Clone)]
enum Gen {
    Order {
        id: i64,
        status: usize,
        qty: i64,
        version: Option<i64>,
        event_id: Option<u8>,
    },
    Payment {
        id: i64,
        method: usize,
        version: Option<i64>,
    },
    Garbage,
}

fn gen_message() -> impl Strategy<Value = (Gen, i64)> {
    let order = (
        1i64..=4,
        0usize..3,
        1i64..=2,
        prop::option::weighted(0.2, 0i64..3),
        prop::option::weighted(0.1, 0u8..2),
    )
        .prop_map(|(id, status, qty, version, event_id)| Gen::Order {
            id,
            status,
            qty,
            version,
            event_id,
        });
    // Order id 5 never gets an order: its payments stay parked.
    let payment = (1i64..=5, 0usize..2, prop::option::weighted(0.2, 0i64..3)).prop_map(
        |(id, method, version)| Gen::Payment {
            id,
            method,
            version,
        },
    );
    let message = prop_oneof![5 => order, 5 => payment, 1 => Just(Gen::Garbage)];
    (message, 0i64..6)
}

/// A set of published messages: unique message ids, colliding publish times.
pub fn published(max: usize) -> impl Strategy<Value = Vec<Published>> {
    prop::collection::vec(gen_message(), 1..max).prop_map(|gens| {
        gens.into_iter()
            .enumerate()
            .map(|(i, (g, t))| {
                let (topic, data) = match g {
                    Gen::Order {
                        id,
                        status,
                        qty,
                        version,
                        event_id,
                    } => (
                        Topic::Orders,
                        order_json(id, status, qty, version, event_id),
                    ),
                    Gen::Payment {
                        id,
                        method,
                        version,
                    } => (Topic::Payments, payment_json(id, method, version)),
                    Gen::Garbage => (Topic::Orders, b"{\"order_id\": 1".to_vec()),
                };
                Published(RawMessage {
                    message_id: format!("msg-{i:04}"),
                    topic,
                    publish_time_us: t,
                    data,
                    attributes: Default::default(),
                })
            })
            .collect()
    })
}

/// How a set of published messages reaches the pipeline: at least once, in
/// any order, split across instances.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Per instance, batches of messages in delivery order.
    pub instances: Vec<Vec<Vec<RawMessage>>>,
}

/// Delivers every message at least once (some twice, to the same or another
/// instance), shuffled, in random batches across `1..=max_instances`.
pub fn delivery(msgs: Vec<Published>, max_instances: usize) -> impl Strategy<Value = Delivery> {
    let n = msgs.len();
    (
        1..=max_instances,
        prop::collection::vec((0usize..3, 0usize..8, 0usize..3), n),
        Just(msgs),
        any::<u64>(),
    )
        .prop_map(|(k, choices, msgs, seed)| {
            let mut copies: Vec<(usize, RawMessage)> = Vec::new();
            for (m, (inst, extra, inst2)) in msgs.into_iter().zip(choices) {
                copies.push((inst % k, m.0.clone()));
                if extra == 0 {
                    copies.push((inst2 % k, m.0)); // a redelivery
                }
            }
            // Deterministic shuffle from the seed (Fisher-Yates, SplitMix).
            let mut rng = ecom_core::workload::Rng::new(seed);
            for i in (1..copies.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                copies.swap(i, j);
            }
            let mut instances = vec![Vec::<Vec<RawMessage>>::new(); k];
            for (inst, m) in copies {
                let batches = &mut instances[inst];
                if batches.is_empty() || rng.chance(0.3) {
                    batches.push(Vec::new());
                }
                batches.last_mut().unwrap().push(m);
            }
            Delivery { instances }
        })
}

/// The expected end state: the model folded over the published set.
pub fn expected(msgs: &[Published]) -> FinalState {
    let mut m = Model::new();
    for p in msgs {
        if let Ok(e) = decode(&p.0) {
            m.apply(&e);
        }
    }
    m.final_state()
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Asserts the store equals `expected`, with readable differences.
pub async fn assert_store_is<S: FactStore>(store: &S, expected: &FinalState) {
    let actual = snapshot(store).await.expect("snapshot");
    let (n, diffs) = expected.diff(&actual, 10);
    assert_eq!(n, 0, "store differs from the model:\n{}", diffs.join("\n"));
    assert_eq!(
        actual.parked_with_order(),
        0,
        "a parked payment has an order"
    );
}

/// Each instance appends its batches to its own log and projects into the
/// shared store; instances run concurrently (interleaving at every store
/// operation when the store is wrapped in [`Yielding`]).
pub async fn run_instances<S: FactStore>(
    d: &Delivery,
    store: Arc<S>,
    concurrency: usize,
) -> Vec<(tempfile::TempDir, Log)> {
    let mut handles = Vec::new();
    for batches in d.instances.clone() {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = Log::open(&dir.path().join("log"), LogOptions::default()).expect("open log");
            let projector = Projector::new(
                log.clone(),
                Applier::new(store),
                ProjectorOptions {
                    batch_size: 7,
                    concurrency,
                    ..Default::default()
                },
            );
            let cancel = CancellationToken::new();
            for batch in batches {
                log.append(batch.into_iter().map(classify).collect())
                    .await
                    .expect("append");
                projector.catch_up(&cancel).await.expect("project");
            }
            projector.catch_up(&cancel).await.expect("project");
            assert_eq!(log.checkpoint(), log.next_seq());
            (dir, log)
        }));
    }
    let mut logs = Vec::new();
    for h in handles {
        logs.push(h.await.expect("instance task"));
    }
    logs
}

/// Rebuilds `fresh` from `logs` with `replay` and checks it equals `expected`.
pub async fn assert_replay_rebuilds<S: FactStore>(logs: &[Log], fresh: &S, expected: &FinalState) {
    replay(logs, fresh, false, |_, _| {}).await.expect("replay");
    assert_store_is(fresh, expected).await;
}

/// A store wrapper that yields to the scheduler a seeded-random number of
/// times (0–3) before every operation, so concurrent instances interleave at
/// every step of the protocol, in orders that vary from case to case.
pub struct Yielding<S> {
    pub inner: S,
    rng: std::sync::Mutex<ecom_core::workload::Rng>,
}

impl<S> Yielding<S> {
    pub fn new(inner: S, seed: u64) -> Self {
        Yielding {
            inner,
            rng: std::sync::Mutex::new(ecom_core::workload::Rng::new(seed)),
        }
    }

    async fn shuffle(&self) {
        let n = self.rng.lock().expect("rng lock").below(4);
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

/// A store wrapper that fails every operation with `Unavailable` once a
/// budget is spent: a crash (or outage) at an arbitrary point of the
/// protocol, between any two conditional writes.
pub struct FailAfter<S> {
    pub inner: S,
    pub budget: AtomicU64,
}

impl<S> FailAfter<S> {
    pub fn new(inner: S, budget: u64) -> Self {
        FailAfter {
            inner,
            budget: AtomicU64::new(budget),
        }
    }
    pub fn refill(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }
    fn spend(&self) -> Result<()> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

macro_rules! delegate_store {
    ($ty:ident, $self:ident, $before:expr, $inner:expr) => {
        impl<S: FactStore> FactStore for $ty<S> {
            async fn read_fact(&$self, order_id: i64) -> Result<Option<FactRow>> { $before; $inner.read_fact(order_id).await }
            async fn insert_fact(&$self, o: &OrderVersion) -> Result<Cas<FactRow>> { $before; $inner.insert_fact(o).await }
            async fn replace_order(&$self, e: &Provenance, o: &OrderVersion) -> Result<Cas<FactRow>> { $before; $inner.replace_order(e, o).await }
            async fn replace_payment(&$self, e: Option<&Provenance>, p: &PaymentVersion) -> Result<Cas<FactRow>> { $before; $inner.replace_payment(e, p).await }
            async fn read_audit(&$self, k: i64, kind: Kind, fp: Fingerprint) -> Result<Option<Entry>> { $before; $inner.read_audit(k, kind, fp).await }
            async fn insert_audit(&$self, e: &Entry) -> Result<Cas<Entry>> { $before; $inner.insert_audit(e).await }
            async fn replace_audit(&$self, x: &Provenance, e: &Entry) -> Result<Cas<Entry>> { $before; $inner.replace_audit(x, e).await }
            async fn delete_audit(&$self, k: i64, kind: Kind, fp: Fingerprint, x: &Provenance) -> Result<Cas<Entry>> { $before; $inner.delete_audit(k, kind, fp, x).await }
            async fn parked_for(&$self, k: i64) -> Result<Vec<Parked>> { $before; $inner.parked_for(k).await }
            async fn insert_parked(&$self, p: &Parked) -> Result<Cas<Parked>> { $before; $inner.insert_parked(p).await }
            async fn replace_parked(&$self, x: &Provenance, p: &Parked) -> Result<Cas<Parked>> { $before; $inner.replace_parked(x, p).await }
            async fn touch_parked(&$self, k: i64, fp: Fingerprint, a: i32) -> Result<()> { $before; $inner.touch_parked(k, fp, a).await }
            async fn delete_parked(&$self, k: i64, fp: Fingerprint) -> Result<()> { $before; $inner.delete_parked(k, fp).await }
            async fn scan_facts(&$self) -> Result<Vec<FactRow>> { $inner.scan_facts().await }
            async fn scan_audit(&$self) -> Result<Vec<Entry>> { $inner.scan_audit().await }
            async fn scan_parked(&$self) -> Result<Vec<Parked>> { $inner.scan_parked().await }
            async fn counts(&$self) -> Result<StoreCounts> { $inner.counts().await }
            async fn is_empty(&$self) -> Result<bool> { $inner.is_empty().await }
            async fn truncate(&$self) -> Result<()> { $inner.truncate().await }
            async fn put_final(&$self, f: &[FactRow], a: &[Entry], p: &[Parked]) -> Result<()> { $before; $inner.put_final(f, a, p).await }
            async fn flush(&$self) -> Result<()> { $before; $inner.flush().await }
        }
    };
}

delegate_store!(Yielding, self, self.shuffle().await, self.inner);
delegate_store!(FailAfter, self, self.spend()?, self.inner);
