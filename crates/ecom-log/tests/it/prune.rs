//! Pruning archived entries (issue 10): entries below a point leave the log,
//! their ids stay in the dedup index, reads below say "pruned", and the log
//! stays whole for `verify` and across a reopen.

use ecom_log::{AppendOutcome, LogError};

use crate::support::{open, valid, valid_batch};

#[tokio::test]
async fn pruned_entries_are_gone_their_ids_still_dedup_and_the_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(valid_batch((0..25_000).map(|i| format!("m-{i}"))))
            .await
            .unwrap();
        let err = log.prune_below(10).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::PruneBeyondCheckpoint {
                    seq: 10,
                    checkpoint: 0,
                    ..
                }
            ),
            "unprojected entries are never pruned: {err}"
        );
        log.set_checkpoint(21_000).unwrap();
        // Crosses the 10,000-entry chunks.
        assert_eq!(log.prune_below(20_500).unwrap(), 20_500);
        assert_eq!(log.prune_below(20_000).unwrap(), 0, "never back");
        assert_eq!(log.first_seq(), 20_500);
        let stats = log.stats();
        assert_eq!(
            (stats.first_seq, stats.entries, stats.next_seq),
            (20_500, 4_500, 25_000)
        );

        let err = log.read_from(20_499, 10).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Pruned {
                    from: 20_499,
                    first_seq: 20_500,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--archive"), "{err}");
        let tail = log.read_from(20_500, 3).unwrap();
        assert_eq!(tail[0].seq, 20_500);
        assert_eq!(tail[0].message.message_id, "m-20500");

        // A redelivery of a pruned message is still a duplicate.
        let outcomes = log
            .append(vec![valid("m-3"), valid("new-1")])
            .await
            .unwrap();
        assert!(
            matches!(outcomes[0], AppendOutcome::Duplicate),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], AppendOutcome::Appended(25_000)),
            "{outcomes:?}"
        );

        let report = log.verify().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries_checked, 4_501);
    }
    // Durable: after a reopen the same.
    let log = open(dir.path());
    assert_eq!(log.first_seq(), 20_500);
    assert_eq!(log.stats().entries, 4_501);
    assert!(log.verify().unwrap().problems.is_empty());
    assert!(matches!(log.read_from(0, 1), Err(LogError::Pruned { .. })));
}
