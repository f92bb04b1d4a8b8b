//! `Log::compact`: give the disk space of pruned entries back.
//!
//! [`Log::prune_below`](crate::Log::prune_below) removes keys, but sled
//! 0.34 keeps the space (see `generation`). A compaction writes what the log
//! still holds into the next generation and deletes the old one whole:
//!
//! 1. *Copy*, while appends go on: the entries `first_seq..S` and the
//!    quarantine `0..Q`, where `S` and `Q` are the durable ends at the
//!    start, every index key except those the age cutoff forgets, and the
//!    prune marks still needed. Then make the new generation durable.
//! 2. *Switch*, with the writer held between two group commits and the
//!    checkpoint held: copy the records appended during step 1 (`S..` and
//!    `Q..`) with index keys derived from the records themselves, and every
//!    meta value; make that durable, rename `CURRENT` to the new
//!    generation, and make it the one readers and the writer use. Appends
//!    wait for this step only, which copies what arrived during step 1.
//! 3. Delete the old generation.
//!
//! A crash before the rename leaves the old generation as the log and a
//! partial new one that the next open deletes; after it, the new one is
//! complete and the old one is deleted on open.
//!
//! ## Forgetting message ids
//!
//! The dedup index is what makes a redelivered message a duplicate. A
//! message id needs to be kept only as long as the transport may deliver
//! that message again: for Pub/Sub, the subscription's message retention
//! (at most 31 days). Each prune records when the last entry it removed
//! was appended (a *prune mark*); with
//! [`CompactOptions::forget_ids_appended_before_ms`], the compaction drops
//! the index keys of entries below the newest mark older than the cutoff.
//! The ids of entries the log still holds, and of quarantined messages,
//! are always kept. Forgetting is safe because applying an event is
//! idempotent: a message delivered again after its id was forgotten is
//! logged again and projected again, with no effect on the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::generation::{self, Generation, SwitchError};
use crate::record::{
    self, INDEX, PRUNE_MARK, RecordKind, entry_key, index_key, index_value, parse_index_value,
    parse_seq_key, quarantine_key,
};
use crate::writer::sync_dir;
use crate::{Log, LogError};

/// Keys per `sled::Batch` while copying.
const BATCH_KEYS: usize = 10_000;

/// Options for [`Log::compact`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactOptions {
    /// Forget the message ids of pruned entries appended before this wall
    /// clock time (ms since the Unix epoch); `None` keeps every id.
    pub forget_ids_appended_before_ms: Option<i64>,
}

/// What [`Log::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// The generation the log is in now.
    pub generation: u64,
    /// Size of the log's database before and after (the directory of the
    /// generation), in bytes.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Entries and quarantine records copied.
    pub records: u64,
    /// Message ids kept in the index, and forgotten (see the module docs).
    pub ids_kept: u64,
    pub ids_forgotten: u64,
    /// Entries below this sequence number no longer dedup by message id.
    pub ids_forgotten_below: u64,
    /// How long appends waited for the switch.
    pub paused: Duration,
    pub took: Duration,
}

/// A `sled::Batch` applied every [`BATCH_KEYS`] keys.
struct Copier<'a> {
    dir: &'a std::path::Path,
    db: &'a sled::Db,
    batch: sled::Batch,
    keys: usize,
}

impl Copier<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.batch.insert(key, value);
        self.keys += 1;
        if self.keys >= BATCH_KEYS {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<(), LogError> {
        let batch = std::mem::take(&mut self.batch);
        self.keys = 0;
        self.db
            .apply_batch(batch)
            .map_err(LogError::storage(self.dir))
    }
}

fn durable(dir: &std::path::Path, generation: &Generation) -> Result<(), LogError> {
    generation
        .db
        .flush()
        .map_err(LogError::storage(dir))
        .map_err(|e| e.or_disk_full(dir))?;
    generation.durability.sync()?;
    sync_dir(&dir.join(&generation.name))
}

/// Bytes in the files under `path` (0 if it does not exist): what a log
/// directory takes on disk, counted the way `du -b` does for files.
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

