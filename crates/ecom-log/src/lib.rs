//! # ecom-log: the durable write-ahead log
//!
//! Every message the transport delivers is written here, checksummed and on
//! stable storage, *before* the pipeline acknowledges it to the transport.
//! The projector then tails the log ([`Log::read_from`], [`Log::subscribe`])
//! and records how far it got ([`Log::set_checkpoint`]). Replay is reading
//! the log again from sequence 0.
//!
//! ## Design constraints
//!
//! - One process owns a log directory: an exclusive `flock` on `<dir>/LOCK`
//!   (which holds the owner's pid, for the error message). A second
//!   [`Log::open`] of the same directory fails with [`LogError::Locked`],
//!   also within one process; share one [`Log`] instead (it is `Clone`).
//! - Storage is sled 0.34 in `<dir>/db` (or the generation `CURRENT`
//!   names, after a [`Log::compact`]). All keyspaces live in sled's
//!   default tree under one-byte prefixes, because a `sled::Batch` is atomic
//!   only within one tree and a group commit must be one atomic write.
//! - One writer: all appends go through a single thread that group-commits
//!   (see below). Reads run on the caller's thread, concurrently.
//! - Every record is checksummed (CRC32, crc32fast) and versioned.
//! - Entries get gap-free, monotonically increasing sequence numbers from 0.
//!   The only deletion is [`Log::prune_below`]: entries that were projected
//!   and archived leave from the bottom, so the log holds
//!   `first_seq..next_seq` (`stats().entries == next_seq - first_seq`); their
//!   index keys stay, so their message ids still dedup, until a
//!   [`Log::compact`] asked to forget ids older than a cutoff drops them.
//!   sled keeps the space of removed keys; [`Log::compact`] copies what is
//!   left into a new database and deletes the old one.
//! - A message is stored at most once per dedup key, its topic and message
//!   id: Pub/Sub message ids are unique within a topic, not across topics,
//!   so an order and a payment may share one. A message whose key is
//!   already in the log (as an entry or quarantined, or earlier in the same
//!   group) is a *transport duplicate*: not stored again, counted, and
//!   answered with [`AppendOutcome::Duplicate`].
//!
//! ## On-disk layout
//!
//! ```text
//! <dir>/LOCK                   pid of the owning process, flock-ed while open
//! <dir>/HIGH_WATER             `next_seq <n> next_quarantine_seq <q>` as of the
//!                              last open or close: a database holding less
//!                              was truncated (see `high_water`)
//! <dir>/db/                    sled 0.34 database (sled's own files):
//!                              generation 0
//! <dir>/db.<n>/                generation n, written by the n-th compaction
//! <dir>/CURRENT                "db.<n>\n": the generation that is the log
//!                              (absent: db); see `generation`
//!
//! sled default tree, by key prefix:
//!   'e' ++ seq: u64 BE         -> entry record       (seq = 0, 1, 2, ...)
//!   'q' ++ qseq: u64 BE        -> quarantine record  (its own 0, 1, 2, ...)
//!   'i' ++ topic: u8 ++ message_id (UTF-8)
//!                              -> ('e' | 'q') ++ seq: u64 BE   (= that record's key)
//!                                 topic: 'o' orders_data, 'p' payments_data
//!   'm' ++ name                -> meta value:
//!       "format_version"          u32 BE, FORMAT_VERSION (2)
//!       "next_seq"                u64 BE, next entry sequence number
//!       "next_quarantine_seq"     u64 BE, next quarantine sequence number
//!       "checkpoint"              u64 BE, next seq the projector must apply
//!       "duplicates_message_id"   u64 BE, transport duplicates seen
//!       "first_seq"               u64 BE, lowest entry held (absent: 0);
//!                                 written with each pruned chunk
//!   't' ++ seq: u64 BE         -> appended_at_ms: i64 BE of entry seq - 1,
//!                                 written by the prune below seq (a *prune
//!                                 mark*: forgetting ids by age uses them)
//! ```
//!
//! Big-endian sequence numbers make sled's byte order the sequence order.
//!
//! ### Record structure
//!
//! ```text
//! record:
//!   version: u8                  RECORD_VERSION (1)
//!   crc32:   u32 little-endian   CRC32 (IEEE) of `payload`
//!   payload: bincode 1.3, DefaultOptions (varint integers, little-endian,
//!            trailing bytes rejected, at most 64 MiB)
//!
//! entry payload (do not reorder fields):
//!   appended_at_ms: i64          wall clock when `append` was called
//!   message:        RawMessage   message_id, topic, publish_time_us, data, attributes
//!
//! quarantine payload (do not reorder fields):
//!   appended_at_ms: i64
//!   reason:         String       why the message was rejected
//!   message:        RawMessage   the raw bytes exactly as delivered
//! ```
//!
//! `RawMessage` (ecom-core) is part of this format: reordering its fields
//! changes the bytes. Unit tests pin the encoding of one record and of the
//! index keys, and any change must bump `FORMAT_VERSION`.
//!
//! ### Format history
//!
//! - 2: the index key is `'i' ++ topic byte ++ message_id`.
//! - 1: the index key was `'i' ++ message_id`, so a message was dropped as a
//!   duplicate when another topic had used its id. [`Log::open`] refuses a
//!   format-1 log with [`LogError::UpgradeNeeded`]; [`Log::upgrade`]
//!   (`ecom-pipeline log upgrade --dir X`) rebuilds its index in place.
//!   Records and meta values did not change.
//!
//! ## Writing: group commit, and what is durable when
//!
//! [`Log::append`] encodes its batch on the calling task, sends it to the
//! writer thread and waits. The writer blocks for one request, then takes
//! every request already queued, and for the whole group:
//!
//! 1. assigns sequence numbers and detects duplicates (index lookup plus the
//!    ids seen earlier in the group);
//! 2. writes entries, quarantine records, index keys and the meta counters
//!    (`next_seq`, `next_quarantine_seq`, `duplicates_message_id`) in **one
//!    atomic `sled::Batch`**;
//! 3. makes it durable with **one** flush: `sled::Db::flush`, then our own
//!    `fdatasync` of sled's data file and `fsync` of any new blob file
//!    (sled 0.34 uses `sync_file_range` on Linux, which does not flush the
//!    drive's write cache, and never syncs its blob files);
//! 4. publishes the new `next_seq` (to [`Log::next_seq`] and to
//!    [`Log::subscribe`] receivers) and answers every caller.
//!
//! There is no timer: a returned `append` is on disk. While one group
//! flushes, new appends queue and form the next group, so the number of
//! fsyncs adapts to the load ([`LogStats::flushes`] counts them). Unlike
//! Vector's disk buffer, which acknowledges before its 500 ms fsync timer,
//! nothing is acknowledged before the flush that covers it.
//!
//! Readers never see past the durable `next_seq`, so the projector never
//! applies an entry that a crash could take back.
//!
//! Dropping an `append` future after it was sent does not cancel it: the
//! messages are written anyway, and a retry reports them as `Duplicate`.
//!
//! The checkpoint ([`Log::set_checkpoint`]) is written to sled without a
//! flush of its own; it becomes durable with the next group commit or
//! [`Log::flush`]. After a crash it may therefore be *behind* the last value
//! set (the projector re-applies a few entries, which its conditional writes
//! make harmless), but never ahead of the durable entries, because it is
//! never set beyond the durable `next_seq`.
//!
//! If a group commit fails (sled or fsync error), its callers get
//! [`LogError::CommitFailed`] ([`LogError::DiskFull`] when the disk or
//! quota is full) and the writer stops: what reached the disk is
//! uncertain, so every later append fails with [`LogError::WriterStopped`]
//! until the process restarts and reopens (and so re-verifies) the log. All
//! are [`LogError::is_fatal`]: the caller must not acknowledge the batch, and
//! should stop so that a supervisor restarts the process. The failed group
//! may or may not be in the log after the restart; either way a redelivery
//! of its messages is right (stored, or answered as `Duplicate`).
//!
//! ## Failpoints
//!
//! With the cargo feature `failpoints`, the group commit has three
//! [`fail`](https://docs.rs/fail/0.5) failpoints, in this order:
//! `log::group_commit` (the batch is applied to sled in memory, nothing
//! flushed yet), `log::after_write_before_fsync` (sled flushed its log, our
//! `fdatasync` has not run) and `log::after_fsync_before_ack` (durable, no
//! caller answered yet). The `return` action makes the commit fail there
//! with an injected I/O error; `return(crash)` aborts the process there
//! instead (a power cut at that step, see `ecom_core::failpoint`). Without
//! the feature they compile to nothing; [`FAILPOINTS`] lists the ones this
//! build has.
//!
//! ## Recovery
//!
//! sled recovers its own log on open to a state after some prefix of the
//! flushed writes; since a group is one atomic batch, the log is exactly as
//! after some group commit, never part of one, and at least as far as the
//! last acknowledged one. A group that was written but not acknowledged
//! before a crash may survive: the transport redelivers those messages and
//! they are answered as `Duplicate`, which is right, since they are in the
//! log.
//!
//! sled recovers a *damaged* file the same way, silently: a truncated or
//! overwritten `db/db` opens as the log of some earlier group commit, or
//! as an empty database (which would start a new log). So [`Log::open`]
//! compares what it finds with `<dir>/HIGH_WATER`, written at every open
//! and close (`high_water`), and refuses a database holding less with
//! [`LogError::Truncated`], naming the lost range; a file sled cannot
//! recover at all (it reports corruption or panics) is
//! [`LogError::Damaged`]. [`Log::salvage`] copies every readable record of
//! such a log into a new one and lists the rest.
//!
//! [`Log::open`] then checks what the projector will read next: every entry
//! from the checkpoint to `next_seq` must be present, contiguous, pass its
//! checksum and decode, and nothing may lie beyond `next_seq`; the first
//! failure is [`LogError::Corrupt`] naming the sequence number. Entries
//! before the checkpoint are not re-read on open (the projector is done with
//! them), so opening costs O(unapplied entries). The full check (all
//! entries, quarantine, index both ways, checkpoint) is [`Log::verify`],
//! which `ecom-pipeline log verify --dir X` runs after opening with
//! [`LogOptions::verify_tail_on_open`] off, so that it can report on a log
//! that no longer opens normally.
//!
//! ## Sharing and shutdown
//!
//! [`Log`] is a cheap `Clone` (an `Arc` inside); clone it into tasks. When
//! the last clone is dropped, the writer thread finishes the group in hand
//! and stops, the database is flushed and closed, and only then is the lock
//! released. Drop blocks for that final flush, like any sled drop.
//!
//! `open`, `read_from`, `rejected`, `verify`, `set_checkpoint`, `flush`,
//! `prune_below` and `compact` are blocking calls (disk I/O); from async
//! code, call them through `tokio::task::spawn_blocking` when they may take
//! long (open, verify and compact scan the log). `append` never blocks the
//! runtime, but waits for the switch at the end of a compaction.

