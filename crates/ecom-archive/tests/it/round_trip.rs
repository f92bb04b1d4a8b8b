//! What is sealed comes back exactly: entries and quarantine, across
//! segment boundaries, in sequence order, raw bytes included.

use ecom_archive::{SealReport, SegmentKind};

use crate::support::{backends, fill, message, open_log, per_segment};

#[tokio::test]
async fn entries_and_quarantine_come_back_byte_identical_across_segments() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 23, 6).await;
        let archive = &backend.archive;

        let report = archive.seal(&log, 23, per_segment(5)).await.unwrap();

        let ranges = |manifests: &[ecom_archive::Manifest]| {
            manifests
                .iter()
                .map(|m| (m.first_seq, m.last_seq, m.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ranges(&report.entries),
            [(0, 4, 5), (5, 9, 5), (10, 14, 5), (15, 19, 5), (20, 22, 3)],
            "{}",
            backend.name
        );
        assert_eq!(ranges(&report.quarantine), [(0, 4, 5), (5, 5, 1)]);
        assert_eq!(
            (report.entries_sealed(), report.quarantine_sealed()),
            (23, 6)
        );
        assert!(report.removed_incomplete.is_empty());
        assert_eq!(
            archive.manifests(SegmentKind::Entries).await.unwrap(),
            report.entries,
            "the listed manifests are the ones written"
        );

        let entries = archive.read_entries().await.unwrap();
        assert_eq!(
            entries,
            log.read_from(0, usize::MAX).unwrap(),
            "{}: entries as the log has them",
            backend.name
        );
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64);
            assert_eq!(entry.message, message(i as u64), "raw message kept exactly");
            assert!(entry.appended_at_ms > 0);
        }
        assert_eq!(entries[0].message.data, [0xff, 0xfe, 0x00, b'\n', 0x80, 0]);

        let quarantine = archive.read_quarantine().await.unwrap();
        assert_eq!(quarantine, log.rejected().unwrap(), "{}", backend.name);
        assert_eq!(quarantine.len(), 6);
        assert_eq!(
            quarantine[2].reason,
            "malformed message 2: expected value at line 1"
        );
        assert_eq!(quarantine[2].message.data, [0xc3, 0x28, b'{', 2]);

        let segment = archive.read_segment(&report.entries[1]).await.unwrap();
        assert_eq!(
            segment.iter().map(|r| r.seq()).collect::<Vec<_>>(),
            [5, 6, 7, 8, 9]
        );
        assert_eq!(
            archive.archived_upto(SegmentKind::Entries).await.unwrap(),
            23
        );
        assert_eq!(
            archive
                .archived_upto(SegmentKind::Quarantine)
                .await
                .unwrap(),
            6
        );
    }
}

#[tokio::test]
async fn manifests_describe_their_segments() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 8, 0).await;
        let report = backend.archive.seal(&log, 8, per_segment(8)).await.unwrap();
        let [manifest] = report.entries.as_slice() else {
            panic!("one segment expected: {report:?}");
        };
        let entries = log.read_from(0, 8).unwrap();
        assert_eq!(manifest.format_version, 1);
        assert_eq!(manifest.instance, "instance-a");
        assert_eq!(manifest.kind, SegmentKind::Entries);
        assert_eq!(manifest.first_appended_at_ms, entries[0].appended_at_ms);
        assert_eq!(manifest.last_appended_at_ms, entries[7].appended_at_ms);
        let data = backend
            .store
            .get(&manifest.data_path())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(manifest.bytes, data.len() as u64, "{}", backend.name);
        use sha2::Digest;
        let sha: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest.sha256, sha);
    }
}

#[tokio::test]
async fn an_empty_log_seals_nothing_and_reads_back_empty() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let report = backend.archive.seal(&log, 0, per_segment(5)).await.unwrap();
        assert_eq!(report, SealReport::default(), "{}", backend.name);
        assert!(backend.archive.read_entries().await.unwrap().is_empty());
        assert!(backend.archive.read_quarantine().await.unwrap().is_empty());
        assert_eq!(
            backend
                .archive
                .archived_upto(SegmentKind::Entries)
                .await
                .unwrap(),
            0
        );
    }
}
