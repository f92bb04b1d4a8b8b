use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong with the log.
///
/// Only [`LogError::Locked`] is worth retrying as is (see
/// [`LogError::is_retryable`]); every other variant needs a person or a
/// restart. [`LogError::is_fatal`] picks out the append errors after which
/// the log cannot be written any more in this process. The type is `Clone` (sources are behind `Arc`) because one failed
/// group commit answers every caller in the group with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Entries below `first_seq` were archived and pruned from this log.
    #[error(
        "entries below {first_seq} of the log in {} were archived and pruned (asked from {from}): read them from the archive (replay and verify with --archive)",
        dir.display()
    )]
    Pruned {
        dir: std::path::PathBuf,
        from: u64,
        first_seq: u64,
    },

    /// Pruning was asked for entries the projector has not applied.
    #[error(
        "cannot prune the log in {} below {seq}: the projector's checkpoint is {checkpoint}, and unprojected entries are never pruned",
        dir.display()
    )]
    PruneBeyondCheckpoint {
        dir: std::path::PathBuf,
        seq: u64,
        checkpoint: u64,
    },

    /// A filesystem operation outside sled failed: creating the log
    /// directory, opening, locking or writing `<dir>/LOCK`, or the extra
    /// `fdatasync` of sled's files after a flush.
    #[error(
        "I/O error on {}: {source}; check that the path exists, is writable and that the disk is not full",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// Another `Log` holds the directory's `LOCK` file: another process, or
    /// another still-open `Log` for the same directory in this process.
    #[error(
        "log directory {} is locked by {}; one process owns a log directory: stop that process (or wait for it to exit) and retry",
        dir.display(),
        holder(*pid)
    )]
    Locked {
        dir: PathBuf,
        /// The pid written in `<dir>/LOCK` by the holder, if it could be read.
        pid: Option<u32>,
    },

    /// sled returned an error: opening `<dir>/db` (including sled's own
    /// lock), reading, applying a batch, or flushing.
    #[error(
        "storage error in {}/db: {source}; if it persists, stop the pipeline and run `ecom-pipeline log verify --dir {}`",
        dir.display(),
        dir.display()
    )]
    Storage {
        dir: PathBuf,
        #[source]
        source: Arc<sled::Error>,
    },

    /// On open: the log was written by a different on-disk format version
    /// that this build cannot upgrade (a newer one, or an unknown one).
    #[error(
        "log {} has on-disk format version {found}, this build reads version {expected}; run the ecom-pipeline release that wrote it, or replay into a new log directory",
        dir.display()
    )]
    FormatVersion {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },

    /// On open: the log is in an older on-disk format that
    /// [`Log::upgrade`](crate::Log::upgrade) converts in place (format 1,
    /// whose message-id index ignored the topic).
    #[error(
        "log {} has on-disk format version {found}, whose message-id index ignores the topic (Pub/Sub message ids are unique only within a topic), and this build reads version {expected}; stop every process using it, run `ecom-pipeline log upgrade --dir {}` to rebuild the index in place, then start again",
        dir.display(),
        dir.display()
    )]
    UpgradeNeeded {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },

    /// `Log::upgrade`: there is no log in the directory (no `<dir>/db`).
    #[error(
        "there is no log in {} (no db directory); check --dir",
        dir.display()
    )]
    NoLog { dir: PathBuf },

    /// On open: `<dir>/db` holds data but no format marker, so it is not a
    /// log written by this crate.
    #[error(
        "{}/db holds data but no ecom-log format marker; check that --dir points at a log directory",
        dir.display()
    )]
    NotALog { dir: PathBuf },

    /// An entry failed its checksum, did not decode, or is missing from a
    /// range that must be contiguous. Raised by `Log::open` for entries the
    /// projector has not applied yet (checkpoint to end) and by `read_from`.
    #[error(
        "log {} is corrupt at entry seq {seq}: {reason}; run `ecom-pipeline log verify --dir {}` for the full list, then restore the directory from a backup or replay the source into a new log",
        dir.display(),
        dir.display()
    )]
    Corrupt {
        dir: PathBuf,
        seq: u64,
        reason: String,
    },

    /// On open: a file of the log cannot be read as it should: sled refused
    /// or panicked while recovering its database (`<dir>/db/db`,
    /// `<dir>/db/conf`), or `<dir>/HIGH_WATER` is malformed.
    #[error(
        "log {} is damaged: {} {reason}; run `ecom-pipeline log verify --dir {}`; restore the directory from a backup, or copy what is readable into a new log with `ecom-pipeline log salvage --dir {} --into NEW_DIR`",
        dir.display(),
        file.display(),
        dir.display(),
        dir.display()
    )]
    Damaged {
        dir: PathBuf,
        file: PathBuf,
        reason: String,
    },

    /// On open: the database holds fewer records than the log had when it
    /// was last opened or closed (recorded in `<dir>/HIGH_WATER`): sled
    /// recovered a truncated or overwritten file to a shorter prefix, and
    /// the records past it, all acknowledged, are gone.
    #[error(
        "log {} lost records: its database file {}/db/db holds entries below seq {found_next_seq} and {found_quarantine} quarantined, but the log had reached {recorded_next_seq} entries and {recorded_quarantine} quarantined when it was last opened or closed (recorded in {}/HIGH_WATER); entries {found_next_seq}..{recorded_next_seq} were acknowledged and are no longer there (the file was truncated or overwritten). Restore the directory from a backup; or run `ecom-pipeline log salvage --dir {} --into NEW_DIR` to keep what is readable, and have the source redeliver the rest (Pub/Sub: seek the subscription to a time before the loss)",
        dir.display(),
        dir.display(),
        dir.display(),
        dir.display()
    )]
    Truncated {
        dir: PathBuf,
        found_next_seq: u64,
        recorded_next_seq: u64,
        found_quarantine: u64,
        recorded_quarantine: u64,
    },

    /// `Log::salvage`: the target directory already holds a log.
    #[error(
        "refusing to salvage into {}: it already holds a log; name a new directory (salvage never writes into an existing log)",
        into.display()
    )]
    SalvageTarget { into: PathBuf },

    /// A quarantine record failed its checksum or did not decode (raised by
    /// `Log::rejected`).
    #[error(
        "log {} is corrupt at quarantine seq {seq}: {reason}; run `ecom-pipeline log verify --dir {}` for the full list",
        dir.display(),
        dir.display()
    )]
    CorruptQuarantine {
        dir: PathBuf,
        seq: u64,
        reason: String,
    },

    /// On open: a meta value (next sequence, checkpoint, counters) is missing
    /// or malformed.
    #[error(
        "log {} has a bad meta value `{key}`: {reason}; run `ecom-pipeline log verify --dir {}` and restore the directory from a backup",
        dir.display(),
        dir.display()
    )]
    CorruptMeta {
        dir: PathBuf,
        key: &'static str,
        reason: String,
    },

    /// `append`: a message could not be encoded (in practice: it is larger
    /// than the 64 MiB record limit). Nothing of the batch was written.
    #[error(
        "message {message_id:?} cannot be stored: {reason}; nothing of this batch was written — reject or split the message upstream"
    )]
    Encode { message_id: String, reason: String },

    /// `set_checkpoint` was asked to move the checkpoint backwards: a bug in
    /// the caller (the projector), which must only advance it.
    #[error(
        "refusing to move the checkpoint of {} backwards from {current} to {requested}; the checkpoint only advances — this is a bug in the caller",
        dir.display()
    )]
    CheckpointBackwards {
        dir: PathBuf,
        current: u64,
        requested: u64,
    },

    /// `set_checkpoint` was asked to move the checkpoint past the end of the
    /// log: a bug in the caller.
    #[error(
        "refusing to set the checkpoint of {} to {requested}, beyond the end of the log (next_seq {next_seq}); this is a bug in the caller",
        dir.display()
    )]
    CheckpointBeyondEnd {
        dir: PathBuf,
        requested: u64,
        next_seq: u64,
    },

    /// `append`: the group commit this batch was part of failed (sled or
    /// the fsync returned an error). The writer thread stopped with it,
    /// because what reached the disk is now uncertain; the batch may or may
    /// not be in the log after a restart, so it must not be acknowledged
    /// (a redelivery is answered as `Duplicate` if it is). Fatal for this
    /// process: see [`LogError::is_fatal`].
    // `cause` is printed in the message (it says what to fix: permissions,
    // a failing disk) but deliberately not a `#[source]`, so that an error
    // chain printed with `{:#}` does not repeat it.
    #[error(
        "group commit to the log in {} failed: {cause}; the log writer stopped because what reached the disk is uncertain, and the batch was not acknowledged; fix the cause and restart the process: opening the log re-verifies it (if opening fails, run `ecom-pipeline log verify --dir {}`)",
        dir.display(),
        dir.display()
    )]
    CommitFailed { dir: PathBuf, cause: Box<LogError> },

    /// The filesystem holding the log is full (`ENOSPC`) or the owner's
    /// quota on it is used up (`EDQUOT`): sled or our `fdatasync` could not
    /// write. From `append`, it is a failed group commit like
    /// [`LogError::CommitFailed`]: the writer stopped, the batch was not
    /// acknowledged, later appends fail with [`LogError::WriterStopped`],
    /// and it [`is_fatal`](LogError::is_fatal). `Log::open`,
    /// `set_checkpoint` and `flush` return it too when they meet a full
    /// disk. Nothing acknowledged is lost: an append returns only after the
    /// flush that covers it succeeded.
    #[error(
        "the disk holding the log directory {} is full ({source}): nothing more can be written to the log until there is room; nothing acknowledged was lost (a message is acknowledged only once it is on disk, the rest is redelivered). Free space on that filesystem, or stop the pipeline, move the whole directory to a filesystem with room and pass its new path with --log-dir; then restart (opening the log re-verifies it)",
        dir.display()
    )]
    DiskFull {
        dir: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// `append` after the writer thread stopped: an earlier group commit
    /// failed (its callers got that error) or the thread panicked. Appends
    /// are refused from then on because what reached the disk is uncertain.
    #[error(
        "the log writer for {} stopped after an earlier failure ({cause}); nothing more can be written to it by this process: restart the process (opening the log re-verifies it), and if opening fails run `ecom-pipeline log verify --dir {}`",
        dir.display(),
        dir.display()
    )]
    WriterStopped { dir: PathBuf, cause: String },
}

