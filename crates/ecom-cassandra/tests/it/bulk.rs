use ecom_cassandra::testing::with_fresh_store;
use ecom_core::{Entry, FactRow, Kind, OrderVersion, PaymentVersion, Provenance};
use ecom_store::{FactStore, Parked, SledStore, StoreCounts, snapshot};

use crate::common::*;

/// Rows with awkward values: prices that serde_json alone would not
/// round-trip, unicode, empty strings, optional fields both ways, extreme
/// integers.
fn awkward_data() -> (Vec<FactRow>, Vec<Entry>, Vec<Parked>) {
    let mut prices = vec![
        734.2183,
        0.1 + 0.2,
        1.0715660391465826e-75,
        -1.603964615428183e143,
        5e-324,
        f64::MAX,
        0.0,
        -0.0,
        19.99,
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while prices.len() < 40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            prices.push(f);
        }
    }
    let addresses = [
        "1 Main St",
        "Straße 5, 80331 München",
        "東京都千代田区1-1",
        "🚚 \"quoted\", back\\slash\nnewline",
        "",
    ];
    let mut facts = Vec::new();
    let mut audit = Vec::new();
    let mut parked = Vec::new();
    for (i, price) in prices.iter().enumerate() {
        let id = if i % 7 == 0 {
            i64::MAX - i as i64
        } else {
            i as i64 * 1_000_003 - 7
        };
        let mut o = order_with(
            id,
            &format!("msg-o-{i}"),
            *price,
            addresses[i % addresses.len()],
        );
        if i % 3 == 0 {
            o.content.event_id = Some(format!("evt-{i}-ü"));
            o.content.version = Some(i as i64 - 20);
            o.content.item = String::new();
        }
        // Stored, not recomputed: any value must survive.
        if i % 5 == 0 {
            o.fingerprint.0 = i64::MIN + i as i64;
        }
        let payment = (i % 2 == 0).then(|| {
            let mut p = payment(id, &format!("msg-p-{i}"), "Completed");
            p.content.card_last_four = format!("{:04}", i);
            if i % 4 == 0 {
                p.content.event_id = Some(format!("pay-evt-{i}"));
                p.content.version = Some(i64::MIN);
            }
            p
        });
        if i % 3 == 1 {
            audit.push(Entry::Order(o.clone()));
            let mut loser = redelivered(&o, &format!("msg-o-{i}-dup"));
            loser.content.price = -*price;
            loser.fingerprint.0 ^= 1;
            audit.push(Entry::Order(loser));
        }
        if let Some(p) = &payment
            && i % 4 == 2
        {
            let mut loser = redelivered(p, &format!("msg-p-{i}-dup"));
            loser.content.payment_status = "Failed ✗".into();
            loser.fingerprint.0 = -loser.fingerprint.0;
            audit.push(Entry::Payment(loser));
        }
        if i % 5 == 3 {
            let orphan_id = -(i as i64) - 1;
            parked.push(Parked {
                payment: payment_versioned(orphan_id, i),
                parked_at_ms: 1_700_000_000_000 + i as i64,
                attempts: i as i32,
            });
        }
        facts.push(FactRow { order: o, payment });
    }
    (facts, audit, parked)
}

fn payment_versioned(order_id: i64, i: usize) -> PaymentVersion {
    let mut p = payment(order_id, &format!("orphan-{i}"), "Pending");
    p.content.payment_datetime = "2024-02-30T99:99:99Z".into();
    p
}

fn sled_order_audit(v: &mut [Entry]) {
    v.sort_by_key(|e| {
        let k = match e.kind() {
            Kind::Order => 0u8,
            Kind::Payment => 1,
        };
        (e.order_id(), k, e.fingerprint().0 as u64)
    });
}

