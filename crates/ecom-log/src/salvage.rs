//! `Log::salvage`: copy every readable record of a damaged log into a new
//! one, and say exactly what could not be copied.
//!
//! The damaged log is read record by record, not as a sequence: a record
//! that fails its checksum or does not decode is skipped and named (with
//! its message id when the index still knows it), and so is a gap in the
//! sequence. Entries are appended to the new log in their old order, then
//! the quarantined messages with their reasons; the new log numbers them
//! from 0, rebuilds its own message-id index, and stamps them with the
//! salvage time.
//!
//! **Checkpoint:** the new log starts at checkpoint 0, so the projector
//! applies every salvaged entry again. That is safe (the store is a function
//! of the set of events; re-applying is idempotent) and it costs one pass
//! over the log. **What is lost** is what the report lists: records that
//! did not read back, and, if `HIGH_WATER` says the log was longer, every
//! entry past the end sled recovered. Those were acknowledged, so only the
//! source can bring them back (Pub/Sub: seek the subscription to a time
//! before the loss; the new log drops whatever it already holds as
//! transport duplicates).
//!
//! The damaged directory is only read (under its lock); sled may rewrite
//! its own files while recovering them on open, as on any open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ecom_core::Topic;

use crate::high_water;
use crate::lock::DirLock;
use crate::record::RecordKind;
use crate::record::{self, ENTRY, INDEX, META_NEXT_QUARANTINE_SEQ, META_NEXT_SEQ, QUARANTINE};
use crate::{Incoming, Log, LogError, LogOptions};

/// What [`Log::salvage`] copied and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    pub from: PathBuf,
    pub into: PathBuf,
    pub entries_copied: u64,
    pub quarantine_copied: u64,
    /// One line per record that could not be copied, naming its sequence
    /// number, why, and its message id when the index knows it; and, if the
    /// database held less than `HIGH_WATER` recorded, the lost range.
    pub lost: Vec<String>,
}

/// Appends per call to the new log.
const CHUNK: usize = 1000;

pub(crate) async fn salvage(from: &Path, into: &Path) -> Result<SalvageReport, LogError> {
    let db_dir = crate::generation::current_db_dir(from)?;
    if !db_dir.is_dir() {
        return Err(LogError::NoLog {
            dir: from.to_path_buf(),
        });
    }
    if into.join("db").exists() {
        return Err(LogError::SalvageTarget {
            into: into.to_path_buf(),
        });
    }
    let (entries, quarantined, mut lost) = {
        let _lock = DirLock::acquire(from)?;
        let db = crate::open_sled(from, sled::Config::new().path(&db_dir).flush_every_ms(None))?;
        read_all(from, &db)?
    };

    let log = Log::open(into, LogOptions::default())?;
    let mut report = SalvageReport {
        from: from.to_path_buf(),
        into: into.to_path_buf(),
        ..SalvageReport::default()
    };
    for chunk in entries.chunks(CHUNK) {
        log.append(chunk.to_vec()).await?;
        report.entries_copied += chunk.len() as u64;
    }
    for chunk in quarantined.chunks(CHUNK) {
        log.append(chunk.to_vec()).await?;
        report.quarantine_copied += chunk.len() as u64;
    }
    log.flush()?;
    report.lost.append(&mut lost);
    Ok(report)
}

type Readable = (Vec<Incoming>, Vec<Incoming>, Vec<String>);

fn read_all(dir: &Path, db: &sled::Db) -> Result<Readable, LogError> {
    let storage = LogError::storage;
    // Which message id each record held, from the index (for the report).
    let mut ids: HashMap<(RecordKind, u64), (Topic, String)> = HashMap::new();
    for kv in db.scan_prefix([INDEX]) {
        let (key, value) = kv.map_err(storage(dir))?;
        if let (Ok((topic, id)), Some(at)) = (
            record::parse_index_key(&key),
            record::parse_index_value(&value),
        ) {
            ids.insert(at, (topic, id.to_string()));
        }
    }
    let name = |kind: RecordKind, seq: u64| match ids.get(&(kind, seq)) {
        Some((topic, id)) => format!(" (message id {id:?} on {})", topic.name()),
        None => String::new(),
    };
    let read_meta = |key: &[u8]| -> Result<Option<u64>, LogError> {
        Ok(db
            .get(key)
            .map_err(storage(dir))?
            .and_then(|v| record::u64_value(&v)))
    };

    let mut lost = Vec::new();
    let mut entries = Vec::new();
    let mut quarantined = Vec::new();
    let mut ends = [0u64; 2];
    for (kind, prefix) in [
        (RecordKind::Entry, ENTRY),
        (RecordKind::Quarantine, QUARANTINE),
    ] {
        // Entries below `first_seq` were archived and pruned, not lost: the
        // archive holds them (replay --from-archive with the salvaged log).
        let mut expected = match kind {
            RecordKind::Entry => read_meta(record::META_FIRST_SEQ)?.unwrap_or(0),
            RecordKind::Quarantine => 0,
        };
        for kv in db.scan_prefix([prefix]) {
            let (key, value) = kv.map_err(storage(dir))?;
            let Some(seq) = record::parse_seq_key(&key) else {
                lost.push(format!("a malformed {kind} key {key:?}"));
                continue;
            };
            if seq > expected {
                lost.push(gap(kind, expected, seq));
            }
            expected = seq + 1;
            match kind {
                RecordKind::Entry => match record::decode_entry(&value) {
                    Ok((message, _)) => entries.push(Incoming::Valid(message)),
                    Err(reason) => {
                        lost.push(format!("{kind} seq {seq}{}: {reason}", name(kind, seq)))
                    }
                },
                RecordKind::Quarantine => match record::decode_quarantine(&value) {
                    Ok((message, why, _)) => quarantined.push(Incoming::Rejected(message, why)),
                    Err(reason) => {
                        lost.push(format!("{kind} seq {seq}{}: {reason}", name(kind, seq)))
                    }
                },
            }
        }
        let next_key = match kind {
            RecordKind::Entry => META_NEXT_SEQ,
            RecordKind::Quarantine => META_NEXT_QUARANTINE_SEQ,
        };
        let next = read_meta(next_key)?.unwrap_or(expected);
        if next > expected {
            lost.push(gap(kind, expected, next));
        }
        ends[usize::from(kind == RecordKind::Quarantine)] = next.max(expected);
    }
    // What the database no longer holds at all (a truncated file).
    if let Ok(Some(marks)) = high_water::read(dir) {
        if marks.next_seq > ends[0] {
            lost.push(format!(
                "entries {}..{} are no longer in the database ({} recorded next_seq {}): acknowledged, and not recoverable from this log",
                ends[0],
                marks.next_seq,
                high_water::FILE,
                marks.next_seq
            ));
        }
        if marks.next_quarantine_seq > ends[1] {
            lost.push(format!(
                "quarantine {}..{} is no longer in the database ({} recorded {})",
                ends[1],
                marks.next_quarantine_seq,
                high_water::FILE,
                marks.next_quarantine_seq
            ));
        }
    }
    Ok((entries, quarantined, lost))
}

fn gap(kind: RecordKind, from: u64, to: u64) -> String {
    if to == from + 1 {
        format!("{kind} seq {from} is missing")
    } else {
        format!("{kind} seq {from}..={} are missing", to - 1)
    }
}
