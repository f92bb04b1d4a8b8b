//! What the fault tests of the real binary against the real servers share
//! (the crash harness, outages, lost responses, a full disk, failpoints):
//! a seeded producer that records what it published, pipeline processes on
//! their own log directories, the drain that ends a run, and the exact
//! end-state check.
//!
//! The check. The expected state is the reference model
//! (`ecom_core::Model`) folded over the union of all instances' log
//! entries, deduplicated by (topic, message id): the model breaks ties on
//! the publish time and message id the *server* assigned, which only the
//! logs hold. So, separately, the logs must hold exactly what was
//! published: every published valid message id with the same topic and
//! bytes in some log (`not_in_log`), every invalid one in some quarantine
//! and in no log (`not_quarantined`), and no message id nobody published
//! (`unknown`). Then, between the expected state and a snapshot of the
//! Cassandra keyspace: `lost` (a fact or parked payment missing), `doubled`
//! (one that should not be there), `wrong` (different content), and for
//! the audit table of losing versions `audit_missing` / `audit_extra`;
//! `stuck_parked` counts parked payments whose order exists. Finally
//! `ecom-pipeline verify --from-log …` (every log) must exit 0, and
//! `replay --from-log …` into a fresh keyspace must give the same state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecom_cassandra::{CassandraConfig, CassandraStore};
use ecom_core::workload::Rng;
use ecom_core::{FinalState, Model, RawMessage, Topic, decode};
use ecom_log::{Log, LogOptions};
use ecom_pubsub::{ProduceKind, ProduceSpec, PubSubConfig, plan};
use google_cloud_pubsub::model::Message;

use super::cli::{bin, run};

/// One message as the harness published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: Topic,
    pub data: Vec<u8>,
    pub message_id: String,
    pub invalid: bool,
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A seed from `var` if set, else from the clock (print it: it reruns).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// One pipeline process and where it keeps its log.
pub struct Instance {
    pub log_dir: PathBuf,
    pub stderr: PathBuf,
    pub child: Option<Child>,
    /// Taken out of the fleet (its tail projected, as an operator retires
    /// one): [`drain`] does not start it again, but its log still counts.
    pub retired: bool,
}

impl Instance {
    /// Instance `i` of a run whose files live under `root`.
    pub fn new(root: &Path, i: usize) -> Instance {
        Instance {
            log_dir: root.join(format!("log-{i}")),
            stderr: root.join(format!("instance-{i}.stderr")),
            child: None,
            retired: false,
        }
    }

    /// The status file its running (or last) process wrote, if readable.
    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.log_dir.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Entries its log holds, as the status file says (0 before the first).
    pub fn log_entries(&self) -> u64 {
        self.status()
            .and_then(|s| s["log_entries"].as_u64())
            .unwrap_or(0)
    }

    /// Projection lag, as the status file says (0 before the first).
    pub fn lag(&self) -> u64 {
        self.status().and_then(|s| s["lag"].as_u64()).unwrap_or(0)
    }

