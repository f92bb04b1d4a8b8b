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

use ecom_core::{FinalState, Model, RawMessage, Topic, decode};
use ecom_ingest::classify;
use ecom_log::{Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions, replay};
use ecom_store::{FactStore, Op, Result, StoreError, forward_fact_store, snapshot};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

pub mod sim;

/// Cases per property: `ECOM_PROPTEST_CASES`, default 256 (the README's
/// test command). The long mode runs `ECOM_PROPTEST_CASES=5000`.
pub fn cases() -> u32 {
    std::env::var("ECOM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

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
    replay(logs, fresh, false, &ecom_core::progress::ignore)
        .await
        .expect("replay");
    assert_store_is(fresh, expected).await;
}

/// A store wrapper that yields to the scheduler a seeded-random number of
/// times before every operation, so concurrent instances interleave at every
/// step of the protocol, in orders that vary from case to case. Most pauses
/// are short (0–3 yields); some are long enough (up to a few hundred yields)
/// for another instance to run whole protocol steps, several conditional
/// writes and their view writes, inside this one's window.
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
        let n = {
            let mut rng = self.rng.lock().expect("rng lock");
            match rng.below(20) {
                0 => 100 + rng.below(200),
                1..=5 => 4 + rng.below(40),
                _ => rng.below(4),
            }
        };
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

/// A store wrapper that fails every operation with `Unavailable` once a
/// budget is spent: a crash (or outage) at an arbitrary point of the
/// protocol, between any two store operations. A failed view write or
/// conditional write never reaches the store, so this is the crash *before*
/// the operation; [`FailAfter::after`] makes the operation reach the store
/// and then fail (the crash after it, before its result is seen).
pub struct FailAfter<S> {
    pub inner: S,
    pub budget: AtomicU64,
    /// Apply the failing operation before failing.
    pub after: std::sync::atomic::AtomicBool,
}

impl<S> FailAfter<S> {
    pub fn new(inner: S, budget: u64) -> Self {
        FailAfter {
            inner,
            budget: AtomicU64::new(budget),
            after: std::sync::atomic::AtomicBool::new(false),
        }
    }
    pub fn refill(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }
    /// Whether the failing operation lands before its error is returned.
    pub fn fail_after_applying(&self, yes: bool) {
        self.after.store(yes, Ordering::SeqCst);
    }
    fn spend(&self) -> bool {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return false;
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        true
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected failure".into())
}

impl<S: FactStore> FailAfter<S> {
    async fn gate<T>(&self, op: Op, f: impl Future<Output = Result<T>>) -> Result<T> {
        if matches!(op, Op::Scan) || self.spend() {
            return f.await;
        }
        if self.after.load(Ordering::SeqCst) && !matches!(op, Op::ReadState) {
            let _ = f.await;
        }
        Err(injected())
    }
}

forward_fact_store!(impl [S: FactStore] for Yielding<S>, to self.inner, |self, op, call| {
    if !matches!(op, Op::Scan) {
        self.shuffle().await;
    }
    call.await
});
forward_fact_store!(impl [S: FactStore] for FailAfter<S>, to self.inner, |self, op, call| {
    self.gate(op, call).await
});

/// Counts store operations by kind: how many conditional writes (Paxos
/// rounds in Cassandra) and reads a workload costs. Counts are deterministic
/// for a given workload; no timing involved.
#[derive(Default)]
pub struct Counting<S> {
    pub inner: S,
    pub reads: AtomicU64,
    pub conditional_writes: AtomicU64,
    pub view_writes: AtomicU64,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            reads: AtomicU64::new(0),
            conditional_writes: AtomicU64::new(0),
            view_writes: AtomicU64::new(0),
        }
    }

    /// (reads, conditional writes) so far, and resets them.
    pub fn take(&self) -> (u64, u64) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.conditional_writes.swap(0, Ordering::SeqCst),
        )
    }

    fn count(&self, op: Op) {
        let c = match op {
            Op::ReadState => &self.reads,
            Op::InsertState | Op::UpdateState => &self.conditional_writes,
            Op::WriteViews => &self.view_writes,
            _ => return,
        };
        c.fetch_add(1, Ordering::SeqCst);
    }
}

forward_fact_store!(impl [S: FactStore] for Counting<S>, to self.inner, |self, op, call| {
    self.count(op);
    call.await
});
