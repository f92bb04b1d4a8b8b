//! Deterministic simulation of the whole pipeline under crashes,
//! redeliveries and reorderings, one seed at a time.
//!
//! ## What is simulated
//!
//! One seed draws everything: a small workload (5–40 messages over order
//! ids 1–4, payments for ids 1–5, where 5 never gets an order, a few
//! malformed messages, publish times from a range of 6 µs so ties are
//! common), the broker's faults (duplicate deliveries, lost acks,
//! reordering), 1–3 instances with their own [`Log`] directory, projector
//! batch size and concurrency, and then the schedule: a sequence of
//! actions, each chosen by the seed's RNG:
//!
//! - **publish** the next few messages to the embedded broker
//!   ([`Broker::publish_at`], with the workload's publish time);
//! - **pull**: an instance leases a few messages of one topic;
//! - **ingest**: an instance appends some of its leased messages to its log
//!   and acknowledges them, through the product's own
//!   [`append_and_settle`] (ack after the durable append);
//! - **project**: some instances each run one projector step, concurrently,
//!   against the one shared sled store, each through a wrapper that yields
//!   a seeded number of times before every store operation (so the
//!   instances' conditional writes and view writes interleave);
//! - **tick**: the broker's manual clock moves by half or a whole ack
//!   deadline, so unacknowledged leases come back (lost acks, crashed
//!   instances, slow instances: any instance may get them);
//! - **crash** an instance: everything in memory is gone (its leases, its
//!   projector, its applier's state cache), the [`Log`] is closed and
//!   reopened from the same directory, and a fresh projector resumes from
//!   the log's checkpoint. Crashes happen at every step that matters: before
//!   an append, after a durable append and after any number of its acks,
//!   before or after any store operation of a projector step (the store
//!   operation lands, or not, and its answer is lost), between the store's
//!   flush and the checkpoint, and between steps;
//! - **outage**: a store operation fails (before or after it lands) without
//!   a crash; the projector retries later with the same applier and cache.
//!
//! After a chaotic phase a calm phase (no crashes, broker faults still on)
//! drives every instance until the broker is drained and every log is
//! projected; not settling within a bound is a failure too.
//!
//! ## What is checked
//!
//! - Acknowledged means on disk: at the moment of every ack, the message is
//!   a durable record of the acknowledging instance's log.
//! - The shared store equals the reference model ([`ecom_core::Model`])
//!   folded over the *published* messages, and no parked payment has its
//!   order.
//! - Every log passes [`Log::verify`] and is projected to its end.
//! - Nothing is lost: every published message is in some instance's log
//!   (an entry, or quarantined if and only if it does not decode).
//! - Replaying all the logs into an empty store gives the model's state too.
//!
//! The check fails when the product is broken. Each of these breakages,
//! made on purpose and not committed, made seeds fail (of 300 run):
//! acknowledging before the append (`append_and_settle`: every seed, "acknowledged
//! messages that were not in its log yet"), moving the
//! checkpoint before applying a batch (`Projector::step`: 84 of 300),
//! resuming after a crash from the log's end instead of the checkpoint
//! (218 of 300), and skipping the pending views of the current revision
//! before a conditional write (rule 4 in `Applier::apply_group`: 46 of 300).
//!
//! ## Determinism, and what is not
//!
//! The schedule is a function of the seed: the broker runs on a manual
//! clock ([`BrokerConfig::manual_clock`]: redelivery happens when the
//! simulation ticks, message ids come from the seed), each action runs to
//! completion before the next is drawn, and the concurrent projector steps
//! run on one current-thread runtime whose interleaving depends only on the
//! seeded yields. [`run`] records the schedule (`Outcome::trace`), and a test
//! checks that a seed run twice gives the same trace. Two things are not
//! under the seed's control: the log's writer thread and sled's own threads
//! (each append is awaited before the next action, so they change timing,
//! never the schedule), and wall-clock fields that no decision reads (a log
//! record's `appended_at_ms`, a parked payment's `parked_at_ms`, which the
//! comparison with the model leaves out).
//!
//! A crash here closes the log (its final flush runs, as in `Drop`), so the
//! simulation never loses a write sled had accepted: the loss of unflushed
//! writes under `kill -9` is `ecom-log`'s crash test (a child process
//! killed mid-append). What the simulation does cover is the checkpoint
//! being behind the store (a crash after a step's store writes and before
//! its checkpoint), which is the state such a loss leaves.
//!
//! ## Replaying a seed
//!
//! A failure prints its seed and the command that replays it,
//! `ECOM_SIM_SEED=<seed> cargo test -p ecom-proptests --test simulation`,
//! which runs that seed alone and prints its whole schedule.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecom_broker::{Broker, BrokerConfig};
use ecom_core::workload::Rng;
use ecom_core::{Model, RawMessage, Topic, decode};
use ecom_ingest::{Acker, Delivery, IngestCounters, append_and_settle};
use ecom_log::{Log, LogOptions};
use ecom_projector::projector::ProjectorError;
use ecom_projector::{Applier, Projector, ProjectorOptions, replay};
use ecom_store::{Op, Result, SledStore, StoreError, forward_fact_store, snapshot};