impl LogError {
    /// Whether retrying the same call later may succeed without anyone
    /// intervening. Only `Locked` is: the holder may exit.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Locked { .. })
    }

    /// Whether this `Log` can no longer be written in this process: a group
    /// commit failed ([`LogError::CommitFailed`], or [`LogError::DiskFull`]
    /// when the disk was full) or the writer had already stopped
    /// ([`LogError::WriterStopped`]). Every later append fails too,
    /// so the caller should stop and let the process be restarted; any other
    /// append error concerns only the batch it was given.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LogError::CommitFailed { .. }
                | LogError::WriterStopped { .. }
                | LogError::DiskFull { .. }
        )
    }

    /// This error as [`LogError::DiskFull`] for the log in `dir` when what
    /// failed underneath is a full disk or quota, else unchanged. A full
    /// disk needs a different remedy from a failing one, so it gets its own
    /// message, wherever in the log it was met.
    pub(crate) fn or_disk_full(self, dir: &Path) -> LogError {
        let io = match &self {
            LogError::Io { source, .. } if is_disk_full(source) => Some(clone_io(source)),
            LogError::Storage { source, .. } => match source.as_ref() {
                sled::Error::Io(e) if is_disk_full(e) => Some(clone_io(e)),
                _ => None,
            },
            _ => None,
        };
        match io {
            Some(source) => LogError::DiskFull {
                dir: dir.to_path_buf(),
                source: Arc::new(source),
            },
            None => self,
        }
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn storage(dir: &Path) -> impl FnOnce(sled::Error) -> LogError + '_ {
        move |source| {
            LogError::Storage {
                dir: dir.to_path_buf(),
                source: Arc::new(source),
            }
            .or_disk_full(dir)
        }
    }
}

