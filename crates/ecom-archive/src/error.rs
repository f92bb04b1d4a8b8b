//! Why an archive operation failed, in words that say what to do next.
//!
//! Two families: the store could not be reached or refused an operation
//! ([`ArchiveError::Store`], often worth retrying, see
//! [`ArchiveError::is_retryable`]), and the archive is not what its
//! manifests say (damage: never retryable, never skipped; each names the
//! object and what is wrong).

use ecom_log::LogError;

use crate::format::SegmentKind;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The instance name cannot be one path segment of the archive.
    #[error(
        "archive instance name {instance:?} is not usable as a path segment: use ASCII letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    InvalidInstance { instance: String },

    /// The `archive` setting is not a directory, `file:///path`,
    /// `gs://bucket[/prefix]` or `s3://bucket[/prefix]` (user information of
    /// a URL is shown as `<redacted>`).
    #[error("archive location {location:?} is not usable: {reason}")]
    BadLocation { location: String, reason: String },

    /// A bucket location, but no credentials are configured in the
    /// environment (the cloud's metadata server is used only when asked
    /// for). `help` names the variables to set.
    #[error("archive location {location}: no credentials are configured; {help}")]
    MissingCredentials {
        location: String,
        help: &'static str,
    },

    /// object_store refused the configuration of a bucket's client (an
    /// unreadable service account file, a bad region or endpoint, …).
    #[error(
        "archive location {location}: cannot configure the object store client: {source}; check the GOOGLE_* or AWS_* environment variables"
    )]
    StoreConfig {
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// Listing the archive found no bucket: it does not exist, or these
    /// credentials may not see it.
    #[error(
        "archive bucket not found while listing {path}: create the bucket (or fix its name in the archive setting) and check that the configured credentials may list and write it"
    )]
    MissingBucket {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The local archive directory could not be created or opened.
    #[error(
        "cannot use {dir} as the archive directory: {source}; check that the path is a writable directory"
    )]
    LocalDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// fsync of a file or directory of a local archive failed: the segment
    /// being sealed may not survive a power cut, so the seal failed.
    #[error(
        "could not fsync {path} in the local archive: {source}; the seal did not complete: do not prune, check the disk, then run the seal again"
    )]
    LocalSync {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `seal` was asked to archive entries the log does not have yet.
    #[error(
        "cannot seal up to entry {upto}: the log ends at {next_seq}; pass the projector's checkpoint, which is never beyond the log's end"
    )]
    UptoBeyondLog { upto: u64, next_seq: u64 },

    /// Reading the log failed; its error says what to run.
    #[error("reading the log to archive it failed: {0}")]
    Log(#[from] LogError),

    /// The object store refused or failed an operation (network, access,
    /// quota). Retryable unless the store says otherwise.
    #[error(
        "archive store: could not {op} {path}: {source}; check the store's reachability and permissions, then run again"
    )]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// A manifest to be created exists already: another process sealed the
    /// same range of this instance's archive (there must be one sealer per
    /// instance).
    #[error(
        "archive manifest {path} appeared while this process was sealing it: another process seals instance {instance}'s archive; stop it (one sealer per instance, the log's owner), then run again"
    )]
    AlreadySealed { instance: String, path: String },

    /// A manifest names a data file that is not in the store.
    #[error(
        "archive data file {path} is missing, but its manifest {manifest} exists: restore the file from a copy of the archive (its manifest gives size and SHA-256)"
    )]
    MissingData { path: String, manifest: String },

    /// A manifest could not be parsed, or contradicts its own name.
    #[error("archive manifest {path} is invalid: {reason}; restore it from a copy of the archive")]
    BadManifest { path: String, reason: String },

    /// A data file's size differs from its manifest's (typically truncated).
    #[error(
        "archive data file {path} is {actual} bytes but its manifest says {expected}: it was truncated or replaced; restore it from a copy of the archive"
    )]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },

    /// A data file's SHA-256 differs from its manifest's.
    #[error(
        "archive data file {path} fails its checksum (SHA-256 {actual}, manifest says {expected}): it is damaged; restore it from a copy of the archive"
    )]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    /// A data file with the right checksum does not decode: it was written
    /// wrong (a bug), or replaced together with its manifest.
    #[error(
        "archive data file {path} is not a valid segment: {reason}; it was written by another program or version; restore it from a copy of the archive"
    )]
    BadData { path: String, reason: String },

    /// One line of a data file does not decode, or has the wrong sequence
    /// number.
    #[error(
        "archive data file {path}, line {line}: {reason}; restore the file from a copy of the archive"
    )]
    BadLine {
        path: String,
        line: usize,
        reason: String,
    },

    /// A data file holds another number of records than its manifest says.
    #[error(
        "archive data file {path} holds {found} records but its manifest says {expected}; restore it from a copy of the archive"
    )]
    CountMismatch {
        path: String,
        expected: u64,
        found: u64,
    },

    /// No manifest covers a range of sequence numbers between two that do
    /// (or before the first one): a segment was deleted or never sealed.
    #[error(
        "the {kind} archive of instance {instance} is missing seqs {from}..={to} (no manifest covers them; the next one is {next}); restore them from a copy of the archive, and do not prune the log while the gap exists"
    )]
    Gap {
        instance: String,
        kind: SegmentKind,
        from: u64,
        to: u64,
        next: String,
    },

    /// Two manifests cover the same sequence numbers.
    #[error(
        "the {kind} archive of instance {instance} has overlapping segments: {previous} ends at seq {previous_last}, {next} starts at seq {next_first}; one was written by another program or by hand: move the one that does not belong out of the archive"
    )]
    Overlap {
        instance: String,
        kind: SegmentKind,
        previous: String,
        previous_last: u64,
        next: String,
        next_first: u64,
    },
}

impl ArchiveError {
    /// Whether running the same operation again may succeed without anyone
    /// repairing anything: store failures other than "not found" and
    /// conflicts. Damage, bad arguments and log errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ArchiveError::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            _ => false,
        }
    }
}
