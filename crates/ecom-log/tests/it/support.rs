//! Helpers shared by the test modules. The key encoders below duplicate the
//! on-disk layout documented in the crate root on purpose: they pin it.

use std::collections::BTreeMap;
use std::path::Path;

use ecom_core::{RawMessage, Topic};
use ecom_log::{Incoming, Log, LogOptions};

/// A message of about 300 bytes of payload, like today's producers send.
pub fn message(id: &str) -> RawMessage {
    let data = format!(
        r#"{{"order_id": 7, "customer_id": 3, "item": "Laptop", "quantity": 2, "price": 734.2183, "shipping_address": "1 Main St, Springfield, 12345", "order_status": "Shipped", "creation_date": "2024-01-21", "message": "{id}", "padding": "{}"}}"#,
        "x".repeat(64)
    );
    RawMessage {
        message_id: id.to_string(),
        topic: Topic::Orders,
        publish_time_us: 1_705_800_000_000_000,
        data: data.into_bytes(),
        attributes: BTreeMap::from([("origin".to_string(), "test".to_string())]),
    }
}

pub fn valid(id: &str) -> Incoming {
    Incoming::Valid(message(id))
}

pub fn valid_batch(ids: impl IntoIterator<Item = String>) -> Vec<Incoming> {
    ids.into_iter().map(|id| valid(&id)).collect()
}

pub fn open(dir: &Path) -> Log {
    Log::open(dir, LogOptions::default()).expect("open log")
}

/// The sled key of entry `seq`: `'e' ++ seq (u64 big-endian)`.
pub fn entry_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sled key of message id `id` in the index: `'i' ++ id`.
pub fn index_key(id: &str) -> Vec<u8> {
    let mut key = vec![b'i'];
    key.extend_from_slice(id.as_bytes());
    key
}

/// Opens `<dir>/db` with sled directly (the log must be closed), to damage
/// it the way a disk or a bug would.
pub fn with_raw_db(dir: &Path, f: impl FnOnce(&sled::Db)) {
    let db = sled::open(dir.join("db")).expect("raw sled open");
    f(&db);
    db.flush().expect("raw sled flush");
}

/// The message ids of the first entries, in sequence order.
pub fn message_ids(log: &Log) -> Vec<String> {
    log.read_from(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.message.message_id)
        .collect()
}