/// Whether an I/O error means "no space": `ENOSPC` (28) or `EDQUOT` (122)
/// as an OS error, or the kinds std maps them to. The kind matters because
/// sled hands out *copies* of the error that stopped it (its sticky global
/// error, cloned as `io::Error::new(kind, text)`), which keep the kind but
/// lose the OS error number.
fn is_disk_full(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// An owned copy of a shared I/O error: its OS error number when it has
/// one ("No space left on device (os error 28)"), else just its kind ("no
/// storage space"), not the Debug text that sled's copies carry.
fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::from(e.kind()),
    }
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => format!(
            "process {pid} (this process: another `Log` for this directory is still open; share it instead of opening twice)"
        ),
        Some(pid) => format!("process {pid}"),
        None => "another process (its pid could not be read from LOCK)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(e: io::Error) -> LogError {
        LogError::storage(Path::new("/logs/a"))(sled::Error::Io(e))
    }

    #[test]
    fn no_space_is_disk_full_whether_it_carries_the_os_error_or_only_its_kind() {
        for e in [
            io::Error::from_raw_os_error(28),
            io::Error::from_raw_os_error(122),
            // What sled's sticky error looks like after it cloned it.
            io::Error::new(io::ErrorKind::StorageFull, "Os { code: 28, .. }"),
            io::Error::from(io::ErrorKind::QuotaExceeded),
        ] {
            let what = format!("{e:?}");
            let err = storage(e);
            assert!(
                matches!(&err, LogError::DiskFull { dir, .. } if dir == Path::new("/logs/a")),
                "{what}: {err}"
            );
            assert!(err.is_fatal());
        }
        let io = LogError::io(Path::new("/logs/a/db/db"))(io::Error::from_raw_os_error(28));
        assert!(matches!(
            io.or_disk_full(Path::new("/logs/a")),
            LogError::DiskFull { .. }
        ));
    }

    #[test]
    fn other_io_errors_stay_what_they_are() {
        let err = storage(io::Error::from_raw_os_error(5)); // EIO
        assert!(matches!(err, LogError::Storage { .. }), "{err}");
        let err = LogError::io(Path::new("/x"))(io::Error::from(io::ErrorKind::PermissionDenied))
            .or_disk_full(Path::new("/x"));
        assert!(matches!(err, LogError::Io { .. }), "{err}");
    }
}