mod compact;
mod error;
mod generation;
mod high_water;
mod lock;
mod record;
mod salvage;
#[cfg(feature = "testing")]
pub mod testing;
mod upgrade;
mod verify;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use ecom_core::RawMessage;
use tokio::sync::{oneshot, watch};

pub use crate::compact::{CompactOptions, CompactReport, dir_bytes};
pub use crate::error::LogError;
use crate::generation::Generation;
use crate::lock::DirLock;
use crate::record::{
    FORMAT_1, FORMAT_VERSION, META_CHECKPOINT, META_DUPLICATES, META_FIRST_SEQ,
    META_FORMAT_VERSION, META_NEXT_QUARANTINE_SEQ, META_NEXT_SEQ, RecordKind, entry_key,
    quarantine_key,
};
pub use crate::salvage::SalvageReport;
pub use crate::upgrade::UpgradeReport;
use crate::writer::{Prepared, Request, Shared, Writer};

/// The writer's failpoints this build has compiled in (all of them with
/// the cargo feature `failpoints`, see the crate docs; none without). Lets a
/// binary refuse to arm failpoints that would silently do nothing.
pub const FAILPOINTS: &[&str] = if cfg!(feature = "failpoints") {
    &[
        "log::group_commit",
        "log::after_write_before_fsync",
        "log::after_fsync_before_ack",
        "log::compact_before_switch",
        "log::compact_after_switch",
    ]
} else {
    &[]
};

