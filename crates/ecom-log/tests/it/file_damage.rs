//! Damage to the files of a closed log: sled recovers a truncated or
//! overwritten data file to a shorter prefix without an error, so the log
//! checks what it holds against `<dir>/HIGH_WATER` and refuses to open a
//! log that lost acknowledged records; `log verify` (opening for
//! inspection) reports it; `Log::salvage` copies what is readable.

use std::path::Path;

use ecom_log::{Incoming, Log, LogError, LogOptions};

use crate::support::{entry_key, message, open, valid_batch, with_raw_db};

/// 1000 entries in 20 group commits and 2 quarantined messages,
/// checkpoint 300, closed.
async fn thousand_entries(dir: &Path) {
    let log = open(dir);
    for b in 0..20 {
        log.append(valid_batch((0..50).map(|i| format!("m-{b}-{i}"))))
            .await
            .unwrap();
    }
    log.append(vec![
        Incoming::Rejected(message("bad-1"), "not JSON".into()),
        Incoming::Rejected(message("bad-2"), "missing field".into()),
    ])
    .await
    .unwrap();
    log.set_checkpoint(300).unwrap();
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

fn data_file(dir: &Path) -> std::path::PathBuf {
    dir.join("db").join("db")
}

#[tokio::test]
async fn a_truncated_data_file_is_refused_on_open_and_names_the_lost_entries() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(data_file(dir.path()))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
    drop(file);

    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    let LogError::Truncated {
        found_next_seq,
        recorded_next_seq,
        ..
    } = &err
    else {
        panic!("expected Truncated, got {err}");
    };
    assert_eq!(*recorded_next_seq, 1000);
    assert!(*found_next_seq < 1000, "{err}");
    let message = err.to_string();
    assert!(message.contains("db/db"), "names the file: {message}");
    assert!(
        message.contains(&format!("entries {found_next_seq}..1000")),
        "{message}"
    );
    assert!(message.contains("log salvage --dir"), "{message}");

    // Refused again on the next attempt: opening did not paper over it.
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(LogError::Truncated { .. })
    ));
    // `log verify` opens for inspection and reports it first.
    let report = inspect(dir.path()).verify().unwrap();
    assert!(
        report.problems[0].contains("lost records"),
        "{:?}",
        report.problems
    );
    // Still refused after the inspection closed the log.
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(LogError::Truncated { .. })
    ));
}

#[tokio::test]
async fn a_deleted_data_file_is_not_reopened_as_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    std::fs::remove_file(data_file(dir.path())).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Truncated {
                found_next_seq: 0,
                recorded_next_seq: 1000,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupted_sled_config_is_named_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    let conf = dir.path().join("db").join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[5] ^= 0x5a;
    std::fs::write(&conf, bytes).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("corrupted"), "{err}");
}

#[tokio::test]
async fn a_malformed_high_water_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    std::fs::write(dir.path().join("HIGH_WATER"), "garbage").unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LogError::Damaged { file, .. } if file.ends_with("HIGH_WATER")),
        "{err}"
    );
}

#[tokio::test]
async fn a_log_reopened_after_a_clean_close_keeps_its_high_water() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    let text = std::fs::read_to_string(dir.path().join("HIGH_WATER")).unwrap();
    assert_eq!(text.trim(), "next_seq 1000 next_quarantine_seq 2");
    let log = open(dir.path());
    assert_eq!(log.next_seq(), 1000);
    assert!(log.verify().unwrap().is_ok());
}

#[tokio::test]
async fn salvage_copies_every_readable_record_and_names_the_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    with_raw_db(dir.path(), |db| {
        let mut value = db.get(entry_key(6)).unwrap().unwrap().to_vec();
        *value.last_mut().unwrap() ^= 0x20;
        db.insert(entry_key(6), value).unwrap();
    });
    let into = dir.path().join("salvaged");
    let report = Log::salvage(dir.path(), &into).await.unwrap();
    assert_eq!(report.entries_copied, 999);
    assert_eq!(report.quarantine_copied, 2);
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
    assert!(
        report.lost[0]
            .starts_with(r#"entry seq 6 (message id "m-0-6" on orders_data): checksum mismatch"#),
        "{:?}",
        report.lost
    );

    let new = open(&into);
    assert_eq!(new.checkpoint(), 0, "the projector re-applies everything");
    assert!(new.verify().unwrap().is_ok());
    let ids: Vec<String> = new
        .read_from(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.message.message_id)
        .collect();
    let want: Vec<String> = (0..20)
        .flat_map(|b| (0..50).map(move |i| format!("m-{b}-{i}")))
        .filter(|id| id != "m-0-6")
        .collect();
    assert_eq!(ids, want, "in their old order");
    let rejected = new.rejected().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[1].reason, "missing field");
    assert_eq!(rejected[1].message, message("bad-2"));

    // Never into an existing log.
    drop(new);
    let err = Log::salvage(dir.path(), &into).await.unwrap_err();
    assert!(matches!(err, LogError::SalvageTarget { .. }), "{err}");
}

#[tokio::test]
async fn salvage_of_a_truncated_log_keeps_the_prefix_and_names_the_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    thousand_entries(dir.path()).await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(data_file(dir.path()))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
    drop(file);
    let Err(LogError::Truncated { found_next_seq, .. }) =
        Log::open(dir.path(), LogOptions::default())
    else {
        panic!("a truncated log opens");
    };

    let into = dir.path().join("salvaged");
    let report = Log::salvage(dir.path(), &into).await.unwrap();
    assert_eq!(report.entries_copied, found_next_seq);
    assert!(
        report.lost.iter().any(|l| l.starts_with(&format!(
            "entries {found_next_seq}..1000 are no longer in the database"
        ))),
        "{:?}",
        report.lost
    );
    let new = open(&into);
    assert_eq!(new.next_seq(), found_next_seq);
    assert!(new.verify().unwrap().is_ok());
}