impl Log {
    /// Entries below the returned sequence number would have their message
    /// ids forgotten by a [`Log::compact`] with this cutoff (see the module
    /// docs): lets a caller compact only when that moved. Reads the prune
    /// marks (one per prune). Blocking.
    pub fn ids_forgettable_below(&self, cutoff_ms: i64) -> Result<u64, LogError> {
        let shared = &self.inner.shared;
        let generation = shared.generation();
        let mut below = 0;
        for kv in generation.db.scan_prefix([PRUNE_MARK]) {
            let (key, value) = kv.map_err(LogError::storage(&shared.dir))?;
            if let (Some(seq), Ok(at)) = (parse_seq_key(&key), <[u8; 8]>::try_from(&value[..]))
                && i64::from_be_bytes(at) < cutoff_ms
            {
                below = below.max(seq);
            }
        }
        Ok(below.min(self.first_seq()))
    }

    /// Rewrites the log into a new sled database holding only what it
    /// still holds, and deletes the old one, so that the space of pruned
    /// entries (and of forgotten message ids) goes back to the file system.
    /// Appends go on during the copy and wait only for the final switch;
    /// see the module docs of `compact` for the steps and their crash
    /// safety. Needs free space for the copy (about the size of what the
    /// log holds). Blocking; one prune or compaction at a time.
    pub fn compact(&self, opts: CompactOptions) -> Result<CompactReport, LogError> {
        let started = Instant::now();
        let shared = &self.inner.shared;
        let dir = shared.dir.as_path();
        let _maintenance = shared.maintenance();
        let old = shared.generation();
        let bytes_before = dir_bytes(&dir.join(&old.name));
        let new_name = generation::name(old.number() + 1);
        let new_dir = dir.join(&new_name);
        if new_dir.exists() {
            std::fs::remove_dir_all(&new_dir).map_err(LogError::io(&new_dir))?;
        }
        let new = Generation::open(dir, &new_name, shared.cache_capacity_bytes)?;
        let result = copy_and_switch(self, &old, new, opts, started);
        let (new, report) = match result {
            Ok(done) => done,
            Err(e) => {
                // The old generation is still the log; the copy is garbage.
                if let Err(cleanup) = std::fs::remove_dir_all(&new_dir) {
                    tracing::warn!(dir = %new_dir.display(), error = %cleanup, "cannot remove the generation of a failed compaction; the next open removes it");
                }
                return Err(e);
            }
        };
        drop(new);
        let old_dir = dir.join(&old.name);
        drop(old);
        if let Err(e) = std::fs::remove_dir_all(&old_dir)
            .and_then(|()| std::fs::File::open(dir).and_then(|d| d.sync_all()))
        {
            tracing::warn!(dir = %old_dir.display(), error = %e, "cannot remove the replaced generation; the next open removes it");
        }
        let report = CompactReport {
            bytes_before,
            bytes_after: dir_bytes(&dir.join(generation::name(report.generation))),
            took: started.elapsed(),
            ..report
        };
        tracing::info!(
            dir = %dir.display(),
            generation = report.generation,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            ids_forgotten = report.ids_forgotten,
            paused_ms = report.paused.as_millis() as u64,
            "compacted the log"
        );
        Ok(report)
    }
}

