//! Bounded local disk: archive what is projected, prune what is archived,
//! compact, and hold ingest when nothing more can go.
//!
//! # Why this module exists
//!
//! A log keeps every message; at 1 000 messages/s that is 86 million entries
//! a day, and the disk fills. Users still need the whole history (replaying
//! it rebuilds the store), so the local log is made a hot tail of the
//! archive (`ecom-archive`): one task per running instance does, every
//! [`RetentionPolicy::every`]:
//!
//! 1. **Archive** the projected entries (below the checkpoint) and the
//!    quarantine: full segments as they fill, and everything projected
//!    once the oldest unarchived entry is [`ARCHIVE_WITHIN`] old or the log
//!    is under size pressure. The archive therefore lags the projector by
//!    at most about that much: what a lost instance can lose is its
//!    unarchived tail.
//! 2. **Prune** archived entries: all of them under size pressure (the
//!    directory above [`COMPACT_AT`] of `max_bytes`), and those older than
//!    `max_age`. Every segment about to leave the log is read back and
//!    checked (size, SHA-256, every line) first; a local archive is
//!    fsynced by `seal`.
//! 3. **Compact** (`ecom_log::Log::compact`) when it pays: under size
//!    pressure, or once more entries were pruned than the log holds. It
//!    forgets message ids older than `keep_ids_for`.
//! 4. **Hold** ingest while the directory is above [`HOLD_AT`] of
//!    `max_bytes` (the projector or the archive is behind, so nothing may
//!    go), until it is below [`RELEASE_AT`], and during a compaction (the
//!    old database must not grow while its copy is written beside it: at
//!    tens of MB/s of ingest it outgrew the bound in a second). Pub/Sub keeps the messages
//!    meanwhile; nothing is lost, nothing acknowledged early. A second task
//!    measures the directory every [`WATCH_EVERY`] for this, and starts a
//!    step at once when the directory crosses [`COMPACT_AT`]: ingest can
//!    write tens of MB per second, far more than a bound of a few tens of
//!    MB allows between two steps.
//!
//! A step that fails (archive unreachable, a segment that does not read
//! back) is logged, counted and retried at the next tick; the log only
//! grows meanwhile, up to the hold. Nothing is ever pruned that the
//! archive does not hold, checked.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ecom_archive::{Archive, ArchiveError, Manifest, SegmentKind};
use ecom_log::{CompactOptions, Log, LogError};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::telemetry::dir_bytes;

/// Directory size (fraction of `max_bytes`) above which everything archived
/// is pruned and the log compacted. Well below the bound: a compaction writes a copy of what
/// the log holds next to it, and the directory must stay under the bound
/// while it does.
pub const COMPACT_AT: f64 = 0.4;
/// Directory size (fraction of `max_bytes`) at which ingest is held.
pub const HOLD_AT: f64 = 0.65;
/// ... and below which it resumes.
pub const RELEASE_AT: f64 = 0.5;
/// How long ingest may be held without room for a compaction's copy
/// before the task compacts anyway (over the bound, with an error).
pub const HELD_PATIENCE: Duration = Duration::from_secs(10);
/// How often the directory size is measured for the hold.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);
/// The oldest projected entry is archived within about this long (or half
/// of `max_age`, if shorter).
pub const ARCHIVE_WITHIN: Duration = Duration::from_secs(30);

/// What to keep locally; see the module docs.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    pub archive: Arc<Archive>,
    /// Bound on the log directory, in bytes.
    pub max_bytes: Option<u64>,
    /// Archived entries older than this leave the log.
    pub max_age: Option<Duration>,
    /// Message ids of pruned entries are kept for dedup this long.
    pub keep_ids_for: Duration,
    pub segment_entries: NonZeroUsize,
    /// How often the task looks.
    pub every: Duration,
}

