use ecom_log::AppendOutcome::{Appended, Duplicate, Quarantined};
use ecom_log::Incoming;

use crate::support::{message, message_ids, open, payment_message, valid};

#[tokio::test]
async fn transport_duplicate_is_not_appended_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());

        // Within one batch.
        let outcomes = log
            .append(vec![valid("a"), valid("b"), valid("a")])
            .await
            .unwrap();
        assert_eq!(outcomes, [Appended(0), Appended(1), Duplicate]);

        // Across batches.
        let outcomes = log.append(vec![valid("b"), valid("c")]).await.unwrap();
        assert_eq!(outcomes, [Duplicate, Appended(2)]);

        // A quarantined id is known too, in either direction.
        let outcomes = log
            .append(vec![
                Incoming::Rejected(message("bad"), "malformed".into()),
                valid("bad"),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [Quarantined(0), Duplicate]);
        let outcomes = log
            .append(vec![Incoming::Rejected(message("a"), "malformed".into())])
            .await
            .unwrap();
        assert_eq!(outcomes, [Duplicate]);

        let stats = log.stats();
        assert_eq!(stats.duplicates_message_id, 4);
        assert_eq!((stats.entries, stats.rejected), (3, 1));
    }

    // After reopen: the index and the counter are persistent.
    let log = open(dir.path());
    assert_eq!(log.stats().duplicates_message_id, 4);
    let outcomes = log
        .append(vec![valid("a"), valid("bad"), valid("d")])
        .await
        .unwrap();
    assert_eq!(outcomes, [Duplicate, Duplicate, Appended(3)]);
    assert_eq!(log.stats().duplicates_message_id, 6);
    let ids = message_ids(&log);
    assert_eq!(ids, ["a", "b", "c", "d"], "each id stored once");
    assert!(log.verify().unwrap().is_ok());
}

#[tokio::test]
async fn duplicates_across_concurrent_callers_in_one_group_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let log = log.clone();
        tasks.spawn(async move { log.append(vec![valid("same")]).await.unwrap() });
    }
    let mut appended = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap()[..] {
            [Appended(0)] => appended += 1,
            [Duplicate] => {}
            ref other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(appended, 1);
    assert_eq!(log.stats().duplicates_message_id, 19);
    assert_eq!(log.next_seq(), 1);
}

/// Pub/Sub message ids are unique within a topic, not across topics: an
/// order and a payment with the same id are two messages, both stored (as
/// entries or in quarantine), and each topic's redelivery is still a
/// duplicate, also after reopening.
#[tokio::test]
async fn order_and_payment_with_the_same_message_id_are_both_stored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let outcomes = log
            .append(vec![
                valid("shared-1"),
                Incoming::Valid(payment_message("shared-1")),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [Appended(0), Appended(1)]);
        // The quarantine is deduplicated with the same key.
        let outcomes = log
            .append(vec![
                Incoming::Rejected(message("shared-2"), "malformed".into()),
                Incoming::Rejected(payment_message("shared-2"), "malformed".into()),
                Incoming::Valid(payment_message("shared-1")),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [Quarantined(0), Quarantined(1), Duplicate]);
    }
    let log = open(dir.path());
    let outcomes = log
        .append(vec![
            valid("shared-1"),
            Incoming::Valid(payment_message("shared-1")),
            Incoming::Valid(payment_message("shared-2")),
            valid("shared-2"),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [Duplicate, Duplicate, Duplicate, Duplicate]);
    let entries = log.read_from(0, 10).unwrap();
    let stored: Vec<_> = entries
        .iter()
        .map(|e| (e.message.topic.name(), e.message.message_id.as_str()))
        .collect();
    assert_eq!(
        stored,
        [("orders_data", "shared-1"), ("payments_data", "shared-1")]
    );
    assert_eq!(log.stats().duplicates_message_id, 5);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.index_checked, 4);
}
