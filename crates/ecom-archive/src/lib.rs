//! # ecom-archive: sealed, immutable segments of the log in an object store
//!
//! A log grows without end (`ecom-log` deletes nothing), so a long-running
//! instance needs its local disk bounded. This crate is the first step: it
//! copies the entries the projector is done with (below its checkpoint), and
//! the quarantine, into immutable *segments* in an object store, each with a
//! manifest that says exactly what it holds and how to check it. Pruning the
//! local log and replaying from the archive build on it; they may delete a
//! log entry only once a segment holding it is sealed (see "Sealing").
//!
//! The storage is an [`object_store::ObjectStore`]: a local directory
//! ([`Archive::local`], `LocalFileSystem`), a Google Cloud Storage or S3
//! bucket ([`Archive::open`] with `gs://` or `s3://`), or anything else
//! given to [`Archive::new`]. Tests use `object_store::memory::InMemory`
//! and a real S3 server too.
//!
//! ## Where an archive lives
//!
//! [`Archive::open`] takes the `archive` setting:
//!
//! ```text
//! /var/lib/ecom/archive         a local directory (created if missing)
//! file:///var/lib/ecom/archive  the same
//! gs://bucket[/prefix]          Google Cloud Storage
//! s3://bucket[/prefix]          S3, or an S3-compatible server (AWS_ENDPOINT)
//! ```
//!
//! A bucket's client is configured from the environment exactly as
//! object_store's builders read it (`from_env`): for GCS
//! `GOOGLE_APPLICATION_CREDENTIALS` or `GOOGLE_SERVICE_ACCOUNT` (a service
//! account key file), `GOOGLE_SERVICE_ACCOUNT_KEY` (its JSON), or the file
//! `gcloud auth application-default login` writes; for S3
//! `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
//! `AWS_REGION`, and for another server `AWS_ENDPOINT` (+ `AWS_ALLOW_HTTP=true`
//! for plain HTTP). Credentials must be configured: without any, `open`
//! fails at once saying what to set, instead of object_store trying the
//! cloud's instance metadata server (for S3, setting `AWS_METADATA_ENDPOINT`
//! asks for the instance's role). The archive is put under `prefix` with
//! `object_store::prefix::PrefixStore`; below it the layout is the one
//! below. A bucket that does not exist is [`ArchiveError::MissingBucket`]
//! on first use. Errors name variables, never their values.
//!
//! The GCS path is built and configured but not exercised against a server
//! in our tests: the emulator available as a Go module (fake-gcs-server)
//! does not implement the XML object API that object_store's GCS client
//! puts with. The S3 path runs against gofakes3 (`scripts/fake-s3.sh`).
//!
//! ## Design constraints
//!
//! - Readable without us: a segment is gzip-compressed JSON lines, so an
//!   analyst runs `zcat <segment>.jsonl.gz | jq` and sees every message with
//!   its provenance. The raw bytes are kept exactly (base64), because a
//!   message may be invalid UTF-8 or invalid JSON (the quarantine is made of
//!   such messages).
//! - Object stores have atomic single-object puts and no rename, append or
//!   multi-object transaction. A segment is therefore two objects, written in
//!   a fixed order, and the second one (the manifest) is the commit.
//! - One sealer per instance: the process that owns the log (`ecom-log`'s
//!   directory lock). A second sealer is detected, not tolerated: manifests
//!   are created with [`object_store::PutMode::Create`], so it fails with
//!   [`ArchiveError::AlreadySealed`] instead of replacing a segment.
//! - Nothing is skipped silently: a missing, truncated or altered object, or
//!   a hole in the sequence of segments, is an error naming the object and
//!   what is wrong.
//!
//! ## Layout
//!
//! ```text
//! <instance>/entries/<first_seq:020>-<last_seq:020>.jsonl.gz        data
//! <instance>/entries/<first_seq:020>-<last_seq:020>.manifest.json   its manifest
//! <instance>/quarantine/<first_seq:020>-<last_seq:020>.jsonl.gz
//! <instance>/quarantine/<first_seq:020>-<last_seq:020>.manifest.json
//! ```
//!
//! Paths are relative to the store's root; wrap the store in
//! `object_store::prefix::PrefixStore` to put the archive under a prefix of
//! a bucket. `first_seq` and `last_seq` are inclusive, zero-padded to 20
//! digits (every `u64`), so the names sort in sequence order. Entries and
//! quarantine have their own sequences, as in the log. `<instance>` is one
//! path segment of ASCII letters, digits, `.`, `_` and `-`, not starting
//! with `.` ([`Archive::new`] refuses anything else).
//!
//! ## Data file (`.jsonl.gz`)
//!
//! gzip (RFC 1952, one member, header mtime 0, so equal records give equal
//! bytes) of UTF-8 JSON lines, each ended by `\n`, one per log record in
//! sequence order without gaps. Fields, in this order:
//!
//! ```text
//! seq              u64      the record's sequence number in the log
//! appended_at_ms   i64      wall clock (ms since the Unix epoch) of the append
//! message_id       string   the transport's message id
//! topic            string   "orders_data" | "payments_data" (ecom_core::Topic::name)
//! publish_time_us  i64      publish time (µs since the Unix epoch), as the broker stamped it
//! attributes       object   string -> string, the transport attributes
//! data_base64      string   the raw message bytes, standard base64 with padding (RFC 4648 §4)
//! reason           string   quarantine only: why the message was rejected
//! ```
//!
//! An entries line has no `reason`; a quarantine line must have one. A
//! reader of format 1 refuses unknown fields.
//!
//! ## Manifest (`.manifest.json`)
//!
//! ```text
//! format_version        1
//! instance              the <instance> of its path
//! kind                  "entries" | "quarantine"
//! first_seq, last_seq   inclusive sequence range (as in the file name)
//! count                 number of lines, = last_seq - first_seq + 1
//! first_appended_at_ms  appended_at_ms of the first record
//! last_appended_at_ms   appended_at_ms of the last record (wall clocks may
//!                       step back, so treat the pair as approximate)
//! bytes                 size of the data file (compressed)
//! sha256                lowercase hex SHA-256 of the data file (compressed)
//! ```
//!
//! ## Sealing, and what is sealed when
//!
//! [`Archive::seal`] continues from the archive's end (the last manifest's
//! `last_seq + 1`, or 0 for an empty archive): it reads a segment's worth of
//! records from the log, encodes and checksums it, puts the data file
//! (overwriting any object of that name), and then creates the manifest.
//! **A segment is sealed exactly when its manifest exists**, and from then
//! on neither object is written again.
//!
//! A crash between the two puts leaves a data file without a manifest: an
//! incomplete seal. Readers never look at data files without a manifest.
//! The next seal starts at the same sequence number and overwrites it (same
//! name when the segment size is the same), or, if the segment boundaries
//! changed, deletes it once the new segments cover its range. Sealing is
//! therefore idempotent and resumable: run it again after any failure.
//!
//! **When `seal` returns, every segment it reports is durable**, so a
//! pruner may delete the log entries it holds. GCS and S3 acknowledge a put
//! once it is stored redundantly. `LocalFileSystem` writes a temporary file
//! and renames (or, for a create, hard-links) it without fsync, so for a
//! local archive the seal fsyncs each file after its put (the data file
//! before the manifest is created, then the manifest), and every directory
//! from the file's up to the archive's root and the root's parent, so the
//! names survive a power cut too. A seal that fails in an fsync returns the
//! error ([`ArchiveError::LocalSync`]) and must not be followed by a prune;
//! the next seal fsyncs the last sealed segment again before it continues,
//! so once a seal has returned `Ok`, everything sealed before it is durable
//! as well.
//!
//! ## Reading and checking
//!
//! [`Archive::manifests`] lists the manifests of one kind, checks each
//! against its name, and checks that together they cover `0..=last` without
//! a gap or an overlap ([`ArchiveError::Gap`], [`ArchiveError::Overlap`]).
//! [`Archive::read_segment`] fetches a data file and checks, in this order:
//! it exists, its size and SHA-256 match the manifest (a truncated or
//! altered object fails here), it is one valid gzip stream, every line
//! parses and carries the next sequence number, and the line count matches.
//!
//! The checks of bytes and lines are sans-io (`format`); `archive` is the
//! object-store and log I/O around them.

mod archive;
mod error;
mod format;
mod location;

pub use crate::archive::{Archive, SealReport};
pub use crate::error::ArchiveError;
pub use crate::format::{ArchivedRecord, FORMAT_VERSION, Manifest, SegmentKind};