/// Options for [`Log::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// sled's page cache, in bytes. Default 16 MiB: the projector reads
    /// the tail it has just appended, and sled 0.34's resident set grows
    /// well past its cache setting, so a larger cache bought no speed and
    /// cost memory (peak RSS of a 1M-message drain: 689 MB with 64 MiB
    /// here and 128 MiB in the embedded store, 410 MB with 16 and 32).
    pub cache_capacity_bytes: u64,
    /// Verify every entry from the checkpoint to the end on open (default
    /// `true`). Turn it off only to inspect a damaged log, as
    /// `ecom-pipeline log verify` does before calling [`Log::verify`]; the
    /// pipeline itself must never run on an unchecked log.
    pub verify_tail_on_open: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            cache_capacity_bytes: 16 << 20,
            verify_tail_on_open: true,
        }
    }
}

/// One delivered message, as the caller classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message that decoded: stored as a log entry.
    Valid(RawMessage),
    /// A message that was rejected, with the reason: quarantined with its
    /// raw bytes.
    Rejected(RawMessage, String),
}

impl Incoming {
    pub fn message(&self) -> &RawMessage {
        match self {
            Incoming::Valid(m) | Incoming::Rejected(m, _) => m,
        }
    }
}

/// What happened to one message of an [`Log::append`] batch (same order as
/// the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppendOutcome {
    /// Stored as the entry with this sequence number.
    Appended(u64),
    /// Stored in quarantine with this quarantine sequence number.
    Quarantined(u64),
    /// Its topic and message id were already in the log: not stored again,
    /// counted.
    Duplicate,
}