use crate::{order_json, payment_json};

/// The broker's ack deadline, on its manual clock.
const ACK_DEADLINE: Duration = Duration::from_secs(10);
/// Actions of the chaotic phase, at most.
const CHAOS_ACTIONS: u32 = 400;
/// Rounds of the calm phase before "did not settle" is a failure.
const CALM_ROUNDS: u32 = 200;

/// What one seed did, and its schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub instances: usize,
    pub published: u64,
    pub malformed: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub crashes: u64,
    pub outages: u64,
    pub conflicts: u64,
    pub parked: u64,
    /// One line per action, outcomes included.
    pub trace: Vec<String>,
}

/// A failed seed: why, and the schedule up to the failure.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub reason: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} failed: {}\n  replay it (prints its schedule): ECOM_SIM_SEED={} cargo test -p ecom-proptests --test simulation",
            self.seed, self.reason, self.seed
        )
    }
}

/// The directory simulations put their logs in: `ECOM_SIM_DIR`, else
/// `/dev/shm` when it exists (a RAM disk: fsync costs nothing there, while
/// the log does exactly the same writes and syncs), else the system's
/// temporary directory.
pub fn sim_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ECOM_SIM_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A pending store fault of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The instance dies at that store operation.
    Crash,
    /// The operation fails, the instance lives on and retries later.
    Outage,
}

#[derive(Debug)]
struct Faults {
    rng: Rng,
    /// Store operations left before the armed fault fires.
    budget: Option<u64>,
    armed: Option<Fault>,
    /// Whether the failing operation lands in the store before failing.
    after: bool,
    /// The fault fired: every later operation fails too, until cleared.
    fired: bool,
}

/// One instance's view of the shared store: seeded yields before every
/// operation, and the injected fault.
pub struct SimStore {
    inner: SledStore,
    faults: Mutex<Faults>,
}