    /// What the instance wrote to stderr so far (every run appends).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Where a fault test against both servers starts: the servers held for
/// this test alone, a fresh Pub/Sub project and keyspace set up, an empty
/// keyspace to replay into, and a directory for the instances' files.
pub struct Setup {
    pub target: Target,
    /// The Pub/Sub server's address (`PUBSUB_EMULATOR_HOST`).
    pub pubsub: String,
    /// The empty keyspace [`drain_and_check`] replays into.
    pub replayed: String,
    pub tmp: tempfile::TempDir,
    _server: std::sync::MutexGuard<'static, ()>,
}

impl Setup {
    /// `None` when a server is missing and the test may skip (it fails
    /// instead under `CI` or `ECOM_REQUIRE_*`). `name` prefixes the project.
    pub fn start(name: &str) -> Option<Setup> {
        let pubsub = super::support::emulator()?;
        let contact = ecom_cassandra::testing::contact_points()?;
        let server = super::support::one_at_a_time();
        let keyspace = ecom_cassandra::testing::unique_keyspace();
        let replayed = ecom_cassandra::testing::unique_keyspace();
        let target = Target::new(
            format!("{name}-{}", super::support::project()),
            contact[0].clone(),
            keyspace.clone(),
        );
        target.setup_all(&[&keyspace, &replayed]);
        Some(Setup {
            target,
            pubsub,
            replayed,
            tmp: tempfile::tempdir().unwrap(),
            _server: server,
        })
    }
}

/// A test that fails half-way must not leave its pipelines running (they
/// would go on pulling and writing long after the test binary exited).
impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What every `ecom-pipeline` invocation of one run shares.
pub struct Target {
    pub project: String,
    pub cassandra: String,
    pub keyspace: String,
    /// Where the pipeline processes reach Pub/Sub, when not
    /// `PUBSUB_EMULATOR_HOST` (a fault proxy in front of it, say).
    pub pubsub_via: Option<String>,
    /// Where `run` reaches Cassandra, when not `cassandra` (a fault
    /// proxy); the harness's own reads, `verify` and `replay` go direct.
    pub cassandra_via: Option<String>,
    /// `run` archives into this directory (`--archive`), and `verify`,
    /// `replay` and the end check read it with the logs.
    pub archive: Option<PathBuf>,
    /// `run`'s `--log-max-bytes` and `--dedup-retention` (with `archive`).
    pub log_max_bytes: Option<String>,
    pub dedup_retention: Option<String>,
    /// `run`'s `--log-retention`.
    pub log_retention: Option<String>,
}

impl Target {
    pub fn new(project: String, cassandra: String, keyspace: String) -> Target {
        Target {
            project,
            cassandra,
            keyspace,
            pubsub_via: None,
            cassandra_via: None,
            archive: None,
            log_max_bytes: None,
            dedup_retention: None,
            log_retention: None,
        }
    }

    pub fn args<'a>(&'a self, keyspace: &'a str) -> Vec<&'a str> {
        let mut args = vec![
            "--project",
            &self.project,
            "--store",
            "cassandra",
            "--cassandra",
            &self.cassandra,
            "--cassandra-keyspace",
            keyspace,
        ];
        if let Some(archive) = &self.archive {
            args.extend(["--archive", archive.to_str().expect("UTF-8 path")]);
        }
        args
    }

    /// Runs a one-shot command (`setup …`) against `keyspace`; panics if
    /// it fails.
    pub fn setup(&self, what: &[&str], keyspace: &str) {
        let mut a = what.to_vec();
        a.extend(self.args(keyspace));
        let out = run(&a);
        assert!(out.status.success(), "{what:?} failed");
    }

    /// A fresh Pub/Sub project (ack deadline 10 s, so that leases a killed
    /// process held come back soon) and fresh keyspaces.
    pub fn setup_all(&self, keyspaces: &[&str]) {
        self.setup(
            &["setup", "pubsub", "--pubsub-ack-deadline", "10s"],
            &self.keyspace,
        );
        for ks in keyspaces {
            self.setup(&["setup", "cassandra"], ks);
        }
    }

    /// `n` instances under `root`, each running `run` on its own log.
    pub fn start_instances(&self, root: &Path, n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| {
                let mut inst = Instance::new(root, i);
                inst.child = Some(self.spawn(&inst, &[]));
                inst
            })
            .collect()
    }

    /// Starts `ecom-pipeline run --source pubsub --store cassandra` for
    /// `inst`, its stderr appended to the instance's file.
    pub fn spawn(&self, inst: &Instance, extra: &[&str]) -> Child {
        self.spawn_with_env(inst, extra, &[])
    }

