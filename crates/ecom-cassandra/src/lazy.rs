//! A store that connects on first use and keeps retrying while Cassandra is
//! unreachable, so `run` can start (and ingest into its log) while the
//! database is down: every operation before the first successful connection
//! fails with a retryable `StoreError::Unavailable`, which pauses the
//! projector with backoff. Configuration mistakes (a missing keyspace, bad
//! credentials) stay fatal.

use ecom_store::Result;
use tokio::sync::OnceCell;

use crate::{CassandraConfig, CassandraStore};

pub struct LazyCassandraStore {
    cfg: CassandraConfig,
    store: OnceCell<CassandraStore>,
}

impl LazyCassandraStore {
    pub fn new(cfg: CassandraConfig) -> Self {
        LazyCassandraStore {
            cfg,
            store: OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&CassandraStore> {
        self.store
            .get_or_try_init(|| CassandraStore::connect(self.cfg.clone()))
            .await
            .map_err(Into::into)
    }
}

// Every operation connects first (once); until then it fails retryably.
ecom_store::forward_fact_store!(impl [] for LazyCassandraStore, to self.get().await?, |self, _op, call| call.await);
