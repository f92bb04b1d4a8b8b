//! An in-memory port of `SledStore`'s semantics (same keys, same order, same
//! conditions), used as the reference in differential tests. `SledStore`
//! itself is the true reference; see `bulk::same_results_as_sled_store`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ecom_core::{Entry, FactRow, Fingerprint, Kind, OrderVersion, PaymentVersion, Provenance};
use ecom_store::{Cas, FactStore, Parked, Result, StoreCounts};

type AuditKey = (i64, u8, u64);
type ParkedKey = (i64, u64);

#[derive(Default)]
pub struct Reference {
    facts: Mutex<BTreeMap<i64, FactRow>>,
    audit: Mutex<BTreeMap<AuditKey, Entry>>,
    parked: Mutex<BTreeMap<ParkedKey, Parked>>,
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Order => 0,
        Kind::Payment => 1,
    }
}

fn audit_key(order_id: i64, kind: Kind, fp: Fingerprint) -> AuditKey {
    (order_id, kind_byte(kind), fp.0 as u64)
}

fn parked_key(order_id: i64, fp: Fingerprint) -> ParkedKey {
    (order_id, fp.0 as u64)
}

enum Step<T> {
    Write(T),
    Delete,
    Reject,
}

fn update<K: Ord, T: Clone>(
    map: &Mutex<BTreeMap<K, T>>,
    key: K,
    f: impl FnOnce(Option<&T>) -> Step<T>,
) -> Cas<T> {
    let mut map = map.lock().unwrap();
    let cur = map.get(&key).cloned();
    match f(cur.as_ref()) {
        Step::Reject => Cas::Rejected(cur),
        Step::Write(v) => {
            map.insert(key, v);
            Cas::Applied
        }
        Step::Delete => {
            map.remove(&key);
            Cas::Applied
        }
    }
}

impl FactStore for Reference {
    async fn read_fact(&self, order_id: i64) -> Result<Option<FactRow>> {
        Ok(self.facts.lock().unwrap().get(&order_id).cloned())
    }

    async fn insert_fact(&self, order: &OrderVersion) -> Result<Cas<FactRow>> {
        Ok(update(
            &self.facts,
            order.content.order_id,
            |cur| match cur {
                Some(_) => Step::Reject,
                None => Step::Write(FactRow {
                    order: order.clone(),
                    payment: None,
                }),
            },
        ))
    }

    async fn replace_order(
        &self,
        expected: &Provenance,
        order: &OrderVersion,
    ) -> Result<Cas<FactRow>> {
        Ok(update(
            &self.facts,
            order.content.order_id,
            |cur| match cur {
                Some(row) if &row.order.provenance == expected => Step::Write(FactRow {
                    order: order.clone(),
                    payment: row.payment.clone(),
                }),
                _ => Step::Reject,
            },
        ))
    }

    async fn replace_payment(
        &self,
        expected: Option<&Provenance>,
        payment: &PaymentVersion,
    ) -> Result<Cas<FactRow>> {
        Ok(update(
            &self.facts,
            payment.content.order_id,
            |cur| match cur {
                Some(row) if row.payment.as_ref().map(|p| &p.provenance) == expected => {
                    Step::Write(FactRow {
                        order: row.order.clone(),
                        payment: Some(payment.clone()),
                    })
                }
                _ => Step::Reject,
            },
        ))
    }