#[tokio::test]
async fn scan_and_put_final_round_trip_exact_values() {
    init_tracing();
    with_fresh_store(|store| async move {
        let (facts, audit, parked) = awkward_data();
        assert!(store.is_empty().await.unwrap());
        store.put_final(&facts, &audit, &parked).await.unwrap();
        assert!(!store.is_empty().await.unwrap());

        let mut want_facts = facts.clone();
        want_facts.sort_by_key(FactRow::order_id);
        let got = store.scan_facts().await.unwrap();
        for (g, w) in got.iter().zip(&want_facts) {
            assert_eq!(g, w);
            assert_eq!(
                g.order.content.price.to_bits(),
                w.order.content.price.to_bits()
            );
        }
        assert_eq!(got, want_facts);
        for row in &facts {
            assert_eq!(
                store.read_fact(row.order_id()).await.unwrap().as_ref(),
                Some(row)
            );
        }

        let mut want_audit = audit.clone();
        sled_order_audit(&mut want_audit);
        let got_audit = store.scan_audit().await.unwrap();
        for (g, w) in got_audit.iter().zip(&want_audit) {
            assert_eq!(g, w);
        }
        assert_eq!(got_audit, want_audit);
        for e in &audit {
            let got = store
                .read_audit(e.order_id(), e.kind(), e.fingerprint())
                .await
                .unwrap();
            assert_eq!(got.as_ref(), Some(e));
        }

        let mut want_parked = parked.clone();
        want_parked.sort_by_key(|p| (p.order_id(), p.payment.fingerprint.0 as u64));
        assert_eq!(store.scan_parked().await.unwrap(), want_parked);

        // Identical to the embedded store (sled's keys and order).
        let reference = SledStore::temporary().unwrap();
        reference.put_final(&facts, &audit, &parked).await.unwrap();
        assert_same_contents(&store, &reference).await;
        assert_eq!(
            store.counts().await.unwrap(),
            StoreCounts {
                facts: facts.len() as u64,
                payments_joined: facts.iter().filter(|r| r.payment.is_some()).count() as u64,
                audit: audit.len() as u64,
                parked: parked.len() as u64,
            }
        );
    })
    .await;
}

#[tokio::test]
async fn truncate_empties_all_tables() {
    init_tracing();
    with_fresh_store(|store| async move {
        let (facts, audit, parked) = awkward_data();
        store.put_final(&facts, &audit, &parked).await.unwrap();
        assert!(!store.is_empty().await.unwrap());
        store.truncate().await.unwrap();
        assert!(store.is_empty().await.unwrap());
        assert_eq!(store.counts().await.unwrap(), StoreCounts::default());
        assert!(store.scan_facts().await.unwrap().is_empty());
        // Usable afterwards.
        assert!(store.insert_fact(&facts[0].order).await.unwrap().applied());
        store.flush().await.unwrap();
        assert_eq!(store.counts().await.unwrap().facts, 1);
    })
    .await;
}

/// A deterministic random sequence of every primitive, run against this
/// store and the embedded sled store: every result must be identical.
#[tokio::test]
async fn same_results_as_sled_store() {
    init_tracing();
    with_fresh_store(|store| async move {
        same_results_as(&store, SledStore::temporary().unwrap()).await;
        let (facts, audit, parked) = awkward_data();
        store.truncate().await.unwrap();
        let sled = SledStore::temporary().unwrap();
        store.put_final(&facts, &audit, &parked).await.unwrap();
        sled.put_final(&facts, &audit, &parked).await.unwrap();
        assert_same_contents(&store, &sled).await;
    })
    .await;
}

async fn assert_same_contents(store: &impl FactStore, reference: &impl FactStore) {
    assert_eq!(
        store.scan_facts().await.unwrap(),
        reference.scan_facts().await.unwrap()
    );
    assert_eq!(
        store.scan_audit().await.unwrap(),
        reference.scan_audit().await.unwrap()
    );
    assert_eq!(
        store.scan_parked().await.unwrap(),
        reference.scan_parked().await.unwrap()
    );
    assert_eq!(
        store.counts().await.unwrap(),
        reference.counts().await.unwrap()
    );
    assert_eq!(
        store.is_empty().await.unwrap(),
        reference.is_empty().await.unwrap()
    );
    assert_eq!(
        snapshot(store).await.unwrap(),
        snapshot(reference).await.unwrap()
    );
}

