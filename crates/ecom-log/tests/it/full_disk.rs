//! A full disk under the log (issue 8): the log lives on a 1 MiB tmpfs
//! ([`ecom_log::testing::SmallDisk`]), concurrent appenders write until the
//! kernel answers `ENOSPC`, the tmpfs is enlarged (the operator freeing
//! space) and the log reopened on the same directory.
//!
//! What must hold: the append that meets the full disk fails with
//! [`LogError::DiskFull`] naming the directory (not a generic I/O error: the
//! remedy differs), every later append fails (the writer stopped), and no
//! `Ok` was returned for anything that is not on disk: after the restart
//! every acknowledged message is in the log exactly once, the failed
//! batches are there whole or not at all, a redelivery of them stores each
//! message once, and appends continue.

use std::collections::{BTreeMap, BTreeSet};

use ecom_log::testing::SmallDisk;
use ecom_log::{AppendOutcome, LogError};

use crate::support::{open, valid_batch};

const WORKERS: usize = 4;
const BATCH: u64 = 10;

fn ids(worker: usize, from: u64, len: u64) -> Vec<String> {
    (from..from + len)
        .map(|n| format!("w{worker}-{n}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_appends_as_disk_full_and_a_restart_with_space_continues_exactly() {
    let Some(disk) = SmallDisk::mount(1 << 20, "the ecom-log full-disk test") else {
        return;
    };
    let dir = disk.path().join("log");

    // Each worker: the ids acknowledged (`Ok` returned), the batch whose
    // append failed, and that error.
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeMap<usize, (Vec<String>, LogError)> = BTreeMap::new();
    {
        let log = open(&dir);
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let log = log.clone();
            workers.spawn(async move {
                let mut acked = Vec::new();
                let mut next = 0;
                loop {
                    let batch = ids(worker, next, BATCH);
                    match log.append(valid_batch(batch.clone())).await {
                        Ok(outcomes) => {
                            assert!(
                                outcomes
                                    .iter()
                                    .all(|o| matches!(o, AppendOutcome::Appended(_))),
                                "{outcomes:?}"
                            );
                            acked.extend(batch);
                            next += BATCH;
                            // 1 MiB holds a few thousand; never filling
                            // means the disk is not the tmpfs.
                            assert!(next < 1_000_000, "a 1 MiB disk never filled up");
                        }
                        Err(e) => return (worker, acked, batch, e),
                    }
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            let (worker, ids, batch, err) = done.unwrap();
            acked.extend(ids);
            failed.insert(worker, (batch, err));
        }
        // Dropping the log tries a final flush, which fails on the full disk
        // and is logged; nothing depends on it.
    }

    let dir_text = dir.display().to_string();
    let mut disk_full = 0;
    for (batch, err) in failed.values() {
        assert!(err.is_fatal(), "{err}");
        match err {
            LogError::DiskFull { dir: d, .. } => {
                assert_eq!(d, &dir);
                disk_full += 1;
                let text = err.to_string();
                for said in [
                    dir_text.as_str(),
                    "is full",
                    "nothing acknowledged was lost",
                    "Free space",
                    "--log-dir",
                    "restart",
                ] {
                    assert!(text.contains(said), "the message says {said:?}: {text}");
                }
            }
            // Appended after the failed commit: refused, and says why.
            LogError::WriterStopped { cause, .. } => {
                assert!(cause.contains("is full"), "{cause}");
            }
            other => panic!("batch {:?}: expected DiskFull, got {other}", batch[0]),
        }
    }
    assert!(disk_full >= 1, "no append failed with DiskFull: {failed:?}");

    // A restart before anyone made room says the same (sled writes on open).
    match ecom_log::Log::open(&dir, ecom_log::LogOptions::default()) {
        Err(LogError::DiskFull { dir: d, .. }) => assert_eq!(d, dir),
        Err(other) => panic!("reopening on the full disk: expected DiskFull, got {other}"),
        // Had sled found room after all, appending would say it.
        Ok(log) => drop(log),
    }

    // The operator makes room; the same directory opens again.
    disk.resize(16 << 20);
    let log = open(&dir);
    let stored: Vec<String> = log
        .read_from(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.message.message_id)
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a message is stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are not in the log, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Besides the acknowledged ones, only whole failed batches: a group
    // commit is all or nothing.
    let unacked: BTreeSet<&String> = unique
        .iter()
        .copied()
        .filter(|id| !acked.contains(*id))
        .collect();
    for (batch, _) in failed.values() {
        let present = batch.iter().filter(|id| unacked.contains(id)).count();
        assert!(
            present == 0 || present == batch.len(),
            "failed batch {:?} is in the log in part ({present} of {})",
            batch[0],
            batch.len()
        );
    }
    let failed_ids: BTreeSet<&String> = failed.values().flat_map(|(b, _)| b).collect();
    assert!(
        unacked.iter().all(|id| failed_ids.contains(id)),
        "the log holds messages nobody appended"
    );

    // The source redelivers what was not acknowledged, then traffic goes on.
    for (worker, (batch, _)) in &failed {
        let outcomes = log.append(valid_batch(batch.clone())).await.unwrap();
        for (id, o) in batch.iter().zip(&outcomes) {
            match o {
                AppendOutcome::Appended(_) => assert!(!unacked.contains(id), "{id} twice"),
                AppendOutcome::Duplicate => assert!(unacked.contains(id), "{id} dropped"),
                AppendOutcome::Quarantined(_) => panic!("{id} quarantined"),
            }
        }
        let more = log
            .append(valid_batch(ids(*worker, 1_000_000, BATCH)))
            .await
            .unwrap();
        assert!(more.iter().all(|o| matches!(o, AppendOutcome::Appended(_))));
    }
    let expected = acked.len() + failed_ids.len() + WORKERS * BATCH as usize;
    assert_eq!(log.next_seq() as usize, expected);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    eprintln!(
        "ecom-log full-disk test: filled after {} acknowledged messages ({disk_full} DiskFull, {} WriterStopped), reopened with space, {} entries, exact",
        acked.len(),
        failed.len() - disk_full,
        log.next_seq()
    );
}
