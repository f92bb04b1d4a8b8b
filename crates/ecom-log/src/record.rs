//! Everything that turns values into bytes on disk and back: the key layout
//! of the single sled tree and the checksummed record format. The module
//! documentation of the crate root describes both; this file is the only
//! place that implements them.

use std::fmt;

use bincode::Options;
use ecom_core::{RawMessage, Topic};
use serde::{Deserialize, Serialize};

/// Version of the whole on-disk format (key layout, meta keys, record
/// payloads). Stored under [`META_FORMAT_VERSION`]; bump it on any change to
/// this file or to the field order of `ecom_core::RawMessage`.
///
/// 2: the message-id index is keyed by topic and message id.
/// 1: it was keyed by message id alone ([`FORMAT_1`]).
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The format before the index knew the topic; `upgrade` rebuilds its index.
pub(crate) const FORMAT_1: u32 = 1;

/// Version byte at the start of every record.
pub(crate) const RECORD_VERSION: u8 = 1;

/// `version: u8` + `crc32: u32` (little-endian).
pub(crate) const HEADER_LEN: usize = 5;

/// Upper bound on a payload, for both encoding and decoding, so a corrupt
/// length prefix cannot make the decoder allocate without limit. Pub/Sub
/// messages are at most 10 MB.
pub(crate) const MAX_PAYLOAD_BYTES: u64 = 64 << 20;

// Key prefixes. All keyspaces share one sled tree so that a single
// `sled::Batch` (atomic within one tree) covers a whole group commit.
pub(crate) const ENTRY: u8 = b'e';
pub(crate) const INDEX: u8 = b'i';
pub(crate) const QUARANTINE: u8 = b'q';
/// Prefix of the meta keys (`META_*`).
pub(crate) const META: u8 = b'm';
/// Prune marks: `'t' ++ seq (u64 BE) -> appended_at_ms (i64 BE)` of entry
/// `seq - 1`, written by each prune; a compaction forgets message ids by
/// age with them.
pub(crate) const PRUNE_MARK: u8 = b't';

// Meta keys: prefix 'm' ++ name.
pub(crate) const META_FORMAT_VERSION: &[u8] = b"mformat_version";
pub(crate) const META_NEXT_SEQ: &[u8] = b"mnext_seq";
pub(crate) const META_NEXT_QUARANTINE_SEQ: &[u8] = b"mnext_quarantine_seq";
pub(crate) const META_CHECKPOINT: &[u8] = b"mcheckpoint";
pub(crate) const META_DUPLICATES: &[u8] = b"mduplicates_message_id";
/// The lowest entry still held (absent: 0). Entries below it were archived
/// and pruned ([`crate::Log::prune_below`]); their index keys stay.
pub(crate) const META_FIRST_SEQ: &[u8] = b"mfirst_seq";

/// Which keyspace a sequence number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecordKind {
    Entry,
    Quarantine,
}

impl RecordKind {
    fn prefix(self) -> u8 {
        match self {
            RecordKind::Entry => ENTRY,
            RecordKind::Quarantine => QUARANTINE,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Entry => "entry",
            RecordKind::Quarantine => "quarantine record",
        })
    }
}