    async fn read_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
    ) -> Result<Option<Entry>> {
        Ok(self
            .audit
            .lock()
            .unwrap()
            .get(&audit_key(order_id, kind, fp))
            .cloned())
    }

    async fn insert_audit(&self, entry: &Entry) -> Result<Cas<Entry>> {
        let key = audit_key(entry.order_id(), entry.kind(), entry.fingerprint());
        Ok(update(&self.audit, key, |cur| match cur {
            Some(_) => Step::Reject,
            None => Step::Write(entry.clone()),
        }))
    }

    async fn replace_audit(&self, expected: &Provenance, entry: &Entry) -> Result<Cas<Entry>> {
        let key = audit_key(entry.order_id(), entry.kind(), entry.fingerprint());
        Ok(update(&self.audit, key, |cur| match cur {
            Some(e) if e.provenance() == expected => Step::Write(entry.clone()),
            _ => Step::Reject,
        }))
    }

    async fn delete_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fp: Fingerprint,
        expected: &Provenance,
    ) -> Result<Cas<Entry>> {
        Ok(update(
            &self.audit,
            audit_key(order_id, kind, fp),
            |cur| match cur {
                Some(e) if e.provenance() == expected => Step::Delete,
                _ => Step::Reject,
            },
        ))
    }

    async fn parked_for(&self, order_id: i64) -> Result<Vec<Parked>> {
        let map = self.parked.lock().unwrap();
        Ok(map
            .range((order_id, 0)..=(order_id, u64::MAX))
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn insert_parked(&self, parked: &Parked) -> Result<Cas<Parked>> {
        let key = parked_key(parked.order_id(), parked.payment.fingerprint);
        Ok(update(&self.parked, key, |cur| match cur {
            Some(_) => Step::Reject,
            None => Step::Write(parked.clone()),
        }))
    }

    async fn replace_parked(&self, expected: &Provenance, parked: &Parked) -> Result<Cas<Parked>> {
        let key = parked_key(parked.order_id(), parked.payment.fingerprint);
        Ok(update(&self.parked, key, |cur| match cur {
            Some(p) if &p.payment.provenance == expected => Step::Write(parked.clone()),
            _ => Step::Reject,
        }))
    }

    async fn touch_parked(&self, order_id: i64, fp: Fingerprint, attempts: i32) -> Result<()> {
        update(&self.parked, parked_key(order_id, fp), |cur| match cur {
            Some(p) => Step::Write(Parked {
                attempts,
                ..p.clone()
            }),
            None => Step::Reject,
        });
        Ok(())
    }

    async fn delete_parked(&self, order_id: i64, fp: Fingerprint) -> Result<()> {
        self.parked
            .lock()
            .unwrap()
            .remove(&parked_key(order_id, fp));
        Ok(())
    }

    async fn scan_facts(&self) -> Result<Vec<FactRow>> {
        Ok(self.facts.lock().unwrap().values().cloned().collect())
    }

    async fn scan_audit(&self) -> Result<Vec<Entry>> {
        Ok(self.audit.lock().unwrap().values().cloned().collect())
    }

    async fn scan_parked(&self) -> Result<Vec<Parked>> {
        Ok(self.parked.lock().unwrap().values().cloned().collect())
    }

    async fn counts(&self) -> Result<StoreCounts> {
        let facts = self.facts.lock().unwrap();
        Ok(StoreCounts {
            facts: facts.len() as u64,
            payments_joined: facts.values().filter(|r| r.payment.is_some()).count() as u64,
            audit: self.audit.lock().unwrap().len() as u64,
            parked: self.parked.lock().unwrap().len() as u64,
        })
    }

    async fn is_empty(&self) -> Result<bool> {
        Ok(self.facts.lock().unwrap().is_empty()
            && self.audit.lock().unwrap().is_empty()
            && self.parked.lock().unwrap().is_empty())
    }

    async fn truncate(&self) -> Result<()> {
        self.facts.lock().unwrap().clear();
        self.audit.lock().unwrap().clear();
        self.parked.lock().unwrap().clear();
        Ok(())
    }

    async fn put_final(&self, facts: &[FactRow], audit: &[Entry], parked: &[Parked]) -> Result<()> {
        let mut f = self.facts.lock().unwrap();
        for row in facts {
            f.insert(row.order_id(), row.clone());
        }
        let mut a = self.audit.lock().unwrap();
        for e in audit {
            a.insert(
                audit_key(e.order_id(), e.kind(), e.fingerprint()),
                e.clone(),
            );
        }
        let mut p = self.parked.lock().unwrap();
        for x in parked {
            p.insert(parked_key(x.order_id(), x.payment.fingerprint), x.clone());
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
