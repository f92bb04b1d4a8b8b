use std::collections::BTreeSet;
use std::sync::Arc;

use ecom_log::AppendOutcome;

use crate::support::{open, valid};

const CALLERS: usize = 50;

/// 50 concurrent single-message appends must share flushes: while one
/// group flushes, the others queue and are committed together. A behaviour
/// check (fewer flushes than appends), not a timing check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let log = log.clone();
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            start.wait().await;
            log.append(vec![valid(&format!("m-{i}"))]).await.unwrap()
        });
    }
    let mut seqs = BTreeSet::new();
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap()[..] {
            [AppendOutcome::Appended(seq)] => assert!(seqs.insert(seq), "seq {seq} given twice"),
            ref other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(seqs, (0..CALLERS as u64).collect(), "distinct and gap-free");
    let flushes = log.stats().flushes;
    assert!(
        flushes < CALLERS as u64,
        "{CALLERS} appends took {flushes} flushes: no group commit"
    );
    eprintln!("{CALLERS} concurrent appends, {flushes} flushes");
}
