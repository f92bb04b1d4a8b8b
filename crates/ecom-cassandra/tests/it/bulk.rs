use ecom_cassandra::testing::with_fresh_store;
use ecom_core::{
    Entry, FactRow, Kind, OrderState, OrderVersion, ParkedPayment, PaymentVersion, ViewWrite,
    view_ts,
};
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

/// The view writes of `awkward_data` at timestamp `ts`.
fn awkward_views(ts: i64) -> Vec<ViewWrite> {
    let (facts, audit, parked) = awkward_data();
    let mut w: Vec<ViewWrite> = facts
        .into_iter()
        .map(|row| ViewWrite::Fact { row, ts })
        .collect();
    w.extend(
        audit
            .into_iter()
            .map(|entry| ViewWrite::Audit { entry, ts }),
    );
    w.extend(parked.into_iter().map(|p| ViewWrite::Parked {
        parked: ParkedPayment {
            payment: p.payment,
            parked_at_ms: p.parked_at_ms,
        },
        attempts: p.attempts,
        ts,
    }));
    w
}

#[tokio::test]
async fn view_writes_round_trip_exact_values() {
    init_tracing();
    with_fresh_store(|store| async move {
        let (facts, audit, parked) = awkward_data();
        assert!(store.is_empty().await.unwrap());
        store.write_views(&awkward_views(view_ts(1))).await.unwrap();
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

        let mut want_audit = audit.clone();
        sled_order_audit(&mut want_audit);
        assert_eq!(store.scan_audit().await.unwrap(), want_audit);

        let mut want_parked = parked.clone();
        want_parked.sort_by_key(|p| (p.order_id(), p.payment.fingerprint.0 as u64));
        assert_eq!(store.scan_parked().await.unwrap(), want_parked);

        // Identical to the embedded store (sled's keys and order).
        let reference = SledStore::temporary().unwrap();
        reference
            .write_views(&awkward_views(view_ts(1)))
            .await
            .unwrap();
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
        store.write_views(&awkward_views(view_ts(1))).await.unwrap();
        store.insert_state(1, &OrderState::default()).await.unwrap();
        assert!(!store.is_empty().await.unwrap());
        store.truncate().await.unwrap();
        assert!(store.is_empty().await.unwrap());
        assert_eq!(store.counts().await.unwrap(), StoreCounts::default());
        assert!(store.read_state(1).await.unwrap().is_none());
        // Usable afterwards.
        assert!(
            store
                .insert_state(1, &OrderState::default())
                .await
                .unwrap()
                .applied()
        );
    })
    .await;
}

/// A deterministic random sequence of every primitive (conditional state
/// writes with right and wrong revisions; view writes and deletions with
/// timestamps out of order, repeated, and tied with deletions), run against
/// this store and the embedded sled store: every result and the final
/// contents must be identical. This is what lets the property tests run
/// against sled and speak for Cassandra.
#[tokio::test]
async fn same_results_as_sled_store() {
    init_tracing();
    with_fresh_store(|store| async move {
        same_results_as(&store, SledStore::temporary().unwrap()).await;
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

async fn same_results_as(store: &impl FactStore, reference: impl FactStore) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ids = [1i64, 2, 3];
    let orders: Vec<OrderVersion> = ids
        .iter()
        .flat_map(|&id| {
            (0..2).map(move |c| order_with(id, &format!("o{id}-{c}"), 10.0 + c as f64 / 3.0, "a"))
        })
        .collect();
    let payments: Vec<PaymentVersion> = ids
        .iter()
        .flat_map(|&id| {
            (0..2).map(move |c| payment(id, &format!("p{id}-{c}"), ["Pending", "Completed"][c]))
        })
        .collect();
    let states: Vec<OrderState> = orders
        .iter()
        .map(|o| OrderState {
            order: Some(o.clone()),
            ..OrderState::default()
        })
        .chain(std::iter::once(OrderState::default()))
        .collect();
    let mut used: Vec<i64> = Vec::new();
    // Deletions on odd steps, so the timestamp can be chosen before the op.
    let what_is_delete = |step: i64| step % 2 == 1;
    for step in 0..400i64 {
        let o = rng.pick(&orders).clone();
        let p = rng.pick(&payments).clone();
        let id = *rng.pick(&ids);
        let state = rng.pick(&states).clone();
        // Live writes get distinct timestamps in random order (the protocol
        // never writes two different values at one timestamp); deletions
        // often reuse a live write's timestamp, where a deletion must win.
        let live_ts = view_ts(0) + rng.below(100) as i64 * 1000 + step;
        let ts = if what_is_delete(step) && !used.is_empty() && rng.below(2) == 0 {
            *rng.pick(&used)
        } else {
            live_ts
        };
        used.push(live_ts);
        let what = if what_is_delete(step) {
            [6, 8][rng.below(2) as usize]
        } else {
            [0, 1, 2, 3, 4, 5, 7][rng.below(7) as usize]
        };
        let ctx = format!("step {step}, op {what}");
        match what {
            0 => assert_eq!(
                store.insert_state(id, &state).await.unwrap(),
                reference.insert_state(id, &state).await.unwrap(),
                "{ctx}"
            ),
            1 => {
                let expected = rng.below(4) as i64;
                let (a, b) = (
                    store.update_state(id, expected, &state).await.unwrap(),
                    reference.update_state(id, expected, &state).await.unwrap(),
                );
                // Cassandra returns only the revision of a rejected `IF
                // revision = ?`; both say whether it applied.
                assert_eq!(a.applied(), b.applied(), "{ctx}");
            }
            2 => assert_eq!(
                store.read_state(id).await.unwrap(),
                reference.read_state(id).await.unwrap(),
                "{ctx}"
            ),
            3 => {
                let w = [ViewWrite::Fact {
                    row: FactRow {
                        order: o.clone(),
                        payment: None,
                    },
                    ts,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
            4 => {
                // A fact row with its payment: payments never leave a row,
                // and order columns always come with it.
                let mut p = p.clone();
                p.content.order_id = o.content.order_id;
                let w = [ViewWrite::Fact {
                    row: FactRow {
                        order: o.clone(),
                        payment: Some(p),
                    },
                    ts: ts + 10_000_000,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
            5 => {
                let w = [ViewWrite::Audit {
                    entry: Entry::Order(o.clone()),
                    ts,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
            6 => {
                let w = [ViewWrite::AuditDelete {
                    order_id: o.content.order_id,
                    kind: Kind::Order,
                    fingerprint: o.fingerprint,
                    ts,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
            7 => {
                let w = [ViewWrite::Parked {
                    parked: ParkedPayment {
                        payment: p.clone(),
                        parked_at_ms: 1_700_000_000_000,
                    },
                    attempts: 1,
                    ts,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
            _ => {
                let w = [ViewWrite::ParkedDelete {
                    order_id: p.content.order_id,
                    fingerprint: p.fingerprint,
                    ts,
                }];
                store.write_views(&w).await.unwrap();
                reference.write_views(&w).await.unwrap();
            }
        }
    }
    assert_same_contents(store, &reference).await;
    for id in ids {
        assert_eq!(
            store.read_state(id).await.unwrap(),
            reference.read_state(id).await.unwrap()
        );
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
