//! Projector integration tests: log → projector → embedded store.

use std::sync::Arc;

use ecom_core::workload::{WorkloadSpec, generate};
use ecom_core::{Model, RawMessage, decode};
use ecom_log::{Incoming, Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions, replay, verify};
use ecom_store::{FactStore, SledStore, snapshot};
use tokio_util::sync::CancellationToken;

fn messages(orders: u64, seed: u64) -> Vec<RawMessage> {
    generate(&WorkloadSpec::demo(orders, seed))
        .into_iter()
        .enumerate()
        .map(|(i, p)| RawMessage {
            message_id: format!("m{i:06}"),
            topic: p.topic,
            publish_time_us: 1_000 + i as i64,
            data: p.data,
            attributes: Default::default(),
        })
        .collect()
}

fn model_of(msgs: &[RawMessage]) -> Model {
    let mut m = Model::new();
    for raw in msgs {
        if let Ok(e) = decode(raw) {
            m.apply(&e);
        }
    }
    m
}

async fn append_all(log: &Log, msgs: &[RawMessage]) {
    let batch = msgs
        .iter()
        .cloned()
        .map(ecom_ingest_like::classify)
        .collect();
    log.append(batch).await.unwrap();
}

mod ecom_ingest_like {
    use super::*;
    pub fn classify(m: RawMessage) -> Incoming {
        match decode(&m) {
            Ok(_) => Incoming::Valid(m),
            Err(r) => Incoming::Rejected(m, r.to_string()),
        }
    }
}

/// [`replay`] of one log, nobody watching its progress.
async fn replay_one<S: FactStore>(
    log: &Log,
    store: &S,
    truncate: bool,
) -> Result<ecom_projector::ReplayReport, ecom_projector::ReplayError> {
    replay(
        std::slice::from_ref(log),
        store,
        truncate,
        &ecom_core::progress::ignore,
    )
    .await
}

#[tokio::test]
async fn projected_log_equals_the_model_and_replay_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    let msgs = messages(300, 1);
    append_all(&log, &msgs).await;
    let store = Arc::new(SledStore::temporary().unwrap());
    let projector = Projector::new(
        log.clone(),
        Applier::new(store.clone()),
        ProjectorOptions::default(),
    );
    projector.catch_up(&CancellationToken::new()).await.unwrap();
    assert_eq!(log.checkpoint(), log.next_seq());
    let expected = model_of(&msgs).final_state();
    let actual = snapshot(store.as_ref()).await.unwrap();
    assert_eq!(expected.diff(&actual, 5), (0, vec![]));
    assert!(
        !expected.parked.is_empty(),
        "the workload has orphan payments"
    );
    assert!(!expected.audit.is_empty(), "the workload has conflicts");

    let report = verify(
        std::slice::from_ref(&log),
        store.as_ref(),
        &ecom_core::progress::ignore,
    )
    .await
    .unwrap();
    assert!(report.clean(), "{report:?}");

    let rebuilt = SledStore::temporary().unwrap();
    replay_one(&log, &rebuilt, false).await.unwrap();
    assert_eq!(snapshot(&rebuilt).await.unwrap(), actual);
}

#[tokio::test]
async fn replay_refuses_a_non_empty_store_without_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    append_all(&log, &messages(10, 2)).await;
    let store = SledStore::temporary().unwrap();
    replay_one(&log, &store, false).await.unwrap();
    let err = replay_one(&log, &store, false).await.unwrap_err();
    assert!(err.to_string().contains("--truncate"), "{err}");
    replay_one(&log, &store, true).await.unwrap();
    assert!(!store.is_empty().await.unwrap());
}

/// Defect 4 of the old replay: `--truncate` emptied the store before it
/// read the logs, so a damaged entry below the checkpoint (which opening the
/// log does not re-check) left the store empty. Now every entry is read and
/// checksummed first, and the store is untouched when one is damaged.
#[tokio::test]
async fn replay_with_truncate_leaves_the_store_alone_when_an_old_entry_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let msgs = messages(20, 3);
    let store = SledStore::temporary().unwrap();
    {
        let log = Log::open(&path, LogOptions::default()).unwrap();
        append_all(&log, &msgs).await;
        replay_one(&log, &store, false).await.unwrap();
        assert_eq!(log.checkpoint(), log.next_seq());
    }
    let before = snapshot(&store).await.unwrap();
    // Damage entry 0, far below the checkpoint: one byte of its payload.
    {
        let db = sled::open(path.join("db")).unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&0u64.to_be_bytes());
        let mut value = db.get(&key).unwrap().expect("entry 0").to_vec();
        *value.last_mut().unwrap() ^= 0x20;
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }
    let log = Log::open(&path, LogOptions::default()).expect("the tail is intact, so it opens");
    let err = replay_one(&log, &store, true).await.unwrap_err();
    assert!(err.to_string().contains("seq 0"), "names the entry: {err}");
    assert_eq!(
        snapshot(&store).await.unwrap(),
        before,
        "the store was not truncated"
    );
}