impl SimStore {
    fn new(inner: SledStore, seed: u64) -> Self {
        SimStore {
            inner,
            faults: Mutex::new(Faults {
                rng: Rng::new(seed),
                budget: None,
                armed: None,
                after: false,
                fired: false,
            }),
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("faults lock")
    }

    fn arm(&self, fault: Fault, budget: u64, after: bool) {
        let mut f = self.faults();
        f.armed = Some(fault);
        f.budget = Some(budget);
        f.after = after;
        f.fired = false;
    }

    /// Disarms; returns the fault if it fired.
    fn disarm(&self) -> Option<Fault> {
        let mut f = self.faults();
        let fired = f.fired.then_some(f.armed).flatten();
        f.armed = None;
        f.budget = None;
        f.fired = false;
        fired
    }

    async fn gate<T>(&self, op: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        if matches!(op, Op::Scan) {
            return call.await;
        }
        let yields = {
            let mut f = self.faults();
            match f.rng.below(20) {
                0 => 50 + f.rng.below(100),
                1..=4 => 2 + f.rng.below(20),
                _ => f.rng.below(3),
            }
        };
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        // `Some(lands)`: this operation fails, after landing or not.
        let fail = {
            let mut f = self.faults();
            if f.fired {
                Some(false)
            } else {
                match f.budget {
                    Some(0) => {
                        f.fired = true;
                        Some(f.after)
                    }
                    Some(n) => {
                        f.budget = Some(n - 1);
                        None
                    }
                    None => None,
                }
            }
        };
        match fail {
            None => call.await,
            Some(lands) => {
                if lands && !matches!(op, Op::ReadState) {
                    let _ = call.await;
                }
                Err(StoreError::Unavailable("injected by the simulation".into()))
            }
        }
    }
}

forward_fact_store!(impl [] for SimStore, to self.inner, |self, op, call| {
    self.gate(op, call).await
});

/// The acker the simulation hands to ingest, around the broker's: it
/// checks, at the moment of each ack, that the message is durable in the
/// instance's log (an entry or quarantined; the log returns only durable
/// records), and it stops settling once the instance died: `left` acks may
/// still go through (shared by one batch), the rest are lost with the
/// process.
struct SimAcker {
    inner: Box<dyn Acker>,
    left: Arc<AtomicUsize>,
    log: Log,
    key: (Topic, String),
    /// Acks of messages that were not in the log yet.
    early: Arc<Mutex<Vec<String>>>,
}

impl SimAcker {
    fn in_log(&self) -> bool {
        let (topic, id) = &self.key;
        let is = |m: &RawMessage| m.topic == *topic && m.message_id == *id;
        self.log
            .read_from(0, usize::MAX)
            .is_ok_and(|es| es.iter().any(|e| is(&e.message)))
            || self
                .log
                .rejected()
                .is_ok_and(|qs| qs.iter().any(|q| is(&q.message)))
    }

    fn settle(self, ack: bool) {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        if ack {
            if !self.in_log() {
                self.early.lock().expect("early acks").push(format!(
                    "{} {}",
                    self.key.0.name(),
                    self.key.1
                ));
            }
            self.inner.ack();
        } else {
            self.inner.nack();
        }
    }
}

impl Acker for SimAcker {
    fn ack(self: Box<Self>) {
        (*self).settle(true);
    }
    fn nack(self: Box<Self>) {
        (*self).settle(false);
    }
}

/// One pipeline instance: what survives a crash is its directory.
struct Instance {
    dir: PathBuf,
    log: Log,
    store: Arc<SimStore>,
    projector: Projector<SimStore>,
    /// Leased deliveries not yet appended.
    inbox: Vec<Delivery>,
    counters: IngestCounters,
    opts: ProjectorOptions,
}

impl Instance {
    fn start(
        dir: PathBuf,
        shared: &SledStore,
        opts: ProjectorOptions,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        let log = Log::open(
            &dir,
            LogOptions {
                cache_capacity_bytes: 1 << 20,
                ..LogOptions::default()
            },
        )
        .map_err(|e| format!("reopening the log failed: {e}"))?;
        let store = Arc::new(SimStore::new(shared.clone(), seed));
        let projector = Projector::new(log.clone(), Applier::new(store.clone()), opts.clone());
        Ok(Instance {
            dir,
            log,
            store,
            projector,
            inbox: Vec::new(),
            counters: IngestCounters::default(),
            opts,
        })
    }

    /// Kills the instance and starts it again from its directory.
    fn restart(self, shared: &SledStore, seed: u64) -> std::result::Result<Self, String> {
        let Instance {
            dir,
            log,
            store,
            projector,
            inbox,
            opts,
            ..
        } = self;
        // Unsettled leases stay leased in the broker until their deadline.
        drop(inbox);
        drop(projector);
        drop(store);
        drop(log);
        Instance::start(dir, shared, opts, seed)
    }

