use ecom_cassandra::testing::with_fresh_store;
use ecom_core::FactRow;
use ecom_store::{Cas, FactStore};
use futures::future::join_all;

use crate::common::*;

#[tokio::test]
async fn insert_if_absent_applies_once() {
    init_tracing();
    with_fresh_store(|store| async move {
        let o1 = order(1, "m1");
        let row1 = FactRow {
            order: o1.clone(),
            payment: None,
        };
        assert_eq!(store.read_fact(1).await.unwrap(), None);
        assert_eq!(store.insert_fact(&o1).await.unwrap(), Cas::Applied);
        // The same message again, and another version: both rejected with
        // the current row.
        assert_eq!(
            store.insert_fact(&o1).await.unwrap(),
            Cas::Rejected(Some(row1.clone()))
        );
        let o2 = order_with(1, "m2", 1.5, "elsewhere");
        assert_eq!(
            store.insert_fact(&o2).await.unwrap(),
            Cas::Rejected(Some(row1.clone()))
        );
        assert_eq!(store.read_fact(1).await.unwrap(), Some(row1));

        // Racing inserts of one order_id: exactly one wins.
        let versions: Vec<_> = (0..16)
            .map(|i| order_with(2, &format!("race-{i}"), i as f64, "x"))
            .collect();
        let results = join_all(versions.iter().map(|v| store.insert_fact(v))).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().unwrap().applied())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let stored = store.read_fact(2).await.unwrap().unwrap();
        assert_eq!(stored.order, versions[winners[0]]);
        for r in results {
            match r.unwrap() {
                Cas::Applied => {}
                Cas::Rejected(cur) => assert_eq!(cur, Some(stored.clone())),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn replace_order_keeps_payment_columns() {
    init_tracing();
    with_fresh_store(|store| async move {
        let o1 = order(10, "o1");
        let p1 = payment(10, "p1", "Completed");
        assert!(store.insert_fact(&o1).await.unwrap().applied());
        assert!(store.replace_payment(None, &p1).await.unwrap().applied());

        let o2 = order_with(10, "o2", 99.99, "2 Side St, Zürich");
        assert_eq!(
            store.replace_order(&o1.provenance, &o2).await.unwrap(),
            Cas::Applied
        );
        let expected = FactRow {
            order: o2.clone(),
            payment: Some(p1.clone()),
        };
        assert_eq!(store.read_fact(10).await.unwrap(), Some(expected.clone()));

        // Stale expectation: rejected with the current row, nothing changes.
        let o3 = order_with(10, "o3", 1.0, "3 Nowhere");
        assert_eq!(
            store.replace_order(&o1.provenance, &o3).await.unwrap(),
            Cas::Rejected(Some(expected.clone()))
        );
        // Same message id but another publish time is another provenance.
        let almost = prov("o2", o2.provenance.publish_time_us + 1);
        assert_eq!(
            store.replace_order(&almost, &o3).await.unwrap(),
            Cas::Rejected(Some(expected.clone()))
        );
        assert_eq!(store.read_fact(10).await.unwrap(), Some(expected));

        // A missing row is not created by the UPDATE.
        let o4 = order(11, "o4");
        assert_eq!(
            store.replace_order(&o1.provenance, &o4).await.unwrap(),
            Cas::Rejected(None)
        );
        assert_eq!(store.read_fact(11).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn replace_payment_requires_expected_provenance() {
    init_tracing();
    with_fresh_store(|store| async move {
        let p1 = payment(20, "p1", "Pending");
        // No row: rejected, and no payment-only row appears.
        assert_eq!(
            store.replace_payment(None, &p1).await.unwrap(),
            Cas::Rejected(None)
        );
        assert_eq!(
            store
                .replace_payment(Some(&prov("p0", 1)), &p1)
                .await
                .unwrap(),
            Cas::Rejected(None)
        );
        assert_eq!(store.read_fact(20).await.unwrap(), None);
        assert!(store.scan_facts().await.unwrap().is_empty());

        let o = order(20, "o1");
        assert!(store.insert_fact(&o).await.unwrap().applied());
        let bare = FactRow {
            order: o.clone(),
            payment: None,
        };
        // Expecting a payment when there is none: rejected.
        assert_eq!(
            store
                .replace_payment(Some(&prov("p0", 1)), &p1)
                .await
                .unwrap(),
            Cas::Rejected(Some(bare.clone()))
        );
        assert_eq!(
            store.replace_payment(None, &p1).await.unwrap(),
            Cas::Applied
        );
        let with_p1 = FactRow {
            order: o.clone(),
            payment: Some(p1.clone()),
        };
        // Expecting none when there is one: rejected.
        let p2 = payment(20, "p2", "Completed");
        assert_eq!(
            store.replace_payment(None, &p2).await.unwrap(),
            Cas::Rejected(Some(with_p1.clone()))
        );
        assert_eq!(
            store
                .replace_payment(Some(&prov("nope", 1)), &p2)
                .await
                .unwrap(),
            Cas::Rejected(Some(with_p1))
        );
        assert_eq!(
            store
                .replace_payment(Some(&p1.provenance), &p2)
                .await
                .unwrap(),
            Cas::Applied
        );
        assert_eq!(
            store.read_fact(20).await.unwrap(),
            Some(FactRow {
                order: o.clone(),
                payment: Some(p2.clone()),
            })
        );

        // Racing first payments on one row: exactly one wins.
        let o = order(21, "o21");
        assert!(store.insert_fact(&o).await.unwrap().applied());
        let ps: Vec<_> = (0..12)
            .map(|i| payment(21, &format!("race-{i}"), "Completed"))
            .collect();
        let results = join_all(ps.iter().map(|p| store.replace_payment(None, p))).await;
        let applied = results
            .iter()
            .filter(|r| r.as_ref().unwrap().applied())
            .count();
        assert_eq!(applied, 1, "{results:?}");
    })
    .await;
}