    pub fn spawn_with_env(&self, inst: &Instance, extra: &[&str], env: &[(&str, &str)]) -> Child {
        let log_dir = inst.log_dir.display().to_string();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inst.stderr)
            .expect("open the instance's stderr file");
        let mut cmd = bin();
        if let Some(via) = &self.pubsub_via {
            cmd.env("PUBSUB_EMULATOR_HOST", via);
        }
        cmd.envs(env.iter().copied());
        let mut args = self.args(&self.keyspace);
        if let Some(via) = &self.cassandra_via {
            let at = args.iter().position(|a| *a == "--cassandra").unwrap() + 1;
            args[at] = via;
        }
        cmd.arg("run")
            .args(["--source", "pubsub", "--log-dir", &log_dir])
            // The stream ack deadline: what a killed process had leased
            // comes back 10 s after its last extension, not 60 s.
            .args(["--pubsub-max-lease-extension", "10s"])
            .args(args)
            .args(
                self.log_max_bytes
                    .iter()
                    .flat_map(|b| ["--log-max-bytes", b.as_str()]),
            )
            .args(
                self.dedup_retention
                    .iter()
                    .flat_map(|d| ["--dedup-retention", d.as_str()]),
            )
            .args(
                self.log_retention
                    .iter()
                    .flat_map(|d| ["--log-retention", d.as_str()]),
            )
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ecom-pipeline run")
    }

    /// A client configuration for the producer: straight to the server.
    pub fn producer_config(&self) -> PubSubConfig {
        let mut cfg = PubSubConfig::new(self.project.clone());
        cfg.emulator_host = std::env::var("PUBSUB_EMULATOR_HOST").ok();
        cfg
    }
}

/// What the producer publishes.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Roughly how many valid messages to publish in all.
    pub messages: u64,
    pub seed: u64,
    /// The batches are spread over about this long.
    pub spread: Duration,
}

/// Publishes seeded batches until `stop` (or until every batch is out),
/// spread over about `traffic.spread`, and records everything it
/// published, in publish order: orders with ids cycling through 1..=80 like
/// today's producer, unique orders, payments before their orders, orphan
/// payments, identical re-publications, and two invalid messages from
/// `ecom_core::bad_input` per batch.
pub fn producer(
    cfg: PubSubConfig,
    traffic: Traffic,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Vec<Published>>>,
) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async move {
        let orders = ecom_pubsub::publisher(&cfg, Topic::Orders.name())
            .await
            .expect("orders publisher");
        let payments = ecom_pubsub::publisher(&cfg, Topic::Payments.name())
            .await
            .expect("payments publisher");
        let bad: Vec<_> = ecom_core::bad_input::corpus()
            .into_iter()
            .filter(|b| !b.data.is_empty() && b.data.len() < 4096)
            .collect();
        let batches = 20u64;
        // `Both` publishes an order and a payment per id.
        let ids = (traffic.messages / batches / 2).max(1);
        let pause = traffic.spread / batches as u32;
        let mut rng = Rng::new(traffic.seed ^ 0x5eed);
        for b in 0..batches {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let spec = ProduceSpec {
                kind: ProduceKind::Both,
                count: ids,
                duplicate_ratio: 0.05,
                // Even batches reuse ids 1..=80 (conflicting versions across
                // batches); odd ones are unique orders.
                first_id: if b % 2 == 0 {
                    1
                } else {
                    1_000 + b as i64 * 10_000
                },
                id_cycle: (b % 2 == 0).then_some(80),
                payments_first_ratio: 0.3,
                orphan_payments: 2,
                seed: traffic.seed.wrapping_add(b),
                ..ProduceSpec::default()
            };
            let mut messages: Vec<(Topic, Vec<u8>, bool)> = plan(&spec)
                .into_iter()
                .map(|(t, d)| (t, d, false))
                .collect();
            for _ in 0..2 {
                let x = &bad[rng.below(bad.len() as u64) as usize];
                let at = rng.below(messages.len() as u64 + 1) as usize;
                messages.insert(at, (x.topic, x.data.clone(), true));
            }
            let mut pending = Vec::new();
            for (topic, data, invalid) in messages {
                let publisher = match topic {
                    Topic::Orders => &orders,
                    Topic::Payments => &payments,
                };
                let fut = publisher.publish(Message::new().set_data(data.clone()));
                pending.push((topic, data, invalid, fut));
            }
            for (topic, data, invalid, fut) in pending {
                let message_id = fut.await.expect("publish to the Pub/Sub server");
                record.lock().unwrap().push(Published {
                    topic,
                    data,
                    message_id,
                    invalid,
                });
            }
            tokio::time::sleep(pause).await;
        }
    });
}

