//! A store that connects on first use and keeps retrying while Cassandra is
//! unreachable, so `run` can start (and ingest into its log) while the
//! database is down: every operation before the first successful connection
//! fails with a retryable `StoreError::Unavailable`, which pauses the
//! projector with backoff. Configuration mistakes (a missing keyspace, bad
//! credentials) stay fatal.

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderVersion, PaymentVersion, Provenance};
use ecom_store::{Cas, FactStore, Parked, Result, StoreCounts};
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

impl FactStore for LazyCassandraStore {
    async fn read_fact(&self, order_id: i64) -> Result<Option<FactRow>> {
        self.get().await?.read_fact(order_id).await
    }
    async fn insert_fact(&self, order: &OrderVersion) -> Result<Cas<FactRow>> {
        self.get().await?.insert_fact(order).await
    }
    async fn replace_order(
        &self,
        expected: &Provenance,
        order: &OrderVersion,
    ) -> Result<Cas<FactRow>> {
        self.get().await?.replace_order(expected, order).await
    }
    async fn replace_payment(
        &self,
        expected: Option<&Provenance>,
        payment: &PaymentVersion,
    ) -> Result<Cas<FactRow>> {
        self.get().await?.replace_payment(expected, payment).await
    }
    async fn read_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
    ) -> Result<Option<Entry>> {
        self.get().await?.read_audit(order_id, kind, fp).await
    }
    async fn insert_audit(&self, entry: &Entry) -> Result<Cas<Entry>> {
        self.get().await?.insert_audit(entry).await
    }
    async fn replace_audit(&self, expected: &Provenance, entry: &Entry) -> Result<Cas<Entry>> {
        self.get().await?.replace_audit(expected, entry).await
    }
    async fn delete_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
        expected: &Provenance,
    ) -> Result<Cas<Entry>> {
        self.get()
            .await?
            .delete_audit(order_id, kind, fp, expected)
            .await
    }
    async fn parked_for(&self, order_id: i64) -> Result<Vec<Parked>> {
        self.get().await?.parked_for(order_id).await
    }
    async fn insert_parked(&self, parked: &Parked) -> Result<Cas<Parked>> {
        self.get().await?.insert_parked(parked).await
    }
    async fn replace_parked(&self, expected: &Provenance, parked: &Parked) -> Result<Cas<Parked>> {
        self.get().await?.replace_parked(expected, parked).await
    }
    async fn touch_parked(&self, order_id: i64, fp: Fingerprint, attempts: i32) -> Result<()> {
        self.get().await?.touch_parked(order_id, fp, attempts).await
    }
    async fn delete_parked(&self, order_id: i64, fp: Fingerprint) -> Result<()> {
        self.get().await?.delete_parked(order_id, fp).await
    }
    async fn scan_facts(&self) -> Result<Vec<FactRow>> {
        self.get().await?.scan_facts().await
    }
    async fn scan_audit(&self) -> Result<Vec<Entry>> {
        self.get().await?.scan_audit().await
    }
    async fn scan_parked(&self) -> Result<Vec<Parked>> {
        self.get().await?.scan_parked().await
    }
    async fn counts(&self) -> Result<StoreCounts> {
        self.get().await?.counts().await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.get().await?.is_empty().await
    }
    async fn truncate(&self) -> Result<()> {
        self.get().await?.truncate().await
    }
    async fn put_final(&self, facts: &[FactRow], audit: &[Entry], parked: &[Parked]) -> Result<()> {
        self.get().await?.put_final(facts, audit, parked).await
    }
    async fn flush(&self) -> Result<()> {
        self.get().await?.flush().await
    }
}
