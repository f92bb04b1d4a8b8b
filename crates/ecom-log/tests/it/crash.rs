//! Crash tests: the test re-runs this test binary as a child process (with
//! an environment variable naming the log directory), the child appends in
//! a loop and reports every acknowledged append on stdout, the parent kills
//! it with SIGKILL at a random moment, reopens the log and checks that every
//! acknowledged message is there. Pattern from sled's
//! tests/test_crash_recovery.rs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ecom_log::{Log, LogError, LogOptions};
use rand::Rng;

use crate::support::{append_with_redelivery, open};

/// Set in the child: the log directory to append to.
const CHILD_DIR_ENV: &str = "ECOM_LOG_CRASH_CHILD_DIR";
/// The child's test, run with `--exact`.
const CHILD_TEST: &str = "crash::crash_child_append_loop";
/// Concurrent appenders in the child, so kills also land in group commits
/// shared by several callers.
const WORKERS: usize = 4;
/// Bounds the child when nobody kills it.
const MAX_BATCHES_PER_WORKER: u64 = 20_000;

/// Message ids are `w<worker>-<n>`, `n` counting from 0 per worker.
fn id(worker: usize, n: u64) -> String {
    format!("w{worker}-{n}")
}

fn parse_id(id: &str) -> (usize, u64) {
    let (w, n) = id
        .strip_prefix('w')
        .and_then(|rest| rest.split_once('-'))
        .unwrap_or_else(|| panic!("unexpected message id {id:?}"));
    (w.parse().unwrap(), n.parse().unwrap())
}

/// The child's entry point: a no-op unless `CHILD_DIR_ENV` is set.
#[test]
fn crash_child_append_loop() {
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
        // Continue after the highest message present per worker, whether or
        // not it was acknowledged before the previous kill.
        let mut next = [0u64; WORKERS];
        for entry in log.read_from(0, usize::MAX).unwrap() {
            let (w, n) = parse_id(&entry.message.message_id);
            next[w] = next[w].max(n + 1);
        }
        let mut workers = tokio::task::JoinSet::new();
        for (worker, first) in next.into_iter().enumerate() {
            let log = log.clone();
            workers.spawn(async move {
                let mut next = first;
                for _ in 0..MAX_BATCHES_PER_WORKER {
                    let len = rand::thread_rng().gen_range(1..=20u64);
                    // The previous message is redelivered: a duplicate.
                    next = append_with_redelivery(&log, next, len, |n| id(worker, n)).await;
                    // Acknowledged: report the highest message number.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {worker} {}", next - 1).unwrap();
                    out.flush().unwrap();
                    // Let the projector side move too.
                    let end = log.next_seq();
                    if end > log.checkpoint() + 50 {
                        let _ = log.set_checkpoint(end - 10);
                    }
                }
            });
        }
        while let Some(result) = workers.join_next().await {
            result.unwrap();
        }
    });
}

/// Runs the child against `dir`; its stdout lines arrive on the receiver.
fn spawn_child(dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the crash child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Highest acknowledged message number per worker, from the child's lines.
fn record_acks(acked: &mut BTreeMap<usize, u64>, line: &str) {
    if let Some(rest) = line.strip_prefix("acked ") {
        let (w, n) = rest.split_once(' ').unwrap();
        let (w, n): (usize, u64) = (w.parse().unwrap(), n.parse().unwrap());
        let highest = acked.entry(w).or_insert(n);
        *highest = (*highest).max(n);
    }
}

/// Waits (bounded) for the child's first acknowledged append.
fn wait_for_first_ack(rx: &mpsc::Receiver<String>, acked: &mut BTreeMap<usize, u64>) {
    for _ in 0..1_000 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                record_acks(acked, &line);
                if line.starts_with("acked ") {
                    return;
                }
            }
            Err(e) => panic!("the crash child never acknowledged an append: {e}"),
        }
    }
    panic!("the crash child printed no ack in its first 1000 lines");
}

/// Checks the reopened log: opening verified the tail; every entry is intact
/// and unique, seqs are gap-free, and every acknowledged message is present.
fn check_log(dir: &Path, acked: &BTreeMap<usize, u64>) -> u64 {
    let log = open(dir);
    let entries = log.read_from(0, usize::MAX).unwrap();
    assert_eq!(entries.len() as u64, log.next_seq());
    let mut present: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.seq, i as u64, "gap-free sequence numbers");
        let (w, n) = parse_id(&entry.message.message_id);
        present.entry(w).or_default().push(n);
    }
    for (worker, &highest) in acked {
        let mut ns = present.remove(worker).unwrap_or_default();
        ns.sort_unstable();
        let contiguous = ns.iter().enumerate().all(|(i, &n)| n == i as u64);
        assert!(
            contiguous,
            "worker {worker}: messages stored out of order or twice"
        );
        assert!(
            ns.len() as u64 > highest,
            "worker {worker}: message {highest} was acknowledged but the log holds only {} of its messages",
            ns.len()
        );
    }
    assert!(log.checkpoint() <= log.next_seq());
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    log.next_seq()
}

#[test]
fn killed_writer_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeMap::new();
    for round in 0..4 {
        let (mut child, rx) = spawn_child(dir.path());
        wait_for_first_ack(&rx, &mut acked);
        let delay = rand::thread_rng().gen_range(50..400);
        thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        // Every line the child wrote before it died, to EOF.
        for line in rx.iter() {
            record_acks(&mut acked, &line);
        }
        let next_seq = check_log(dir.path(), &acked);
        eprintln!("round {round}: killed after {delay} ms, {next_seq} entries, acked {acked:?}");
    }
}

#[test]
fn open_of_a_directory_locked_by_another_process_names_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = spawn_child(dir.path());
    wait_for_first_ack(&rx, &mut BTreeMap::new());
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    child.kill().unwrap();
    child.wait().unwrap();
    let LogError::Locked { pid, .. } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(*pid, Some(child.id()));
    assert!(
        err.to_string()
            .contains(&format!("locked by process {}", child.id())),
        "{err}"
    );
    // The kernel released the lock with the process.
    open(dir.path());
}
