//! What only a real object store shows: a bucket that does not exist, and
//! the conditional create the seal's commit relies on (on S3 it is
//! `If-None-Match: *`, which a server may not implement).

use ecom_archive::{Archive, ArchiveError, SegmentKind};
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

use crate::support::{
    INSTANCE, backends, fill, object_store_endpoint, open_log, per_segment, s3_store,
    unique_bucket_name,
};

#[tokio::test]
async fn a_missing_bucket_is_named_and_says_what_to_do() {
    let Some(endpoint) = object_store_endpoint() else {
        return;
    };
    // Never created.
    let store = s3_store(&endpoint, &unique_bucket_name(), Some("ecom"));
    let archive = Archive::new(store, INSTANCE).unwrap();

    let err = archive
        .manifests(SegmentKind::Entries)
        .await
        .expect_err("no bucket");

    assert!(
        matches!(&err, ArchiveError::MissingBucket { path, .. } if path == &format!("{INSTANCE}/entries")),
        "{err}"
    );
    assert!(err.to_string().contains("create the bucket"), "{err}");
    assert!(!err.is_retryable());
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 3, 0).await;
    assert!(matches!(
        archive.seal(&log, 3, per_segment(2)).await,
        Err(ArchiveError::MissingBucket { .. })
    ));
}

#[tokio::test]
async fn the_manifest_commit_is_a_create_that_a_second_writer_loses() {
    for backend in backends() {
        let path = Path::from(format!("{INSTANCE}/entries/probe.manifest.json"));
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        backend
            .store
            .put_opts(&path, PutPayload::from_static(b"first"), create())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name));

        let second = backend
            .store
            .put_opts(&path, PutPayload::from_static(b"second"), create())
            .await;

        assert!(
            matches!(second, Err(object_store::Error::AlreadyExists { .. })),
            "{}: {second:?}",
            backend.name
        );
        let kept = backend
            .store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&kept[..], b"first", "{}", backend.name);
    }
}
