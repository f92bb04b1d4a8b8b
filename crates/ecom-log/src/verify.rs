//! Integrity checks: the tail check run by `Log::open` and the full scan of
//! `Log::verify`.
//!
//! The message-id index is checked both ways: every record's dedup key
//! (topic, message id) must be indexed at that record, and every index key
//! must point at a record that holds its topic and message id.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

use ecom_core::Topic;

use crate::record::{
    self, ENTRY, INDEX, META_CHECKPOINT, META_FIRST_SEQ, META_NEXT_QUARANTINE_SEQ, META_NEXT_SEQ,
    QUARANTINE, RecordKind, entry_key, parse_index_key, parse_index_value, parse_seq_key, seq_key,
};
use crate::{LogError, VerifyReport};

/// Checks every entry in `from..next_seq`: present, contiguous, checksum and
/// decode; and that nothing lies at or beyond `next_seq`. Returns how many
/// entries it checked. Errors name the first bad sequence number.
pub(crate) fn check_tail(
    dir: &Path,
    tree: &sled::Tree,
    from: u64,
    next_seq: u64,
) -> Result<u64, LogError> {
    let corrupt = |seq, reason: String| LogError::Corrupt {
        dir: dir.to_path_buf(),
        seq,
        reason,
    };
    let mut expected = from;
    for kv in tree.range(entry_key(from)..=entry_key(u64::MAX)) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        let seq = parse_seq_key(&key)
            .ok_or_else(|| corrupt(expected, format!("malformed entry key {key:?}")))?;
        if seq >= next_seq {
            return Err(corrupt(
                seq,
                format!("entry exists at or beyond the log's next_seq {next_seq}"),
            ));
        }
        if seq != expected {
            return Err(corrupt(
                expected,
                format!("entry is missing (the next entry present is seq {seq})"),
            ));
        }
        record::decode_entry(&value).map_err(|reason| corrupt(seq, reason))?;
        expected += 1;
    }
    if expected < next_seq {
        return Err(corrupt(
            expected,
            format!("entry is missing (the log's next_seq is {next_seq})"),
        ));
    }
    Ok(next_seq - from)
}

fn key_hash(topic: Topic, message_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (topic, message_id).hash(&mut h);
    h.finish()
}

fn read_u64(dir: &Path, tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, LogError> {
    Ok(tree
        .get(key)
        .map_err(LogError::storage(dir))?
        .and_then(|v| record::u64_value(&v)))
}

/// What a scan of one keyspace learned: for each sequence number, a hash of
/// the dedup key (topic, message id) stored there (`None`: missing or
/// undecodable).
struct Scanned {
    checked: u64,
    /// The first sequence scanned (entries below were pruned).
    first: u64,
    /// Dedup-key hashes of sequences `first..`.
    ids: Vec<Option<u64>>,
}

/// Scans one keyspace (entries or quarantine): checksum and decode of every
/// record, continuity, and that the index maps each record's dedup key back
/// to it.
///
/// Safe to run while appends go on: a group commit makes its records, index
/// keys and meta counters visible at one instant, so records below the
/// `next` read before the scan must all be seen, records seen must lie below
/// the `next` read after it, and a visible record always has its index key.
fn scan(
    dir: &Path,
    tree: &sled::Tree,
    kind: RecordKind,
    next_key: &[u8],
    first: u64,
    problems: &mut Vec<String>,
) -> Result<Scanned, LogError> {
    let prefix = match kind {
        RecordKind::Entry => ENTRY,
        RecordKind::Quarantine => QUARANTINE,
    };
    let next_before = read_u64(dir, tree, next_key)?.unwrap_or(0);
    let mut ids: Vec<Option<u64>> = Vec::new();
    let mut checked = 0;
    for kv in tree.scan_prefix([prefix]) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        let Some(seq) = parse_seq_key(&key) else {
            problems.push(format!("malformed {kind} key {key:?}"));
            continue;
        };
        checked += 1;
        if seq >= 1 << 40 {
            problems.push(format!("{kind} seq {seq} is implausibly large"));
            continue;
        }
        if seq < first {
            problems.push(format!(
                "{kind} seq {seq} is still present although the log was pruned below {first}"
            ));
            continue;
        }
        let expected = first + ids.len() as u64;
        if seq > expected {
            problems.push(missing(kind, expected, seq - 1));
            ids.resize((seq - first) as usize, None);
        }
        let (topic, id) = match record::decode_dedup_key(kind, &value) {
            Ok(key) => key,
            Err(reason) => {
                problems.push(format!("{kind} seq {seq}: {reason}"));
                ids.push(None);
                continue;
            }
        };
        let topic_name = topic.name();
        match tree
            .get(record::index_key(topic, &id))
            .map_err(LogError::storage(dir))?
        {
            None => problems.push(format!(
                "{kind} seq {seq}: message id {id:?} on {topic_name} is missing from the message-id index"
            )),
            Some(v) => match parse_index_value(&v) {
                Some((k, s)) if k == kind && s == seq => {}
                Some((k, s)) => problems.push(format!(
                    "{kind} seq {seq}: message id {id:?} on {topic_name} is indexed at {k} seq {s} instead"
                )),
                None => problems.push(format!(
                    "{kind} seq {seq}: the index value of message id {id:?} on {topic_name} is malformed ({:?})",
                    &v[..]
                )),
            },
        }
        ids.push(Some(key_hash(topic, &id)));
    }
    let seen = first + ids.len() as u64;
    if seen < next_before {
        problems.push(missing(kind, seen, next_before - 1));
    }
    let next_after = read_u64(dir, tree, next_key)?.unwrap_or(0);
    if seen > next_after {
        problems.push(format!(
            "{kind} records up to seq {} exist at or beyond the log's next {kind} seq {next_after}",
            seen - 1
        ));
    }
    Ok(Scanned {
        checked,
        first,
        ids,
    })
}

