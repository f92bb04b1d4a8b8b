//! The service called directly, in-process: the embedded broker and the
//! embedded store in temporary directories, no servers. What the binary's
//! end-to-end tests check through a child process (clean stop, status
//! file, errors) checked here at the library's edge.

use std::path::Path;
use std::time::Duration;

use ecom_log::{Log, LogOptions};
use ecom_projector::ProjectorOptions;
use ecom_service::{Service, ServiceError, Source, StatusReport, StoreSpec};
use tokio_util::sync::CancellationToken;

fn service(store_dir: &Path, orders: u64, stop_after_idle: Option<Duration>) -> Service {
    Service {
        source: Source::Embedded { orders, seed: 11 },
        store: StoreSpec::Embedded(store_dir.to_path_buf()),
        projector: ProjectorOptions::default(),
        metrics_addr: None,
        stop_after_idle,
        status_every: Duration::from_millis(50),
        retention: None,
    }
}

fn status_file(log_dir: &Path) -> Option<StatusReport> {
    let text = std::fs::read_to_string(log_dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_stops_by_itself_with_everything_projected_and_the_status_file_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (log_dir, store_dir) = (tmp.path().join("log"), tmp.path().join("store"));
    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    let report = ecom_service::run(
        log,
        service(&store_dir, 300, Some(Duration::from_millis(500))),
        CancellationToken::new(),
    )
    .await
    .expect("a clean stop");

    assert!(
        report.delivered >= report.appended && report.appended > 300,
        "{report:?}"
    );
    assert_eq!(report.lag, 0, "idle means projected: {report:?}");
    assert!(report.events_projected > 0, "{report:?}");
    let on_disk = status_file(&log_dir).expect("the final status file");
    assert_eq!(on_disk, report.status, "the file holds the final report");
    assert_eq!(on_disk.lag, 0);
    assert!(on_disk.parked_payments.is_some(), "{on_disk:?}");
    // The log is released and says the same.
    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    assert_eq!(log.stats().entries, on_disk.log_entries);
    assert_eq!(log.checkpoint(), on_disk.checkpoint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_shutdown_mid_run_stops_cleanly_at_a_checkpoint_losing_nothing_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let (log_dir, store_dir) = (tmp.path().join("log"), tmp.path().join("store"));
    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(ecom_service::run(
        log,
        service(&store_dir, 200_000, None),
        shutdown.clone(),
    ));
    // Running and ingesting, far from done with 200,000 orders.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status_file(&log_dir).is_none_or(|s| s.log_entries < 1000) {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing ingested in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running.is_finished(), "it runs until told to stop");
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("stops within 60 s of the cancel")
        .unwrap()
        .expect("a clean stop");

    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    let stats = log.stats();
    assert_eq!(
        stats.entries + stats.rejected,
        report.appended,
        "every message ingest appended (and so acknowledged) is in the log: {report:?} {stats:?}"
    );
    assert_eq!(
        stats.checkpoint, report.checkpoint,
        "stopped at the checkpoint it reports"
    );
    assert_eq!(report.lag, stats.next_seq - stats.checkpoint);
    assert!(report.appended < 400_000, "stopped early: {report:?}");
}

#[tokio::test]
async fn an_unusable_store_directory_is_a_clear_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("store");
    std::fs::write(&not_a_dir, b"a file, not a directory").unwrap();
    let log = Log::open(&tmp.path().join("log"), LogOptions::default()).unwrap();
    let err = ecom_service::run(log, service(&not_a_dir, 10, None), CancellationToken::new())
        .await
        .expect_err("the store cannot open");
    assert!(matches!(err, ServiceError::EmbeddedStore { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&not_a_dir.display().to_string()), "{msg}");
    assert!(msg.contains("one process owns it"), "{msg}");
}

/// With an archive and a small bound, a run archives, prunes and compacts
/// as it goes: the log ends pruned, the archive and the log's tail are
/// together every entry once (contiguous, no id twice), and the status
/// file says how far the archive got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_run_archives_prunes_and_compacts_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (log_dir, store_dir) = (tmp.path().join("log"), tmp.path().join("store"));
    let archive_dir = tmp.path().join("archive");
    let archive = ecom_archive::Archive::local(&archive_dir, "test-1").unwrap();
    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    let mut service = service(&store_dir, 20_000, Some(Duration::from_secs(3)));
    service.retention = Some(ecom_service::retention::RetentionPolicy {
        archive: std::sync::Arc::new(archive),
        // Room for the ids of the whole run (about 450 bytes each in sled)
        // at half the bound, so that ingest is never held for good.
        max_bytes: Some(80_000_000),
        // Archived entries leave at once, so that pruning and compaction
        // do not depend on when the size crosses a threshold.
        max_age: Some(Duration::from_millis(1)),
        // Every id is kept: a redelivery is never logged twice.
        keep_ids_for: Duration::from_secs(3600),
        segment_entries: std::num::NonZeroUsize::new(5_000).unwrap(),
        every: Duration::from_millis(200),
    });
    let report = ecom_service::run(log, service, CancellationToken::new())
        .await
        .expect("a clean stop");
    let retention = report.status.retention.clone().expect("retention status");
    assert!(retention.compactions >= 1, "{retention:?}");
    assert!(retention.entries_pruned > 0, "{retention:?}");
    assert!(report.status.first_seq > 0, "{:?}", report.status);
    assert_eq!(
        retention.archive_lag,
        report.status.last_seq.unwrap() + 1 - retention.archived_upto
    );

    let log = Log::open(&log_dir, LogOptions::default()).unwrap();
    let archive = ecom_archive::Archive::local(&archive_dir, "test-1").unwrap();
    let archived = archive.read_entries().await.unwrap();
    assert!(archived.len() as u64 >= log.first_seq());
    let mut all: Vec<_> = archived
        .into_iter()
        .filter(|e| e.seq < log.first_seq())
        .collect();
    all.extend(log.read_from(log.first_seq(), usize::MAX).unwrap());
    assert_eq!(all.len() as u64, log.next_seq());
    let mut ids = std::collections::HashSet::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "contiguous");
        assert!(
            ids.insert((e.message.topic, e.message.message_id.clone())),
            "{} logged twice although its id was kept",
            e.message.message_id
        );
    }
    assert!(log.verify().unwrap().is_ok());
}