    fn backlog(&self) -> bool {
        self.log.checkpoint() < self.log.next_seq()
    }
}

fn gen_messages(rng: &mut Rng) -> Vec<(Topic, Vec<u8>, i64)> {
    let n = 5 + rng.below(36);
    (0..n)
        .map(|_| {
            let t = rng.below(6) as i64;
            let version = |rng: &mut Rng| rng.chance(0.2).then(|| rng.below(3) as i64);
            match rng.below(11) {
                0..=4 => {
                    let id = 1 + rng.below(4) as i64;
                    let status = rng.below(3) as usize;
                    let qty = 1 + rng.below(2) as i64;
                    let v = version(rng);
                    let e = rng.chance(0.1).then(|| rng.below(2) as u8);
                    (Topic::Orders, order_json(id, status, qty, v, e), t)
                }
                5..=9 => {
                    let id = 1 + rng.below(5) as i64;
                    let method = rng.below(2) as usize;
                    let v = version(rng);
                    (Topic::Payments, payment_json(id, method, v), t)
                }
                _ => {
                    let bad: &[(Topic, &[u8])] = &[
                        (Topic::Orders, b"{\"order_id\": 1"),
                        (Topic::Payments, b"not json"),
                        (Topic::Orders, b"{\"order_id\": 0}"),
                        (Topic::Payments, b""),
                    ];
                    let (topic, data) = bad[rng.below(bad.len() as u64) as usize];
                    (topic, data.to_vec(), t)
                }
            }
        })
        .collect()
}

fn pick(rng: &mut Rng, xs: &[f64]) -> f64 {
    xs[rng.below(xs.len() as u64) as usize]
}

struct Sim {
    seed: u64,
    rng: Rng,
    broker: Arc<Broker>,
    store: SledStore,
    instances: Vec<Option<Instance>>,
    to_publish: std::vec::IntoIter<(Topic, Vec<u8>, i64)>,
    published: Vec<RawMessage>,
    out: Outcome,
}

impl Sim {
    fn log(&mut self, line: String) {
        self.out.trace.push(line);
    }

    fn fail(&self, reason: impl Into<String>) -> Failure {
        Failure {
            seed: self.seed,
            reason: reason.into(),
            trace: self.out.trace.clone(),
        }
    }

    fn inst(&mut self, i: usize) -> &mut Instance {
        self.instances[i].as_mut().expect("instance is running")
    }

    fn restart(&mut self, i: usize, why: &str) -> std::result::Result<(), Failure> {
        let seed = self.rng.next_u64();
        let old = self.instances[i].take().expect("instance is running");
        let fresh = old.restart(&self.store, seed).map_err(|e| self.fail(e))?;
        let (cp, next) = (fresh.log.checkpoint(), fresh.log.next_seq());
        self.instances[i] = Some(fresh);
        self.out.crashes += 1;
        self.log(format!(
            "crash {i} ({why}); restarted at checkpoint {cp} of {next}"
        ));
        Ok(())
    }

    fn publish(&mut self, k: u64) {
        for _ in 0..k {
            let Some((topic, data, t)) = self.to_publish.next() else {
                return;
            };
            let m = self.broker.publish_at(topic, data, t);
            self.log(format!("publish {} {} t={t}", topic.name(), m.message_id));
            self.published.push(m);
        }
    }

    fn pull(&mut self, i: usize, topic: Topic, max: usize) {
        let got = self.broker.pull_deliveries(topic, max);
        let ids: Vec<String> = got.iter().map(|d| d.message.message_id.clone()).collect();
        self.inst(i).inbox.extend(got);
        self.log(format!("pull {i} {} {ids:?}", topic.name()));
    }

