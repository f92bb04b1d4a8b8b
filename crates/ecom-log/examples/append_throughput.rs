//! Append throughput of the durable log, with messages of about 300 bytes.
//!
//! ```text
//! cargo run --release -p ecom-log --example append_throughput [-- <dir>]
//! ```
//!
//! Without `<dir>`, a temporary directory is used (its filesystem decides
//! what an fsync costs). Each scenario appends to a fresh log until a time
//! budget is spent and prints appends/s, messages/s and flushes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecom_core::{RawMessage, Topic};
use ecom_log::{Incoming, Log, LogOptions};

const BUDGET: Duration = Duration::from_secs(3);

fn message(id: u64) -> RawMessage {
    let data = format!(
        r#"{{"order_id": {id}, "customer_id": 3, "item": "Laptop", "quantity": 2, "price": 734.2183, "shipping_address": "1 Main St, Springfield, 12345", "order_status": "Shipped", "creation_date": "2024-01-21", "padding": "{}"}}"#,
        "x".repeat(90)
    );
    RawMessage {
        message_id: format!("{id:020}"),
        topic: Topic::Orders,
        publish_time_us: 1_705_800_000_000_000,
        data: data.into_bytes(),
        attributes: BTreeMap::new(),
    }
}

/// `callers` tasks each appending batches of `batch` messages in a loop.
async fn scenario(base: &Path, name: &str, callers: u64, batch: u64) {
    let dir = base.join(name);
    let log = Log::open(&dir, LogOptions::default()).expect("open log");
    let start = Instant::now();
    let appends = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let log = log.clone();
        let appends = Arc::clone(&appends);
        tasks.spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < BUDGET {
                let messages = (0..batch)
                    .map(|i| Incoming::Valid(message((caller << 40) | (n + i))))
                    .collect();
                log.append(messages).await.expect("append");
                n += batch;
                appends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let appends = appends.load(std::sync::atomic::Ordering::Relaxed);
    let stats = log.stats();
    println!(
        "{name:<28} {:>10.0} appends/s {:>11.0} messages/s {:>8} flushes {:>7.2} ms/flush",
        appends as f64 / secs,
        stats.entries as f64 / secs,
        stats.flushes,
        secs * 1000.0 / stats.flushes as f64,
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    let tmp;
    let base = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    println!(
        "message size: {} bytes of data; budget {BUDGET:?} per scenario; dir {}",
        message(0).data.len(),
        base.display()
    );
    scenario(&base, "batch 1, 1 caller", 1, 1).await;
    scenario(&base, "batch 100, 1 caller", 1, 100).await;
    scenario(&base, "batch 1000, 1 caller", 1, 1000).await;
    scenario(&base, "batch 1, 64 callers", 64, 1).await;
    scenario(&base, "batch 100, 16 callers", 16, 100).await;
}
