use std::path::Path;

use ecom_log::{Log, LogError, LogOptions};

use ecom_core::Topic;

use crate::support::{entry_key, index_key, open, valid_batch, with_raw_db};

/// Ten entries, checkpoint at 3, log closed.
async fn ten_entries_checkpoint_3(dir: &Path) {
    let log = open(dir);
    log.append(valid_batch((0..10).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    log.set_checkpoint(3).unwrap();
}

fn flip_last_byte_of_entry(dir: &Path, seq: u64) {
    with_raw_db(dir, |db| {
        let mut value = db
            .get(entry_key(seq))
            .unwrap()
            .expect("entry exists")
            .to_vec();
        *value.last_mut().unwrap() ^= 0x20;
        db.insert(entry_key(seq), value).unwrap();
    });
}

fn inspect(dir: &Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            verify_tail_on_open: false,
            ..LogOptions::default()
        },
    )
    .expect("open for inspection")
}

#[tokio::test]
async fn corrupted_entry_is_named_on_open_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    ten_entries_checkpoint_3(dir.path()).await;
    flip_last_byte_of_entry(dir.path(), 6);

    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    let LogError::Corrupt { seq, reason, .. } = &err else {
        panic!("expected Corrupt, got {err}");
    };
    assert_eq!(*seq, 6);
    assert!(reason.contains("checksum mismatch"), "{reason}");
    let message = err.to_string();
    assert!(message.contains("entry seq 6"), "{message}");
    assert!(
        message.contains(&format!(
            "ecom-pipeline log verify --dir {}",
            dir.path().display()
        )),
        "{message}"
    );

    // What `ecom-pipeline log verify` does: open without the tail check,
    // then verify everything.
    let log = inspect(dir.path());
    let report = log.verify().unwrap();
    assert_eq!(report.entries_checked, 10);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("entry seq 6: checksum mismatch"),
        "{:?}",
        report.problems
    );
    // Reading names it too.
    assert!(matches!(
        log.read_from(4, 10),
        Err(LogError::Corrupt { seq: 6, .. })
    ));
    assert_eq!(
        log.read_from(0, 6).unwrap().len(),
        6,
        "entries before it read fine"
    );
}

#[tokio::test]
async fn corrupted_entry_before_the_checkpoint_opens_but_verify_names_it() {
    let dir = tempfile::tempdir().unwrap();
    ten_entries_checkpoint_3(dir.path()).await;
    flip_last_byte_of_entry(dir.path(), 1);

    let log = open(dir.path());
    let report = log.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].starts_with("entry seq 1: checksum mismatch"));
}

#[tokio::test]
async fn missing_entry_past_the_checkpoint_is_named_on_open() {
    let dir = tempfile::tempdir().unwrap();
    ten_entries_checkpoint_3(dir.path()).await;
    with_raw_db(dir.path(), |db| {
        db.remove(entry_key(5)).unwrap();
    });
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { seq: 5, reason, .. } if reason.contains("missing")),
        "{err}"
    );
    let report = inspect(dir.path()).verify().unwrap();
    assert!(
        report
            .problems
            .contains(&"entry seq 5 is missing".to_string()),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn index_inconsistencies_are_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    ten_entries_checkpoint_3(dir.path()).await;
    with_raw_db(dir.path(), |db| {
        db.remove(index_key(Topic::Orders, "m-2")).unwrap();
        let mut dangling = vec![b'e'];
        dangling.extend_from_slice(&99u64.to_be_bytes());
        db.insert(index_key(Topic::Orders, "ghost"), dangling)
            .unwrap();
        // "m-8" now claims entry 4, which holds "m-4".
        let mut wrong = vec![b'e'];
        wrong.extend_from_slice(&4u64.to_be_bytes());
        db.insert(index_key(Topic::Orders, "m-8"), wrong).unwrap();
    });
    let report = open(dir.path()).verify().unwrap();
    let mut problems = report.problems.clone();
    problems.sort();
    assert_eq!(
        problems,
        [
            r#"entry seq 2: message id "m-2" on orders_data is missing from the message-id index"#,
            r#"entry seq 8: message id "m-8" on orders_data is indexed at entry seq 4 instead"#,
            r#"index of message id "ghost" on orders_data points at entry seq 99, which does not exist"#,
            r#"index of message id "m-8" on orders_data points at entry seq 4, which holds a different message id or topic"#,
        ]
    );
}

#[tokio::test]
async fn unknown_format_version_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    ten_entries_checkpoint_3(dir.path()).await;
    with_raw_db(dir.path(), |db| {
        db.insert(b"mformat_version", &99u32.to_be_bytes()[..])
            .unwrap();
    });
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::FormatVersion {
                found: 99,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_sled_database_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_raw_db(dir.path(), |db| {
        db.insert(b"something", b"else").unwrap();
    });
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::NotALog { .. }), "{err}");
}
