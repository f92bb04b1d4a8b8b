//! Throughput figures (not a pass/fail test):
//! `ECOM_CASSANDRA=127.0.0.1:9042 cargo test -p ecom-cassandra --release --test it -- --ignored --nocapture throughput`

use std::time::Instant;

use ecom_cassandra::testing::{drop_store, fresh_store_with};
use ecom_core::{FactRow, OrderState, OrderVersion, ViewWrite, view_ts};
use ecom_store::FactStore;
use futures::StreamExt;

use crate::common::*;

fn state_of(o: &OrderVersion) -> OrderState {
    OrderState {
        order: Some(o.clone()),
        ..OrderState::default()
    }
}

async fn lwt_inserts_per_sec(max_in_flight: usize, n: i64) -> Option<f64> {
    let store = fresh_store_with(|c| c.max_in_flight = max_in_flight).await?;
    let states: Vec<OrderState> = (0..n)
        .map(|i| state_of(&order(i, &format!("m{i}"))))
        .collect();
    let t = Instant::now();
    // Offer far more concurrency than the bound: the store enforces it.
    let applied = futures::stream::iter(states.iter().enumerate())
        .map(|(i, s)| store.insert_state(i as i64, s))
        .buffer_unordered(1024)
        .filter(|r| std::future::ready(r.as_ref().unwrap().applied()))
        .count()
        .await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(applied as i64, n);
    drop_store(store).await;
    Some(n as f64 / secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "prints throughput figures; needs ECOM_CASSANDRA"]
async fn throughput() {
    init_tracing();
    let Some(at64) = lwt_inserts_per_sec(64, 2000).await else {
        return;
    };
    let at1 = lwt_inserts_per_sec(1, 300).await.unwrap();
    println!("insert_state (LWT), 2000 distinct order_ids, max_in_flight 64: {at64:.0}/s");
    println!("insert_state (LWT), 300 distinct order_ids, max_in_flight 1: {at1:.0}/s");

    for max_in_flight in [64, 256] {
        let store = fresh_store_with(|c| c.max_in_flight = max_in_flight)
            .await
            .unwrap();
        let n = 20_000;
        let facts: Vec<FactRow> = (0..n)
            .map(|i| FactRow {
                order: order(i, &format!("m{i}")),
                payment: (i % 2 == 0).then(|| payment(i, &format!("p{i}"), "Completed")),
            })
            .collect();
        let t = Instant::now();
        let views: Vec<ViewWrite> = facts
            .iter()
            .map(|row| ViewWrite::Fact {
                row: row.clone(),
                ts: view_ts(1),
            })
            .collect();
        store.write_views(&views).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "plain view writes, {n} fact rows (half with payment), max_in_flight {max_in_flight}: {:.0} rows/s",
            n as f64 / secs
        );
        let t = Instant::now();
        let scanned = store.scan_facts().await.unwrap().len();
        println!(
            "scan_facts, {scanned} rows: {:.0} rows/s",
            scanned as f64 / t.elapsed().as_secs_f64()
        );
        drop_store(store).await;
    }
}
