//! The single writer: group commit.
//!
//! `append` encodes its records on the caller's task, sends them here over
//! a channel and awaits a oneshot reply. This thread blocks for the first
//! request, then takes everything else already queued, and commits the whole
//! group: dedup, one atomic `sled::Batch`, one durable flush, then one reply
//! per caller. While it flushes, new requests queue up and form the next
//! group, so the number of fsyncs adapts to the load without any timer.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, mpsc};

use ecom_core::Topic;
use tokio::sync::{oneshot, watch};

use crate::generation::Generation;
use crate::record::{
    META_DUPLICATES, META_NEXT_QUARANTINE_SEQ, META_NEXT_SEQ, RecordKind, index_key, index_value,
    seq_key,
};
use crate::{AppendOutcome, LogError};

/// A message ready for the writer: its topic and id (the dedup key) and its
/// encoded record.
pub(crate) struct Prepared {
    pub(crate) topic: Topic,
    pub(crate) message_id: String,
    pub(crate) kind: RecordKind,
    pub(crate) record: Vec<u8>,
}

pub(crate) struct Request {
    pub(crate) items: Vec<Prepared>,
    pub(crate) reply: oneshot::Sender<Result<Vec<AppendOutcome>, LogError>>,
}

/// State shared by the `Log` handles and the writer thread.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// Durable next entry sequence number: advanced only after the flush
    /// covering the entries below it returned. Readers never look past it.
    pub(crate) next_seq: AtomicU64,
    /// Durable next quarantine sequence number (= quarantined messages).
    pub(crate) next_quarantine_seq: AtomicU64,
    /// The lowest entry still held; entries below were pruned.
    pub(crate) first_seq: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    /// Durable flushes performed (group commits and `Log::flush`).
    pub(crate) flushes: AtomicU64,
    pub(crate) checkpoint: Mutex<u64>,
    pub(crate) tail: watch::Sender<u64>,
    /// The sled database that is the log; replaced by `Log::compact`.
    /// Readers take a clone of the `Arc` for one read.
    pub(crate) generation: RwLock<Arc<Generation>>,
    /// Held by the writer for each group commit, and by a compaction while
    /// it switches generations: no commit straddles a switch.
    pub(crate) commit_lock: Mutex<()>,
    /// One prune or compaction at a time.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) cache_capacity_bytes: u64,
    /// Why the writer stopped, for `LogError::WriterStopped`.
    pub(crate) failure: OnceLock<String>,
}

impl Shared {
    /// `db.flush()` followed by our own `fdatasync` of sled's files; see
    /// [`Durability`]. Returns only once the data is on stable storage.
    pub(crate) fn flush_durably(&self) -> Result<(), LogError> {
        let generation = self.generation();
        generation
            .db
            .flush()
            .map_err(LogError::storage(&self.dir))?;
        generation
            .durability
            .sync()
            .map_err(|e| e.or_disk_full(&self.dir))?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn writer_stopped(&self) -> LogError {
        LogError::WriterStopped {
            dir: self.dir.clone(),
            cause: self
                .failure
                .get()
                .cloned()
                .unwrap_or_else(|| "the writer thread panicked or was shut down".to_string()),
        }
    }

    /// The error a failpoint injects: an I/O error on sled's data file, as
    /// a failing disk would give.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub(crate) fn injected(&self, failpoint: &str, arg: Option<String>) -> LogError {
        // `return(crash)` is a power cut at that step, not an I/O error.
        ecom_core::failpoint::crash_if_asked(failpoint, arg.as_deref());
        let path = self.generation().durability.db_dir.join("db");
        let what = arg.unwrap_or_else(|| "injected failure".to_string());
        LogError::io(&path)(io::Error::other(format!("failpoint {failpoint}: {what}")))
    }

