//! Compaction (issue 10): pruned entries give their disk space back, the
//! log stays whole (entries, quarantine, ids, checkpoint) across it and
//! across a reopen, appends go on during it, message ids are forgotten by
//! age only when asked, and a process killed during compactions loses
//! nothing acknowledged.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use ecom_log::{AppendOutcome, CompactOptions, Incoming, Log, LogError, dir_bytes};
use rand::Rng;

use crate::support::{append_with_redelivery, message, open, valid, valid_batch};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn keep_ids() -> CompactOptions {
    CompactOptions::default()
}

#[tokio::test]
async fn compaction_returns_the_space_of_pruned_entries_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(valid_batch((0..30_000).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    let rejected = message("bad-1");
    log.append(vec![Incoming::Rejected(rejected, "not JSON".to_string())])
        .await
        .unwrap();
    log.set_checkpoint(29_900).unwrap();
    log.prune_below(29_500).unwrap();
    let before = dir_bytes(dir.path());

    let report = log.compact(keep_ids()).unwrap();
    let after = dir_bytes(dir.path());
    assert_eq!(report.generation, 1);
    assert_eq!(report.records, 500 + 1, "the tail and the quarantine");
    assert_eq!(report.ids_forgotten, 0);
    assert_eq!(report.ids_kept, 30_001);
    // 500 of 30 000 entries are left: the directory must shrink to a small
    // fraction (the ids stay, so not to 1/60).
    assert!(
        after * 4 < before,
        "the directory should shrink: {before} bytes before, {after} after"
    );
    assert!(
        !dir.path().join("db").exists(),
        "the old generation is deleted"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(),
        "db.1\n"
    );

    let check = |log: &Log| {
        let stats = log.stats();
        assert_eq!(
            (
                stats.first_seq,
                stats.next_seq,
                stats.checkpoint,
                stats.rejected
            ),
            (29_500, 30_000, 29_900, 1)
        );
        let tail = log.read_from(29_500, usize::MAX).unwrap();
        assert_eq!(tail.len(), 500);
        assert_eq!(tail[0].message.message_id, "m-29500");
        assert_eq!(log.rejected().unwrap()[0].reason, "not JSON");
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    };
    check(&log);
    // Pruned and held ids still dedup; a new one is appended to the new
    // generation.
    let outcomes = log
        .append(vec![valid("m-3"), valid("m-29999"), valid("new-1")])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            AppendOutcome::Duplicate,
            AppendOutcome::Duplicate,
            AppendOutcome::Appended(30_000)
        ]
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(
        log.read_from(30_000, 1).unwrap()[0].message.message_id,
        "new-1"
    );
    assert_eq!(log.stats().duplicates_message_id, 2);
    // A second compaction moves on to the next generation.
    assert_eq!(log.compact(keep_ids()).unwrap().generation, 2);
    assert!(!dir.path().join("db.1").exists());
}

