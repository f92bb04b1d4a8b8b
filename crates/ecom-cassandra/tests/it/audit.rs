use ecom_cassandra::testing::with_fresh_store;
use ecom_core::{Entry, Kind};
use ecom_store::{Cas, FactStore};

use crate::common::*;

#[tokio::test]
async fn audit_insert_replace_delete_are_conditional() {
    init_tracing();
    with_fresh_store(|store| async move {
        let e1 = audit_order(30, "a1");
        let (fp, p1) = (e1.fingerprint(), e1.provenance().clone());
        assert_eq!(store.read_audit(30, Kind::Order, fp).await.unwrap(), None);
        assert_eq!(store.insert_audit(&e1).await.unwrap(), Cas::Applied);
        assert_eq!(
            store.read_audit(30, Kind::Order, fp).await.unwrap(),
            Some(e1.clone())
        );

        // The same version from another message: same key, rejected.
        let Entry::Order(v1) = &e1 else {
            unreachable!()
        };
        let e1b = Entry::Order(redelivered(v1, "a1-again"));
        assert_eq!(
            store.insert_audit(&e1b).await.unwrap(),
            Cas::Rejected(Some(e1.clone()))
        );

        // Replace only under the expected provenance.
        assert_eq!(
            store.replace_audit(&prov("other", 1), &e1b).await.unwrap(),
            Cas::Rejected(Some(e1.clone()))
        );
        assert_eq!(store.replace_audit(&p1, &e1b).await.unwrap(), Cas::Applied);
        assert_eq!(
            store.read_audit(30, Kind::Order, fp).await.unwrap(),
            Some(e1b.clone())
        );
        // Replacing a missing entry does not create it.
        let absent = audit_order(31, "x");
        assert_eq!(
            store.replace_audit(&prov("x", 1), &absent).await.unwrap(),
            Cas::Rejected(None)
        );
        assert_eq!(
            store
                .read_audit(31, Kind::Order, absent.fingerprint())
                .await
                .unwrap(),
            None
        );

        // The same (order_id, fingerprint) under kind 'payment' is another key.
        let pay = Entry::Payment(payment(30, "pay1", "Failed"));
        assert_eq!(store.insert_audit(&pay).await.unwrap(), Cas::Applied);
        assert_eq!(
            store
                .read_audit(30, Kind::Payment, pay.fingerprint())
                .await
                .unwrap(),
            Some(pay.clone())
        );
        assert_eq!(store.read_audit(30, Kind::Payment, fp).await.unwrap(), None);

        // Delete only under the expected provenance.
        assert_eq!(
            store.delete_audit(30, Kind::Order, fp, &p1).await.unwrap(),
            Cas::Rejected(Some(e1b.clone()))
        );
        assert_eq!(
            store
                .delete_audit(30, Kind::Order, fp, e1b.provenance())
                .await
                .unwrap(),
            Cas::Applied
        );
        assert_eq!(store.read_audit(30, Kind::Order, fp).await.unwrap(), None);
        assert_eq!(
            store
                .delete_audit(30, Kind::Order, fp, e1b.provenance())
                .await
                .unwrap(),
            Cas::Rejected(None)
        );
        assert_eq!(store.scan_audit().await.unwrap(), vec![pay]);
    })
    .await;
}
