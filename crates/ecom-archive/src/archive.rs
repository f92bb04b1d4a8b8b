//! The archive of one instance in an object store: sealing segments from
//! the log, listing and checking manifests, reading segments back.
//!
//! The format and its checks are in `format`; this module is the I/O around
//! them and the order of the puts, which is what makes a seal safe to
//! interrupt (see "Sealing" in the crate docs).

use std::num::NonZeroUsize;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use ecom_log::{Log, LogEntry, Quarantined};
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::error::ArchiveError;
use crate::format::{
    self, ArchivedRecord, Manifest, ObjectName, SegmentKind, decode_segment, encode_segment,
};
use crate::location::{self, Location};

/// Manifests fetched at once while listing: enough to hide a remote store's
/// latency, few enough not to flood it.
const CONCURRENT_MANIFEST_GETS: usize = 16;

/// The archive of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    instance: String,
    /// Set when `store` is a local directory: what is needed to fsync what
    /// it wrote (see "Sealing" in the crate docs).
    local: Option<LocalDir>,
}

/// A local archive directory: the store (which maps object paths to files)
/// and its canonical root.
#[derive(Clone)]
struct LocalDir {
    fs: Arc<LocalFileSystem>,
    root: PathBuf,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("store", &self.store.to_string())
            .field("instance", &self.instance)
            .finish()
    }
}

/// What one [`Archive::seal`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Entry segments sealed, in sequence order.
    pub entries: Vec<Manifest>,
    /// Quarantine segments sealed, in sequence order.
    pub quarantine: Vec<Manifest>,
    /// Data files of incomplete seals (no manifest) deleted because the
    /// new segments cover their range.
    pub removed_incomplete: Vec<String>,
}

impl SealReport {
    /// Entries archived by this seal.
    pub fn entries_sealed(&self) -> u64 {
        self.entries.iter().map(|m| m.count).sum()
    }

    /// Quarantined messages archived by this seal.
    pub fn quarantine_sealed(&self) -> u64 {
        self.quarantine.iter().map(|m| m.count).sum()
    }
}

impl Archive {
    /// The archive of `instance` in `store` (see the crate docs for the
    /// layout). Refuses an instance name that is not one plain path segment.
    pub fn new(store: Arc<dyn ObjectStore>, instance: &str) -> Result<Archive, ArchiveError> {
        if !format::valid_instance(instance) {
            return Err(ArchiveError::InvalidInstance {
                instance: instance.to_string(),
            });
        }
        Ok(Archive {
            store,
            instance: instance.to_string(),
            local: None,
        })
    }

