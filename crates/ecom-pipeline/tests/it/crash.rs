//! Exactly-once under `kill -9` (issue 8): the real binary against the real
//! servers, killed at random, restarted, and the end state checked.
//!
//! What runs: a fresh Pub/Sub project (`setup pubsub`, ack deadline 10 s so
//! that leases held by a killed process come back soon) and a fresh
//! Cassandra keyspace (`setup cassandra`). `ECOM_CRASH_INSTANCES` (default
//! 2) processes `ecom-pipeline run --source pubsub --store cassandra`, each
//! on its own `--log-dir`, share the subscriptions. A producer thread
//! publishes seeded batches the whole time (orders with ids cycling through
//! 1..=80 like today's producer, unique orders, payments before their
//! orders, orphan payments, identical re-publications, and a few invalid
//! messages from `ecom_core::bad_input`) and records every message it
//! published: topic, bytes and the message id the server returned.
//!
//! What is killed when: every 0.3–2 s (seeded; `ECOM_CRASH_SEED`, printed)
//! a random instance gets SIGKILL, is reaped, and is restarted on the same
//! log directory, until `ECOM_CRASH_KILLS` (default 20) kills. Then
//! publishing stops and every instance is restarted with
//! `--stop-after-idle` (it exits once idle and its projector caught up),
//! in rounds, until the logs hold every published message (bounded: a
//! failure says what was missing).
//!
//! What is checked. The expected state is the reference model
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
//! One summary line, `crash-test: …`, is printed; any non-zero count fails.
//!
//! The check can fail (tried with a temporary edit, not committed): with
//! one valid message removed from the harness's record and one payment
//! entry removed from the union before the fold, the run ended
//! `unknown=1 … wrong=1 … audit_extra=1 … replay_differences=2` and failed,
//! printing the differing rows, the seed, and keeping the logs and
//! keyspaces for a post-mortem. With the product broken instead (the
//! projector's `apply_group` returning early for `order_id % 97 == 13`),
//! a 5-kill run ended `lost=4 … audit_missing=18 verify=failed` and
//! failed; `replay` (which folds the model itself) still matched.
//!
//! Two things the harness has to do that are not obvious: it passes
//! `--pubsub-max-lease-extension 10s`, or what a killed process had leased
//! comes back only after the default 60 s stream deadline (the drain then
//! needed three 15 s idle rounds); and before the final SIGTERM it waits
//! for the instance's status file, because a SIGTERM that arrives before
//! `run` installed its handler kills it with status 15 (harmless for the
//! data, but not a clean stop).
//!
//! Long mode: `ECOM_CRASH_KILLS=300 ECOM_CRASH_INSTANCES=3
//! ECOM_CRASH_MESSAGES=20000 cargo test -p ecom-pipeline --test it crash --
//! --nocapture` (with `ECOM_CASSANDRA` and `PUBSUB_EMULATOR_HOST`). Needs
//! both servers; skips without them, fails instead with `CI`,
//! `ECOM_REQUIRE_CASSANDRA=1` or `ECOM_REQUIRE_PUBSUB=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
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
use super::pubsub::{emulator, one_at_a_time, project};

/// One message as the harness published it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    topic: Topic,
    data: Vec<u8>,
    message_id: String,
    invalid: bool,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The knobs of one run (environment variables, short-mode defaults).
#[derive(Debug, Clone)]
struct Plan {
    instances: usize,
    kills: u64,
    /// Roughly how many valid messages to publish in all.
    messages: u64,
    seed: u64,
}

impl Plan {
    fn from_env() -> Plan {
        let seed = std::env::var("ECOM_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Plan {
            instances: env_u64("ECOM_CRASH_INSTANCES", 2).clamp(1, 8) as usize,
            kills: env_u64("ECOM_CRASH_KILLS", 20),
            messages: env_u64("ECOM_CRASH_MESSAGES", 4000),
            seed,
        }
    }
}

/// One pipeline process and where it keeps its log.
struct Instance {
    log_dir: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

/// What every `ecom-pipeline` invocation of one run shares.
struct Target {
    project: String,
    cassandra: String,
    keyspace: String,
}

impl Target {
    fn args<'a>(&'a self, keyspace: &'a str) -> Vec<&'a str> {
        vec![
            "--project",
            &self.project,
            "--store",
            "cassandra",
            "--cassandra",
            &self.cassandra,
            "--cassandra-keyspace",
            keyspace,
        ]
    }

    fn spawn(&self, inst: &Instance, extra: &[&str]) -> Child {
        let log_dir = inst.log_dir.display().to_string();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inst.stderr)
            .expect("open the instance's stderr file");
        bin()
            .arg("run")
            .args(["--source", "pubsub", "--log-dir", &log_dir])
            // The stream ack deadline: what a killed process had leased
            // comes back 10 s after its last extension, not 60 s.
            .args(["--pubsub-max-lease-extension", "10s"])
            .args(self.args(&self.keyspace))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ecom-pipeline run")
    }
}

