use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecom_core::workload::Rng;
use ecom_ingest::{Delivery, IngestCounters, IngestOptions, classify, run_ingest};
use ecom_log::{AppendOutcome, Log, LogOptions};
use ecom_pubsub::{
    ProduceKind, ProduceSpec, PubSubConfig, PubSubError, SourceCounters, produce, run_source, setup,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::util::config;

fn spawn_source(
    cfg: &PubSubConfig,
    cancel: &CancellationToken,
) -> (
    mpsc::Receiver<Delivery>,
    Arc<SourceCounters>,
    JoinHandle<Result<(), PubSubError>>,
) {
    let (tx, rx) = mpsc::channel(1000);
    let counters = Arc::new(SourceCounters::default());
    let task = tokio::spawn({
        let (cfg, counters, cancel) = (cfg.clone(), counters.clone(), cancel.clone());
        async move { run_source(&cfg, tx, counters, cancel).await }
    });
    (rx, counters, task)
}

fn short_deadlines(cfg: &mut PubSubConfig) {
    cfg.ack_deadline = Duration::from_secs(10);
    cfg.max_lease_extension = Duration::from_secs(10);
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_is_idempotent() {
    let Some(mut cfg) = config("setup") else {
        return;
    };
    cfg.dead_letter_max_attempts = Some(5);
    let first = setup(&cfg).await.unwrap();
    assert_eq!(first.created.len(), 4 + 2 + 2, "{first:?}");
    assert!(first.already_existed.is_empty(), "{first:?}");
    let second = setup(&cfg).await.unwrap();
    assert!(second.created.is_empty(), "{second:?}");
    let mut a = first.created.clone();
    let mut b = second.already_existed.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(b.contains(&cfg.subscription_path("orders_data-sub")));
    assert!(b.contains(&cfg.topic_path("payments_data-sub-dead-letter")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_without_setup_tells_the_user_to_run_setup() {
    let Some(cfg) = config("nosetup") else { return };
    let cancel = CancellationToken::new();
    let (_rx, counters, task) = spawn_source(&cfg, &cancel);
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run_source returns on a missing subscription")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, PubSubError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("ecom-pipeline setup pubsub"),
        "{err}"
    );
    assert!(counters.snapshot().stream_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_messages_land_once_in_the_log() {
    let Some(mut cfg) = config("redeliver") else {
        return;
    };
    short_deadlines(&mut cfg);
    setup(&cfg).await.unwrap();
    let spec = ProduceSpec {
        kind: ProduceKind::Both,
        count: 150,
        seed: 7,
        ..ProduceSpec::default()
    };
    let report = produce(&cfg, &spec).await.unwrap();
    assert_eq!((report.published, report.failed), (300, 0), "{report:?}");
    let n = report.published;

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let cancel = CancellationToken::new();
    let (mut src_rx, src_counters, source) = spawn_source(&cfg, &cancel);
    let (ingest_tx, ingest_rx) = mpsc::channel(1000);
    let ingest_counters = Arc::new(IngestCounters::default());
    let ingest = tokio::spawn(run_ingest(
        ingest_rx,
        log.clone(),
        IngestOptions::default(),
        ingest_counters.clone(),
        cancel.clone(),
    ));
    // Between source and ingest: nack ~20% of first appearances.
    let failer = tokio::spawn(async move {
        let mut rng = Rng::new(42);
        let mut seen = HashSet::new();
        let mut nacked = 0u64;
        while let Some(d) = src_rx.recv().await {
            if seen.insert(d.message.message_id.clone()) && rng.chance(0.2) {
                d.acker.nack();
                nacked += 1;
            } else if ingest_tx.send(d).await.is_err() {
                break;
            }
        }
        nacked
    });

    let l = log.clone();
    wait_until("every message in the log", Duration::from_secs(60), || {
        let s = l.stats();
        s.entries + s.rejected >= n
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(40), source)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let nacked = failer.await.unwrap();
    ingest.await.unwrap().expect("ingest ends cleanly");

    let stats = log.stats();
    assert_eq!(stats.entries + stats.rejected, n, "{stats:?}");
    let entries = log.read_from(0, usize::MAX).unwrap();
    let mut per_id: HashMap<&str, u32> = HashMap::new();
    for e in &entries {
        *per_id.entry(&e.message.message_id).or_default() += 1;
    }
    assert!(
        per_id.values().all(|c| *c == 1),
        "a message id is in the log twice"
    );
    let src = src_counters.snapshot();
    assert!(nacked > 0, "the test nacked nothing");
    assert!(
        src.received >= n + nacked,
        "every nack forced a redelivery: received {} for {n} messages and {nacked} nacks",
        src.received
    );
    assert!(src.nacked >= nacked, "{src:?}");
    assert_eq!(
        ingest_counters.snapshot().acked,
        src.received - src.nacked,
        "{src:?}"
    );
    eprintln!("published {n}, nacked {nacked}, source {src:?}, log {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_killed_between_append_and_ack_gets_the_message_again_and_dedups_it() {
    let Some(mut cfg) = config("killed") else {
        return;
    };
    short_deadlines(&mut cfg);
    // The killed consumer stops extending leases after 1 s, so the messages
    // come back one ack deadline (10 s) later.
    cfg.max_lease = Duration::from_secs(1);
    cfg.shutdown_timeout = Duration::from_secs(1);
    setup(&cfg).await.unwrap();
    let spec = ProduceSpec {
        kind: ProduceKind::Orders,
        count: 20,
        seed: 3,
        ..ProduceSpec::default()
    };
    assert_eq!(produce(&cfg, &spec).await.unwrap().published, 20);

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();

    // First life: receive, append, then "die" before acking.
    let cancel = CancellationToken::new();
    let (mut rx, _, source) = spawn_source(&cfg, &cancel);
    let mut batch = Vec::new();
    while batch.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        batch.push(d);
    }
    let ids: HashSet<String> = batch.iter().map(|d| d.message.message_id.clone()).collect();
    assert_eq!(ids.len(), 20);
    let (messages, ackers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|d| (d.message, d.acker)).unzip();
    let outcomes = log
        .append(messages.into_iter().map(classify).collect())
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, AppendOutcome::Appended(_))),
        "{outcomes:?}"
    );
    // A killed process neither acks nor nacks: forget the ackers (dropping
    // them would nack, which is the friendlier case).
    for a in ackers {
        std::mem::forget(a);
    }
    cancel.cancel();
    drop(rx);
    tokio::time::timeout(Duration::from_secs(30), source)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Second life: the same ids come back and dedup.
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let (mut rx, counters, source) = spawn_source(&cfg, &cancel);
    let mut again = HashSet::new();
    while again.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 20 redelivered within 60 s", again.len()))
            .unwrap();
        assert!(
            ids.contains(&d.message.message_id),
            "unexpected message {}",
            d.message.message_id
        );
        let outcome = log.append(vec![classify(d.message.clone())]).await.unwrap();
        assert_eq!(outcome, vec![AppendOutcome::Duplicate]);
        d.acker.ack();
        again.insert(d.message.message_id);
    }
    eprintln!("redelivered after {:?}", started.elapsed());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), source)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stats = log.stats();
    assert_eq!(stats.entries, 20, "{stats:?}");
    assert!(stats.duplicates_message_id >= 20, "{stats:?}");
    assert_eq!(counters.snapshot().acked, again.len() as u64);
}

/// Throughput of run_source + run_ingest against the emulator. Run with
/// `cargo test --release -p ecom-pubsub -- --ignored --nocapture throughput`
/// (ECOM_PUBSUB_BENCH_N changes the message count, default 20 000).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement; prints messages/s"]
async fn throughput_of_source_into_ingest() {
    let Some(cfg) = config("throughput") else {
        return;
    };
    let n: u64 = std::env::var("ECOM_PUBSUB_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    setup(&cfg).await.unwrap();
    let spec = ProduceSpec {
        kind: ProduceKind::Both,
        count: n / 2,
        seed: 11,
        ..ProduceSpec::default()
    };
    let report = produce(&cfg, &spec).await.unwrap();
    assert_eq!(report.published, n);
    eprintln!(
        "produce: {} messages in {:.2} s = {:.0} msg/s",
        report.published, report.elapsed_s, report.messages_per_s
    );

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(4096);
    let counters = Arc::new(SourceCounters::default());
    let source = tokio::spawn({
        let (cfg, counters, cancel) = (cfg.clone(), counters.clone(), cancel.clone());
        async move { run_source(&cfg, tx, counters, cancel).await }
    });
    let ingest_counters = Arc::new(IngestCounters::default());
    let ingest = tokio::spawn(run_ingest(
        rx,
        log.clone(),
        IngestOptions::default(),
        ingest_counters.clone(),
        cancel.clone(),
    ));
    let l = log.clone();
    wait_until("every message in the log", Duration::from_secs(300), || {
        let s = l.stats();
        s.entries + s.rejected >= n
    })
    .await;
    let in_log = started.elapsed();
    let c = counters.clone();
    wait_until("every message acked", Duration::from_secs(60), || {
        c.snapshot().acked >= n
    })
    .await;
    let acked = started.elapsed();
    cancel.cancel();
    source.await.unwrap().unwrap();
    ingest.await.unwrap().expect("ingest ends cleanly");
    let stats = log.stats();
    eprintln!(
        "run_source + run_ingest: {n} messages in the log after {:.2} s = {:.0} msg/s (all acked after {:.2} s); \
         {} group commits, source {:?}",
        in_log.as_secs_f64(),
        n as f64 / in_log.as_secs_f64(),
        acked.as_secs_f64(),
        stats.flushes,
        counters.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_acked_after_the_source_was_cancelled_are_not_redelivered() {
    let Some(mut cfg) = config("late-ack") else {
        return;
    };
    short_deadlines(&mut cfg);
    setup(&cfg).await.unwrap();
    let spec = ProduceSpec {
        kind: ProduceKind::Payments,
        count: 10,
        seed: 4,
        ..ProduceSpec::default()
    };
    assert_eq!(produce(&cfg, &spec).await.unwrap().published, 10);

    let cancel = CancellationToken::new();
    let (mut rx, counters, source) = spawn_source(&cfg, &cancel);
    let mut held = Vec::new();
    while held.len() < 10 {
        held.push(
            tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Cancel: the pulls stop and drop their streams, then run_source waits
    // for the deliveries still out. Ack them only now.
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !source.is_finished(),
        "run_source waits for unsettled deliveries"
    );
    for d in held {
        d.acker.ack();
    }
    tokio::time::timeout(Duration::from_secs(10), source)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(counters.snapshot().acked, 10);

    // Nothing comes back after the ack deadline (10 s).
    let cancel = CancellationToken::new();
    let (mut rx, _, source) = spawn_source(&cfg, &cancel);
    let again = tokio::time::timeout(Duration::from_secs(13), rx.recv()).await;
    assert!(again.is_err(), "a late ack was lost: message redelivered");
    cancel.cancel();
    source.await.unwrap().unwrap();
}
