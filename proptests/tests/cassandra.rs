//! The behaviour suite against Apache Cassandra (LWT store).
//!
//! Needs `ECOM_CASSANDRA=host:port` (scripts/test.sh sets it). Without it the
//! tests skip locally and fail in CI (`CI` or `ECOM_REQUIRE_CASSANDRA=1`).
//! Each test owns two fresh keyspaces (live and replay target), truncated
//! between cases; fewer cases than the embedded suite because every case
//! pays real Paxos round trips.

use std::sync::Arc;

use ecom_cassandra::testing::test_config;
use ecom_cassandra::{CassandraConfig, CassandraStore, SCHEMA_CQL, apply_schema, drop_keyspace};
use ecom_ingest::classify;
use ecom_log::{Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions};
use ecom_proptests::*;
use ecom_store::FactStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

struct Keyspaces {
    live: CassandraConfig,
    replay: CassandraConfig,
}

impl Keyspaces {
    fn create() -> Option<Keyspaces> {
        let live = test_config()?;
        let replay = test_config()?;
        block_on(async {
            for cfg in [&live, &replay] {
                apply_schema(cfg, SCHEMA_CQL)
                    .await
                    .expect("create test keyspace");
            }
        });
        Some(Keyspaces { live, replay })
    }

    /// Connects (on the current case's runtime) and empties the keyspace.
    async fn store(cfg: &CassandraConfig) -> CassandraStore {
        let store = CassandraStore::connect(cfg.clone()).await.expect("connect");
        store.truncate().await.expect("truncate");
        store
    }
}

impl Drop for Keyspaces {
    fn drop(&mut self) {
        block_on(async {
            for cfg in [&self.live, &self.replay] {
                if let Err(e) = drop_keyspace(cfg).await {
                    eprintln!("could not drop {}: {e}", cfg.keyspace);
                }
            }
        });
    }
}

/// Cases per property against Cassandra: `ECOM_PROPTEST_CASSANDRA_CASES`,
/// default `default` (about a second each on the local node).
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("ECOM_PROPTEST_CASSANDRA_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn dedup_ends_in_the_model_state_on_cassandra() {
    let Some(ks) = Keyspaces::create() else {
        return;
    };
    let strategy = published(30).prop_flat_map(|m| (Just(m.clone()), delivery(m, 1)));
    runner(32)
        .run(&strategy, |(msgs, delivery)| {
            block_on(async {
                let store = Arc::new(Keyspaces::store(&ks.live).await);
                run_instances(&delivery, store.clone(), 4).await;
                assert_store_is(store.as_ref(), &expected(&msgs)).await;
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn join_ordering_across_instances_ends_in_the_model_state_on_cassandra() {
    let Some(ks) = Keyspaces::create() else {
        return;
    };
    let strategy = (
        published(30).prop_flat_map(|m| (Just(m.clone()), delivery(m, 3))),
        any::<u64>(),
    );
    runner(32)
        .run(&strategy, |((msgs, delivery), seed)| {
            block_on(async {
                let store = Arc::new(Yielding::new(Keyspaces::store(&ks.live).await, seed));
                let logs = run_instances(&delivery, store.clone(), 4).await;
                let want = expected(&msgs);
                assert_store_is(store.as_ref(), &want).await;
                let logs: Vec<_> = logs.into_iter().map(|(_, l)| l).collect();
                let target = Keyspaces::store(&ks.replay).await;
                assert_replay_rebuilds(&logs, &target, &want).await;
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn crash_at_any_point_then_resume_ends_in_the_model_state_on_cassandra() {
    let Some(ks) = Keyspaces::create() else {
        return;
    };
    let strategy = (
        published(30).prop_flat_map(|m| (Just(m.clone()), delivery(m, 1))),
        prop::collection::vec(0u64..40, 1..4),
        prop::collection::vec(any::<bool>(), 4),
    );
    runner(24)
        .run(&strategy, |((msgs, delivery), budgets, after)| {
            block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
                for batch in &delivery.instances[0] {
                    log.append(batch.iter().cloned().map(classify).collect())
                        .await
                        .unwrap();
                }
                let store = Arc::new(FailAfter::new(Keyspaces::store(&ks.live).await, budgets[0]));
                store.fail_after_applying(after[0]);
                let mut crashes = budgets[1..].iter().zip(&after[1..]);
                loop {
                    let projector = Projector::new(
                        log.clone(),
                        Applier::new(store.clone()),
                        ProjectorOptions {
                            batch_size: 5,
                            concurrency: 4,
                            ..Default::default()
                        },
                    );
                    let mut crashed = false;
                    loop {
                        match projector.step().await {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(_) => {
                                crashed = true;
                                break;
                            }
                        }
                    }
                    if !crashed {
                        break;
                    }
                    match crashes.next() {
                        Some((budget, after)) => {
                            store.refill(*budget);
                            store.fail_after_applying(*after);
                        }
                        None => store.refill(u64::MAX),
                    }
                }
                let want = expected(&msgs);
                assert_store_is(&store.inner, &want).await;
                let target = Keyspaces::store(&ks.replay).await;
                assert_replay_rebuilds(std::slice::from_ref(&log), &target, &want).await;
            });
            Ok(())
        })
        .unwrap();
}