/// Publishes seeded batches until `stop`, spread over about `spread`;
/// returns everything it published, in publish order.
fn producer(
    cfg: PubSubConfig,
    plan: Plan,
    spread: Duration,
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
        let ids = (plan.messages / batches / 2).max(1);
        let pause = spread / batches as u32;
        let mut rng = Rng::new(plan.seed ^ 0x5eed);
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
                seed: plan.seed.wrapping_add(b),
                ..ProduceSpec::default()
            };
            let mut messages: Vec<(Topic, Vec<u8>, bool)> = plan_of(&spec);
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

fn plan_of(spec: &ProduceSpec) -> Vec<(Topic, Vec<u8>, bool)> {
    plan(spec).into_iter().map(|(t, d)| (t, d, false)).collect()
}

/// Waits (bounded) until the instance's status file names `pid`: it runs
/// and handles signals.
fn wait_running(inst: &Instance, pid: u32) {
    super::cli::wait_for_status_within(&inst.log_dir, Duration::from_secs(120), |s| {
        s["running_pid"].as_u64() == Some(u64::from(pid))
    });
}

/// Waits (bounded) for a child to exit on its own; kills it and panics
/// with `what` if it does not.
fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
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
struct LogContents {
    /// (topic, message id) → the message (first copy found).
    entries: HashMap<(Topic, String), RawMessage>,
    /// (topic, message id) of quarantined messages.
    quarantined: HashSet<(Topic, String)>,
}

