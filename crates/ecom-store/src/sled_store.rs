//! The embedded fact store: three sled trees, with sled's compare-and-swap
//! giving the same conditional semantics as Cassandra's lightweight
//! transactions.
//!
//! Keys are big-endian so that a scan returns rows in `order_id` order and a
//! prefix scan returns one order's audit or parked rows. Values are bincode.
//! Every conditional write is read → check condition → `compare_and_swap`
//! against the exact bytes read; if another writer got there first the CAS
//! fails and we re-read, so each call is atomic per key.

use std::path::Path;

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderVersion, PaymentVersion, Provenance};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Cas, FactStore, Parked, Result, StoreCounts, StoreError};

/// The embedded store. Cheap to share behind an `Arc`; several projectors in
/// one process may use one store, like several instances share a Cassandra.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    facts: sled::Tree,
    audit: sled::Tree,
    parked: sled::Tree,
}

fn other(e: sled::Error) -> StoreError {
    StoreError::Other(format!("sled: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("in-memory serialization cannot fail")
}

fn decode<T: DeserializeOwned>(table: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{table} key {key:?}: {e}")))
}

fn fact_key(order_id: i64) -> [u8; 8] {
    // Flip the sign bit so negative ids (rejected upstream anyway) still sort.
    ((order_id as u64) ^ (1 << 63)).to_be_bytes()
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Order => 0,
        Kind::Payment => 1,
    }
}

fn audit_key(order_id: i64, kind: Kind, fp: Fingerprint) -> Vec<u8> {
    let mut k = fact_key(order_id).to_vec();
    k.push(kind_byte(kind));
    k.extend_from_slice(&fp.0.to_be_bytes());
    k
}

fn parked_key(order_id: i64, fp: Fingerprint) -> Vec<u8> {
    let mut k = fact_key(order_id).to_vec();
    k.extend_from_slice(&fp.0.to_be_bytes());
    k
}

/// What a conditional update wants to do with the current value.
enum Step<T> {
    Write(T),
    Delete,
    Reject,
}

impl SledStore {
    /// Opens (or creates) a store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(128 << 20)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                StoreError::Other(format!("cannot open store at {}: {e}", path.display()))
            })?;
        Self::from_db(db)
    }

    /// A throwaway store, for tests and benchmarks.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open().map_err(other)?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        Ok(SledStore {
            facts: db.open_tree("orders_payments_facts").map_err(other)?,
            audit: db.open_tree("duplicate_orders").map_err(other)?,
            parked: db.open_tree("dlq_payments").map_err(other)?,
            db,
        })
    }

    /// Read-modify-CAS loop on one key: `f` sees the current value and decides.
    fn update<T: Serialize + DeserializeOwned + Clone>(
        tree: &sled::Tree,
        table: &str,
        key: &[u8],
        mut f: impl FnMut(Option<&T>) -> Step<T>,
    ) -> Result<Cas<T>> {
        loop {
            let old_bytes = tree.get(key).map_err(other)?;
            let old: Option<T> = old_bytes
                .as_ref()
                .map(|b| decode(table, key, b))
                .transpose()?;
            let new_bytes = match f(old.as_ref()) {
                Step::Reject => return Ok(Cas::Rejected(old)),
                Step::Write(v) => Some(encode(&v)),
                Step::Delete => None,
            };
            match tree
                .compare_and_swap(key, old_bytes, new_bytes)
                .map_err(other)?
            {
                Ok(()) => return Ok(Cas::Applied),
                Err(_) => continue, // another writer won the race: re-read and re-decide
            }
        }
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, table: &str, key: &[u8]) -> Result<Option<T>> {
        tree.get(key)
            .map_err(other)?
            .map(|b| decode(table, key, &b))
            .transpose()
    }

    fn scan<T: DeserializeOwned>(tree: &sled::Tree, table: &str, prefix: &[u8]) -> Result<Vec<T>> {
        tree.scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(other)?;
                decode(table, &k, &v)
            })
            .collect()
    }
}

impl FactStore for SledStore {
    async fn read_fact(&self, order_id: i64) -> Result<Option<FactRow>> {
        Self::get(&self.facts, "orders_payments_facts", &fact_key(order_id))
    }

    async fn insert_fact(&self, order: &OrderVersion) -> Result<Cas<FactRow>> {
        Self::update(
            &self.facts,
            "orders_payments_facts",
            &fact_key(order.content.order_id),
            |cur: Option<&FactRow>| match cur {
                Some(_) => Step::Reject,
                None => Step::Write(FactRow {
                    order: order.clone(),
                    payment: None,
                }),
            },
        )
    }

    async fn replace_order(
        &self,
        expected: &Provenance,
        order: &OrderVersion,
    ) -> Result<Cas<FactRow>> {
        Self::update(
            &self.facts,
            "orders_payments_facts",
            &fact_key(order.content.order_id),
            |cur: Option<&FactRow>| match cur {
                Some(row) if &row.order.provenance == expected => Step::Write(FactRow {
                    order: order.clone(),
                    payment: row.payment.clone(),
                }),
                _ => Step::Reject,
            },
        )
    }