    /// Appends and settles the first `k` leased messages of instance `i`;
    /// with `die_after_acks = Some(j)` the instance dies after the append
    /// and `j` of the acks (`Some(0)`: right after the append).
    async fn ingest(
        &mut self,
        i: usize,
        k: usize,
        die_after_acks: Option<usize>,
    ) -> std::result::Result<(), Failure> {
        let inst = self.inst(i);
        let batch: Vec<Delivery> = inst.inbox.drain(..k).collect();
        let left = Arc::new(AtomicUsize::new(die_after_acks.unwrap_or(usize::MAX)));
        let early = Arc::new(Mutex::new(Vec::new()));
        let batch: Vec<Delivery> = batch
            .into_iter()
            .map(|d| {
                let key = (d.message.topic, d.message.message_id.clone());
                Delivery {
                    message: d.message,
                    acker: Box::new(SimAcker {
                        inner: d.acker,
                        left: left.clone(),
                        log: inst.log.clone(),
                        key,
                        early: early.clone(),
                    }),
                }
            })
            .collect();
        let ids: Vec<String> = batch.iter().map(|d| d.message.message_id.clone()).collect();
        let before = (inst.log.next_seq(), inst.log.stats().rejected);
        let r = append_and_settle(&inst.log, batch, &inst.counters).await;
        let after = (inst.log.next_seq(), inst.log.stats().rejected);
        if let Err(e) = r {
            return Err(self.fail(format!("a log append failed: {e}")));
        }
        let early = std::mem::take(&mut *early.lock().expect("early acks"));
        if !early.is_empty() {
            return Err(self.fail(format!(
                "instance {i} acknowledged messages that were not in its log yet: {early:?}"
            )));
        }
        self.log(format!(
            "ingest {i} {ids:?}: entries {}..{}, quarantined {}",
            before.0,
            after.0,
            after.1 - before.1
        ));
        if let Some(j) = die_after_acks {
            self.restart(i, &format!("after the append and {j} acks"))?;
        }
        Ok(())
    }

    /// One projector step on each of `who`, concurrently, with the faults
    /// armed on their stores.
    async fn project(&mut self, who: &[usize]) -> std::result::Result<(), Failure> {
        let mut steps = Vec::new();
        for &i in who {
            let inst = self.instances[i].as_ref().expect("instance is running");
            steps.push(async move { (i, inst.projector.step().await) });
        }
        let results = futures::future::join_all(steps).await;
        for (i, r) in results {
            let fired = self.inst(i).store.disarm();
            match (r, fired) {
                // Killed in the step, even if the step did not notice.
                (Ok(_), Some(Fault::Crash)) => self.restart(i, "in a projector step")?,
                (Ok(n), _) => {
                    let cp = self.inst(i).log.checkpoint();
                    self.log(format!("project {i}: {n} entries, checkpoint {cp}"));
                }
                (Err(ProjectorError::Store(e)), Some(fault)) if e.is_retryable() => match fault {
                    Fault::Crash => self.restart(i, "in a projector step")?,
                    Fault::Outage => {
                        self.out.outages += 1;
                        self.log(format!("project {i}: store outage, will retry"));
                    }
                },
                (Err(e), _) => return Err(self.fail(format!("projector {i} failed: {e}"))),
            }
        }
        Ok(())
    }

    fn running(&self) -> usize {
        self.instances.len()
    }

    fn settled(&self) -> bool {
        self.to_publish.len() == 0
            && self.broker.drained()
            && self
                .instances
                .iter()
                .flatten()
                .all(|i| i.inbox.is_empty() && !i.backlog())
    }