/// `prefix ++ seq (u64 big-endian)`: big-endian so that sled's byte order is
/// sequence order.
pub(crate) fn seq_key(kind: RecordKind, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = kind.prefix();
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn entry_key(seq: u64) -> [u8; 9] {
    seq_key(RecordKind::Entry, seq)
}

pub(crate) fn quarantine_key(seq: u64) -> [u8; 9] {
    seq_key(RecordKind::Quarantine, seq)
}

/// The sequence number of an entry or quarantine key, if it is well-formed.
pub(crate) fn parse_seq_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The byte that stands for a topic in index keys. Defined here, not in
/// ecom-core, because it is part of this crate's on-disk format: never
/// change or reuse one (a new topic gets a new byte and a format bump).
pub(crate) fn topic_byte(topic: Topic) -> u8 {
    match topic {
        Topic::Orders => b'o',
        Topic::Payments => b'p',
    }
}

pub(crate) fn topic_from_byte(byte: u8) -> Option<Topic> {
    match byte {
        b'o' => Some(Topic::Orders),
        b'p' => Some(Topic::Payments),
        _ => None,
    }
}

/// `'i' ++ topic byte ++ message_id (UTF-8)`: Pub/Sub message ids are unique
/// within a topic only, so the topic is part of the dedup key.
pub(crate) fn index_key(topic: Topic, message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + message_id.len());
    key.push(INDEX);
    key.push(topic_byte(topic));
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// The topic and message id of an index key, or why it is malformed.
pub(crate) fn parse_index_key(key: &[u8]) -> Result<(Topic, &str), String> {
    let (&topic, id) = key
        .get(1..)
        .and_then(|rest| rest.split_first())
        .ok_or_else(|| format!("index key {key:?} has no topic byte"))?;
    let topic = topic_from_byte(topic)
        .ok_or_else(|| format!("index key {key:?} has an unknown topic byte {topic:#04x}"))?;
    let id = std::str::from_utf8(id).map_err(|_| format!("index key {key:?} is not UTF-8"))?;
    Ok((topic, id))
}

pub(crate) fn prune_mark_key(seq: u64) -> [u8; 9] {
    let mut key = [PRUNE_MARK; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `kind prefix ('e' | 'q') ++ seq (u64 big-endian)`: the same bytes as the
/// key of the record the index points at.
pub(crate) fn index_value(kind: RecordKind, seq: u64) -> [u8; 9] {
    seq_key(kind, seq)
}

pub(crate) fn parse_index_value(value: &[u8]) -> Option<(RecordKind, u64)> {
    let kind = match *value.first()? {
        ENTRY => RecordKind::Entry,
        QUARANTINE => RecordKind::Quarantine,
        _ => return None,
    };
    Some((kind, parse_seq_key(value)?))
}

fn codec() -> impl Options {
    // DefaultOptions: little-endian, varint integers, trailing bytes rejected.
    bincode::DefaultOptions::new().with_limit(MAX_PAYLOAD_BYTES)
}

/// Payload of an entry record (`'e'` keys).
///
/// On disk: do not reorder fields (bincode is positional). `M` is
/// `&RawMessage` when encoding and `RawMessage` when decoding, so there is
/// one definition of the layout.
#[derive(Serialize, Deserialize)]
struct EntryPayload<M> {
    appended_at_ms: i64,
    message: M,
}

/// Payload of a quarantine record (`'q'` keys).
///
/// On disk: do not reorder fields (bincode is positional).
#[derive(Serialize, Deserialize)]
struct QuarantinePayload<M, R> {
    appended_at_ms: i64,
    reason: R,
    message: M,
}

fn frame<T: Serialize>(payload: &T, size_hint: usize) -> Result<Vec<u8>, bincode::Error> {
    let mut buf = Vec::with_capacity(HEADER_LEN + size_hint);
    buf.push(RECORD_VERSION);
    buf.extend_from_slice(&[0; 4]);
    codec().serialize_into(&mut buf, payload)?;
    let crc = crc32fast::hash(&buf[HEADER_LEN..]);
    buf[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

fn size_hint(message: &RawMessage) -> usize {
    64 + message.message_id.len()
        + message.data.len()
        + message
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
}

pub(crate) fn encode_entry(
    message: &RawMessage,
    appended_at_ms: i64,
) -> Result<Vec<u8>, bincode::Error> {
    frame(
        &EntryPayload {
            appended_at_ms,
            message,
        },
        size_hint(message),
    )
}

pub(crate) fn encode_quarantine(
    message: &RawMessage,
    reason: &str,
    appended_at_ms: i64,
) -> Result<Vec<u8>, bincode::Error> {
    frame(
        &QuarantinePayload {
            appended_at_ms,
            reason,
            message,
        },
        size_hint(message) + reason.len(),
    )
}

/// Checks the header (version, checksum) and returns the payload bytes, or
/// a reason a human can read.
fn payload(record: &[u8]) -> Result<&[u8], String> {
    if record.len() < HEADER_LEN {
        return Err(format!(
            "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
            record.len()
        ));
    }
    if record[0] != RECORD_VERSION {
        return Err(format!(
            "unknown record version {} (this build reads version {RECORD_VERSION})",
            record[0]
        ));
    }
    let stored = u32::from_le_bytes(record[1..HEADER_LEN].try_into().expect("4 bytes"));
    let payload = &record[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over {} payload bytes",
            payload.len()
        ));
    }
    Ok(payload)
}

/// Decodes an entry record into `(message, appended_at_ms)`.
pub(crate) fn decode_entry(record: &[u8]) -> Result<(RawMessage, i64), String> {
    let p: EntryPayload<RawMessage> = codec()
        .deserialize(payload(record)?)
        .map_err(|e| format!("checksum is intact but the payload does not decode: {e}"))?;
    Ok((p.message, p.appended_at_ms))
}

/// Decodes a quarantine record into `(message, reason, appended_at_ms)`.
pub(crate) fn decode_quarantine(record: &[u8]) -> Result<(RawMessage, String, i64), String> {
    let p: QuarantinePayload<RawMessage, String> = codec()
        .deserialize(payload(record)?)
        .map_err(|e| format!("checksum is intact but the payload does not decode: {e}"))?;
    Ok((p.message, p.reason, p.appended_at_ms))
}

/// The dedup key (topic, message id) of a record of either kind.
pub(crate) fn decode_dedup_key(kind: RecordKind, record: &[u8]) -> Result<(Topic, String), String> {
    let message = match kind {
        RecordKind::Entry => decode_entry(record).map(|(m, _)| m)?,
        RecordKind::Quarantine => decode_quarantine(record).map(|(m, _, _)| m)?,
    };
    Ok((message.topic, message.message_id))
}

pub(crate) fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message() -> RawMessage {
        RawMessage {
            message_id: "m-1".into(),
            topic: Topic::Payments,
            publish_time_us: 1_700_000_000_000_000,
            data: b"{\"payment_id\":1}".to_vec(),
            attributes: BTreeMap::from([("k".to_string(), "v".to_string())]),
        }
    }

    #[test]
    fn entry_record_round_trips() {
        let record = encode_entry(&message(), 42).unwrap();
        assert_eq!(record[0], RECORD_VERSION);
        assert_eq!(decode_entry(&record).unwrap(), (message(), 42));
    }

    #[test]
    fn quarantine_record_round_trips() {
        let record = encode_quarantine(&message(), "malformed", 7).unwrap();
        assert_eq!(
            decode_quarantine(&record).unwrap(),
            (message(), "malformed".to_string(), 7)
        );
    }

    /// Pins the byte layout: if this fails, the on-disk format changed (here
    /// or in `ecom_core::RawMessage`) and `FORMAT_VERSION` must be bumped
    /// together with a migration story.
    #[test]
    fn entry_record_bytes_are_pinned() {
        let record = encode_entry(&message(), 42).unwrap();
        let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
        // 01 version | 1f63285c crc32 LE | 54 appended_at_ms 42 (zigzag
        // varint) | 03 "m-1" | 01 Topic::Payments | fd + 8 bytes
        // publish_time_us | 10 + 16 bytes data | 01 map len, 01 "k", 01 "v".
        assert_eq!(
            hex,
            "011f63285c54036d2d3101fd00803c3048140c00107b227061796d656e745f6964223a317d01016b0176"
        );
    }

    #[test]
    fn flipped_payload_byte_fails_the_checksum() {
        let mut record = encode_entry(&message(), 42).unwrap();
        let last = record.len() - 1;
        record[last] ^= 0x01;
        let err = decode_entry(&record).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn unknown_record_version_is_refused() {
        let mut record = encode_entry(&message(), 42).unwrap();
        record[0] = 9;
        let err = decode_entry(&record).unwrap_err();
        assert!(err.contains("unknown record version 9"), "{err}");
    }

    #[test]
    fn truncated_record_is_refused() {
        let err = decode_entry(&[1, 2]).unwrap_err();
        assert!(err.contains("shorter than its 5-byte header"), "{err}");
    }

    #[test]
    fn entry_keys_sort_in_sequence_order() {
        let mut keys: Vec<_> = [256u64, 1, u64::MAX, 0, 255].map(entry_key).to_vec();
        keys.sort();
        let seqs: Vec<_> = keys.iter().map(|k| parse_seq_key(k).unwrap()).collect();
        assert_eq!(seqs, [0, 1, 255, 256, u64::MAX]);
    }

    /// Pins the index key layout (format 2): `'i'`, the topic byte, the
    /// message id. The same id on another topic is another key.
    #[test]
    fn index_key_bytes_are_pinned() {
        assert_eq!(index_key(Topic::Orders, "m-1"), b"iom-1");
        assert_eq!(index_key(Topic::Payments, "m-1"), b"ipm-1");
        assert_eq!(
            parse_index_key(b"ipm-1"),
            Ok((Topic::Payments, "m-1")),
            "round trip"
        );
        assert!(
            parse_index_key(b"im-1")
                .unwrap_err()
                .contains("unknown topic byte")
        );
        assert!(parse_index_key(b"i").unwrap_err().contains("no topic byte"));
        assert_eq!(FORMAT_VERSION, 2, "a layout change bumps the format");
    }

    #[test]
    fn index_values_round_trip() {
        let v = index_value(RecordKind::Quarantine, 9);
        assert_eq!(parse_index_value(&v), Some((RecordKind::Quarantine, 9)));
        assert_eq!(parse_index_value(b"x"), None);
    }
}