/// What the task did and sees, for the status file and `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionCounters {
    /// A compaction is running: with a bound, ingest is held meanwhile, so
    /// that the old database stops growing while its copy is written next
    /// to it.
    pub compacting: AtomicBool,
    pub archived_upto: AtomicU64,
    pub log_bytes: AtomicU64,
    pub held: AtomicBool,
    pub segments_sealed: AtomicU64,
    pub entries_pruned: AtomicU64,
    pub compactions: AtomicU64,
    pub bytes_reclaimed: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// [`RetentionCounters`] as plain numbers (`status.json`'s `retention`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RetentionStatus {
    /// Entries below this are in the archive.
    pub archived_upto: u64,
    /// Entries not yet archived: `next_seq - archived_upto`.
    pub archive_lag: u64,
    pub log_bytes: u64,
    pub max_bytes: Option<u64>,
    /// Ingest is held: the log is at its bound.
    pub held: bool,
    pub segments_sealed: u64,
    pub entries_pruned: u64,
    pub compactions: u64,
    pub bytes_reclaimed: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl RetentionCounters {
    pub fn status(&self, log: &Log, max_bytes: Option<u64>) -> RetentionStatus {
        let archived_upto = self.archived_upto.load(Ordering::Relaxed);
        RetentionStatus {
            archived_upto,
            archive_lag: log.next_seq().saturating_sub(archived_upto),
            log_bytes: self.log_bytes.load(Ordering::Relaxed),
            max_bytes,
            held: self.held.load(Ordering::Relaxed),
            segments_sealed: self.segments_sealed.load(Ordering::Relaxed),
            entries_pruned: self.entries_pruned.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            bytes_reclaimed: self.bytes_reclaimed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Why a retention step failed (retried at the next tick).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("a retention step panicked or was cancelled: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Starts the task on `tracker`; it stops with `cancel`. The returned
/// receiver is ingest's hold ([`ecom_ingest::IngestOptions::hold`]).
pub fn spawn(
    log: Log,
    policy: RetentionPolicy,
    counters: Arc<RetentionCounters>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> watch::Receiver<bool> {
    let (hold_tx, hold_rx) = watch::channel(false);
    let urgent = Arc::new(tokio::sync::Notify::new());
    tracker.spawn(watch_size(
        log.dir().to_path_buf(),
        policy.max_bytes,
        hold_tx,
        counters.clone(),
        urgent.clone(),
        cancel.clone(),
    ));
    tracker.spawn(async move {
        let mut task = Task {
            log,
            policy,
            counters,
            manifests: None,
            pruned_since_compact: 0,
            held_since: None,
            forgotten_below: 0,
            bytes_per_key: INITIAL_BYTES_PER_KEY,
        };
        let mut tick = tokio::time::interval(task.policy.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = urgent.notified() => {}
                _ = cancel.cancelled() => break,
            }
            if let Err(e) = task.step().await {
                task.counters.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ecom_retention_failures_total").increment(1);
                tracing::warn!(error = %e, "archive/prune step failed; retrying at the next tick (the log keeps everything meanwhile)");
                *task
                    .counters
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                // The archive's view may be stale after a failure.
                task.manifests = None;
            }
        }
    });
    hold_rx
}

struct Task {
    log: Log,
    policy: RetentionPolicy,
    counters: Arc<RetentionCounters>,
    /// The archive's entry segments, listed once and then extended with
    /// what this task seals (`None`: list again).
    manifests: Option<Vec<Manifest>>,
    pruned_since_compact: u64,
    /// Since when ingest has been held, as this task last saw it.
    held_since: Option<std::time::Instant>,
    /// Ids of entries below this were forgotten by the last compaction.
    forgotten_below: u64,
    /// Size of a compacted log per record and id it holds, as measured by
    /// the last compaction: what the next copy will cost.
    bytes_per_key: f64,
}

/// [`Task::bytes_per_key`] before the first compaction measured it (sled
/// 0.34 here: about 200 bytes per message id, 1 KB per entry).
const INITIAL_BYTES_PER_KEY: f64 = 400.0;

fn fraction(max: Option<u64>, f: f64) -> Option<u64> {
    max.map(|m| (m as f64 * f) as u64)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, RetentionError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Task {
    async fn step(&mut self) -> Result<(), RetentionError> {
        let dir = self.log.dir().to_path_buf();
        let bytes = dir_bytes(&dir);
        self.observe(bytes);
        let pressure = fraction(self.policy.max_bytes, COMPACT_AT).is_some_and(|at| bytes > at);

        self.archive(pressure).await?;
        self.prune(pressure).await?;
        let bytes = dir_bytes(&dir);
        self.observe(bytes);
        let stats = self.log.stats();
        let cutoff = self.id_cutoff();
        let log = self.log.clone();
        let forgettable = blocking(move || log.ids_forgettable_below(cutoff)).await?;
        // What the copy holds: the entries still held, the quarantine, and
        // the ids not forgotten. It sits next to the old database until the
        // switch, so both must fit under the bound.
        let keys = stats.entries
            + 2 * stats.rejected
            + stats
                .next_seq
                .saturating_sub(forgettable.max(self.forgotten_below));
        // Half again: the estimate is an average (1.25 still let a 50 MB
        // bound be passed by 9 % in a 1.3M-message run), and the old
        // database still takes the batch ingest had in flight.
        let copy = keys as f64 * self.bytes_per_key * 1.5;
        let room = self
            .policy
            .max_bytes
            // A tenth of the bound kept free: ingest's batch in flight when
            // the hold starts, and the estimate's error (at 1.0 a 50 MB
            // bound was passed by up to 6 %).
            .is_none_or(|max| bytes as f64 + copy <= 0.9 * max as f64);
        let pressure = fraction(self.policy.max_bytes, COMPACT_AT).is_some_and(|at| bytes > at);
        let reclaims = self.pruned_since_compact > 0
            && (pressure || self.pruned_since_compact >= stats.entries);
        let forgets = pressure && forgettable > self.forgotten_below;
        tracing::debug!(
            bytes,
            copy,
            keys,
            room,
            reclaims,
            forgets,
            forgettable,
            forgotten_below = self.forgotten_below,
            pruned_since_compact = self.pruned_since_compact,
            "retention step"
        );
        // Held with space to reclaim but no room for the copy. Waiting
        // usually makes room (the tail gets archived and pruned, ids age
        // out); when it has not for HELD_PATIENCE, compacting anyway beats
        // holding ingest for good. The bound is then too small for the
        // dedup index; say so.
        let held = self.counters.held.load(Ordering::Relaxed);
        let held_for = match (held, self.held_since) {
            (false, _) => {
                self.held_since = None;
                Duration::ZERO
            }
            (true, None) => {
                self.held_since = Some(std::time::Instant::now());
                Duration::ZERO
            }
            (true, Some(since)) => since.elapsed(),
        };
        let stuck = !room && reclaims && held_for >= HELD_PATIENCE;
        if stuck {
            let e = format!(
                "log_max_bytes is too small for this traffic: compacting {bytes} bytes needs room for a copy of about {copy:.0} bytes (mostly message ids kept for dedup_retention, about 450 bytes each), so the directory goes over its bound until the copy is done; raise log_max_bytes or lower dedup_retention"
            );
            tracing::warn!("{e}");
            *self
                .counters
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
        if (room || stuck) && (reclaims || forgets) {
            self.compact(bytes, cutoff).await?;
        }
        let bytes = dir_bytes(&dir);
        self.observe(bytes);
        if let Some(release_at) = fraction(self.policy.max_bytes, RELEASE_AT)
            && bytes >= release_at
            && self.log.checkpoint() == self.log.next_seq()
            && self.pruned_since_compact == 0
            && self.log.stats().entries == 0
        {
            // Everything is projected, archived, pruned and compacted, and
            // the log is still too big: what is left is the dedup index.
            let e = format!(
                "the log holds nothing but message ids and still takes {bytes} bytes, at or above {} % of log_max_bytes, so ingest stays held: raise log_max_bytes, or lower dedup_retention (each id kept costs about 200 bytes)",
                (RELEASE_AT * 100.0) as u32
            );
            tracing::error!("{e}");
            *self
                .counters
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
        Ok(())
    }

    fn observe(&self, bytes: u64) {
        // ecom_log_size_bytes is the telemetry's, set at each scrape.
        self.counters.log_bytes.store(bytes, Ordering::Relaxed);
        let archived = self.counters.archived_upto.load(Ordering::Relaxed);
        metrics::gauge!("ecom_archived_upto").set(archived as f64);
        metrics::gauge!("ecom_archive_lag_entries")
            .set(self.log.next_seq().saturating_sub(archived) as f64);
    }

    async fn manifests(&mut self) -> Result<&mut Vec<Manifest>, RetentionError> {
        if self.manifests.is_none() {
            self.manifests = Some(self.policy.archive.manifests(SegmentKind::Entries).await?);
        }
        Ok(self.manifests.as_mut().expect("listed above"))
    }

    async fn archive(&mut self, pressure: bool) -> Result<(), RetentionError> {
        let archived = self.manifests().await?.last().map_or(0, |m| m.last_seq + 1);
        self.counters
            .archived_upto
            .store(archived, Ordering::Relaxed);
        let checkpoint = self.log.checkpoint();
        if checkpoint <= archived {
            return Ok(());
        }
        let per_segment = self.policy.segment_entries.get() as u64;
        let full = archived + (checkpoint - archived) / per_segment * per_segment;
        let upto = if pressure || self.oldest_pending_is_due(archived).await? {
            checkpoint
        } else {
            full
        };
        if upto <= archived {
            return Ok(());
        }
        let report = self
            .policy
            .archive
            .seal(&self.log, upto, self.policy.segment_entries)
            .await?;
        let sealed = report.entries.len() + report.quarantine.len();
        self.counters
            .segments_sealed
            .fetch_add(sealed as u64, Ordering::Relaxed);
        metrics::counter!("ecom_archive_segments_total").increment(sealed as u64);
        let manifests = self.manifests().await?;
        manifests.extend(report.entries);
        let archived = manifests.last().map_or(0, |m| m.last_seq + 1);
        self.counters
            .archived_upto
            .store(archived, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the oldest projected, unarchived entry waited long enough.
    async fn oldest_pending_is_due(&self, archived: u64) -> Result<bool, RetentionError> {
        let log = self.log.clone();
        let oldest = blocking(move || log.read_from(archived, 1)).await?;
        // A short local retention needs the archive sooner.
        let within = self
            .policy
            .max_age
            .map_or(ARCHIVE_WITHIN, |age| ARCHIVE_WITHIN.min(age / 2));
        Ok(oldest.first().is_some_and(|e| {
            ecom_store::now_ms().saturating_sub(e.appended_at_ms) >= within.as_millis() as i64
        }))
    }

    async fn prune(&mut self, pressure: bool) -> Result<(), RetentionError> {
        let first = self.log.first_seq();
        let checkpoint = self.log.checkpoint();
        let now = ecom_store::now_ms();
        let max_age_ms = self.policy.max_age.map(|a| a.as_millis() as i64);
        let manifests = self.manifests().await?;
        // Segments that may go, oldest first: archived, projected, and
        // either under pressure or old enough.
        let due: Vec<Manifest> = manifests
            .iter()
            .filter(|m| m.last_seq >= first && m.last_seq < checkpoint)
            .take_while(|m| {
                pressure
                    || max_age_ms.is_some_and(|age| now.saturating_sub(m.last_appended_at_ms) > age)
            })
            .cloned()
            .collect();
        let Some(last) = due.last() else {
            return Ok(());
        };
        let upto = last.last_seq + 1;
        // What leaves the log must read back from the archive.
        for m in &due {
            self.policy.archive.read_segment(m).await?;
        }
        let log = self.log.clone();
        let removed = blocking(move || log.prune_below(upto)).await?;
        self.pruned_since_compact += removed;
        self.counters
            .entries_pruned
            .fetch_add(removed, Ordering::Relaxed);
        metrics::counter!("ecom_log_pruned_entries_total").increment(removed);
        tracing::debug!(removed, first_seq = upto, "pruned archived entries");
        Ok(())
    }

    fn id_cutoff(&self) -> i64 {
        ecom_store::now_ms() - self.policy.keep_ids_for.as_millis() as i64
    }

    async fn compact(&mut self, bytes_before: u64, cutoff: i64) -> Result<(), RetentionError> {
        let log = self.log.clone();
        if self.policy.max_bytes.is_some() {
            self.counters.compacting.store(true, Ordering::Release);
            // Let the watcher see it before the copy starts growing.
            tokio::time::sleep(WATCH_EVERY * 2).await;
        }
        let compacted = blocking(move || {
            log.compact(CompactOptions {
                forget_ids_appended_before_ms: Some(cutoff),
            })
        })
        .await;
        self.counters.compacting.store(false, Ordering::Release);
        let report = compacted?;
        self.pruned_since_compact = 0;
        self.forgotten_below = report.ids_forgotten_below;
        let keys = report.records + report.ids_kept;
        if keys > 1_000 {
            self.bytes_per_key = report.bytes_after as f64 / keys as f64;
        }
        let after = dir_bytes(self.log.dir());
        let reclaimed = bytes_before.saturating_sub(after);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_reclaimed
            .fetch_add(reclaimed, Ordering::Relaxed);
        metrics::counter!("ecom_log_compactions_total").increment(1);
        metrics::counter!("ecom_log_bytes_reclaimed_total").increment(reclaimed);
        metrics::histogram!("ecom_log_compaction_pause_seconds").record(report.paused);
        Ok(())
    }
}

/// Measures the log directory every [`WATCH_EVERY`]: holds and releases
/// ingest, and asks for a step as soon as the size calls for one.
async fn watch_size(
    dir: std::path::PathBuf,
    max_bytes: Option<u64>,
    hold: watch::Sender<bool>,
    counters: Arc<RetentionCounters>,
    urgent: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let (Some(compact_at), Some(hold_at), Some(release_at)) = (
        fraction(max_bytes, COMPACT_AT),
        fraction(max_bytes, HOLD_AT),
        fraction(max_bytes, RELEASE_AT),
    ) else {
        return;
    };
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let bytes = dir_bytes(&dir);
        counters.log_bytes.store(bytes, Ordering::Relaxed);
        if bytes > compact_at {
            urgent.notify_one();
        }
        let held = *hold.borrow();
        let now_held = counters.compacting.load(Ordering::Acquire)
            || if held {
                bytes >= release_at
            } else {
                bytes >= hold_at
            };
        if now_held != held {
            hold.send_replace(now_held);
        }
        counters.held.store(now_held, Ordering::Relaxed);
        metrics::gauge!("ecom_ingest_held").set(if now_held { 1.0 } else { 0.0 });
    }
}

/// Writes `<log_dir>/ARCHIVE_INSTANCE` naming `instance`, or checks that it
/// already does: a pruned log finds its beginning through it, and one log
/// archived under two names would be two half histories.
pub fn claim_instance(log_dir: &Path, instance: &str) -> Result<(), std::io::Error> {
    let named = log_dir.join(ARCHIVE_INSTANCE_FILE);
    match std::fs::read_to_string(&named) {
        Ok(before) if before.trim() != instance => Err(std::io::Error::other(format!(
            "the log in {} is archived as instance {:?}, not {instance:?}: pass --instance {:?}",
            log_dir.display(),
            before.trim(),
            before.trim()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&named, format!("{instance}\n"))
        }
        Err(e) => Err(e),
    }
}

/// The file in a log directory naming its instance in the archive.
pub const ARCHIVE_INSTANCE_FILE: &str = "ARCHIVE_INSTANCE";
