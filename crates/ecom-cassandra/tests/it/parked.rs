use ecom_cassandra::testing::with_fresh_store;
use ecom_store::{Cas, FactStore, Parked};

use crate::common::*;

#[tokio::test]
async fn parked_insert_list_delete() {
    init_tracing();
    with_fresh_store(|store| async move {
        let a = parked(40, "pa", "Pending");
        let b = parked(40, "pb", "Completed");
        let c = parked(41, "pc", "Completed");
        for p in [&a, &b, &c] {
            assert_eq!(store.insert_parked(p).await.unwrap(), Cas::Applied);
        }
        assert_eq!(
            store.insert_parked(&a).await.unwrap(),
            Cas::Rejected(Some(a.clone()))
        );

        // Listed in the sled store's order: fingerprint as unsigned bytes.
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort_by_key(|p| p.payment.fingerprint.0 as u64);
        assert_eq!(store.parked_for(40).await.unwrap(), expected);
        assert_eq!(store.parked_for(41).await.unwrap(), vec![c.clone()]);
        assert_eq!(store.parked_for(42).await.unwrap(), vec![]);

        // Replace only under the expected provenance; keeps the argument's
        // parked_at/attempts.
        let a2 = Parked {
            payment: redelivered(&a.payment, "pa-again"),
            parked_at_ms: a.parked_at_ms + 5,
            attempts: 3,
        };
        assert_eq!(
            store.replace_parked(&prov("zzz", 0), &a2).await.unwrap(),
            Cas::Rejected(Some(a.clone()))
        );
        assert_eq!(
            store
                .replace_parked(&a.payment.provenance, &a2)
                .await
                .unwrap(),
            Cas::Applied
        );

        store
            .touch_parked(40, a.payment.fingerprint, 9)
            .await
            .unwrap();
        let touched = Parked {
            attempts: 9,
            ..a2.clone()
        };
        let now = store.parked_for(40).await.unwrap();
        assert!(now.contains(&touched) && now.contains(&b), "{now:?}");

        store
            .delete_parked(40, a.payment.fingerprint)
            .await
            .unwrap();
        assert_eq!(store.parked_for(40).await.unwrap(), vec![b.clone()]);
        // Touching a deleted row leaves no half row behind.
        store
            .touch_parked(40, a.payment.fingerprint, 10)
            .await
            .unwrap();
        assert_eq!(store.parked_for(40).await.unwrap(), vec![b.clone()]);
        // Deleting twice is fine.
        store
            .delete_parked(40, a.payment.fingerprint)
            .await
            .unwrap();

        let mut all = vec![b, c];
        all.sort_by_key(|p| (p.order_id(), p.payment.fingerprint.0 as u64));
        assert_eq!(store.scan_parked().await.unwrap(), all);
    })
    .await;
}