/// An entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub message: RawMessage,
    pub appended_at_ms: i64,
}

/// A quarantined (rejected) message read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub seq: u64,
    pub message: RawMessage,
    pub reason: String,
    pub appended_at_ms: i64,
}

/// Counters, as of the last durable group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Entries the log holds: `next_seq - first_seq`.
    pub entries: u64,
    /// The lowest entry held (0 unless archived entries were pruned).
    pub first_seq: u64,
    pub next_seq: u64,
    pub checkpoint: u64,
    /// Quarantined messages.
    pub rejected: u64,
    /// Transport duplicates seen, ever (persisted).
    pub duplicates_message_id: u64,
    /// Durable flushes by this `Log` since it was opened (one per group
    /// commit, plus explicit [`Log::flush`] calls). Not persisted.
    pub flushes: u64,
}

/// Result of [`Log::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries_checked: u64,
    pub quarantine_checked: u64,
    pub index_checked: u64,
    /// One line per problem, naming the sequence number or message id.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The durable log. Cheap to clone; see the [crate documentation](crate).
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Why the database holds less than `HIGH_WATER` says, when it was
    /// opened for inspection anyway: reported by `verify`, and the file is
    /// then left alone (it is the evidence).
    lost: Option<String>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    // Field order matters for drop: the database (in `shared`) closes
    // before the lock is released.
    _lock: DirLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after the group in hand.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(dir = %self.shared.dir.display(), "the log writer thread panicked");
        }
        if let Err(e) = self.shared.flush_durably() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "final flush of the log failed");
        } else if self.lost.is_none() {
            let marks = high_water::Marks {
                next_seq: self.shared.next_seq.load(Ordering::Acquire),
                next_quarantine_seq: self.shared.next_quarantine_seq.load(Ordering::Acquire),
            };
            if let Err(e) = high_water::write(&self.shared.dir, marks) {
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "cannot record the log's high-water mark");
            }
        }
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.dir)
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

/// Opens sled under a [`DirLock`] we already hold.
///
/// sled 0.34 takes its own `flock` on `db/db` and releases it only when its
/// background threads have exited, which `Db::drop` does not wait for
/// (spacejam/sled#1289). Our lock proves no other live owner exists, so
/// sled refusing its lock can only be a previous `Log` of this process still
/// shutting down: wait for it, briefly, instead of failing a reopen.
pub(crate) fn open_sled(dir: &Path, config: sled::Config) -> Result<sled::Db, LogError> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        // sled 0.34 panics on some damaged files (a zeroed header) instead
        // of returning an error.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                LogError::Damaged {
                    dir: dir.to_path_buf(),
                    file: dir.join("db"),
                    reason: format!("makes sled panic while recovering it ({what})"),
                }
            })?;
        match opened {
            Err(sled::Error::Corruption { .. }) => {
                return Err(LogError::Damaged {
                    dir: dir.to_path_buf(),
                    file: dir.join("db"),
                    reason: "holds data sled reports as corrupted (in db/conf or db/db)"
                        .to_string(),
                });
            }
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < PATIENCE =>
            {
                tracing::debug!(dir = %dir.display(), "sled's lock is still held by a closing log; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            result => return result.map_err(LogError::storage(dir)),
        }
    }
}

struct Meta {
    next_seq: u64,
    next_quarantine_seq: u64,
    checkpoint: u64,
    duplicates: u64,
    first_seq: u64,
}