    pub(crate) fn checkpoint(&self) -> MutexGuard<'_, u64> {
        self.checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current generation, for one read or write.
    pub(crate) fn generation(&self) -> Arc<Generation> {
        Arc::clone(
            &self
                .generation
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the gap between `sled::Db::flush` and "on stable storage".
///
/// On Linux, sled 0.34 makes its log stable with `sync_file_range`, which
/// neither flushes the device's volatile write cache nor commits file-size
/// metadata, and it never syncs the separate blob files it writes for large
/// values (`<db>/blobs/<lsn>`). So after every sled flush we `fdatasync` the
/// main data file ourselves (fsync acts on the inode, whichever descriptor
/// it is called on) and `fsync` any blob file we have not synced yet, plus
/// the blobs directory when one appeared.
pub(crate) struct Durability {
    db_dir: PathBuf,
    data_file: File,
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Durability {
    pub(crate) fn new(db_dir: &Path) -> io::Result<Durability> {
        Ok(Durability {
            db_dir: db_dir.to_path_buf(),
            data_file: File::open(db_dir.join("db"))?,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    pub(crate) fn sync(&self) -> Result<(), LogError> {
        let data_path = self.db_dir.join("db");
        self.data_file
            .sync_data()
            .map_err(LogError::io(&data_path))?;
        let blobs = self.db_dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LogError::io(&blobs)(e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashSet::with_capacity(synced.len());
        let mut new_blob = false;
        for entry in entries {
            let name = entry.map_err(LogError::io(&blobs))?.file_name();
            if !synced.contains(&name) {
                let path = blobs.join(&name);
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => new_blob = true,
                    // sled garbage-collected it between read_dir and open.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(LogError::io(&path)(e)),
                }
            }
            present.insert(name);
        }
        *synced = present;
        if new_blob {
            sync_dir(&blobs)?;
        }
        Ok(())
    }
}

/// `fsync` a directory so that the names of files created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}

/// The writer's own copy of the counters it advances; `Shared` gets the
/// durable values after each flush.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_seq: u64,
    pub(crate) next_quarantine_seq: u64,
    pub(crate) duplicates: u64,
}

impl Writer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Request>) {
        // `recv` fails once every `Log` handle is gone: shut down.
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            let messages: usize = group.iter().map(|r| r.items.len()).sum();
            match self.commit(&mut group) {
                Ok(outcomes) => {
                    tracing::trace!(
                        callers = group.len(),
                        messages,
                        next_seq = self.next_seq,
                        "group commit"
                    );
                    for (request, outcome) in group.into_iter().zip(outcomes) {
                        // The caller may have given up (future dropped): its
                        // messages are durable anyway, a retry sees Duplicate.
                        let _ = request.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    let dir = &self.shared.dir;
                    // A full disk is answered as such: its remedy (make
                    // room, or move the log) differs from a failing disk's.
                    let e = e.or_disk_full(dir);
                    tracing::error!(dir = %dir.display(), error = %e, "group commit failed; the log writer stops");
                    let _ = self.shared.failure.set(e.to_string());
                    let e = match e {
                        full @ LogError::DiskFull { .. } => full,
                        e => LogError::CommitFailed {
                            dir: dir.clone(),
                            cause: Box::new(e),
                        },
                    };
                    for request in group {
                        let _ = request.reply.send(Err(e.clone()));
                    }
                    // Dropping `rx` makes every later append fail with
                    // WriterStopped.
                    return;
                }
            }
        }
    }

    fn commit(&mut self, group: &mut [Request]) -> Result<Vec<Vec<AppendOutcome>>, LogError> {
        let dir = &self.shared.dir;
        // A compaction switches generations between commits, never during.
        let _commit = self.shared.commit_lock();
        if let Some(cause) = self.shared.failure.get() {
            return Err(LogError::WriterStopped {
                dir: dir.clone(),
                cause: cause.clone(),
            });
        }
        let generation = self.shared.generation();
        let tree: &sled::Tree = &generation.db;
        let mut batch = sled::Batch::default();
        // Dedup keys written by this group (not yet visible in the tree).
        let mut in_group: HashSet<(Topic, String)> = HashSet::new();
        let mut next_seq = self.next_seq;
        let mut next_quarantine_seq = self.next_quarantine_seq;
        let mut duplicates = self.duplicates;
        let mut outcomes = Vec::with_capacity(group.len());

        for request in group.iter_mut() {
            let mut out = Vec::with_capacity(request.items.len());
            for Prepared {
                topic,
                message_id,
                kind,
                record,
            } in std::mem::take(&mut request.items)
            {
                let ikey = index_key(topic, &message_id);
                let dedup_key = (topic, message_id);
                if in_group.contains(&dedup_key)
                    || tree.contains_key(&ikey).map_err(LogError::storage(dir))?
                {
                    duplicates += 1;
                    out.push(AppendOutcome::Duplicate);
                    continue;
                }
                let seq = match kind {
                    RecordKind::Entry => {
                        next_seq += 1;
                        out.push(AppendOutcome::Appended(next_seq - 1));
                        next_seq - 1
                    }
                    RecordKind::Quarantine => {
                        next_quarantine_seq += 1;
                        out.push(AppendOutcome::Quarantined(next_quarantine_seq - 1));
                        next_quarantine_seq - 1
                    }
                };
                batch.insert(&seq_key(kind, seq)[..], record);
                batch.insert(ikey, &index_value(kind, seq)[..]);
                in_group.insert(dedup_key);
            }
            outcomes.push(out);
        }

        // Only the counters this group moved: each key costs sled a tree
        // update, and at small batches three unchanged counters would be
        // most of the batch. An unwritten counter keeps its durable value.
        if next_seq != self.next_seq {
            batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes()[..]);
        }
        if next_quarantine_seq != self.next_quarantine_seq {
            batch.insert(
                META_NEXT_QUARANTINE_SEQ,
                &next_quarantine_seq.to_be_bytes()[..],
            );
        }
        if duplicates != self.duplicates {
            batch.insert(META_DUPLICATES, &duplicates.to_be_bytes()[..]);
        }
        // All or nothing, also across a crash (sled documents this for
        // `apply_batch`).
        tree.apply_batch(batch).map_err(LogError::storage(dir))?;
        // `Shared::flush_durably`, spelled out so that the failpoints sit
        // between its steps. Test seams (no-ops unless built with the
        // `failpoints` feature):
        // make the commit fail before anything is flushed, after sled wrote
        // its log but before our fdatasync, or once everything is durable
        // but before anyone is answered.
        fail::fail_point!("log::group_commit", |arg| Err(self
            .shared
            .injected("log::group_commit", arg)));
        let flush_started = std::time::Instant::now();
        generation.db.flush().map_err(LogError::storage(dir))?;
        fail::fail_point!("log::after_write_before_fsync", |arg| Err(self
            .shared
            .injected("log::after_write_before_fsync", arg)));
        generation.durability.sync()?;
        metrics::histogram!("ecom_log_fsync_seconds").record(flush_started.elapsed());
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        fail::fail_point!("log::after_fsync_before_ack", |arg| Err(self
            .shared
            .injected("log::after_fsync_before_ack", arg)));

        // Durable: publish.
        self.next_seq = next_seq;
        self.next_quarantine_seq = next_quarantine_seq;
        self.duplicates = duplicates;
        self.shared.next_seq.store(next_seq, Ordering::Release);
        self.shared
            .next_quarantine_seq
            .store(next_quarantine_seq, Ordering::Release);
        self.shared.duplicates.store(duplicates, Ordering::Relaxed);
        self.shared.tail.send_replace(next_seq);
        Ok(outcomes)
    }
}