    async fn chaos_action(&mut self) -> std::result::Result<(), Failure> {
        let n = self.running();
        let i = self.rng.below(n as u64) as usize;
        match self.rng.below(20) {
            0..=2 if self.to_publish.len() > 0 => {
                let k = 1 + self.rng.below(4);
                self.publish(k);
            }
            0..=5 => {
                let topic = if self.rng.chance(0.5) {
                    Topic::Orders
                } else {
                    Topic::Payments
                };
                let max = 1 + self.rng.below(5) as usize;
                self.pull(i, topic, max);
            }
            6..=9 => {
                let len = self.inst(i).inbox.len();
                if len > 0 {
                    let k = 1 + self.rng.below(len as u64) as usize;
                    let die = if self.rng.chance(0.1) {
                        Some(self.rng.below(k as u64 + 1) as usize)
                    } else {
                        None
                    };
                    self.ingest(i, k, die).await?;
                }
            }
            10 if self.rng.chance(0.3) => {
                // Killed before appending what it leased.
                self.restart(i, "before an append")?;
            }
            11 => {
                let by = if self.rng.chance(0.5) {
                    ACK_DEADLINE / 2
                } else {
                    ACK_DEADLINE
                };
                self.broker.advance_clock(by);
                self.log(format!("tick {}s", by.as_secs()));
            }
            _ => {
                let mut who = Vec::new();
                for j in 0..n {
                    if self.inst(j).backlog() && (j == i || self.rng.chance(0.5)) {
                        who.push(j);
                    }
                }
                for &j in &who {
                    let roll = self.rng.below(100);
                    let budget = self.rng.below(12);
                    let after = self.rng.chance(0.5);
                    let fault = match roll {
                        0..=11 => Some(Fault::Crash),
                        12..=16 => Some(Fault::Outage),
                        _ => None,
                    };
                    if let Some(fault) = fault {
                        self.log(format!(
                            "arm {j}: {fault:?} at store op {budget}{}",
                            if after { ", after it lands" } else { "" }
                        ));
                        self.inst(j).store.arm(fault, budget, after);
                    }
                }
                if !who.is_empty() {
                    self.project(&who).await?;
                }
            }
        }
        Ok(())
    }

    /// No crashes: every instance pulls, ingests and projects everything,
    /// then the clock passes a deadline (for lost acks), until settled.
    async fn calm(&mut self) -> std::result::Result<(), Failure> {
        self.publish(u64::MAX);
        for _ in 0..CALM_ROUNDS {
            if self.settled() {
                return Ok(());
            }
            for i in 0..self.running() {
                for topic in [Topic::Orders, Topic::Payments] {
                    self.pull(i, topic, 64);
                }
                let k = self.inst(i).inbox.len();
                if k > 0 {
                    self.ingest(i, k, None).await?;
                }
                while self.inst(i).backlog() {
                    self.project(&[i]).await?;
                }
            }
            self.broker.advance_clock(ACK_DEADLINE);
            self.log("tick 10s".into());
        }
        Err(self.fail(format!(
            "did not settle in {CALM_ROUNDS} calm rounds (broker drained: {})",
            self.broker.drained()
        )))
    }