/// A [`producer`] on its own thread.
pub struct Producing {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Vec<Published>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Producing {
    pub fn start(cfg: PubSubConfig, traffic: Traffic) -> Producing {
        let record = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, record) = (stop.clone(), record.clone());
            std::thread::spawn(move || producer(cfg, traffic, stop, record))
        };
        Producing {
            stop,
            record,
            thread,
        }
    }

    /// Whether every batch is out.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops after the batch in progress; returns everything published.
    pub fn stop(self) -> Vec<Published> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the producer thread panicked");
        std::mem::take(&mut *self.record.lock().unwrap())
    }

    /// Waits (bounded) until every batch is out; returns everything.
    pub fn finish(self, within: Duration) -> Vec<Published> {
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the producer did not finish within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop()
    }
}

/// Waits (bounded) until the instance's status file names `pid`: it runs
/// and handles signals.
pub fn wait_running(inst: &Instance, pid: u32) {
    super::cli::wait_for_status_within(&inst.log_dir, Duration::from_secs(120), |s| {
        s["running_pid"].as_u64() == Some(u64::from(pid))
    });
}

/// Waits (bounded) for a child to exit on its own; kills it and panics
/// with `what` if it does not.
pub fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("waited {within:?} for {what}; killed it");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything the logs hold, read after every process exited.
#[derive(Default)]
pub struct LogContents {
    /// (topic, message id) → the message (first copy found).
    pub entries: HashMap<(Topic, String), RawMessage>,
    /// (topic, message id) of quarantined messages.
    pub quarantined: HashSet<(Topic, String)>,
}

/// What the logs in `dirs` hold, their archived and pruned beginnings
/// (read from `archive`) included.
pub fn read_logs(dirs: &[PathBuf], archive: Option<&Path>) -> LogContents {
    let mut out = LogContents::default();
    for dir in dirs {
        let log = Log::open(dir, LogOptions::default())
            .unwrap_or_else(|e| panic!("open the log {}: {e}", dir.display()));
        if log.first_seq() > 0 {
            let archive = archive.expect("a pruned log has an archive");
            let instance = std::fs::read_to_string(dir.join("ARCHIVE_INSTANCE"))
                .expect("a pruned log names its archive instance");
            let archived = tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async {
                    ecom_archive::Archive::local(archive, instance.trim())?
                        .read_entries()
                        .await
                })
                .unwrap_or_else(|e| panic!("read the archive of {}: {e}", dir.display()));
            assert!(
                archived.len() as u64 >= log.first_seq(),
                "the archive of {} holds every pruned entry",
                dir.display()
            );
            for e in archived.into_iter().filter(|e| e.seq < log.first_seq()) {
                out.entries
                    .entry((e.message.topic, e.message.message_id.clone()))
                    .or_insert(e.message);
            }
        }
        let mut seq = log.first_seq();
        loop {
            let batch = log.read_from(seq, 10_000).expect("read the log");
            let Some(last) = batch.last() else { break };
            seq = last.seq + 1;
            for e in batch {
                out.entries
                    .entry((e.message.topic, e.message.message_id.clone()))
                    .or_insert(e.message);
            }
        }
        for q in log.rejected().expect("read the quarantine") {
            out.quarantined
                .insert((q.message.topic, q.message.message_id.clone()));
        }
    }
    out
}

/// How the logs differ from what was published.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub not_in_log: usize,
    pub not_quarantined: usize,
    pub unknown: usize,
}

pub fn coverage(published: &[Published], logs: &LogContents) -> Coverage {
    let mut c = Coverage::default();
    let mut known = HashSet::new();
    for p in published {
        let key = (p.topic, p.message_id.clone());
        if p.invalid {
            if !logs.quarantined.contains(&key) || logs.entries.contains_key(&key) {
                c.not_quarantined += 1;
            }
        } else {
            match logs.entries.get(&key) {
                Some(m) if m.data == p.data => {}
                _ => c.not_in_log += 1,
            }
        }
        known.insert(key);
    }
    c.unknown = logs
        .entries
        .keys()
        .chain(logs.quarantined.iter())
        .filter(|k| !known.contains(*k))
        .count();
    c
}

