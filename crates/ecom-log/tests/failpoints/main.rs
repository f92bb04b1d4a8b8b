//! Fault injection into the writer's group commit, through the `fail`
//! crate's failpoints (cargo feature `failpoints`).
//!
//! Failpoints are process-global, so these tests live in a binary of their
//! own, and each runs inside a [`FailScenario`], which serializes them.

use std::collections::BTreeMap;
use std::path::Path;

use ecom_core::{RawMessage, Topic};
use ecom_log::AppendOutcome::{Appended, Duplicate};
use ecom_log::{Incoming, Log, LogError, LogOptions};
use fail::FailScenario;

const COMMIT_FAILPOINTS: [&str; 3] = [
    "log::group_commit",
    "log::after_write_before_fsync",
    "log::after_fsync_before_ack",
];

fn valid(id: &str) -> Incoming {
    Incoming::Valid(RawMessage {
        message_id: id.to_string(),
        topic: Topic::Orders,
        publish_time_us: 1_705_800_000_000_000,
        data: format!(r#"{{"message": "{id}"}}"#).into_bytes(),
        attributes: BTreeMap::new(),
    })
}

fn batch(prefix: &str, n: usize) -> Vec<Incoming> {
    (0..n).map(|i| valid(&format!("{prefix}-{i}"))).collect()
}

fn open(dir: &Path) -> Log {
    Log::open(dir, LogOptions::default()).expect("open log")
}

fn stored_ids(log: &Log) -> Vec<String> {
    log.read_from(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.message.message_id)
        .collect()
}

/// Whichever step of the group commit fails, the batch's caller gets a
/// fatal `CommitFailed` naming the directory, every later append a fatal
/// `WriterStopped` (also once the fault is gone), and readers never see the
/// failed group. After a restart the log verifies, every acknowledged
/// message is there, and redelivering the failed batch stores each message
/// exactly once.
#[tokio::test]
async fn failed_group_commit_stops_the_writer_and_loses_nothing_acknowledged() {
    for failpoint in COMMIT_FAILPOINTS {
        let scenario = FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().display().to_string();
        {
            let log = open(dir.path());
            let acked = log.append(batch("acked", 3)).await.unwrap();
            assert_eq!(acked, [Appended(0), Appended(1), Appended(2)]);

            fail::cfg(failpoint, "return").unwrap();
            let err = log.append(batch("failed", 2)).await.unwrap_err();
            assert!(
                matches!(&err, LogError::CommitFailed { dir: d, .. } if d == dir.path()),
                "{failpoint}: {err}"
            );
            assert!(err.is_fatal(), "{failpoint}: {err}");
            let text = err.to_string();
            assert!(text.contains(&dir_text), "names the directory: {text}");
            assert!(text.contains(failpoint), "says what failed: {text}");
            assert!(text.contains("re-verifies"), "says a restart helps: {text}");

            // The fault is gone, but the writer stays stopped: what reached
            // the disk is uncertain.
            fail::remove(failpoint);
            let err = log.append(batch("later", 1)).await.unwrap_err();
            assert!(
                matches!(err, LogError::WriterStopped { .. }),
                "{failpoint}: {err}"
            );
            assert!(err.is_fatal());
            assert!(err.to_string().contains(&dir_text), "{err}");
            assert!(
                err.to_string().contains(failpoint),
                "names the cause: {err}"
            );

            assert_eq!(
                log.next_seq(),
                3,
                "{failpoint}: the failed group is not readable"
            );
            assert_eq!(stored_ids(&log), ["acked-0", "acked-1", "acked-2"]);
        }

        // The restart: open re-verifies; nothing acknowledged is lost.
        let log = open(dir.path());
        assert!(log.verify().unwrap().is_ok(), "{failpoint}");
        let ids = stored_ids(&log);
        assert_eq!(ids[..3], ["acked-0", "acked-1", "acked-2"], "{failpoint}");
        // The transport redelivers what was nacked: stored once either way.
        let mut redelivered = batch("failed", 2);
        redelivered.extend(batch("later", 1));
        log.append(redelivered).await.unwrap();
        let mut ids = stored_ids(&log);
        ids.sort();
        assert_eq!(
            ids,
            [
                "acked-0", "acked-1", "acked-2", "failed-0", "failed-1", "later-0"
            ],
            "{failpoint}: every message stored exactly once"
        );
        scenario.teardown();
    }
}

/// A failure after the fsync leaves the batch durable although its caller
/// was told it failed: after the restart it is in the log, and the
/// redelivery the caller's nack causes is answered as `Duplicate`.
#[tokio::test]
async fn batch_failed_after_fsync_is_durable_and_its_redelivery_is_a_duplicate() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        fail::cfg("log::after_fsync_before_ack", "return").unwrap();
        let err = log.append(batch("m", 2)).await.unwrap_err();
        assert!(matches!(err, LogError::CommitFailed { .. }), "{err}");
        fail::remove("log::after_fsync_before_ack");
    }
    let log = open(dir.path());
    assert_eq!(stored_ids(&log), ["m-0", "m-1"]);
    let outcomes = log.append(batch("m", 2)).await.unwrap();
    assert_eq!(outcomes, [Duplicate, Duplicate]);
    scenario.teardown();
}

/// A compaction that fails before its switch leaves the old generation as
/// the log, untouched and still taking appends; its copy is removed; the
/// next compaction succeeds.
#[tokio::test]
async fn compaction_failing_before_its_switch_leaves_the_log_as_it_was() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(batch("m", 100)).await.unwrap();
    log.set_checkpoint(100).unwrap();
    log.prune_below(60).unwrap();
    fail::cfg("log::compact_before_switch", "return").unwrap();
    let err = log
        .compact(ecom_log::CompactOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("log::compact_before_switch"),
        "{err}"
    );
    assert!(!dir.path().join("db.1").exists(), "the copy is removed");
    assert!(!dir.path().join("CURRENT").exists());
    assert_eq!(log.append(batch("n", 1)).await.unwrap(), [Appended(100)]);
    fail::remove("log::compact_before_switch");
    assert_eq!(
        log.compact(ecom_log::CompactOptions::default())
            .unwrap()
            .generation,
        1
    );
    assert_eq!(log.append(batch("m", 1)).await.unwrap(), [Duplicate]);
    assert_eq!(log.read_from(60, usize::MAX).unwrap().len(), 41);
    drop(log);
    let log = open(dir.path());
    assert!(log.verify().unwrap().is_ok());
    drop(log);
    scenario.teardown();
}
