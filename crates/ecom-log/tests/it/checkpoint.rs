use ecom_log::LogError;

use crate::support::{open, valid_batch};

#[tokio::test]
async fn checkpoint_persists_across_reopen_and_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        assert_eq!(log.checkpoint(), 0);
        log.append(valid_batch((0..10).map(|i| format!("m-{i}"))))
            .await
            .unwrap();
        log.set_checkpoint(4).unwrap();
        log.set_checkpoint(4).unwrap(); // unchanged is fine
        log.set_checkpoint(7).unwrap();
        assert_eq!(log.checkpoint(), 7);
        assert_eq!(log.stats().checkpoint, 7);

        let err = log.set_checkpoint(6).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::CheckpointBackwards {
                    current: 7,
                    requested: 6,
                    ..
                }
            ),
            "{err}"
        );
        let err = log.set_checkpoint(11).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::CheckpointBeyondEnd {
                    requested: 11,
                    next_seq: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(log.checkpoint(), 7, "refusals change nothing");
        log.flush().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.checkpoint(), 7);
    assert!(matches!(
        log.set_checkpoint(3),
        Err(LogError::CheckpointBackwards { .. })
    ));
    log.set_checkpoint(10).unwrap();
}

#[tokio::test]
async fn checkpoint_without_explicit_flush_is_durable_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(valid_batch((0..3).map(|i| format!("m-{i}"))))
            .await
            .unwrap();
        log.set_checkpoint(2).unwrap();
    }
    assert_eq!(open(dir.path()).checkpoint(), 2);
}