impl Log {
    /// Opens the log in `dir`, creating it if missing.
    ///
    /// Takes the directory lock, opens sled in `<dir>/db`, checks the format
    /// version and verifies every entry from the checkpoint to the end (see
    /// "Recovery" in the crate docs; [`LogOptions::verify_tail_on_open`]),
    /// then starts the writer thread. Blocking.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Log, LogError> {
        // A restart on a disk that is still full fails here: say so.
        Log::open_unclassified(dir, opts).map_err(|e| e.or_disk_full(dir))
    }

    fn open_unclassified(dir: &Path, opts: LogOptions) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let lock = DirLock::acquire(dir)?;
        let current = generation::current(dir)?;
        // A compaction cut short left its half-written generation, or the
        // one it replaced: neither is the log.
        for stale in generation::remove_stale(dir, &current)? {
            tracing::info!(dir = %dir.display(), generation = %stale, "removed a generation left by an interrupted compaction");
        }
        let generation = Generation::open(dir, &current, opts.cache_capacity_bytes)?;
        let db = generation.db.clone();
        let meta = load_or_init_meta(dir, &db, &generation)?;
        let found = high_water::Marks {
            next_seq: meta.next_seq,
            next_quarantine_seq: meta.next_quarantine_seq,
        };
        let recorded = high_water::read(dir)?;
        let lost = match high_water::check(dir, recorded, found) {
            Ok(()) => None,
            Err(e) if !opts.verify_tail_on_open => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        if lost.is_none() && recorded != Some(found) {
            high_water::write(dir, found)?;
        }
        let checked = if opts.verify_tail_on_open {
            verify::check_tail(dir, &db, meta.checkpoint, meta.next_seq)?
        } else {
            tracing::warn!(dir = %dir.display(), "opening the log without verifying its tail");
            0
        };
        tracing::info!(
            dir = %dir.display(),
            next_seq = meta.next_seq,
            checkpoint = meta.checkpoint,
            rejected = meta.next_quarantine_seq,
            verified = checked,
            "opened log"
        );

        let (tail, _) = watch::channel(meta.next_seq);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            next_seq: AtomicU64::new(meta.next_seq),
            next_quarantine_seq: AtomicU64::new(meta.next_quarantine_seq),
            first_seq: AtomicU64::new(meta.first_seq),
            duplicates: AtomicU64::new(meta.duplicates),
            flushes: AtomicU64::new(0),
            checkpoint: Mutex::new(meta.checkpoint),
            tail,
            generation: RwLock::new(Arc::new(generation)),
            commit_lock: Mutex::new(()),
            maintenance: Mutex::new(()),
            cache_capacity_bytes: opts.cache_capacity_bytes,
            failure: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            next_seq: meta.next_seq,
            next_quarantine_seq: meta.next_quarantine_seq,
            duplicates: meta.duplicates,
        };
        let writer = std::thread::Builder::new()
            .name("ecom-log-writer".to_string())
            .spawn(move || writer.run(rx))
            .map_err(LogError::io(dir))?;
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                lost,
                tx: Some(tx),
                writer: Some(writer),
                _lock: lock,
            }),
        })
    }

    /// Converts the log in `dir` to the current on-disk format, in place,
    /// if it is in an older one ([`LogError::UpgradeNeeded`] on open says
    /// so); a log already current is left alone. Today that means format 1
    /// to 2: the message-id index is rebuilt, keyed by topic and message id,
    /// from the records themselves; entries, quarantine, checkpoint and
    /// counters are untouched.
    ///
    /// Takes the directory lock (so no pipeline may run on it) and writes
    /// the new index and the new format version in one atomic batch: after a
    /// crash the log is either still format 1 or fully format 2, and the
    /// upgrade can simply be run again. Holds the whole index in memory
    /// once (tens of bytes per record). Blocking.
    pub fn upgrade(dir: &Path) -> Result<UpgradeReport, LogError> {
        upgrade::upgrade(dir)
    }

    /// Copies every readable record of the (damaged) log in `from` into a
    /// new log in `into`, entries in their order and then the quarantine,
    /// and reports what could not be copied. The new log starts at
    /// checkpoint 0, so the projector re-applies every entry (harmless: the
    /// store depends only on the set of events). `into` must not hold a log;
    /// `from` is read under its lock, so no pipeline may run on it. See the
    /// `salvage` module for what is lost and how to get it back.
    pub async fn salvage(from: &Path, into: &Path) -> Result<SalvageReport, LogError> {
        salvage::salvage(from, into).await
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Appends a batch durably: returns once the flush covering every
    /// message of the batch returned, with one outcome per message in batch
    /// order. Concurrent calls are group-committed (see the crate docs).
    ///
    /// If encoding any message fails ([`LogError::Encode`]), nothing of the
    /// batch is written.
    pub async fn append(&self, batch: Vec<Incoming>) -> Result<Vec<AppendOutcome>, LogError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let appended_at_ms = now_ms();
        let items = batch
            .into_iter()
            .map(|incoming| prepare(incoming, appended_at_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let shared = &self.inner.shared;
        self.inner
            .tx
            .as_ref()
            .expect("the sender lives as long as the Log")
            .send(Request { items, reply })
            .map_err(|_| shared.writer_stopped())?;
        answer.await.map_err(|_| shared.writer_stopped())?
    }

    /// Up to `max` entries from `from_seq` on, in sequence order, checksums
    /// verified. Only durable entries are returned (below [`Log::next_seq`]).
    pub fn read_from(&self, from_seq: u64, max: usize) -> Result<Vec<LogEntry>, LogError> {
        let dir = self.dir();
        let first_seq = self.first_seq();
        if from_seq < first_seq && max > 0 {
            return Err(LogError::Pruned {
                dir: dir.to_path_buf(),
                from: from_seq,
                first_seq,
            });
        }
        // `end` before the generation: every generation a reader can get
        // after this holds all entries below `end` (a compaction copies
        // them before it switches).
        let end = self.next_seq();
        if from_seq >= end || max == 0 {
            return Ok(Vec::new());
        }
        let generation = self.inner.shared.generation();
        let wanted = end.saturating_sub(from_seq).min(max as u64);
        let mut out = Vec::with_capacity(wanted as usize);
        let corrupt = |seq, reason: String| LogError::Corrupt {
            dir: dir.to_path_buf(),
            seq,
            reason,
        };
        let mut expected = from_seq;
        for kv in generation
            .db
            .range(entry_key(from_seq)..entry_key(end))
            .take(wanted as usize)
        {
            let (key, value) = kv.map_err(LogError::storage(dir))?;
            let seq = record::parse_seq_key(&key)
                .ok_or_else(|| corrupt(expected, format!("malformed entry key {key:?}")))?;
            if seq != expected {
                return Err(corrupt(
                    expected,
                    format!("entry is missing (the next entry present is seq {seq})"),
                ));
            }
            let (message, appended_at_ms) =
                record::decode_entry(&value).map_err(|reason| corrupt(seq, reason))?;
            out.push(LogEntry {
                seq,
                message,
                appended_at_ms,
            });
            expected += 1;
        }
        if (out.len() as u64) < wanted {
            return Err(corrupt(
                expected,
                format!("entry is missing (the log's next_seq is {end})"),
            ));
        }
        Ok(out)
    }

    /// A receiver of the durable `next_seq`, updated after each group
    /// commit: wait on it to tail the log.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.tail.subscribe()
    }

    /// The next entry sequence number; every entry below it is durable.
    pub fn next_seq(&self) -> u64 {
        self.inner.shared.next_seq.load(Ordering::Acquire)
    }

    /// The lowest entry the log still holds (0 unless it was pruned).
    pub fn first_seq(&self) -> u64 {
        self.inner.shared.first_seq.load(Ordering::Acquire)
    }

    /// Removes the entries below `seq` (archived ones: the caller checked
    /// that the archive holds them) and makes that durable. Their message
    /// ids stay in the dedup index, so a redelivery is still dropped as a
    /// duplicate. Only projected entries may go: `seq` beyond the
    /// checkpoint is refused. Returns how many entries were removed.
    ///
    /// Deleted in ascending chunks, each one atomic with the new
    /// `first_seq`, so a crash leaves a consistent log that a second call
    /// completes. Readers below the new first entry get
    /// [`LogError::Pruned`] from the moment this is called. Safe while
    /// appends go on (they write other keys).
    pub fn prune_below(&self, seq: u64) -> Result<u64, LogError> {
        const CHUNK: u64 = 10_000;
        let dir = self.dir();
        let checkpoint = self.checkpoint();
        if seq > checkpoint {
            return Err(LogError::PruneBeyondCheckpoint {
                dir: dir.to_path_buf(),
                seq,
                checkpoint,
            });
        }
        let shared = &self.inner.shared;
        let _maintenance = shared.maintenance();
        let first = shared.first_seq.load(Ordering::Acquire);
        if seq <= first {
            return Ok(0);
        }
        let generation = shared.generation();
        // When the entries below `seq` were appended, so that a compaction
        // can later forget message ids by age (see `Log::compact`).
        let last = generation
            .db
            .get(entry_key(seq - 1))
            .map_err(LogError::storage(dir))?;
        let appended_at_ms = match last {
            Some(value) => {
                record::decode_entry(&value)
                    .map_err(|reason| LogError::Corrupt {
                        dir: dir.to_path_buf(),
                        seq: seq - 1,
                        reason,
                    })?
                    .1
            }
            None => {
                return Err(LogError::Corrupt {
                    dir: dir.to_path_buf(),
                    seq: seq - 1,
                    reason: "entry is missing, so it cannot be pruned".to_string(),
                });
            }
        };
        shared.first_seq.fetch_max(seq, Ordering::AcqRel);
        let mut from = first;
        while from < seq {
            let to = (from + CHUNK).min(seq);
            let mut batch = sled::Batch::default();
            for s in from..to {
                batch.remove(&entry_key(s)[..]);
            }
            batch.insert(META_FIRST_SEQ, &to.to_be_bytes()[..]);
            if to == seq {
                batch.insert(
                    &record::prune_mark_key(seq)[..],
                    &appended_at_ms.to_be_bytes()[..],
                );
            }
            generation
                .db
                .apply_batch(batch)
                .map_err(LogError::storage(dir))?;
            from = to;
        }
        shared.flush_durably()?;
        Ok(seq - first)
    }

    /// The next sequence number the projector must apply (0 initially).
    pub fn checkpoint(&self) -> u64 {
        *self.inner.shared.checkpoint()
    }

    /// Records that the projector applied everything below `next_seq`.
    ///
    /// Refuses to go backwards ([`LogError::CheckpointBackwards`]) or past
    /// the end of the log ([`LogError::CheckpointBeyondEnd`]). Not flushed
    /// by itself: durable with the next group commit or [`Log::flush`].
    pub fn set_checkpoint(&self, next_seq: u64) -> Result<(), LogError> {
        let shared = &self.inner.shared;
        let mut current = shared.checkpoint();
        if next_seq < *current {
            return Err(LogError::CheckpointBackwards {
                dir: shared.dir.clone(),
                current: *current,
                requested: next_seq,
            });
        }
        let end = self.next_seq();
        if next_seq > end {
            return Err(LogError::CheckpointBeyondEnd {
                dir: shared.dir.clone(),
                requested: next_seq,
                next_seq: end,
            });
        }
        if next_seq == *current {
            return Ok(());
        }
        shared
            .generation()
            .db
            .insert(META_CHECKPOINT, &next_seq.to_be_bytes()[..])
            .map_err(LogError::storage(&shared.dir))?;
        *current = next_seq;
        Ok(())
    }

    /// Makes everything written so far durable (in particular the
    /// checkpoint). Blocking.
    pub fn flush(&self) -> Result<(), LogError> {
        self.inner.shared.flush_durably()
    }

    /// All quarantined messages, in quarantine order, checksums verified.
    pub fn rejected(&self) -> Result<Vec<Quarantined>, LogError> {
        let dir = self.dir();
        let end = self
            .inner
            .shared
            .next_quarantine_seq
            .load(Ordering::Acquire);
        let mut out = Vec::with_capacity(end as usize);
        let generation = self.inner.shared.generation();
        for kv in generation.db.range(quarantine_key(0)..quarantine_key(end)) {
            let (key, value) = kv.map_err(LogError::storage(dir))?;
            let seq = record::parse_seq_key(&key).unwrap_or(u64::MAX);
            let (message, reason, appended_at_ms) =
                record::decode_quarantine(&value).map_err(|reason| {
                    LogError::CorruptQuarantine {
                        dir: dir.to_path_buf(),
                        seq,
                        reason,
                    }
                })?;
            out.push(Quarantined {
                seq,
                message,
                reason,
                appended_at_ms,
            });
        }
        Ok(out)
    }

    /// Counters as of the last durable group commit.
    pub fn stats(&self) -> LogStats {
        let shared = &self.inner.shared;
        let next_seq = self.next_seq();
        LogStats {
            entries: next_seq - self.first_seq(),
            first_seq: self.first_seq(),
            next_seq,
            checkpoint: self.checkpoint(),
            rejected: shared.next_quarantine_seq.load(Ordering::Acquire),
            duplicates_message_id: shared.duplicates.load(Ordering::Relaxed),
            flushes: shared.flushes.load(Ordering::Relaxed),
        }
    }

    /// Checks everything: checksum and decode of every entry and quarantine
    /// record, sequence continuity, the message-id index both ways, and
    /// `checkpoint <= next_seq`. Problems are reported, not returned as
    /// errors; `Err` means the check itself could not run. Blocking; reads
    /// the whole log. Safe while appends continue.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        let mut report = verify::verify(self.dir(), &self.inner.shared.generation().db)?;
        if let Some(lost) = &self.inner.lost {
            report.problems.insert(0, lost.clone());
        }
        Ok(report)
    }
}