/// Runs one deterministic random sequence of every primitive against both
/// stores; every result must be identical.
async fn same_results_as(store: &impl FactStore, reference: impl FactStore) {
    {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let ids = [1i64, 2, 3];
        // Versions per order_id: two contents × three deliveries.
        let orders: Vec<OrderVersion> = ids
            .iter()
            .flat_map(|&id| {
                (0..2).flat_map(move |c| {
                    let base =
                        order_with(id, &format!("o{id}-{c}-0"), 10.0 + c as f64 / 3.0, "addr");
                    (0..3).map(move |d| redelivered(&base, &format!("o{id}-{c}-{d}")))
                })
            })
            .collect();
        let payments: Vec<PaymentVersion> = ids
            .iter()
            .flat_map(|&id| {
                (0..2).flat_map(move |c| {
                    let base = payment(id, &format!("p{id}-{c}-0"), ["Pending", "Completed"][c]);
                    (0..3).map(move |d| redelivered(&base, &format!("p{id}-{c}-{d}")))
                })
            })
            .collect();
        let provs: Vec<Provenance> = orders
            .iter()
            .map(|o| o.provenance.clone())
            .chain(payments.iter().map(|p| p.provenance.clone()))
            .collect();
        let entries: Vec<Entry> = orders
            .iter()
            .cloned()
            .map(Entry::Order)
            .chain(payments.iter().cloned().map(Entry::Payment))
            .collect();

        for step in 0..300 {
            let o = rng.pick(&orders);
            let p = rng.pick(&payments);
            let e = rng.pick(&entries);
            let pv = rng.pick(&provs);
            let parked = Parked {
                payment: p.clone(),
                parked_at_ms: 1000 + step,
                attempts: step as i32,
            };
            let what = rng.below(14);
            let ctx = format!("step {step}, op {what}");
            match what {
                0 => assert_eq!(
                    store.insert_fact(o).await.unwrap(),
                    reference.insert_fact(o).await.unwrap(),
                    "{ctx}"
                ),
                1 => assert_eq!(
                    store.replace_order(pv, o).await.unwrap(),
                    reference.replace_order(pv, o).await.unwrap(),
                    "{ctx}"
                ),
                2 => {
                    let exp = if rng.below(2) == 0 { None } else { Some(pv) };
                    assert_eq!(
                        store.replace_payment(exp, p).await.unwrap(),
                        reference.replace_payment(exp, p).await.unwrap(),
                        "{ctx}"
                    )
                }
                3 => assert_eq!(
                    store.insert_audit(e).await.unwrap(),
                    reference.insert_audit(e).await.unwrap(),
                    "{ctx}"
                ),
                4 => assert_eq!(
                    store.replace_audit(pv, e).await.unwrap(),
                    reference.replace_audit(pv, e).await.unwrap(),
                    "{ctx}"
                ),
                5 => {
                    let (id, k, fp) = (e.order_id(), e.kind(), e.fingerprint());
                    assert_eq!(
                        store.delete_audit(id, k, fp, pv).await.unwrap(),
                        reference.delete_audit(id, k, fp, pv).await.unwrap(),
                        "{ctx}"
                    )
                }
                6 => assert_eq!(
                    store.insert_parked(&parked).await.unwrap(),
                    reference.insert_parked(&parked).await.unwrap(),
                    "{ctx}"
                ),
                7 => assert_eq!(
                    store.replace_parked(pv, &parked).await.unwrap(),
                    reference.replace_parked(pv, &parked).await.unwrap(),
                    "{ctx}"
                ),
                8 => {
                    store
                        .touch_parked(p.content.order_id, p.fingerprint, step as i32)
                        .await
                        .unwrap();
                    reference
                        .touch_parked(p.content.order_id, p.fingerprint, step as i32)
                        .await
                        .unwrap();
                }
                9 => {
                    store
                        .delete_parked(p.content.order_id, p.fingerprint)
                        .await
                        .unwrap();
                    reference
                        .delete_parked(p.content.order_id, p.fingerprint)
                        .await
                        .unwrap();
                }
                10 => {
                    let id = *rng.pick(&ids);
                    assert_eq!(
                        store.read_fact(id).await.unwrap(),
                        reference.read_fact(id).await.unwrap(),
                        "{ctx}"
                    )
                }
                11 => {
                    let (id, k, fp) = (e.order_id(), e.kind(), e.fingerprint());
                    assert_eq!(
                        store.read_audit(id, k, fp).await.unwrap(),
                        reference.read_audit(id, k, fp).await.unwrap(),
                        "{ctx}"
                    )
                }
                12 => {
                    let id = *rng.pick(&ids);
                    assert_eq!(
                        store.parked_for(id).await.unwrap(),
                        reference.parked_for(id).await.unwrap(),
                        "{ctx}"
                    )
                }
                _ => assert_eq!(
                    store.counts().await.unwrap(),
                    reference.counts().await.unwrap(),
                    "{ctx}"
                ),
            }
        }
        assert_same_contents(store, &reference).await;
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}