/// The counts of the summary line, expected state against the store.
#[derive(Debug, Default)]
pub struct Diff {
    pub lost: usize,
    pub doubled: usize,
    pub wrong: usize,
    pub stuck_parked: usize,
    pub audit_missing: usize,
    pub audit_extra: usize,
}

fn count<K: Ord, V: PartialEq>(
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
) -> (usize, usize, usize) {
    let missing = expected.keys().filter(|k| !actual.contains_key(k)).count();
    let extra = actual.keys().filter(|k| !expected.contains_key(k)).count();
    let wrong = expected
        .iter()
        .filter(|(k, v)| actual.get(k).is_some_and(|a| a != *v))
        .count();
    (missing, extra, wrong)
}

pub fn diff(expected: &FinalState, actual: &FinalState) -> Diff {
    let (fm, fe, fw) = count(&expected.facts, &actual.facts);
    let (pm, pe, pw) = count(&expected.parked, &actual.parked);
    let (am, ae, aw) = count(&expected.audit, &actual.audit);
    Diff {
        lost: fm + pm,
        doubled: fe + pe,
        wrong: fw + pw + aw,
        stuck_parked: actual.parked_with_order(),
        audit_missing: am,
        audit_extra: ae,
    }
}

pub async fn snapshot_of(cassandra: &str, keyspace: &str) -> FinalState {
    let cfg = CassandraConfig {
        contact_points: vec![cassandra.to_owned()],
        keyspace: keyspace.to_owned(),
        ..CassandraConfig::default()
    };
    let store = CassandraStore::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("connect to keyspace {keyspace}: {e}"));
    ecom_store::snapshot(&store)
        .await
        .unwrap_or_else(|e| panic!("snapshot of keyspace {keyspace}: {e}"))
}

pub async fn drop_keyspaces(cassandra: &str, keyspaces: &[&str]) {
    for ks in keyspaces {
        let cfg = CassandraConfig {
            contact_points: vec![cassandra.to_owned()],
            keyspace: (*ks).to_owned(),
            ..CassandraConfig::default()
        };
        if let Err(e) = ecom_cassandra::drop_keyspace(&cfg).await {
            eprintln!("could not drop keyspace {ks}: {e}");
        }
    }
}

/// Ends a run: rounds of `run --stop-after-idle 15s` on every instance
/// (each exits once idle and its projector caught up), until the logs hold
/// every published message or four rounds ran. Every instance must be
/// stopped when this is called.
pub fn drain(
    target: &Target,
    instances: &[Instance],
    published: &[Published],
) -> (LogContents, Coverage, u32) {
    let dirs: Vec<PathBuf> = instances.iter().map(|i| i.log_dir.clone()).collect();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let active: Vec<&Instance> = instances.iter().filter(|i| !i.retired).collect();
        let mut children: Vec<Child> = active
            .iter()
            .map(|inst| target.spawn(inst, &["--stop-after-idle", "15s"]))
            .collect();
        for (child, inst) in children.iter_mut().zip(active) {
            let what = format!(
                "instance {} to drain and stop after 15 s idle (stderr: {})",
                inst.log_dir.display(),
                inst.stderr.display()
            );
            let exit = wait_exit(child, Duration::from_secs(300), &what);
            assert!(exit.success(), "{what}: exited with {exit:?}");
        }
        let logs = read_logs(&dirs, target.archive.as_deref());
        let cov = coverage(published, &logs);
        // Draining more cannot remove an unknown message id.
        if (cov.not_in_log == 0 && cov.not_quarantined == 0) || rounds == 4 {
            return (logs, cov, rounds);
        }
        eprintln!("fault test: after drain round {rounds}: {cov:?}; another round");
    }
}

