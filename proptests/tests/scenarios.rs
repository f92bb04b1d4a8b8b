//! Named scenarios of the semantics, against the embedded store.

use std::sync::Arc;

use ecom_core::{Event, FactRow, RawMessage, Topic, decode};
use ecom_projector::Applier;
use ecom_proptests::{Published, assert_store_is, block_on, expected};
use ecom_store::{FactStore, SledStore};

fn msg(id: &str, t: i64, topic: Topic, json: &str) -> RawMessage {
    RawMessage {
        message_id: id.into(),
        topic,
        publish_time_us: t,
        data: json.as_bytes().to_vec(),
        attributes: Default::default(),
    }
}

fn order(id: &str, t: i64, order_id: i64, status: &str) -> RawMessage {
    msg(
        id,
        t,
        Topic::Orders,
        &format!(
            r#"{{"order_id": {order_id}, "customer_id": 1, "item": "Phone", "quantity": 1, "price": 10.5,
            "shipping_address": "a", "order_status": "{status}", "creation_date": "2024-01-21"}}"#
        ),
    )
}

fn payment(id: &str, t: i64, order_id: i64) -> RawMessage {
    msg(
        id,
        t,
        Topic::Payments,
        &format!(
            r#"{{"payment_id": {}, "order_id": {order_id}, "payment_method": "PayPal", "card_last_four": "1234",
            "payment_status": "Completed", "payment_datetime": "2024-01-21T25:01:30Z"}}"#,
            order_id + 1000
        ),
    )
}

async fn apply_all<S: FactStore>(store: Arc<S>, msgs: &[RawMessage]) {
    let applier = Applier::new(store);
    for m in msgs {
        let e: Event = decode(m).unwrap();
        applier.apply(&e).await.unwrap();
    }
}

/// The fact row of `order_id` as the view holds it.
async fn fact<S: FactStore>(store: &S, order_id: i64) -> FactRow {
    store
        .scan_facts()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.order_id() == order_id)
        .expect("fact row")
}

fn published(msgs: &[RawMessage]) -> Vec<Published> {
    msgs.iter().cloned().map(Published).collect()
}

#[test]
fn payment_before_order_is_parked_then_joined() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        let p = payment("p1", 2, 9);
        apply_all(store.clone(), std::slice::from_ref(&p)).await;
        assert_eq!(store.counts().await.unwrap().parked, 1);
        let o = order("o1", 1, 9, "Shipped");
        apply_all(store.clone(), std::slice::from_ref(&o)).await;
        let c = store.counts().await.unwrap();
        assert_eq!((c.parked, c.payments_joined), (0, 1));
        assert_store_is(store.as_ref(), &expected(&published(&[p, o]))).await;
    });
}

#[test]
fn order_update_never_wipes_the_payment_columns() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        // The later-published order arrives first, then the payment, then
        // the earlier-published (winning) order displaces it.
        let msgs = [
            order("o2", 20, 3, "Pending"),
            payment("p", 30, 3),
            order("o1", 10, 3, "Delivered"),
        ];
        apply_all(store.clone(), &msgs).await;
        let row = fact(store.as_ref(), 3).await;
        assert_eq!(row.order.content.order_status, "Delivered");
        assert!(
            row.payment.is_some(),
            "payment columns survived the order update"
        );
        assert_eq!(store.scan_audit().await.unwrap().len(), 1);
        assert_store_is(store.as_ref(), &expected(&published(&msgs))).await;
    });
}

#[test]
fn business_duplicate_has_no_effect_but_earliest_copy_gives_provenance() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        let late = order("b", 20, 4, "Shipped");
        let early = order("a", 10, 4, "Shipped");
        apply_all(store.clone(), &[late.clone(), early.clone(), late]).await;
        let row = fact(store.as_ref(), 4).await;
        assert_eq!(row.order.provenance.message_id, "a");
        assert!(store.scan_audit().await.unwrap().is_empty());
    });
}

#[test]
fn once_losing_version_that_later_wins_leaves_no_audit_row_for_itself() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        // "x" (Shipped, late) loses to "w" (Pending); then an earlier copy
        // of the Shipped content arrives and wins: only Pending is audited.
        let msgs = [
            order("w", 20, 6, "Pending"),
            order("x", 30, 6, "Shipped"),
            order("y", 10, 6, "Shipped"),
        ];
        apply_all(store.clone(), &msgs).await;
        let audit = store.scan_audit().await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].provenance().message_id, "w");
        assert_store_is(store.as_ref(), &expected(&published(&msgs))).await;
    });
}

