//! Sealing is idempotent, resumable after a crash between the two puts of
//! a segment, and archives entries only below `upto`.

use ecom_archive::{ArchiveError, SealReport, SegmentKind};
use object_store::PutPayload;

use crate::support::{backends, entries_path, fill, objects, open_log, per_segment};

#[tokio::test]
async fn sealing_twice_writes_nothing_the_second_time() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 12, 3).await;
        backend
            .archive
            .seal(&log, 12, per_segment(5))
            .await
            .unwrap();
        let before = objects(backend.store.as_ref()).await;
        assert_eq!(
            before.len(),
            2 * (3 + 1),
            "{}: data + manifest per segment",
            backend.name
        );

        let again = backend
            .archive
            .seal(&log, 12, per_segment(5))
            .await
            .unwrap();

        assert_eq!(again, SealReport::default(), "{}", backend.name);
        assert_eq!(objects(backend.store.as_ref()).await, before);
    }
}

#[tokio::test]
async fn only_entries_below_upto_are_archived_and_the_next_seal_continues() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 20, 0).await;
        let archive = &backend.archive;

        let first = archive.seal(&log, 10, per_segment(4)).await.unwrap();
        assert_eq!(first.entries_sealed(), 10, "{}", backend.name);
        assert_eq!(
            archive.archived_upto(SegmentKind::Entries).await.unwrap(),
            10
        );
        assert_eq!(
            archive.read_entries().await.unwrap(),
            log.read_from(0, 10).unwrap()
        );

        let behind = archive.seal(&log, 6, per_segment(4)).await.unwrap();
        assert_eq!(
            behind,
            SealReport::default(),
            "upto below the archive's end"
        );

        fill_more(&log).await;
        let second = archive.seal(&log, 20, per_segment(4)).await.unwrap();
        assert_eq!(
            second
                .entries
                .iter()
                .map(|m| (m.first_seq, m.last_seq))
                .collect::<Vec<_>>(),
            [(10, 13), (14, 17), (18, 19)],
            "{}: continues at the archive's end",
            backend.name
        );
        assert_eq!(
            archive.read_entries().await.unwrap(),
            log.read_from(0, 20).unwrap()
        );

        let next_seq = log.next_seq();
        let err = archive
            .seal(&log, next_seq + 1, per_segment(4))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ArchiveError::UptoBeyondLog { upto, next_seq: end } if upto == next_seq + 1 && end == next_seq),
            "{err}"
        );
    }
}

/// Appends past the part the test seals, so the log's end is not `upto`.
async fn fill_more(log: &ecom_log::Log) {
    let extra = (100..103)
        .map(|i| ecom_log::Incoming::Valid(crate::support::message(i)))
        .collect();
    log.append(extra).await.unwrap();
}

#[tokio::test]
async fn a_crash_between_data_file_and_manifest_is_overwritten_by_the_next_seal() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 10, 0).await;
        let archive = &backend.archive;
        archive.seal(&log, 4, per_segment(4)).await.unwrap();
        // A seal of 4..=7 that died after its data file: garbage there (a
        // partial put of a store without atomic puts would look like this),
        // no manifest.
        let orphan = entries_path(4, 7, ".jsonl.gz");
        backend
            .store
            .put(&orphan, PutPayload::from_static(b"\x1f\x8b half a gzip"))
            .await
            .unwrap();
        assert_eq!(
            archive.read_entries().await.unwrap(),
            log.read_from(0, 4).unwrap(),
            "{}: readers ignore a data file without manifest",
            backend.name
        );
        assert_eq!(
            archive.archived_upto(SegmentKind::Entries).await.unwrap(),
            4
        );

        let report = archive.seal(&log, 10, per_segment(4)).await.unwrap();

        assert_eq!(
            report.entries[0].data_path(),
            orphan,
            "same name, overwritten"
        );
        assert_eq!(
            archive.read_entries().await.unwrap(),
            log.read_from(0, 10).unwrap()
        );
        let again = archive.seal(&log, 10, per_segment(4)).await.unwrap();
        assert_eq!(again, SealReport::default());
    }
}

#[tokio::test]
async fn an_incomplete_seal_with_other_boundaries_is_removed_once_covered() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 12, 0).await;
        let archive = &backend.archive;
        // Died after the data file of 0..=9 (segments of 10), and long ago
        // someone left a data file far beyond the log.
        let covered = entries_path(0, 9, ".jsonl.gz");
        let beyond = entries_path(100, 199, ".jsonl.gz");
        for path in [&covered, &beyond] {
            backend
                .store
                .put(path, PutPayload::from_static(b"not sealed"))
                .await
                .unwrap();
        }

        // Resumed with segments of 4: 0..=3, 4..=7, 8..=11 cover 0..=9.
        let report = archive.seal(&log, 12, per_segment(4)).await.unwrap();

        assert_eq!(report.entries_sealed(), 12, "{}", backend.name);
        assert_eq!(report.removed_incomplete, [covered.to_string()]);
        let paths: Vec<String> = objects(backend.store.as_ref())
            .await
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert!(!paths.contains(&covered.to_string()), "{paths:?}");
        assert!(
            paths.contains(&beyond.to_string()),
            "a data file beyond what was sealed may be the only copy of its records: kept"
        );
        assert_eq!(
            archive.read_entries().await.unwrap(),
            log.read_from(0, 12).unwrap()
        );
    }
}

#[tokio::test]
async fn quarantine_is_sealed_up_to_its_end_and_continues() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 2, 3).await;
        let archive = &backend.archive;
        let first = archive.seal(&log, 0, per_segment(10)).await.unwrap();
        assert_eq!(
            (first.entries_sealed(), first.quarantine_sealed()),
            (0, 3),
            "{}: quarantine is not held back by upto",
            backend.name
        );
        log.append(vec![ecom_log::Incoming::Rejected(
            crate::support::message(50),
            "late rejection".into(),
        )])
        .await
        .unwrap();

        let second = archive.seal(&log, 2, per_segment(10)).await.unwrap();

        assert_eq!(second.quarantine.len(), 1);
        assert_eq!(
            (
                second.quarantine[0].first_seq,
                second.quarantine[0].last_seq
            ),
            (3, 3)
        );
        assert_eq!(
            archive.read_quarantine().await.unwrap(),
            log.rejected().unwrap()
        );
        assert_eq!(log.stats().rejected, 4);
    }
}

#[test]
fn an_instance_name_that_is_not_one_path_segment_is_refused() {
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    for bad in ["", "a/b", "..", "with space"] {
        let err = ecom_archive::Archive::new(store.clone(), bad).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidInstance { .. }),
            "{bad:?}: {err}"
        );
    }
}
