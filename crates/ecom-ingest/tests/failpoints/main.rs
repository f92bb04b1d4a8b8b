//! Ingestion when the log's group commit fails, driven by ecom-log's
//! failpoints (process-global, hence this binary of its own; each test runs
//! inside a [`FailScenario`], which serializes them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecom_core::{RawMessage, Topic};
use ecom_ingest::{Acker, Delivery, IngestCounters, IngestError, IngestOptions, run_ingest};
use ecom_log::{Log, LogError, LogOptions};
use fail::FailScenario;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Ack,
    Nack,
}

/// Records every settlement, in the order they happen.
type Journal = Arc<Mutex<Vec<(String, Settled)>>>;

struct RecordingAcker {
    id: String,
    journal: Journal,
}

impl Acker for RecordingAcker {
    fn ack(self: Box<Self>) {
        self.journal.lock().unwrap().push((self.id, Settled::Ack));
    }
    fn nack(self: Box<Self>) {
        self.journal.lock().unwrap().push((self.id, Settled::Nack));
    }
}

fn delivery(id: &str, journal: &Journal) -> Delivery {
    Delivery {
        message: RawMessage {
            message_id: id.to_string(),
            topic: Topic::Orders,
            publish_time_us: 1_705_800_000_000_000,
            data: b"not json: quarantined, which is a durable append too".to_vec(),
            attributes: BTreeMap::new(),
        },
        acker: Box::new(RecordingAcker {
            id: id.to_string(),
            journal: journal.clone(),
        }),
    }
}

/// After a failed group commit, `run_ingest` ends by itself with the fatal
/// log error (naming the directory) instead of nacking forever: the batch
/// whose append failed and every delivery queued behind it are nacked,
/// nothing is acknowledged after the failure, and the channel is closed so
/// the source learns that ingestion stopped.
///
/// Runs on the current-thread runtime: deliveries are queued with
/// `try_send`, so ingest sees them only when the test awaits, which makes
/// the order of events deterministic.
#[tokio::test]
async fn failed_commit_ends_ingest_with_the_fatal_error_and_acks_nothing_after_it() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let journal: Journal = Arc::default();
    let counters = Arc::new(IngestCounters::default());
    let (tx, rx) = mpsc::channel(64);
    let ingest = tokio::spawn(run_ingest(
        rx,
        log.clone(),
        IngestOptions::default(),
        counters.clone(),
        CancellationToken::new(),
    ));

    for id in ["before-0", "before-1", "before-2"] {
        tx.try_send(delivery(id, &journal)).ok().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while journal.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first batch is settled");

    fail::cfg("log::group_commit", "return").unwrap();
    for i in 0..5 {
        tx.try_send(delivery(&format!("after-{i}"), &journal))
            .ok()
            .unwrap();
    }
    let result = tokio::time::timeout(Duration::from_secs(10), ingest)
        .await
        .expect("run_ingest returns by itself after a failed commit")
        .unwrap();
    fail::remove("log::group_commit");

    let Err(IngestError::LogStopped(err)) = result else {
        panic!("expected LogStopped, got {result:?}");
    };
    assert!(matches!(err, LogError::CommitFailed { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "names the log directory: {err}"
    );

    let journal = journal.lock().unwrap().clone();
    let (acked, nacked): (Vec<_>, Vec<_>) =
        journal.iter().partition(|(_, how)| *how == Settled::Ack);
    let acked: Vec<&str> = acked.iter().map(|(id, _)| id.as_str()).collect();
    let mut nacked: Vec<&str> = nacked.iter().map(|(id, _)| id.as_str()).collect();
    nacked.sort();
    assert_eq!(acked, ["before-0", "before-1", "before-2"]);
    assert_eq!(
        nacked,
        ["after-0", "after-1", "after-2", "after-3", "after-4"],
        "every delivery after the failure is nacked, none acked"
    );
    let first_nack = journal.iter().position(|(_, h)| *h == Settled::Nack);
    assert_eq!(
        first_nack,
        Some(3),
        "no ack after the first nack: {journal:?}"
    );
    let stats = counters.snapshot();
    assert_eq!((stats.acked, stats.nacked), (3, 5));

    assert!(
        tx.try_send(delivery("too-late", &Journal::default()))
            .is_err(),
        "the channel is closed: the source stops sending"
    );
    assert_eq!(log.next_seq(), 0, "quarantine only: no entries");
    assert_eq!(log.stats().rejected, 3, "the failed group is not published");
    scenario.teardown();
}