    /// The archive of `instance` in the local directory `dir` (created if
    /// missing). A seal fsyncs what it wrote before it returns (see
    /// "Sealing" in the crate docs).
    pub fn local(dir: &FsPath, instance: &str) -> Result<Archive, ArchiveError> {
        let local_dir = |source| ArchiveError::LocalDir {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(local_dir)?;
        let root = std::fs::canonicalize(dir).map_err(local_dir)?;
        let fs = Arc::new(
            LocalFileSystem::new_with_prefix(&root)
                .map_err(|e| local_dir(std::io::Error::other(e.to_string())))?,
        );
        let mut archive = Archive::new(fs.clone(), instance)?;
        archive.local = Some(LocalDir { fs, root });
        Ok(archive)
    }

    /// The archive of `instance` at `location`, as the `archive` setting
    /// gives it: a directory or `file:///path` ([`Archive::local`]), or
    /// `gs://bucket[/prefix]` / `s3://bucket[/prefix]`, configured from the
    /// `GOOGLE_*` / `AWS_*` environment variables (see the crate docs,
    /// "Where an archive lives").
    pub fn open(location: &str, instance: &str) -> Result<Archive, ArchiveError> {
        match Location::parse(location)? {
            Location::Local(dir) => Archive::local(&dir, instance),
            Location::Bucket {
                cloud,
                bucket,
                prefix,
            } => {
                let store = location::bucket_store(cloud, &bucket, &prefix, &|name| {
                    std::env::var(name).ok()
                })?;
                Archive::new(store, instance)
            }
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Archives what is not archived yet: the entries from the archive's
    /// end up to but excluding `upto` (the projector's checkpoint), and
    /// every quarantined message, in segments of at most `max_per_segment`
    /// records. Idempotent and resumable: after any failure, run it again.
    ///
    /// `upto` below the archive's end archives no entries; beyond the log's
    /// end it is [`ArchiveError::UptoBeyondLog`].
    pub async fn seal(
        &self,
        log: &Log,
        upto: u64,
        max_per_segment: NonZeroUsize,
    ) -> Result<SealReport, ArchiveError> {
        let next_seq = log.next_seq();
        if upto > next_seq {
            return Err(ArchiveError::UptoBeyondLog { upto, next_seq });
        }
        let mut report = SealReport::default();

        let start = self.resume_point(SegmentKind::Entries).await?;
        let mut from = start;
        while from < upto {
            let wanted = (upto - from).min(max_per_segment.get() as u64) as usize;
            let reader = log.clone();
            let entries = blocking(move || reader.read_from(from, wanted)).await?;
            let records: Vec<ArchivedRecord> =
                entries.into_iter().map(ArchivedRecord::Entry).collect();
            let manifest = self.write_segment(SegmentKind::Entries, records).await?;
            from = manifest.last_seq + 1;
            report.entries.push(manifest);
        }
        report.removed_incomplete.extend(
            self.remove_incomplete(SegmentKind::Entries, start..from)
                .await?,
        );

        // The quarantine is small (rejected messages only) and `rejected`
        // reads all of it; archive everything it returned.
        let start = self.resume_point(SegmentKind::Quarantine).await?;
        let reader = log.clone();
        let rejected = blocking(move || reader.rejected()).await?;
        let pending: Vec<ArchivedRecord> = rejected
            .into_iter()
            .filter(|q| q.seq >= start)
            .map(ArchivedRecord::Quarantined)
            .collect();
        let mut end = start;
        for chunk in pending.chunks(max_per_segment.get()) {
            let manifest = self
                .write_segment(SegmentKind::Quarantine, chunk.to_vec())
                .await?;
            end = manifest.last_seq + 1;
            report.quarantine.push(manifest);
        }
        report.removed_incomplete.extend(
            self.remove_incomplete(SegmentKind::Quarantine, start..end)
                .await?,
        );
        Ok(report)
    }

    /// Where a seal of `kind` continues: the archive's end. For a local
    /// archive the last sealed segment is fsynced first (again): a seal
    /// that failed in its fsyncs left it in place, and this one must not
    /// return before it is durable.
    async fn resume_point(&self, kind: SegmentKind) -> Result<u64, ArchiveError> {
        let manifests = self.manifests(kind).await?;
        let Some(last) = manifests.last() else {
            return Ok(0);
        };
        if self.local.is_some() {
            self.sync_local(&last.data_path()).await?;
            self.sync_local(&last.manifest_path()).await?;
        }
        Ok(last.last_seq + 1)
    }

    /// Puts one segment: the data file, then (the commit) its manifest.
    async fn write_segment(
        &self,
        kind: SegmentKind,
        records: Vec<ArchivedRecord>,
    ) -> Result<Manifest, ArchiveError> {
        let instance = self.instance.clone();
        // Compressing a segment is CPU work of milliseconds to seconds: off
        // the runtime's threads.
        let (data, manifest) =
            blocking(move || Ok::<_, ArchiveError>(encode_segment(&instance, kind, &records)))
                .await?;
        let data_path = manifest.data_path();
        self.store
            .put(&data_path, PutPayload::from(data))
            .await
            .map_err(store_error("write", &data_path))?;
        self.sync_local(&data_path).await?;
        let manifest_path = manifest.manifest_path();
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(
                &manifest_path,
                PutPayload::from(manifest.to_bytes()),
                create,
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(ArchiveError::AlreadySealed {
                    instance: self.instance.clone(),
                    path: manifest_path.to_string(),
                });
            }
            Err(e) => return Err(store_error("write", &manifest_path)(e)),
        }
        self.sync_local(&manifest_path).await?;
        tracing::info!(
            instance = %self.instance,
            %kind,
            first_seq = manifest.first_seq,
            last_seq = manifest.last_seq,
            bytes = manifest.bytes,
            "archive segment sealed"
        );
        Ok(manifest)
    }

    /// For a local archive: fsyncs the file the store has just written at
    /// `path`, then every directory from its parent up to the archive's
    /// root and the root's parent, so the file and its name survive a power
    /// cut (`LocalFileSystem` renames or links without fsync). Remote
    /// stores acknowledge a put once it is durable: nothing to do.
    async fn sync_local(&self, path: &Path) -> Result<(), ArchiveError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let file = local
            .fs
            .path_to_filesystem(path)
            .map_err(store_error("sync", path))?;
        let root = local.root.clone();
        blocking(move || {
            let synced = |what: &FsPath| {
                let sync = |p: &FsPath| std::fs::File::open(p)?.sync_all();
                sync(what).map_err(|source| ArchiveError::LocalSync {
                    path: what.to_path_buf(),
                    source,
                })
            };
            synced(&file)?;
            let mut dir = file.parent();
            while let Some(d) = dir {
                synced(d)?;
                if d == root {
                    if let Some(parent) = d.parent() {
                        synced(parent)?;
                    }
                    break;
                }
                dir = d.parent();
            }
            Ok::<_, ArchiveError>(())
        })
        .await
    }

    /// Deletes data files without a manifest whose whole range lies in
    /// `sealed`, the range this seal has just covered with manifests: they
    /// are incomplete seals of records now sealed elsewhere. Others are
    /// left alone (readers ignore them), so nothing that may be the only
    /// copy of a record is deleted.
    async fn remove_incomplete(
        &self,
        kind: SegmentKind,
        sealed: std::ops::Range<u64>,
    ) -> Result<Vec<String>, ArchiveError> {
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        let objects = self.list(kind).await?;
        let manifests: Vec<(u64, u64)> = objects
            .iter()
            .filter_map(|(_, name)| match name {
                ObjectName::Manifest { first, last } => Some((*first, *last)),
                ObjectName::Data { .. } => None,
            })
            .collect();
        let mut removed = Vec::new();
        for (path, name) in objects {
            let ObjectName::Data { first, last } = name else {
                continue;
            };
            if manifests.contains(&(first, last))
                || !(sealed.contains(&first) && sealed.contains(&last))
            {
                continue;
            }
            self.store
                .delete(&path)
                .await
                .map_err(store_error("delete", &path))?;
            tracing::info!(path = %path, "removed the data file of an incomplete archive seal");
            removed.push(path.to_string());
        }
        Ok(removed)
    }

    /// The objects of one kind that belong to the layout, with what their
    /// names say.
    async fn list(&self, kind: SegmentKind) -> Result<Vec<(Path, ObjectName)>, ArchiveError> {
        let dir = format::kind_dir(&self.instance, kind);
        let metas: Vec<_> = match self.store.list(Some(&dir)).try_collect().await {
            Ok(metas) => metas,
            // Listing a prefix that has no objects is an empty list; only a
            // missing bucket fails. object_store 0.12 reports that as a
            // generic error carrying the service's answer, whose error code
            // is `NoSuchBucket` in S3's protocol and GCS's XML API alike.
            Err(source)
                if matches!(source, object_store::Error::NotFound { .. })
                    || source.to_string().contains("<Code>NoSuchBucket</Code>") =>
            {
                return Err(ArchiveError::MissingBucket {
                    path: dir.to_string(),
                    source,
                });
            }
            Err(e) => return Err(store_error("list", &dir)(e)),
        };
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                // Only direct children: `list` is recursive.
                let name = meta.location.prefix_match(&dir).and_then(|mut rest| {
                    match (rest.next(), rest.next()) {
                        (Some(file), None) => format::parse_name(file.as_ref()),
                        _ => None,
                    }
                })?;
                Some((meta.location, name))
            })
            .collect())
    }

    /// The sealed segments of one kind, in sequence order, checked: each
    /// manifest parses and matches its name, and together they cover
    /// `0..=last` without gaps or overlaps.
    pub async fn manifests(&self, kind: SegmentKind) -> Result<Vec<Manifest>, ArchiveError> {
        let paths: Vec<Path> = self
            .list(kind)
            .await?
            .into_iter()
            .filter(|(_, name)| matches!(name, ObjectName::Manifest { .. }))
            .map(|(path, _)| path)
            .collect();
        let mut manifests: Vec<Manifest> = futures::stream::iter(paths)
            .map(|path| async move {
                let bytes = self
                    .store
                    .get(&path)
                    .await
                    .map_err(store_error("read", &path))?
                    .bytes()
                    .await
                    .map_err(store_error("read", &path))?;
                Manifest::parse(&path, &bytes, &self.instance, kind)
            })
            .buffer_unordered(CONCURRENT_MANIFEST_GETS)
            .try_collect()
            .await?;
        manifests.sort_by_key(|m| m.first_seq);
        let mut expected = 0;
        let mut previous: Option<&Manifest> = None;
        for manifest in &manifests {
            if manifest.first_seq > expected {
                return Err(ArchiveError::Gap {
                    instance: self.instance.clone(),
                    kind,
                    from: expected,
                    to: manifest.first_seq - 1,
                    next: manifest.manifest_path().to_string(),
                });
            }
            if let Some(previous) = previous.filter(|_| manifest.first_seq < expected) {
                return Err(ArchiveError::Overlap {
                    instance: self.instance.clone(),
                    kind,
                    previous: previous.manifest_path().to_string(),
                    previous_last: previous.last_seq,
                    next: manifest.manifest_path().to_string(),
                    next_first: manifest.first_seq,
                });
            }
            expected = manifest.last_seq + 1;
            previous = Some(manifest);
        }
        Ok(manifests)
    }

    /// The next sequence number of `kind` not archived yet (0 for an empty
    /// archive). Checks the manifests as [`Archive::manifests`] does.
    pub async fn archived_upto(&self, kind: SegmentKind) -> Result<u64, ArchiveError> {
        Ok(self
            .manifests(kind)
            .await?
            .last()
            .map_or(0, |m| m.last_seq + 1))
    }

    /// The records of one sealed segment, checked against its manifest
    /// (size, SHA-256, every line, count).
    pub async fn read_segment(
        &self,
        manifest: &Manifest,
    ) -> Result<Vec<ArchivedRecord>, ArchiveError> {
        let path = manifest.data_path();
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await.map_err(store_error("read", &path))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArchiveError::MissingData {
                    path: path.to_string(),
                    manifest: manifest.manifest_path().to_string(),
                });
            }
            Err(e) => return Err(store_error("read", &path)(e)),
        };
        let manifest = manifest.clone();
        blocking(move || decode_segment(&manifest, &bytes)).await
    }

    /// Every archived entry, in sequence order, as the log had it.
    pub async fn read_entries(&self) -> Result<Vec<LogEntry>, ArchiveError> {
        let mut out = Vec::new();
        for manifest in self.manifests(SegmentKind::Entries).await? {
            out.extend(self.read_segment(&manifest).await?.into_iter().map(
                |record| match record {
                    ArchivedRecord::Entry(entry) => entry,
                    ArchivedRecord::Quarantined(_) => {
                        unreachable!("decode_segment checks that an entries segment holds entries")
                    }
                },
            ));
        }
        Ok(out)
    }

    /// Every archived quarantined message, in quarantine order, as the log
    /// had it.
    pub async fn read_quarantine(&self) -> Result<Vec<Quarantined>, ArchiveError> {
        let mut out = Vec::new();
        for manifest in self.manifests(SegmentKind::Quarantine).await? {
            out.extend(self.read_segment(&manifest).await?.into_iter().map(
                |record| match record {
                    ArchivedRecord::Quarantined(q) => q,
                    ArchivedRecord::Entry(_) => {
                        unreachable!("decode_segment checks that a quarantine segment holds quarantined records")
                    }
                },
            ));
        }
        Ok(out)
    }
}

fn store_error(op: &'static str, path: &Path) -> impl FnOnce(object_store::Error) -> ArchiveError {
    let path = path.to_string();
    move |source| ArchiveError::Store { op, path, source }
}

/// Runs blocking work (log reads, compression) on tokio's blocking pool; a
/// panic there is a bug and is resumed here.
async fn blocking<T: Send + 'static, E: Into<ArchiveError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ArchiveError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a blocking task, and then
            // nobody awaits this future any more.
            Err(e) => panic!("archive work was cancelled: {e}"),
        },
    }
}
