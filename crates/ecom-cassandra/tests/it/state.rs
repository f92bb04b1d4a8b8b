//! `order_state`'s lightweight transactions and the views' timestamps,
//! against the real server.

use ecom_cassandra::testing::with_fresh_store;
use ecom_core::{Entry, FactRow, Kind, OrderState, ViewWrite, view_ts};
use ecom_store::{Cas, FactStore};

use crate::common::*;

fn state_with_order(order_id: i64, message_id: &str) -> OrderState {
    OrderState {
        order: Some(order(order_id, message_id)),
        ..OrderState::default()
    }
}

#[tokio::test]
async fn insert_if_absent_returns_the_row_that_won() {
    init_tracing();
    with_fresh_store(|store| async move {
        let a = state_with_order(1, "a");
        let b = state_with_order(1, "b");
        assert_eq!(store.insert_state(1, &a).await.unwrap(), Cas::Applied);
        match store.insert_state(1, &b).await.unwrap() {
            Cas::Rejected(Some(cur)) => {
                assert_eq!(cur.revision, 1);
                assert_eq!(cur.state, a, "IF NOT EXISTS returns the whole current row");
            }
            other => panic!("expected a rejection with the row, got {other:?}"),
        }
        let read = store.read_state(1).await.unwrap().unwrap();
        assert_eq!((read.revision, read.state), (1, a));
    })
    .await;
}

#[tokio::test]
async fn update_applies_only_at_the_expected_revision() {
    init_tracing();
    with_fresh_store(|store| async move {
        let a = state_with_order(2, "a");
        let b = state_with_order(2, "b");
        let c = state_with_order(2, "c");
        assert!(
            !store.update_state(2, 1, &a).await.unwrap().applied(),
            "no row: nothing to update, and no row is created"
        );
        assert!(store.read_state(2).await.unwrap().is_none());
        store.insert_state(2, &a).await.unwrap();
        assert!(store.update_state(2, 1, &b).await.unwrap().applied());
        // A writer that read revision 1 is rejected now.
        assert!(!store.update_state(2, 1, &c).await.unwrap().applied());
        let read = store.read_state(2).await.unwrap().unwrap();
        assert_eq!((read.revision, read.state), (2, b));
    })
    .await;
}

#[tokio::test]
async fn replayed_state_rows_are_superseded_by_later_lwts() {
    init_tracing();
    with_fresh_store(|store| async move {
        let a = state_with_order(3, "a");
        let b = state_with_order(3, "b");
        store.put_states(&[(3, a.clone())]).await.unwrap();
        assert!(
            !store.insert_state(3, &b).await.unwrap().applied(),
            "a replayed row exists for IF NOT EXISTS"
        );
        assert!(store.update_state(3, 1, &b).await.unwrap().applied());
        let read = store.read_state(3).await.unwrap().unwrap();
        assert_eq!((read.revision, read.state), (2, b));
    })
    .await;
}

#[tokio::test]
async fn the_newest_view_write_wins_in_any_arrival_order() {
    init_tracing();
    with_fresh_store(|store| async move {
        let old = FactRow {
            order: order(4, "old"),
            payment: None,
        };
        let new = FactRow {
            order: order_with(4, "new", 99.5, "elsewhere"),
            payment: Some(payment(4, "p", "Completed")),
        };
        // Newest first, then a late stale write: the stale one is ignored.
        store
            .write_views(&[ViewWrite::Fact {
                row: new.clone(),
                ts: view_ts(2),
            }])
            .await
            .unwrap();
        store
            .write_views(&[ViewWrite::Fact {
                row: old.clone(),
                ts: view_ts(1),
            }])
            .await
            .unwrap();
        assert_eq!(store.scan_facts().await.unwrap(), vec![new]);

        // A deletion shadows older writes and loses to newer ones; on a tie
        // it wins.
        let e = audit_order(4, "loser");
        let put = |ts| ViewWrite::Audit {
            entry: e.clone(),
            ts,
        };
        let del = |ts| ViewWrite::AuditDelete {
            order_id: 4,
            kind: Kind::Order,
            fingerprint: e.fingerprint(),
            ts,
        };
        store.write_views(&[del(view_ts(3))]).await.unwrap();
        store.write_views(&[put(view_ts(2))]).await.unwrap();
        assert!(store.scan_audit().await.unwrap().is_empty());
        store.write_views(&[put(view_ts(3))]).await.unwrap();
        assert!(
            store.scan_audit().await.unwrap().is_empty(),
            "tie: deletion wins"
        );
        store.write_views(&[put(view_ts(4))]).await.unwrap();
        assert_eq!(store.scan_audit().await.unwrap(), vec![e.clone()]);
        let _: &Entry = &e;
    })
    .await;
}

/// Defect 6 of the old protocol: a plain write stamped by a coordinator
/// whose clock runs ahead (here: one hour) shadowed a later LWT that
/// reported success. Views now carry revision timestamps above any wall
/// clock, so such a write is overridden by the next view write.
#[tokio::test]
async fn a_write_from_a_skewed_clock_never_shadows_a_view() {
    init_tracing();
    with_fresh_store(|store| async move {
        let ahead_us = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64)
            + 3_600_000_000;
        let stmt = store
            .session()
            .prepare(format!(
                "INSERT INTO {}.orders_payments_facts (order_id, item) VALUES (?, ?) USING TIMESTAMP ?",
                store.keyspace()
            ))
            .await
            .unwrap();
        store
            .session()
            .execute_unpaged(&stmt, (5i64, "from a skewed clock", ahead_us))
            .await
            .unwrap();
        let row = FactRow {
            order: order(5, "o"),
            payment: None,
        };
        assert!(view_ts(1) > ahead_us, "views are stamped above any wall clock");
        store
            .write_views(&[ViewWrite::Fact {
                row: row.clone(),
                ts: view_ts(1),
            }])
            .await
            .unwrap();
        assert_eq!(store.scan_facts().await.unwrap(), vec![row]);
    })
    .await;
}
