use ecom_log::{AppendOutcome, LogError};

use crate::support::{message, message_ids, open, valid, valid_batch};

#[tokio::test]
async fn append_returns_sequence_numbers_in_order_and_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.next_seq(), 0);

    let first = log
        .append(valid_batch((0..3).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    let second = log
        .append(valid_batch((3..5).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    assert_eq!(
        first,
        [0, 1, 2].map(AppendOutcome::Appended),
        "first batch gets 0..3"
    );
    assert_eq!(second, [3, 4].map(AppendOutcome::Appended));
    assert_eq!(log.next_seq(), 5);

    let entries = log.read_from(0, 100).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    for entry in &entries {
        assert_eq!(entry.message, message(&format!("m-{}", entry.seq)));
        assert!(entry.appended_at_ms > 1_700_000_000_000, "wall clock in ms");
    }

    // A window in the middle, and reads at or past the end.
    let window: Vec<u64> = log.read_from(1, 2).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(window, [1, 2]);
    assert!(log.read_from(5, 10).unwrap().is_empty());
    assert!(log.read_from(1_000, 10).unwrap().is_empty());
    assert!(log.read_from(0, 0).unwrap().is_empty());
}

#[tokio::test]
async fn entries_survive_reopen_and_sequence_numbers_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(valid_batch((0..3).map(|i| format!("m-{i}"))))
            .await
            .unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.next_seq(), 3);
    let outcome = log.append(vec![valid("m-3")]).await.unwrap();
    assert_eq!(outcome, [AppendOutcome::Appended(3)]);
    let ids = message_ids(&log);
    assert_eq!(ids, ["m-0", "m-1", "m-2", "m-3"]);
    let stats = log.stats();
    assert_eq!((stats.entries, stats.next_seq), (4, 4));
}

#[tokio::test]
async fn a_1000_message_batch_appends_and_reads_back_with_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let outcomes = log
        .append(valid_batch((0..1000).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1000);
    assert!(
        outcomes
            .iter()
            .enumerate()
            .all(|(i, o)| *o == AppendOutcome::Appended(i as u64))
    );
    assert_eq!(log.stats().flushes, 1, "one batch, one flush");
    let entries = log.read_from(0, usize::MAX).unwrap();
    assert_eq!(entries.len(), 1000);
    assert_eq!(entries[999].message.message_id, "m-999");
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 1000);
    assert_eq!(report.index_checked, 1000);
}

#[tokio::test]
async fn empty_append_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(log.append(Vec::new()).await.unwrap().is_empty());
    assert_eq!(log.stats().flushes, 0);
    assert_eq!(log.next_seq(), 0);
}

#[tokio::test]
async fn subscribe_sees_next_seq_after_each_durable_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut tail = log.subscribe();
    assert_eq!(*tail.borrow_and_update(), 0);

    let tailer = tokio::spawn({
        let log = log.clone();
        async move {
            let mut read = Vec::new();
            let mut next = 0;
            while next < 5 {
                tail.changed().await.unwrap();
                let end = *tail.borrow_and_update();
                for entry in log.read_from(next, usize::MAX).unwrap() {
                    assert!(entry.seq < end, "never sees past the published end");
                    read.push(entry.seq);
                }
                next = end;
            }
            read
        }
    });
    for i in 0..5 {
        log.append(vec![valid(&format!("m-{i}"))]).await.unwrap();
    }
    assert_eq!(tailer.await.unwrap(), [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn oversized_message_is_refused_and_nothing_of_its_batch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut huge = message("huge");
    huge.data = vec![b'x'; 65 << 20];
    let err = log
        .append(vec![valid("small"), ecom_log::Incoming::Valid(huge)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LogError::Encode { message_id, .. } if message_id == "huge"),
        "{err}"
    );
    assert_eq!(log.next_seq(), 0);
    // The log still works.
    assert_eq!(
        log.append(vec![valid("small")]).await.unwrap(),
        [AppendOutcome::Appended(0)]
    );
}

/// sled stores large values in separate blob files, which the log syncs
/// itself after each flush.
#[tokio::test]
async fn large_message_stored_as_a_sled_blob_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = message("big");
    big.data = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    {
        let log = open(dir.path());
        let outcomes = log
            .append(vec![ecom_log::Incoming::Valid(big.clone()), valid("after")])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            [AppendOutcome::Appended(0), AppendOutcome::Appended(1)]
        );
        let blobs = std::fs::read_dir(dir.path().join("db").join("blobs"))
            .unwrap()
            .count();
        assert!(blobs > 0, "expected sled to use a blob file");
    }
    let log = open(dir.path());
    let entries = log.read_from(0, 10).unwrap();
    assert_eq!(entries[0].message, big);
    assert_eq!(entries[1].message.message_id, "after");
}
