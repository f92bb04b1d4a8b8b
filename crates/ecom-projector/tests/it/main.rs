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

    let report = verify(std::slice::from_ref(&log), store.as_ref())
        .await
        .unwrap();
    assert!(report.clean(), "{report:?}");

    let rebuilt = SledStore::temporary().unwrap();
    replay(std::slice::from_ref(&log), &rebuilt, false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(snapshot(&rebuilt).await.unwrap(), actual);
}

#[tokio::test]
async fn replay_refuses_a_non_empty_store_without_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    append_all(&log, &messages(10, 2)).await;
    let store = SledStore::temporary().unwrap();
    replay(std::slice::from_ref(&log), &store, false, |_, _| {})
        .await
        .unwrap();
    let err = replay(std::slice::from_ref(&log), &store, false, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--truncate"), "{err}");
    replay(std::slice::from_ref(&log), &store, true, |_, _| {})
        .await
        .unwrap();
    assert!(!store.is_empty().await.unwrap());
}
