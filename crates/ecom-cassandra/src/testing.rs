//! Helpers for tests against a real Cassandra, shared with other crates'
//! test suites (e.g. the property tests run the same suite against it).
//!
//! The cluster comes from `ECOM_CASSANDRA` (`host:port[,host:port…]`, e.g.
//! `127.0.0.1:9042`; `scripts/cassandra.sh start` runs one). When it is unset
//! the helpers return `None` and tests skip themselves, unless `CI` is set or
//! `ECOM_REQUIRE_CASSANDRA=1`, in which case they panic: a CI run must not
//! pass by skipping. Each store gets its own keyspace, created from
//! `schema.cql` and dropped afterwards.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{CassandraConfig, CassandraStore, SCHEMA_CQL, apply_schema, drop_keyspace};

/// Environment variable holding the contact points for tests.
pub const ENV_CONTACT_POINTS: &str = "ECOM_CASSANDRA";

/// The contact points for tests, or `None` if Cassandra tests should be
/// skipped (an explanation is printed to stderr).
///
/// # Panics
///
/// If `ECOM_CASSANDRA` is unset while `CI` is set or
/// `ECOM_REQUIRE_CASSANDRA=1`.
pub fn contact_points() -> Option<Vec<String>> {
    match std::env::var(ENV_CONTACT_POINTS) {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var("ECOM_REQUIRE_CASSANDRA").is_ok_and(|v| v == "1");
            if required {
                panic!(
                    "{ENV_CONTACT_POINTS} is not set but Cassandra tests are required (CI or \
                     ECOM_REQUIRE_CASSANDRA=1): run `scripts/cassandra.sh start` and set \
                     {ENV_CONTACT_POINTS}=127.0.0.1:9042"
                );
            }
            eprintln!(
                "skipping Cassandra test: set {ENV_CONTACT_POINTS}=127.0.0.1:9042 \
                 (after `scripts/cassandra.sh start`) to run it"
            );
            None
        }
    }
}

/// A keyspace name no other test (in this or another process) uses:
/// `ecom_test_<pid>_<counter>_<random>`.
pub fn unique_keyspace() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let random =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), nanos);
    format!("ecom_test_{}_{n}_{:08x}", std::process::id(), random as u32)
}

/// A test configuration for a fresh keyspace, or `None` to skip.
pub fn test_config() -> Option<CassandraConfig> {
    Some(CassandraConfig {
        contact_points: contact_points()?,
        keyspace: unique_keyspace(),
        ..CassandraConfig::default()
    })
}

/// A store on a fresh keyspace created from `schema.cql`, or `None` to skip.
///
/// # Panics
///
/// If Cassandra is configured but the keyspace cannot be created or the
/// store cannot connect.
pub async fn fresh_store() -> Option<CassandraStore> {
    fresh_store_with(|_| {}).await
}

/// Like [`fresh_store`], with the configuration adjusted by `adjust` (the
/// keyspace is already set to a fresh name).
pub async fn fresh_store_with(adjust: impl FnOnce(&mut CassandraConfig)) -> Option<CassandraStore> {
    let mut cfg = test_config()?;
    adjust(&mut cfg);
    if let Err(e) = apply_schema(&cfg, SCHEMA_CQL).await {
        panic!("cannot create test keyspace {}: {e}", cfg.keyspace);
    }
    match CassandraStore::connect(cfg).await {
        Ok(store) => Some(store),
        Err(e) => panic!("cannot connect the test store: {e}"),
    }
}

/// Drops the store's keyspace; best effort (failures are printed).
pub async fn drop_store(store: CassandraStore) {
    let cfg = store.config().clone();
    drop(store);
    if let Err(e) = drop_keyspace(&cfg).await {
        eprintln!("could not drop test keyspace {}: {e}", cfg.keyspace);
    }
}

/// Runs `body` with a fresh store and drops the keyspace afterwards, also
/// when `body` panics (the panic is then resumed). Does nothing if
/// Cassandra tests are skipped.
pub async fn with_fresh_store<F, Fut>(body: F)
where
    F: FnOnce(CassandraStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(store) = fresh_store().await else {
        return;
    };
    let result = tokio::spawn(body(store.clone())).await;
    drop_store(store).await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}
