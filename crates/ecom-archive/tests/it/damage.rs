//! Damage is named, never skipped: a flipped byte, a missing or truncated
//! data file, a missing or mangled manifest, a line that does not decode.
//! Each error names the object and what is wrong with it.

use std::io::{Read, Write};

use ecom_archive::{ArchiveError, Manifest, SegmentKind};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::Digest;

use crate::support::{Backend, backends, fill, open_log, per_segment};

/// A log of 15 entries sealed as 0..=4, 5..=9, 10..=14; the log is
/// returned with its directory so the test can compare.
async fn sealed(backend: &Backend) -> (tempfile::TempDir, Vec<Manifest>) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 15, 0).await;
    let report = backend
        .archive
        .seal(&log, 15, per_segment(5))
        .await
        .unwrap();
    assert_eq!(report.entries.len(), 3);
    (dir, report.entries)
}

async fn get(store: &dyn ObjectStore, path: &Path) -> Vec<u8> {
    store
        .get(path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn put(store: &dyn ObjectStore, path: &Path, bytes: Vec<u8>) {
    store.put(path, PutPayload::from(bytes)).await.unwrap();
}

/// Rewrites the lines of a segment with `edit` and puts a manifest that
/// matches the new bytes, as a program that rewrote the segment would: only
/// the checks of the lines themselves can catch what it did.
async fn rewrite_segment(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    edit: impl FnOnce(Vec<String>) -> Vec<String>,
) {
    let data_path = manifest.data_path();
    let mut text = String::new();
    GzDecoder::new(get(store, &data_path).await.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    let lines = edit(text.lines().map(str::to_string).collect());
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in &lines {
        writeln!(gz, "{line}").unwrap();
    }
    let bytes = gz.finish().unwrap();
    let mut rewritten = manifest.clone();
    rewritten.bytes = bytes.len() as u64;
    rewritten.sha256 = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    put(store, &data_path, bytes).await;
    put(
        store,
        &manifest.manifest_path(),
        serde_json::to_vec(&rewritten).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_flipped_byte_is_a_checksum_error_naming_the_file() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let path = manifests[1].data_path();
        let mut bytes = get(backend.store.as_ref(), &path).await;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        put(backend.store.as_ref(), &path, bytes).await;

        let err = backend.archive.read_entries().await.unwrap_err();

        match &err {
            ArchiveError::ChecksumMismatch {
                path: named,
                expected,
                actual,
            } => {
                assert_eq!(named, path.as_ref(), "{}", backend.name);
                assert_eq!(expected, &manifests[1].sha256);
                assert_ne!(actual, expected);
            }
            other => panic!(
                "{}: expected a checksum mismatch, got {other}",
                backend.name
            ),
        }
        let message = err.to_string();
        assert!(
            message.contains(path.as_ref()) && message.contains("checksum"),
            "{message}"
        );
        assert!(!err.is_retryable());
        // The segments around it still read.
        assert_eq!(
            backend
                .archive
                .read_segment(&manifests[0])
                .await
                .unwrap()
                .len(),
            5
        );
    }
}

#[tokio::test]
async fn a_deleted_data_file_is_named() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let path = manifests[2].data_path();
        backend.store.delete(&path).await.unwrap();

        let err = backend.archive.read_entries().await.unwrap_err();

        assert!(
            matches!(&err, ArchiveError::MissingData { path: p, manifest }
                if p == path.as_ref() && manifest == manifests[2].manifest_path().as_ref()),
            "{}: {err}",
            backend.name
        );
        assert!(err.to_string().contains(path.as_ref()));
    }
}

#[tokio::test]
async fn a_truncated_data_file_is_an_error_naming_it() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let path = manifests[0].data_path();
        let bytes = get(backend.store.as_ref(), &path).await;
        let cut = bytes.len() - 9;
        put(backend.store.as_ref(), &path, bytes[..cut].to_vec()).await;

        let err = backend.archive.read_entries().await.unwrap_err();

        assert!(
            matches!(&err, ArchiveError::SizeMismatch { path: p, expected, actual }
                if p == path.as_ref() && *expected == manifests[0].bytes && *actual == cut as u64),
            "{}: {err}",
            backend.name
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[tokio::test]
async fn a_deleted_middle_manifest_is_a_gap_naming_the_missing_range() {
    for backend in backends() {
        let (log_dir, manifests) = sealed(&backend).await;
        backend
            .store
            .delete(&manifests[1].manifest_path())
            .await
            .unwrap();

        let err = backend
            .archive
            .manifests(SegmentKind::Entries)
            .await
            .unwrap_err();

        assert!(
            matches!(&err, ArchiveError::Gap { from: 5, to: 9, kind: SegmentKind::Entries, next, .. }
                if next == manifests[2].manifest_path().as_ref()),
            "{}: {err}",
            backend.name
        );
        assert!(err.to_string().contains("5..=9"), "{err}");
        assert!(backend.archive.read_entries().await.is_err());
        // Sealing does not paper over the gap by sealing past it.
        let log = open_log_again(&log_dir);
        let err = backend
            .archive
            .seal(&log, 15, per_segment(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ArchiveError::Gap { from: 5, to: 9, .. }),
            "{err}"
        );
    }
}

fn open_log_again(dir: &tempfile::TempDir) -> ecom_log::Log {
    // `sealed` dropped its Log, which released the lock.
    open_log(dir.path())
}

#[tokio::test]
async fn a_deleted_first_manifest_is_a_gap_from_zero() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        backend
            .store
            .delete(&manifests[0].manifest_path())
            .await
            .unwrap();

        let err = backend
            .archive
            .archived_upto(SegmentKind::Entries)
            .await
            .unwrap_err();

        assert!(
            matches!(err, ArchiveError::Gap { from: 0, to: 4, .. }),
            "{}: {err}",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_mangled_manifest_is_named() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let path = manifests[1].manifest_path();
        put(
            backend.store.as_ref(),
            &path,
            b"{\"format_version\": 1, \"inst".to_vec(),
        )
        .await;

        let err = backend.archive.read_entries().await.unwrap_err();

        assert!(
            matches!(&err, ArchiveError::BadManifest { path: p, .. } if p == path.as_ref()),
            "{}: {err}",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_line_that_does_not_decode_is_named_by_number() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let manifest = &manifests[1];
        let data_path = manifest.data_path();
        rewrite_segment(backend.store.as_ref(), manifest, |mut lines| {
            lines[2] = lines[2].replace("\"data_base64\":\"", "\"data_base64\":\"!!");
            lines
        })
        .await;

        let err = backend.archive.read_entries().await.unwrap_err();

        assert!(
            matches!(&err, ArchiveError::BadLine { path, line: 3, reason }
                if path == data_path.as_ref() && reason.contains("base64")),
            "{}: {err}",
            backend.name
        );
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}

#[tokio::test]
async fn a_segment_with_fewer_lines_than_its_manifest_says_is_a_count_error() {
    for backend in backends() {
        let (_log_dir, manifests) = sealed(&backend).await;
        let manifest = &manifests[0];
        let data_path = manifest.data_path();
        rewrite_segment(backend.store.as_ref(), manifest, |lines| {
            lines.into_iter().take(4).collect()
        })
        .await;

        let err = backend.archive.read_entries().await.unwrap_err();

        assert!(
            matches!(&err, ArchiveError::CountMismatch { path, expected: 5, found: 4 }
                if path == data_path.as_ref()),
            "{}: {err}",
            backend.name
        );
    }
}
