use ecom_log::AppendOutcome::{Appended, Quarantined};
use ecom_log::Incoming;

use crate::support::{message, message_ids, open, valid};

#[tokio::test]
async fn rejected_messages_are_quarantined_with_reason_and_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut not_json = message("bad-1");
    not_json.data = b"\xff\x00 not json at all".to_vec();
    let reason = "malformed orders_data message: expected value at line 1 column 1";
    {
        let log = open(dir.path());
        let outcomes = log
            .append(vec![
                valid("ok-1"),
                Incoming::Rejected(not_json.clone(), reason.to_string()),
                valid("ok-2"),
                Incoming::Rejected(message("bad-2"), "impossible value".to_string()),
            ])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            [Appended(0), Quarantined(0), Appended(1), Quarantined(1)],
            "entries and quarantine have their own sequences"
        );
    }
    let log = open(dir.path());
    let rejected = log.rejected().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].seq, 0);
    assert_eq!(rejected[0].message, not_json, "raw bytes kept exactly");
    assert_eq!(rejected[0].reason, reason);
    assert!(rejected[0].appended_at_ms > 0);
    assert_eq!(rejected[1].seq, 1);
    assert_eq!(rejected[1].message.message_id, "bad-2");

    let stats = log.stats();
    assert_eq!((stats.entries, stats.rejected), (2, 2));
    let ids = message_ids(&log);
    assert_eq!(
        ids,
        ["ok-1", "ok-2"],
        "quarantined messages are not entries"
    );
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.quarantine_checked, 2);
}