fn copy_and_switch(
    log: &Log,
    old: &Arc<Generation>,
    new: Generation,
    opts: CompactOptions,
    started: Instant,
) -> Result<(Arc<Generation>, CompactReport), LogError> {
    let shared = &log.inner.shared;
    let dir = shared.dir.as_path();
    let first = shared.first_seq.load(Ordering::Acquire);
    let copied_next = shared.next_seq.load(Ordering::Acquire);
    let copied_next_q = shared.next_quarantine_seq.load(Ordering::Acquire);

    // The newest prune mark older than the cutoff: ids of entries below it
    // go. Marks below it are no longer needed either.
    let mut ids_below = 0;
    let mut marks = Vec::new();
    for kv in old.db.scan_prefix([PRUNE_MARK]) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        let (Some(seq), Ok(at)) = (parse_seq_key(&key), <[u8; 8]>::try_from(&value[..])) else {
            continue;
        };
        let at = i64::from_be_bytes(at);
        if opts
            .forget_ids_appended_before_ms
            .is_some_and(|cutoff| at < cutoff)
        {
            ids_below = ids_below.max(seq);
        }
        marks.push((key, value));
    }
    let ids_below = ids_below.min(first);

    let mut copier = Copier {
        dir,
        db: &new.db,
        batch: sled::Batch::default(),
        keys: 0,
    };
    let mut records = 0u64;
    for kv in old.db.range(entry_key(first)..entry_key(copied_next)) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        copier.insert(&key, &value)?;
        records += 1;
    }
    for kv in old
        .db
        .range(quarantine_key(0)..quarantine_key(copied_next_q))
    {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        copier.insert(&key, &value)?;
        records += 1;
    }
    let (mut ids_kept, mut ids_forgotten) = (0u64, 0u64);
    for kv in old.db.scan_prefix([INDEX]) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        match parse_index_value(&value) {
            Some((RecordKind::Entry, seq)) if seq < ids_below => ids_forgotten += 1,
            // Anything else is kept as it is, a damaged value included
            // (`verify` reports it).
            _ => {
                copier.insert(&key, &value)?;
                ids_kept += 1;
            }
        }
    }
    for (key, value) in &marks {
        if parse_seq_key(key).is_some_and(|seq| seq >= ids_below) {
            copier.insert(key, value)?;
        }
    }
    copier.apply()?;
    durable(dir, &new)?;
    fail::fail_point!("log::compact_before_switch", |arg| Err(
        shared.injected("log::compact_before_switch", arg)
    ));

    let paused_at = Instant::now();
    let _commit = shared.commit_lock();
    let _checkpoint = shared.checkpoint();
    let next = shared.next_seq.load(Ordering::Acquire);
    let next_q = shared.next_quarantine_seq.load(Ordering::Acquire);
    let mut delta = |from: [u8; 9], to: [u8; 9], kind: RecordKind| -> Result<u64, LogError> {
        let mut n = 0;
        for kv in old.db.range(from..to) {
            let (key, value) = kv.map_err(LogError::storage(dir))?;
            let seq = parse_seq_key(&key).unwrap_or(u64::MAX);
            let (topic, id) =
                record::decode_dedup_key(kind, &value).map_err(|reason| LogError::Corrupt {
                    dir: dir.to_path_buf(),
                    seq,
                    reason,
                })?;
            copier.insert(&key, &value)?;
            copier.insert(&index_key(topic, &id), &index_value(kind, seq))?;
            n += 1;
        }
        Ok(n)
    };
    records += delta(entry_key(copied_next), entry_key(next), RecordKind::Entry)?;
    records += delta(
        quarantine_key(copied_next_q),
        quarantine_key(next_q),
        RecordKind::Quarantine,
    )?;
    for kv in old.db.scan_prefix([record::META]) {
        let (key, value) = kv.map_err(LogError::storage(dir))?;
        copier.insert(&key, &value)?;
    }
    copier.apply()?;
    durable(dir, &new)?;
    let not_durable = match generation::switch(dir, &new.name) {
        Ok(()) => None,
        Err(SwitchError::NotSwitched(e)) => return Err(e),
        Err(SwitchError::NotDurable(e)) => Some(e),
    };
    // A crash here is the case the next open must get right: CURRENT
    // names the new generation, the old one is still on disk.
    // Only `return(crash)` means anything here: an error after the
    // rename cannot be handled by going back.
    #[cfg(feature = "failpoints")]
    fail::eval("log::compact_after_switch", |arg| {
        ecom_core::failpoint::crash_if_asked("log::compact_after_switch", arg.as_deref())
    });
    let number = new.number();
    let new = Arc::new(new);
    *shared
        .generation
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&new);
    if let Some(e) = not_durable {
        // Which generation a restart opens is uncertain, so nothing more
        // may be acknowledged: stop the writer, as a failed commit does.
        let _ = shared.failure.set(format!(
            "a compaction could not make its switch to {} durable: {e}",
            new.name
        ));
        return Err(e);
    }
    let paused = paused_at.elapsed();
    Ok((
        new,
        CompactReport {
            generation: number,
            bytes_before: 0,
            bytes_after: 0,
            records,
            ids_kept,
            ids_forgotten,
            ids_forgotten_below: ids_below,
            paused,
            took: started.elapsed(),
        },
    ))
}