    async fn check(&mut self) -> std::result::Result<(), Failure> {
        let mut want = Model::new();
        let mut malformed = BTreeSet::new();
        for m in &self.published {
            match decode(m) {
                Ok(e) => {
                    want.apply(&e);
                }
                Err(_) => {
                    malformed.insert((m.topic, m.message_id.clone()));
                }
            }
        }
        let want = want.final_state();
        let actual = snapshot(&self.store)
            .await
            .map_err(|e| self.fail(format!("snapshot: {e}")))?;
        let (n, diffs) = want.diff(&actual, 10);
        if n > 0 {
            return Err(self.fail(format!(
                "store differs from the model in {n} rows:\n{}",
                diffs.join("\n")
            )));
        }
        if actual.parked_with_order() > 0 {
            return Err(self.fail("a parked payment has its order in the store"));
        }
        let mut seen = BTreeSet::new();
        let mut logs = Vec::new();
        for (i, inst) in self.instances.iter().flatten().enumerate() {
            let log = &inst.log;
            let report = log
                .verify()
                .map_err(|e| self.fail(format!("log {i}: verify: {e}")))?;
            if !report.is_ok() {
                return Err(self.fail(format!("log {i}: {:?}", report.problems)));
            }
            if log.checkpoint() != log.next_seq() {
                return Err(self.fail(format!("log {i} is not projected to its end")));
            }
            let entries = log
                .read_from(0, usize::MAX)
                .map_err(|e| self.fail(format!("log {i}: {e}")))?;
            for e in entries {
                let key = (e.message.topic, e.message.message_id);
                if malformed.contains(&key) {
                    return Err(self.fail(format!("log {i}: malformed {key:?} is an entry")));
                }
                seen.insert(key);
            }
            for q in log
                .rejected()
                .map_err(|e| self.fail(format!("log {i}: {e}")))?
            {
                let key = (q.message.topic, q.message.message_id);
                if !malformed.contains(&key) {
                    return Err(self.fail(format!("log {i}: valid {key:?} was quarantined")));
                }
                seen.insert(key);
            }
            logs.push(log.clone());
        }
        let published: BTreeSet<_> = self
            .published
            .iter()
            .map(|m| (m.topic, m.message_id.clone()))
            .collect();
        let lost: Vec<_> = published.difference(&seen).collect();
        if !lost.is_empty() {
            return Err(self.fail(format!("published but in no log: {lost:?}")));
        }
        let fresh = SledStore::temporary().map_err(|e| self.fail(e.to_string()))?;
        replay(&logs, &fresh, false, &ecom_core::progress::ignore)
            .await
            .map_err(|e| self.fail(format!("replay: {e}")))?;
        let replayed = snapshot(&fresh)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        let (n, diffs) = want.diff(&replayed, 10);
        if n > 0 {
            return Err(self.fail(format!(
                "replay of the logs differs from the model in {n} rows:\n{}",
                diffs.join("\n")
            )));
        }
        self.out.malformed = malformed.len() as u64;
        self.out.conflicts = actual.audit.len() as u64;
        self.out.parked = actual.parked.len() as u64;
        Ok(())
    }
}

/// Runs one seed in a fresh directory under `root` and checks it.
pub fn run(seed: u64, root: &Path) -> std::result::Result<Outcome, Failure> {
    let fail = |reason: String| Failure {
        seed,
        reason,
        trace: Vec::new(),
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("ecom-sim-{seed}-"))
        .tempdir_in(root)
        .map_err(|e| {
            fail(format!(
                "cannot create a directory in {}: {e}",
                root.display()
            ))
        })?;
    let store = SledStore::temporary().map_err(|e| fail(e.to_string()))?;
    let mut rng = Rng::new(seed);
    let messages = gen_messages(&mut rng);
    let broker = Broker::new(BrokerConfig {
        ack_deadline: ACK_DEADLINE,
        seed: rng.next_u64(),
        duplicate_ratio: pick(&mut rng, &[0.0, 0.05, 0.2]),
        lost_ack_ratio: pick(&mut rng, &[0.0, 0.05, 0.2]),
        reorder: rng.chance(0.8),
        manual_clock: true,
    });
    let k = 1 + rng.below(3) as usize;
    let mut instances = Vec::new();
    for i in 0..k {
        let opts = ProjectorOptions {
            batch_size: 1 + rng.below(8) as usize,
            concurrency: 1 + rng.below(3) as usize,
            ..ProjectorOptions::default()
        };
        let inst = Instance::start(
            dir.path().join(format!("i{i}")),
            &store,
            opts,
            rng.next_u64(),
        )
        .map_err(fail)?;
        instances.push(Some(inst));
    }
    let mut sim = Sim {
        seed,
        rng,
        broker,
        store,
        instances,
        to_publish: messages.into_iter(),
        published: Vec::new(),
        out: Outcome {
            seed,
            instances: k,
            ..Outcome::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))?;
    runtime.block_on(async {
        for _ in 0..CHAOS_ACTIONS {
            if sim.settled() {
                break;
            }
            sim.chaos_action().await?;
        }
        sim.calm().await?;
        sim.check().await
    })?;
    let b = sim.broker.stats();
    sim.out.published = b.published;
    sim.out.delivered = b.delivered;
    sim.out.redelivered = b.redelivered;
    Ok(sim.out)
}