#[test]
fn higher_version_wins_over_earlier_publish() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        let v2 = msg(
            "late",
            99,
            Topic::Orders,
            r#"{"order_id": 8, "customer_id": 1, "item": "Book", "quantity": 1,
            "price": 1.0, "shipping_address": "a", "order_status": "Delivered", "creation_date": "2024-01-21", "version": 2}"#,
        );
        let v1 = msg(
            "early",
            1,
            Topic::Orders,
            r#"{"order_id": 8, "customer_id": 1, "item": "Book", "quantity": 1,
            "price": 1.0, "shipping_address": "a", "order_status": "Pending", "creation_date": "2024-01-21", "version": 1}"#,
        );
        apply_all(store.clone(), &[v2, v1]).await;
        let row = fact(store.as_ref(), 8).await;
        assert_eq!(row.order.content.order_status, "Delivered");
    });
}

#[test]
fn dlq_reprocess_joins_parked_payments_whose_order_exists() {
    block_on(async {
        let store = Arc::new(SledStore::temporary().unwrap());
        apply_all(store.clone(), &[payment("p", 1, 11), payment("q", 1, 12)]).await;
        // The order's state lands but none of its view writes do (a store
        // written by hand, or by an older version): the parked row stays.
        let o = decode(&order("o", 2, 11, "Shipped")).unwrap();
        let cur = store.read_state(11).await.unwrap().unwrap();
        let plan = ecom_core::plan(11, Some(&cur), &[o], 0).unwrap();
        store
            .update_state(11, cur.revision, &plan.next.unwrap())
            .await
            .unwrap();
        assert_eq!(store.scan_parked().await.unwrap().len(), 2);
        let (joined, remaining) = Applier::new(store.clone())
            .reprocess_parked()
            .await
            .unwrap();
        assert_eq!((joined, remaining), (1, 1));
        let parked = store.scan_parked().await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].attempts, 2, "a failed attempt is counted");
        assert_eq!(parked[0].order_id(), 12);
        let row = fact(store.as_ref(), 11).await;
        assert!(
            row.payment.is_some(),
            "the repair wrote the joined fact row"
        );
    });
}

#[test]
fn projector_pauses_while_the_store_is_unavailable_and_resumes_by_itself() {
    use ecom_log::{Incoming, Log, LogOptions};
    use ecom_projector::{Projector, ProjectorOptions, ProjectorState};
    use ecom_proptests::FailAfter;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
        let msgs = [order("o", 1, 21, "Shipped"), payment("p", 2, 21)];
        log.append(msgs.iter().cloned().map(Incoming::Valid).collect())
            .await
            .unwrap();
        // The store is down from the start.
        let store = Arc::new(FailAfter::new(SledStore::temporary().unwrap(), 0));
        let projector = Arc::new(Projector::new(
            log.clone(),
            Applier::new(store.clone()),
            ProjectorOptions {
                min_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                ..Default::default()
            },
        ));
        let cancel = CancellationToken::new();
        let task = {
            let (p, c) = (projector.clone(), cancel.clone());
            tokio::spawn(async move { p.catch_up(&c).await })
        };
        // Bounded wait until it reports the pause.
        let mut paused = false;
        for _ in 0..500 {
            if matches!(projector.status().state, ProjectorState::Paused { .. }) {
                paused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(paused, "a retryable store error pauses the projector");
        assert_eq!(
            log.checkpoint(),
            0,
            "nothing is checkpointed while the store is down"
        );
        // Ingestion goes on meanwhile.
        log.append(vec![Incoming::Valid(order("o2", 3, 22, "Pending"))])
            .await
            .unwrap();
        store.refill(u64::MAX);
        task.await.unwrap().unwrap();
        assert_eq!(projector.status().state, ProjectorState::Running);
        assert_eq!(log.checkpoint(), log.next_seq());
        let mut all = msgs.to_vec();
        all.push(order("o2", 3, 22, "Pending"));
        assert_store_is(&store.inner, &expected(&published(&all))).await;
    });
}