fn read_logs(dirs: &[PathBuf]) -> LogContents {
    let mut out = LogContents::default();
    for dir in dirs {
        let log = Log::open(dir, LogOptions::default())
            .unwrap_or_else(|e| panic!("open the log {}: {e}", dir.display()));
        let mut seq = 0;
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
struct Coverage {
    not_in_log: usize,
    not_quarantined: usize,
    unknown: usize,
}

fn coverage(published: &[Published], logs: &LogContents) -> Coverage {
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
struct Diff {
    lost: usize,
    doubled: usize,
    wrong: usize,
    stuck_parked: usize,
    audit_missing: usize,
    audit_extra: usize,
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

fn diff(expected: &FinalState, actual: &FinalState) -> Diff {
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

async fn snapshot_of(cassandra: &str, keyspace: &str) -> FinalState {
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

async fn drop_keyspaces(cassandra: &str, keyspaces: &[&str]) {
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

#[test]
fn random_sigkills_of_pubsub_to_cassandra_instances_lose_and_double_nothing() {
    if emulator().is_none() {
        return;
    }
    let Some(contact) = ecom_cassandra::testing::contact_points() else {
        return;
    };
    let _server = one_at_a_time();
    let plan = Plan::from_env();
    eprintln!(
        "crash-test: seed {} (ECOM_CRASH_SEED={} reruns it), {} instances, {} kills, ~{} messages",
        plan.seed, plan.seed, plan.instances, plan.kills, plan.messages
    );
    let keyspace = ecom_cassandra::testing::unique_keyspace();
    let replayed = ecom_cassandra::testing::unique_keyspace();
    let target = Target {
        project: format!("crash-{}", project()),
        cassandra: contact[0].clone(),
        keyspace: keyspace.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let setup = |what: &[&str], ks: &str| {
        let mut a = what.to_vec();
        a.extend(target.args(ks));
        let out = run(&a);
        assert!(out.status.success(), "{what:?} failed");
    };
    setup(
        &["setup", "pubsub", "--pubsub-ack-deadline", "10s"],
        &keyspace,
    );
    setup(&["setup", "cassandra"], &keyspace);
    setup(&["setup", "cassandra"], &replayed);

    let mut instances: Vec<Instance> = (0..plan.instances)
        .map(|i| Instance {
            log_dir: tmp.path().join(format!("log-{i}")),
            stderr: tmp.path().join(format!("instance-{i}.stderr")),
            child: None,
        })
        .collect();
    for inst in &mut instances {
        inst.child = Some(target.spawn(inst, &[]));
    }

    let mut cfg = PubSubConfig::new(target.project.clone());
    cfg.emulator_host = std::env::var("PUBSUB_EMULATOR_HOST").ok();
    let record = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Mean pause 1.15 s: spread the batches over the expected kill phase.
    let spread = Duration::from_millis(plan.kills * 1150);
    let producing = {
        let (plan, stop, record) = (plan.clone(), stop.clone(), record.clone());
        std::thread::spawn(move || producer(cfg, plan, spread, stop, record))
    };

    let mut rng = Rng::new(plan.seed);
    let (mut kills, mut restarts) = (0u64, 0u64);
    while kills < plan.kills {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1700)));
        let inst = &mut instances[rng.below(plan.instances as u64) as usize];
        let mut child = inst.child.take().expect("every instance runs");
        if let Some(exit) = child.try_wait().expect("try_wait") {
            panic!(
                "instance {} exited on its own ({exit:?}); see {}",
                inst.log_dir.display(),
                inst.stderr.display()
            );
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed instance");
        kills += 1;
        inst.child = Some(target.spawn(inst, &[]));
        restarts += 1;
    }
    stop.store(true, Ordering::SeqCst);
    producing.join().expect("the producer thread panicked");
    let published = std::mem::take(&mut *record.lock().unwrap());

    // Drain: end the chaos run cleanly, then rounds of runs that stop once
    // idle and caught up, until the logs hold every published message.
    for inst in &mut instances {
        let child = inst.child.take().expect("every instance runs");
        // A SIGTERM before the process installed its handler kills it
        // like SIGKILL would; its first status file comes after.
        wait_running(inst, child.id());
        super::cli::sigterm_and_expect_clean_exit(child);
    }
    let dirs: Vec<PathBuf> = instances.iter().map(|i| i.log_dir.clone()).collect();
    let mut rounds = 0;
    let (logs, cov) = loop {
        rounds += 1;
        let mut children: Vec<Child> = instances
            .iter()
            .map(|inst| target.spawn(inst, &["--stop-after-idle", "15s"]))
            .collect();
        for (child, inst) in children.iter_mut().zip(&instances) {
            let what = format!(
                "instance {} to drain and stop after 15 s idle (stderr: {})",
                inst.log_dir.display(),
                inst.stderr.display()
            );
            let exit = wait_exit(child, Duration::from_secs(300), &what);
            assert!(exit.success(), "{what}: exited with {exit:?}");
        }
        let logs = read_logs(&dirs);
        let cov = coverage(&published, &logs);
        // Draining more cannot remove an unknown message id.
        if (cov.not_in_log == 0 && cov.not_quarantined == 0) || rounds == 4 {
            break (logs, cov);
        }
        eprintln!("crash-test: after drain round {rounds}: {cov:?}; another round");
    };

    let mut model = Model::new();
    for m in logs.entries.values() {
        if let Ok(e) = decode(m) {
            model.apply(&e);
        }
    }
    let expected = model.final_state();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let actual = rt.block_on(snapshot_of(&target.cassandra, &keyspace));
    let d = diff(&expected, &actual);

    let from_logs: Vec<String> = dirs
        .iter()
        .flat_map(|d| ["--from-log".to_owned(), d.display().to_string()])
        .collect();
    let mut verify_args = vec!["verify"];
    verify_args.extend(from_logs.iter().map(String::as_str));
    verify_args.extend(target.args(&keyspace));
    let verified = run(&verify_args).status.success();
    let mut replay_args = vec!["replay"];
    replay_args.extend(from_logs.iter().map(String::as_str));
    replay_args.extend(target.args(&replayed));
    assert!(run(&replay_args).status.success(), "replay failed");
    let replay_actual = rt.block_on(snapshot_of(&target.cassandra, &replayed));
    let replay_differences = expected.diff(&replay_actual, 10);

    let invalid = published.iter().filter(|p| p.invalid).count();
    println!(
        "crash-test: instances={} kills={kills} restarts={restarts} published={} invalid={invalid} \
         drain_rounds={rounds} not_in_log={} not_quarantined={} unknown={} lost={} doubled={} \
         wrong={} stuck_parked={} audit_missing={} audit_extra={} verify={} replay_differences={}",
        plan.instances,
        published.len(),
        cov.not_in_log,
        cov.not_quarantined,
        cov.unknown,
        d.lost,
        d.doubled,
        d.wrong,
        d.stuck_parked,
        d.audit_missing,
        d.audit_extra,
        if verified { "ok" } else { "failed" },
        replay_differences.0,
    );
    let (n, lines) = expected.diff(&actual, 10);
    let clean = cov == Coverage::default()
        && n == 0
        && d.stuck_parked == 0
        && verified
        && replay_differences.0 == 0;
    if clean {
        rt.block_on(drop_keyspaces(&target.cassandra, &[&keyspace, &replayed]));
    } else {
        // Keep everything for a post-mortem.
        let kept = tmp.keep();
        panic!(
            "crash test failed (seed {}; logs kept in {}, keyspaces {keyspace} and {replayed} kept):\n{}\nreplay: {}",
            plan.seed,
            kept.display(),
            lines.join("\n"),
            replay_differences.1.join("\n")
        );
    }
    assert!(
        published.len() as u64 >= plan.messages / 2,
        "published only {}",
        published.len()
    );
}
