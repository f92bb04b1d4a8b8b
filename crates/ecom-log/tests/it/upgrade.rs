//! Logs written in on-disk format 1 (message-id index without the topic):
//! refused on open with what to run, then upgraded in place.

use std::path::Path;

use ecom_core::RawMessage;
use ecom_log::AppendOutcome::{Appended, Duplicate};
use ecom_log::{Incoming, Log, LogError, LogOptions};

use crate::support::{message, open, payment_message, write_format_1_log};

struct Fixture {
    entries: Vec<(RawMessage, i64)>,
    quarantined: Vec<(RawMessage, &'static str, i64)>,
}

/// Three entries (two orders, one payment), one quarantined payment,
/// checkpoint 1, 4 duplicates counted, in format 1.
fn format_1_fixture(dir: &Path) -> Fixture {
    let f = Fixture {
        entries: vec![
            (message("o-1"), 1_700_000_000_001),
            (payment_message("p-1"), 1_700_000_000_002),
            (message("o-2"), 1_700_000_000_003),
        ],
        quarantined: vec![(payment_message("bad-1"), "malformed", 1_700_000_000_004)],
    };
    write_format_1_log(dir, &f.entries, &f.quarantined, 1, 4);
    f
}

#[test]
fn format_1_log_is_refused_on_open_naming_the_upgrade_command() {
    let dir = tempfile::tempdir().unwrap();
    format_1_fixture(dir.path());
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::UpgradeNeeded {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    let command = format!("ecom-pipeline log upgrade --dir {}", dir.path().display());
    assert!(text.contains(&command), "says what to run: {text}");
    // Also without the tail check (what `log verify` opens with).
    let err = Log::open(
        dir.path(),
        LogOptions {
            verify_tail_on_open: false,
            ..LogOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LogError::UpgradeNeeded { .. }), "{err}");
}

#[tokio::test]
async fn upgraded_format_1_log_opens_with_every_entry_and_its_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = format_1_fixture(dir.path());

    let report = Log::upgrade(dir.path()).unwrap();
    assert!(report.upgraded());
    assert_eq!((report.from_version, report.to_version), (1, 2));
    assert_eq!((report.entries, report.quarantined), (3, 1));
    assert_eq!(report.old_index_keys, 4);

    let log = open(dir.path());
    let verify = log.verify().unwrap();
    assert!(verify.is_ok(), "{:?}", verify.problems);
    assert_eq!(verify.index_checked, 4, "old index keys are gone");
    let entries = log.read_from(0, 10).unwrap();
    let read: Vec<_> = entries
        .iter()
        .map(|e| (e.message.clone(), e.appended_at_ms))
        .collect();
    assert_eq!(read, fixture.entries, "every entry, byte for byte");
    let rejected = log.rejected().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].message, fixture.quarantined[0].0);
    assert_eq!(rejected[0].reason, "malformed");
    let stats = log.stats();
    assert_eq!((stats.checkpoint, stats.duplicates_message_id), (1, 4));

    // Dedup intact: every stored (topic, id) is a duplicate...
    let outcomes = log
        .append(vec![
            Incoming::Valid(message("o-1")),
            Incoming::Valid(payment_message("p-1")),
            Incoming::Valid(message("o-2")),
            Incoming::Valid(payment_message("bad-1")),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [Duplicate; 4]);
    // ...and now the same id on the other topic is a message of its own.
    let outcomes = log
        .append(vec![Incoming::Valid(payment_message("o-1"))])
        .await
        .unwrap();
    assert_eq!(outcomes, [Appended(3)]);
    drop(log);

    let again = Log::upgrade(dir.path()).unwrap();
    assert!(!again.upgraded(), "a current log is left alone: {again:?}");
    assert_eq!(open(dir.path()).next_seq(), 4);
}

#[test]
fn upgrade_refuses_a_log_that_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path());
    let err = Log::upgrade(dir.path()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
}