/// The end-state check of a run, and its counts.
pub struct Outcome {
    pub coverage: Coverage,
    pub diff: Diff,
    pub verified: bool,
    pub replay_differences: usize,
    pub drain_rounds: u32,
    /// Up to ten differing rows, store against expected, then replay.
    pub lines: Vec<String>,
    pub replay_lines: Vec<String>,
    differences: usize,
}

impl Outcome {
    pub fn is_exact(&self) -> bool {
        self.coverage == Coverage::default()
            && self.differences == 0
            && self.diff.stuck_parked == 0
            && self.verified
            && self.replay_differences == 0
    }

    /// The counts, `name=value` separated by spaces.
    pub fn counts(&self) -> String {
        format!(
            "drain_rounds={} not_in_log={} not_quarantined={} unknown={} lost={} doubled={} \
             wrong={} stuck_parked={} audit_missing={} audit_extra={} verify={} replay_differences={}",
            self.drain_rounds,
            self.coverage.not_in_log,
            self.coverage.not_quarantined,
            self.coverage.unknown,
            self.diff.lost,
            self.diff.doubled,
            self.diff.wrong,
            self.diff.stuck_parked,
            self.diff.audit_missing,
            self.diff.audit_extra,
            if self.verified { "ok" } else { "failed" },
            self.replay_differences,
        )
    }
}

/// Drains every (stopped) instance, then checks the end state: the logs
/// against `published`, the keyspace against the model folded from the
/// logs, `verify`, and `replay` into `replayed` (an empty keyspace).
pub fn drain_and_check(
    target: &Target,
    instances: &[Instance],
    published: &[Published],
    replayed: &str,
) -> Outcome {
    let (logs, cov, rounds) = drain(target, instances, published);
    let dirs: Vec<PathBuf> = instances.iter().map(|i| i.log_dir.clone()).collect();
    let mut model = Model::new();
    for m in logs.entries.values() {
        if let Ok(e) = decode(m) {
            model.apply(&e);
        }
    }
    let expected = model.final_state();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let actual = rt.block_on(snapshot_of(&target.cassandra, &target.keyspace));
    let d = diff(&expected, &actual);

    let from_logs: Vec<String> = dirs
        .iter()
        .flat_map(|d| ["--from-log".to_owned(), d.display().to_string()])
        .collect();
    let mut verify_args = vec!["verify"];
    verify_args.extend(from_logs.iter().map(String::as_str));
    verify_args.extend(target.args(&target.keyspace));
    let verified = run(&verify_args).status.success();
    let mut replay_args = vec!["replay"];
    replay_args.extend(from_logs.iter().map(String::as_str));
    replay_args.extend(target.args(replayed));
    assert!(run(&replay_args).status.success(), "replay failed");
    let replay_actual = rt.block_on(snapshot_of(&target.cassandra, replayed));
    let (replay_differences, replay_lines) = expected.diff(&replay_actual, 10);
    let (differences, lines) = expected.diff(&actual, 10);
    Outcome {
        coverage: cov,
        diff: d,
        verified,
        replay_differences,
        drain_rounds: rounds,
        lines,
        replay_lines,
        differences,
    }
}

/// Drops the keyspaces of an exact run (keeps its logs and instances'
/// stderr with `ECOM_FAULT_KEEP=1`); keeps everything of any other for a
/// post-mortem and panics saying where it is.
pub fn conclude(
    outcome: &Outcome,
    what: &str,
    seed: u64,
    tmp: tempfile::TempDir,
    target: &Target,
    replayed: &str,
) {
    if outcome.is_exact() {
        if std::env::var("ECOM_FAULT_KEEP").as_deref() == Ok("1") {
            eprintln!(
                "{what}: ECOM_FAULT_KEEP=1, logs kept in {}",
                tmp.keep().display()
            );
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(drop_keyspaces(
            &target.cassandra,
            &[&target.keyspace, replayed],
        ));
        return;
    }
    let kept = tmp.keep();
    panic!(
        "{what} failed (seed {seed}; logs kept in {}, keyspaces {} and {replayed} kept):\n{}\nreplay: {}",
        kept.display(),
        target.keyspace,
        outcome.lines.join("\n"),
        outcome.replay_lines.join("\n")
    );
}