fn prepare(incoming: Incoming, appended_at_ms: i64) -> Result<Prepared, LogError> {
    let (kind, encoded, message) = match incoming {
        Incoming::Valid(message) => (
            RecordKind::Entry,
            record::encode_entry(&message, appended_at_ms),
            message,
        ),
        Incoming::Rejected(message, reason) => (
            RecordKind::Quarantine,
            record::encode_quarantine(&message, &reason, appended_at_ms),
            message,
        ),
    };
    let record = encoded.map_err(|e| LogError::Encode {
        message_id: message.message_id.clone(),
        reason: e.to_string(),
    })?;
    Ok(Prepared {
        topic: message.topic,
        message_id: message.message_id,
        kind,
        record,
    })
}

/// One sled key and its value, as [`encoded_pairs`] returns them.
#[doc(hidden)]
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The key-value pairs that appending `messages` (all distinct) to an empty
/// log writes, in the log's on-disk format: each message's record under its
/// sequence key and its dedup-index key. The group's counters are left out:
/// three small keys per commit. For benchmarks only: a bare sled loop that
/// writes exactly these bytes is the ceiling `append` is measured against.
#[doc(hidden)]
pub fn encoded_pairs(messages: &[Incoming]) -> Result<Vec<KeyValue>, LogError> {
    let appended_at_ms = now_ms();
    let (mut entries, mut quarantined) = (0u64, 0u64);
    let mut pairs = Vec::with_capacity(2 * messages.len());
    for incoming in messages {
        let p = prepare(incoming.clone(), appended_at_ms)?;
        let next = match p.kind {
            RecordKind::Entry => &mut entries,
            RecordKind::Quarantine => &mut quarantined,
        };
        let seq = *next;
        *next += 1;
        pairs.push((record::seq_key(p.kind, seq).to_vec(), p.record));
        pairs.push((
            record::index_key(p.topic, &p.message_id),
            record::index_value(p.kind, seq).to_vec(),
        ));
    }
    Ok(pairs)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn load_or_init_meta(dir: &Path, db: &sled::Db, generation: &Generation) -> Result<Meta, LogError> {
    let storage = LogError::storage;
    match db.get(META_FORMAT_VERSION).map_err(storage(dir))? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .map_err(|_| LogError::CorruptMeta {
                    dir: dir.to_path_buf(),
                    key: "format_version",
                    reason: format!("expected 4 bytes, found {}", v.len()),
                })?;
            if found == FORMAT_1 {
                return Err(LogError::UpgradeNeeded {
                    dir: dir.to_path_buf(),
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            if found != FORMAT_VERSION {
                return Err(LogError::FormatVersion {
                    dir: dir.to_path_buf(),
                    found,
                    expected: FORMAT_VERSION,
                });
            }
        }
        None if db.is_empty() => {
            let mut batch = sled::Batch::default();
            batch.insert(META_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes()[..]);
            for key in [
                META_NEXT_SEQ,
                META_NEXT_QUARANTINE_SEQ,
                META_CHECKPOINT,
                META_DUPLICATES,
            ] {
                batch.insert(key, &0u64.to_be_bytes()[..]);
            }
            db.apply_batch(batch).map_err(storage(dir))?;
            db.flush().map_err(storage(dir))?;
            generation.durability.sync()?;
            // Make the new files' names durable too.
            writer::sync_dir(&dir.join(&generation.name))?;
            writer::sync_dir(dir)?;
        }
        None => {
            return Err(LogError::NotALog {
                dir: dir.to_path_buf(),
            });
        }
    }

    let read = |key: &'static [u8], name: &'static str| -> Result<u64, LogError> {
        let value = db.get(key).map_err(storage(dir))?;
        let bad = |reason: String| LogError::CorruptMeta {
            dir: dir.to_path_buf(),
            key: name,
            reason,
        };
        match value {
            None => Err(bad("missing".to_string())),
            Some(v) => record::u64_value(&v)
                .ok_or_else(|| bad(format!("expected 8 bytes, found {}", v.len()))),
        }
    };
    let meta = Meta {
        next_seq: read(META_NEXT_SEQ, "next_seq")?,
        next_quarantine_seq: read(META_NEXT_QUARANTINE_SEQ, "next_quarantine_seq")?,
        checkpoint: read(META_CHECKPOINT, "checkpoint")?,
        duplicates: read(META_DUPLICATES, "duplicates_message_id")?,
        first_seq: match db.get(META_FIRST_SEQ).map_err(storage(dir))? {
            None => 0,
            Some(v) => record::u64_value(&v).ok_or_else(|| LogError::CorruptMeta {
                dir: dir.to_path_buf(),
                key: "first_seq",
                reason: format!("expected 8 bytes, found {}", v.len()),
            })?,
        },
    };
    if meta.first_seq > meta.checkpoint {
        return Err(LogError::CorruptMeta {
            dir: dir.to_path_buf(),
            key: "first_seq",
            reason: format!(
                "entries are pruned up to {} but the checkpoint is {}: only projected entries are ever pruned",
                meta.first_seq, meta.checkpoint
            ),
        });
    }
    if meta.checkpoint > meta.next_seq {
        return Err(LogError::CorruptMeta {
            dir: dir.to_path_buf(),
            key: "checkpoint",
            reason: format!(
                "checkpoint {} is beyond next_seq {}",
                meta.checkpoint, meta.next_seq
            ),
        });
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_its_append_future_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        send_sync(&log);
        send(&log.append(Vec::new()));
    }
}
