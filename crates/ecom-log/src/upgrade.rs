//! Converting a log written in an older on-disk format to the current one,
//! in place (`Log::upgrade`, `ecom-pipeline log upgrade`).
//!
//! A pipeline refuses to run on an old format ([`LogError::UpgradeNeeded`])
//! rather than keep deduplicating with the old rules, and a log holds
//! acknowledged messages that exist nowhere else, so "start a new log" is no
//! answer: the upgrade has to keep every record.
//!
//! Format 1 to 2: format 1 keyed the message-id index by message id alone
//! (`'i' ++ message_id`), but Pub/Sub message ids are unique only within a
//! topic. Format 2 keys it by topic too (`'i' ++ topic byte ++ message_id`).
//! Records and meta values are the same in both, so the upgrade rebuilds the
//! index from the records (the source of truth; every record is decoded,
//! which also checks its checksum) and sets the new format version, all in
//! one atomic `sled::Batch`, then flushes durably. A crash before that batch
//! is durable leaves format 1 as it was; the old and new index keys share
//! the `'i'` prefix and could not be told apart in a half-done upgrade, so
//! there is no incremental variant.
//!
//! The upgrade cannot bring back a message that format 1 already dropped as
//! a "duplicate" of another topic's message with the same id: it was
//! acknowledged without being stored. Only the source (replay from Pub/Sub,
//! if still retained) has it.

use std::collections::HashMap;
use std::path::Path;

use ecom_core::Topic;

use crate::LogError;
use crate::lock::DirLock;
use crate::record::{
    self, ENTRY, FORMAT_1, FORMAT_VERSION, INDEX, META_FORMAT_VERSION, QUARANTINE, RecordKind,
    index_value, parse_seq_key,
};
use crate::writer::{self, Durability};

/// What [`Log::upgrade`](crate::Log::upgrade) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeReport {
    /// The format the log was in.
    pub from_version: u32,
    /// The format it is in now ([`from_version`](Self::from_version) if it
    /// was current already, and nothing was written).
    pub to_version: u32,
    /// Entry records whose index key was rebuilt.
    pub entries: u64,
    /// Quarantine records whose index key was rebuilt.
    pub quarantined: u64,
    /// Index keys in the old layout, removed.
    pub old_index_keys: u64,
}

impl UpgradeReport {
    /// Whether the log had to be converted.
    pub fn upgraded(&self) -> bool {
        self.from_version != self.to_version
    }
}

pub(crate) fn upgrade(dir: &Path) -> Result<UpgradeReport, LogError> {
    let db_dir = crate::generation::current_db_dir(dir)?;
    if !db_dir.is_dir() {
        return Err(LogError::NoLog {
            dir: dir.to_path_buf(),
        });
    }
    let _lock = DirLock::acquire(dir)?;
    let db = crate::open_sled(dir, sled::Config::new().path(&db_dir).flush_every_ms(None))?;
    let durability = Durability::new(&db_dir).map_err(LogError::io(&db_dir.join("db")))?;

    let version = match db
        .get(META_FORMAT_VERSION)
        .map_err(LogError::storage(dir))?
    {
        None => {
            return Err(LogError::NotALog {
                dir: dir.to_path_buf(),
            });
        }
        Some(v) => <[u8; 4]>::try_from(&v[..])
            .map(u32::from_be_bytes)
            .map_err(|_| LogError::CorruptMeta {
                dir: dir.to_path_buf(),
                key: "format_version",
                reason: format!("expected 4 bytes, found {}", v.len()),
            })?,
    };
    if version == FORMAT_VERSION {
        tracing::info!(dir = %dir.display(), version, "log is already in the current format");
        return Ok(UpgradeReport {
            from_version: version,
            to_version: version,
            entries: 0,
            quarantined: 0,
            old_index_keys: 0,
        });
    }
    if version != FORMAT_1 {
        return Err(LogError::FormatVersion {
            dir: dir.to_path_buf(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }

    let mut batch = sled::Batch::default();
    // Old keys first: a new key may have the same bytes as an old one (an id
    // starting with a topic byte), and in a batch the later write wins.
    let mut old_index_keys = 0;
    for kv in db.scan_prefix([INDEX]) {
        let (key, _) = kv.map_err(LogError::storage(dir))?;
        batch.remove(key);
        old_index_keys += 1;
    }
    let mut seen: HashMap<(Topic, String), (RecordKind, u64)> = HashMap::new();
    let mut counts = [0u64; 2];
    for (kind, prefix) in [
        (RecordKind::Entry, ENTRY),
        (RecordKind::Quarantine, QUARANTINE),
    ] {
        for kv in db.scan_prefix([prefix]) {
            let (key, value) = kv.map_err(LogError::storage(dir))?;
            let corrupt = |seq, reason: String| match kind {
                RecordKind::Entry => LogError::Corrupt {
                    dir: dir.to_path_buf(),
                    seq,
                    reason,
                },
                RecordKind::Quarantine => LogError::CorruptQuarantine {
                    dir: dir.to_path_buf(),
                    seq,
                    reason,
                },
            };
            let seq = parse_seq_key(&key)
                .ok_or_else(|| corrupt(u64::MAX, format!("malformed {kind} key {key:?}")))?;
            let (topic, message_id) = record::decode_dedup_key(kind, &value)
                .map_err(|reason| corrupt(seq, format!("{reason} (nothing was upgraded)")))?;
            let ikey = record::index_key(topic, &message_id);
            if let Some((other_kind, other_seq)) = seen.insert((topic, message_id), (kind, seq)) {
                return Err(corrupt(
                    seq,
                    format!(
                        "its message id is also stored at {other_kind} seq {other_seq}, which format 1 never allows (nothing was upgraded)"
                    ),
                ));
            }
            batch.insert(ikey, &index_value(kind, seq)[..]);
            counts[(kind == RecordKind::Quarantine) as usize] += 1;
        }
    }
    batch.insert(META_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes()[..]);
    db.apply_batch(batch).map_err(LogError::storage(dir))?;
    db.flush().map_err(LogError::storage(dir))?;
    durability.sync()?;
    writer::sync_dir(&db_dir)?;
    let report = UpgradeReport {
        from_version: version,
        to_version: FORMAT_VERSION,
        entries: counts[0],
        quarantined: counts[1],
        old_index_keys,
    };
    tracing::info!(dir = %dir.display(), ?report, "log upgraded");
    Ok(report)
}