    async fn replace_payment(
        &self,
        expected: Option<&Provenance>,
        payment: &PaymentVersion,
    ) -> Result<Cas<FactRow>> {
        Self::update(
            &self.facts,
            "orders_payments_facts",
            &fact_key(payment.content.order_id),
            |cur: Option<&FactRow>| match cur {
                Some(row) if row.payment.as_ref().map(|p| &p.provenance) == expected => {
                    Step::Write(FactRow {
                        order: row.order.clone(),
                        payment: Some(payment.clone()),
                    })
                }
                _ => Step::Reject,
            },
        )
    }

    async fn read_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
    ) -> Result<Option<Entry>> {
        Self::get(
            &self.audit,
            "duplicate_orders",
            &audit_key(order_id, kind, fp),
        )
    }

    async fn insert_audit(&self, entry: &Entry) -> Result<Cas<Entry>> {
        let key = audit_key(entry.order_id(), entry.kind(), entry.fingerprint());
        Self::update(
            &self.audit,
            "duplicate_orders",
            &key,
            |cur: Option<&Entry>| match cur {
                Some(_) => Step::Reject,
                None => Step::Write(entry.clone()),
            },
        )
    }

    async fn replace_audit(&self, expected: &Provenance, entry: &Entry) -> Result<Cas<Entry>> {
        let key = audit_key(entry.order_id(), entry.kind(), entry.fingerprint());
        Self::update(
            &self.audit,
            "duplicate_orders",
            &key,
            |cur: Option<&Entry>| match cur {
                Some(e) if e.provenance() == expected => Step::Write(entry.clone()),
                _ => Step::Reject,
            },
        )
    }

    async fn delete_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
        expected: &Provenance,
    ) -> Result<Cas<Entry>> {
        let key = audit_key(order_id, kind, fp);
        Self::update(
            &self.audit,
            "duplicate_orders",
            &key,
            |cur: Option<&Entry>| match cur {
                Some(e) if e.provenance() == expected => Step::Delete,
                _ => Step::Reject,
            },
        )
    }

    async fn parked_for(&self, order_id: i64) -> Result<Vec<Parked>> {
        Self::scan(&self.parked, "dlq_payments", &fact_key(order_id))
    }

    async fn insert_parked(&self, parked: &Parked) -> Result<Cas<Parked>> {
        let key = parked_key(parked.order_id(), parked.payment.fingerprint);
        Self::update(
            &self.parked,
            "dlq_payments",
            &key,
            |cur: Option<&Parked>| match cur {
                Some(_) => Step::Reject,
                None => Step::Write(parked.clone()),
            },
        )
    }

    async fn replace_parked(&self, expected: &Provenance, parked: &Parked) -> Result<Cas<Parked>> {
        let key = parked_key(parked.order_id(), parked.payment.fingerprint);
        Self::update(
            &self.parked,
            "dlq_payments",
            &key,
            |cur: Option<&Parked>| match cur {
                Some(p) if &p.payment.provenance == expected => Step::Write(parked.clone()),
                _ => Step::Reject,
            },
        )
    }

    async fn touch_parked(&self, order_id: i64, fp: Fingerprint, attempts: i32) -> Result<()> {
        let key = parked_key(order_id, fp);
        Self::update(
            &self.parked,
            "dlq_payments",
            &key,
            |cur: Option<&Parked>| match cur {
                Some(p) => Step::Write(Parked {
                    attempts,
                    ..p.clone()
                }),
                None => Step::Reject,
            },
        )?;
        Ok(())
    }

    async fn delete_parked(&self, order_id: i64, fp: Fingerprint) -> Result<()> {
        self.parked
            .remove(parked_key(order_id, fp))
            .map_err(other)?;
        Ok(())
    }

    async fn scan_facts(&self) -> Result<Vec<FactRow>> {
        Self::scan(&self.facts, "orders_payments_facts", &[])
    }

    async fn scan_audit(&self) -> Result<Vec<Entry>> {
        Self::scan(&self.audit, "duplicate_orders", &[])
    }

    async fn scan_parked(&self) -> Result<Vec<Parked>> {
        Self::scan(&self.parked, "dlq_payments", &[])
    }

    async fn counts(&self) -> Result<StoreCounts> {
        let facts = self.scan_facts().await?;
        Ok(StoreCounts {
            facts: facts.len() as u64,
            payments_joined: facts.iter().filter(|r| r.payment.is_some()).count() as u64,
            audit: self.audit.len() as u64,
            parked: self.parked.len() as u64,
        })
    }

    async fn is_empty(&self) -> Result<bool> {
        Ok(self.facts.is_empty() && self.audit.is_empty() && self.parked.is_empty())
    }

    async fn truncate(&self) -> Result<()> {
        for tree in [&self.facts, &self.audit, &self.parked] {
            tree.clear().map_err(other)?;
        }
        self.db.flush_async().await.map_err(other)?;
        Ok(())
    }

    async fn put_final(&self, facts: &[FactRow], audit: &[Entry], parked: &[Parked]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for row in facts {
            batch.insert(&fact_key(row.order_id()), encode(row));
        }
        self.facts.apply_batch(batch).map_err(other)?;
        let mut batch = sled::Batch::default();
        for e in audit {
            batch.insert(
                audit_key(e.order_id(), e.kind(), e.fingerprint()),
                encode(e),
            );
        }
        self.audit.apply_batch(batch).map_err(other)?;
        let mut batch = sled::Batch::default();
        for p in parked {
            batch.insert(parked_key(p.order_id(), p.payment.fingerprint), encode(p));
        }
        self.parked.apply_batch(batch).map_err(other)?;
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(other)?;
        Ok(())
    }
}