fn missing(kind: RecordKind, from: u64, to: u64) -> String {
    if from == to {
        format!("{kind} seq {from} is missing")
    } else {
        format!("{kind} seq {from}..={to} are missing")
    }
}

pub(crate) fn verify(dir: &Path, tree: &sled::Tree) -> Result<VerifyReport, LogError> {
    let mut problems = Vec::new();
    let first_seq = read_u64(dir, tree, META_FIRST_SEQ)?.unwrap_or(0);
    let entries = scan(
        dir,
        tree,
        RecordKind::Entry,
        META_NEXT_SEQ,
        first_seq,
        &mut problems,
    )?;
    let quarantine = scan(
        dir,
        tree,
        RecordKind::Quarantine,
        META_NEXT_QUARANTINE_SEQ,
        0,
        &mut problems,
    )?;

    let mut index_checked = 0;
    for kv in tree.scan_prefix([INDEX]) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        index_checked += 1;
        let (topic, id) = match parse_index_key(&key) {
            Ok(parsed) => parsed,
            Err(reason) => {
                problems.push(reason);
                continue;
            }
        };
        let topic_name = topic.name();
        let Some((kind, seq)) = parse_index_value(&value) else {
            problems.push(format!(
                "index of message id {id:?} on {topic_name} has a malformed value {:?}",
                &value[..]
            ));
            continue;
        };
        let scanned = match kind {
            RecordKind::Entry => &entries,
            RecordKind::Quarantine => &quarantine,
        };
        // Pruned: archived, its id kept for dedup. Nothing to compare.
        if seq < scanned.first {
            continue;
        }
        let stored = match usize::try_from(seq - scanned.first)
            .ok()
            .and_then(|s| scanned.ids.get(s))
        {
            Some(Some(hash)) if *hash == key_hash(topic, id) => continue,
            Some(Some(_)) => Some(Err("holds a different message id or topic".to_string())),
            // Missing or corrupt: already reported by the scan.
            Some(None) => continue,
            // Beyond what the scan saw: appended since, or dangling.
            None => tree
                .get(seq_key(kind, seq))
                .map_err(LogError::storage(dir))?
                .map(|record| record::decode_dedup_key(kind, &record)),
        };
        match stored {
            None => problems.push(format!(
                "index of message id {id:?} on {topic_name} points at {kind} seq {seq}, which does not exist"
            )),
            Some(Ok((stored_topic, stored_id))) if stored_topic == topic && stored_id == id => {}
            Some(Ok((stored_topic, stored_id))) => problems.push(format!(
                "index of message id {id:?} on {topic_name} points at {kind} seq {seq}, which holds message id {stored_id:?} on {}",
                stored_topic.name()
            )),
            Some(Err(reason)) => problems.push(format!(
                "index of message id {id:?} on {topic_name} points at {kind} seq {seq}, which {reason}"
            )),
        }
    }

    let checkpoint = read_u64(dir, tree, META_CHECKPOINT)?;
    let next_seq = read_u64(dir, tree, META_NEXT_SEQ)?;
    match (checkpoint, next_seq) {
        (Some(c), Some(n)) if c > n => {
            problems.push(format!("checkpoint {c} is beyond the log's next_seq {n}"))
        }
        (None, _) => problems.push("meta value `checkpoint` is missing or malformed".to_string()),
        (_, None) => problems.push("meta value `next_seq` is missing or malformed".to_string()),
        _ => {}
    }

    Ok(VerifyReport {
        entries_checked: entries.checked,
        quarantine_checked: quarantine.checked,
        index_checked,
        problems,
    })
}
