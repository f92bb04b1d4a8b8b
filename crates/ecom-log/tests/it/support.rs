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

/// The byte of a topic in index keys: 'o' orders_data, 'p' payments_data.
pub fn topic_byte(topic: Topic) -> u8 {
    match topic {
        Topic::Orders => b'o',
        Topic::Payments => b'p',
    }
}

/// The sled key of message id `id` of `topic` in the index (format 2):
/// `'i' ++ topic byte ++ id`.
pub fn index_key(topic: Topic, id: &str) -> Vec<u8> {
    let mut key = vec![b'i', topic_byte(topic)];
    key.extend_from_slice(id.as_bytes());
    key
}

/// A payment-topic copy of [`message`]: same shape, same id if given the same.
pub fn payment_message(id: &str) -> RawMessage {
    RawMessage {
        topic: Topic::Payments,
        data: format!(r#"{{"payment_id": 9, "order_id": 7, "message": "{id}"}}"#).into_bytes(),
        ..message(id)
    }
}

/// Writes, with sled directly, a log in on-disk format 1: the records and
/// meta values of today's format, but the message-id index keyed by
/// message id alone (`'i' ++ id`). A fixture of what older releases left
/// on disk, independent of the crate's own encoder. `dir` must not hold a
/// log yet.
pub fn write_format_1_log(
    dir: &Path,
    entries: &[(RawMessage, i64)],
    quarantined: &[(RawMessage, &str, i64)],
    checkpoint: u64,
    duplicates: u64,
) {
    use bincode::Options;
    // Record: version 1, CRC32 (LE) of the payload, bincode payload with
    // fields in order (a tuple encodes like the struct).
    fn record<T: serde::Serialize>(payload: &T) -> Vec<u8> {
        let payload = bincode::DefaultOptions::new().serialize(payload).unwrap();
        let mut out = vec![1u8];
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
    fn seq_key(prefix: u8, seq: u64) -> Vec<u8> {
        let mut key = vec![prefix];
        key.extend_from_slice(&seq.to_be_bytes());
        key
    }
    fn old_index_key(id: &str) -> Vec<u8> {
        let mut key = vec![b'i'];
        key.extend_from_slice(id.as_bytes());
        key
    }
    std::fs::create_dir_all(dir).unwrap();
    with_raw_db(dir, |db| {
        assert!(db.is_empty(), "write_format_1_log wants an empty directory");
        for (seq, (message, appended_at_ms)) in entries.iter().enumerate() {
            let key = seq_key(b'e', seq as u64);
            db.insert(&key, record(&(appended_at_ms, message))).unwrap();
            db.insert(old_index_key(&message.message_id), key).unwrap();
        }
        for (seq, (message, reason, appended_at_ms)) in quarantined.iter().enumerate() {
            let key = seq_key(b'q', seq as u64);
            db.insert(&key, record(&(appended_at_ms, reason, message)))
                .unwrap();
            db.insert(old_index_key(&message.message_id), key).unwrap();
        }
        db.insert(b"mformat_version", &1u32.to_be_bytes()[..])
            .unwrap();
        for (name, value) in [
            ("next_seq", entries.len() as u64),
            ("next_quarantine_seq", quarantined.len() as u64),
            ("checkpoint", checkpoint),
            ("duplicates_message_id", duplicates),
        ] {
            db.insert(format!("m{name}"), &value.to_be_bytes()[..])
                .unwrap();
        }
    });
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

/// Appends messages `next..next + len` (ids from `id`) and, after them, a
/// redelivery of message `next - 1`; checks that the new ones are appended
/// and the redelivery is answered as a duplicate. Returns `next + len`. The
/// crash children's one step.
pub async fn append_with_redelivery(
    log: &Log,
    next: u64,
    len: u64,
    id: impl Fn(u64) -> String,
) -> u64 {
    let mut batch: Vec<_> = (next..next + len).map(|n| valid(&id(n))).collect();
    if next > 0 {
        batch.push(valid(&id(next - 1)));
    }
    let outcomes = log.append(batch).await.unwrap();
    assert!(
        outcomes[..len as usize]
            .iter()
            .all(|o| matches!(o, ecom_log::AppendOutcome::Appended(_)))
    );
    if next > 0 {
        assert_eq!(outcomes[len as usize], ecom_log::AppendOutcome::Duplicate);
    }
    next + len
}