#[tokio::test]
async fn ids_are_forgotten_only_when_older_than_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(valid_batch((0..1_000).map(|i| format!("m-{i}"))))
        .await
        .unwrap();
    log.set_checkpoint(1_000).unwrap();
    log.prune_below(600).unwrap();

    // A cutoff before the entries were appended forgets nothing.
    let report = log
        .compact(CompactOptions {
            forget_ids_appended_before_ms: Some(now_ms() - 3_600_000),
        })
        .unwrap();
    assert_eq!((report.ids_forgotten, report.ids_kept), (0, 1_000));
    assert_eq!(
        log.append(vec![valid("m-1")]).await.unwrap(),
        [AppendOutcome::Duplicate]
    );

    // A cutoff after them forgets the pruned ones, and only those.
    let report = log
        .compact(CompactOptions {
            forget_ids_appended_before_ms: Some(now_ms() + 1_000),
        })
        .unwrap();
    assert_eq!(report.ids_forgotten_below, 600);
    assert_eq!((report.ids_forgotten, report.ids_kept), (600, 400));
    let outcomes = log
        .append(vec![valid("m-1"), valid("m-599"), valid("m-600")])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            AppendOutcome::Appended(1_000),
            AppendOutcome::Appended(1_001),
            AppendOutcome::Duplicate,
        ],
        "a forgotten id is logged again (its apply is idempotent); a held one is not"
    );
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_during_compactions_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let appender = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..400u64 {
                let ids: Vec<String> = (0..50).map(|i| format!("a-{round}-{i}")).collect();
                let outcomes = log.append(valid_batch(ids.clone())).await.unwrap();
                for (id, outcome) in ids.into_iter().zip(outcomes) {
                    match outcome {
                        AppendOutcome::Appended(seq) => acked.push((seq, id)),
                        other => panic!("{id} was {other:?}"),
                    }
                }
            }
            acked
        })
    };
    let mut compactions = 0;
    while !appender.is_finished() {
        let maintenance = log.clone();
        let report = tokio::task::spawn_blocking(move || {
            let end = maintenance.next_seq();
            maintenance.set_checkpoint(end)?;
            maintenance.prune_below(end.saturating_sub(500))?;
            maintenance.compact(keep_ids())
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(report.generation, compactions + 1);
        compactions += 1;
    }
    let acked = appender.await.unwrap();
    assert!(compactions >= 2, "only {compactions} compactions ran");
    let first = log.first_seq();
    let held: BTreeMap<u64, String> = log
        .read_from(first, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.message.message_id))
        .collect();
    for (seq, id) in &acked {
        if *seq >= first {
            assert_eq!(held.get(seq), Some(id), "entry {seq}");
        }
    }
    assert_eq!(log.next_seq(), acked.len() as u64);
    // Every id, pruned or held, still dedups.
    let again: Vec<Incoming> = acked.iter().map(|(_, id)| valid(id)).collect();
    let outcomes = log.append(again).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == AppendOutcome::Duplicate));
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn opening_removes_generations_left_by_an_interrupted_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(valid_batch((0..100).map(|i| format!("m-{i}"))))
            .await
            .unwrap();
        log.set_checkpoint(100).unwrap();
        log.prune_below(50).unwrap();
        log.compact(keep_ids()).unwrap();
    }
    // The copy of a compaction killed before its switch, and the old
    // generation of one killed after it.
    std::fs::create_dir(dir.path().join("db.2")).unwrap();
    std::fs::write(dir.path().join("db.2").join("db"), b"half written").unwrap();
    std::fs::create_dir(dir.path().join("db")).unwrap();
    let log = open(dir.path());
    assert!(!dir.path().join("db.2").exists());
    assert!(!dir.path().join("db").exists());
    assert_eq!(log.read_from(50, usize::MAX).unwrap().len(), 50);

    drop(log);
    std::fs::write(dir.path().join("CURRENT"), "db.7\n").unwrap();
    let err = Log::open(dir.path(), ecom_log::LogOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("db.7/ is missing"), "{err}");
}

/// Set in the child: the log directory to append to and compact.
const CHILD_DIR_ENV: &str = "ECOM_LOG_COMPACT_CHILD_DIR";

/// The child: appends `c-<n>` in order (re-sending the previous id, which
/// must be a duplicate even once pruned and compacted) and reports each
/// acknowledged n, while a thread projects, prunes and compacts in a loop.
#[test]
fn compact_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let log = open(Path::new(&dir));
        let mut next = log
            .read_from(log.first_seq(), usize::MAX)
            .unwrap()
            .last()
            .map_or(0, |e| e.message.message_id[2..].parse::<u64>().unwrap() + 1);
        let maintenance = log.clone();
        std::thread::spawn(move || {
            loop {
                let end = maintenance.next_seq();
                maintenance.set_checkpoint(end).unwrap();
                maintenance.prune_below(end.saturating_sub(20)).unwrap();
                maintenance.compact(CompactOptions::default()).unwrap();
            }
        });
        for _ in 0..200_000 {
            let len = rand::thread_rng().gen_range(1..=20u64);
            next = append_with_redelivery(&log, next, len, |n| format!("c-{n}")).await;
            let mut out = std::io::stdout().lock();
            writeln!(out, "acked {}", next - 1).unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn killed_during_compactions_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Option<u64> = None;
    let mut generations = 0;
    for _round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "compact::compact_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the compaction crash child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it get some compactions done, then kill it at a random line.
        let stop_after = rand::thread_rng().gen_range(50..400);
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked = Some(n.parse().unwrap());
                seen += 1;
                if seen == stop_after {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                acked = Some(n.parse().unwrap());
            }
        }

        let log = open(dir.path());
        let held = log.read_from(log.first_seq(), usize::MAX).unwrap();
        let ns: Vec<u64> = held
            .iter()
            .map(|e| e.message.message_id[2..].parse().unwrap())
            .collect();
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "held entries are contiguous and unique: {ns:?}"
        );
        let highest = acked.expect("the child acknowledged appends");
        assert!(
            ns.last().is_some_and(|&n| n >= highest),
            "c-{highest} was acknowledged; the log ends at {:?}",
            ns.last()
        );
        // Sequence numbers and message numbers advance together.
        if let (Some(e), Some(&n)) = (held.first(), ns.first()) {
            assert_eq!(e.seq, n);
        }
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap_or_default();
        generations = current
            .trim()
            .trim_start_matches("db.")
            .parse()
            .unwrap_or(0);
        drop(log);
    }
    assert!(
        generations >= 5,
        "only {generations} compactions ran in five lives"
    );
}
