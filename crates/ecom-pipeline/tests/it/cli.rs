use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use super::support::{bin, run, sigterm_and_expect_clean_exit, wait_for_status_within};

/// [`run`] with `extra` followed by `common`: the arguments every call of a
/// test shares (directories, project).
pub fn run_with(extra: &[&str], common: &[&str]) -> Output {
    let mut args = extra.to_vec();
    args.extend_from_slice(common);
    run(&args)
}

/// Starts `ecom-pipeline run ...` in the background.
pub fn spawn_run(args: &[&str]) -> Child {
    bin()
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ecom-pipeline run")
}

/// Waits (bounded, about 20 s) until the running pipeline's status file
/// satisfies `ready`.
pub fn wait_for_status(log_dir: &Path, ready: impl Fn(&serde_json::Value) -> bool) {
    wait_for_status_within(log_dir, Duration::from_secs(20), ready)
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON value")
}

fn dirs(root: &Path) -> (String, String) {
    (
        root.join("log").display().to_string(),
        root.join("store").display().to_string(),
    )
}

#[test]
fn demo_json_reports_every_event_exactly_once() {
    let out = run(&["demo", "--orders", "1500", "--json"]);
    assert!(out.status.success());
    let r = json(&out);
    assert_eq!(r["verified"], true);
    assert_eq!(r["differences"], 0);
    assert_eq!(r["orders_in_store"], 1500);
    for key in [
        "redelivered",
        "duplicates_message_id",
        "duplicates_business_key",
        "conflicts",
        "rejected",
        "payments_parked",
    ] {
        assert!(
            r[key].as_u64().unwrap() > 0,
            "the demo exercises {key}: {r}"
        );
    }
    assert!(r["elapsed_s"].as_f64().is_some());
}

#[test]
fn run_then_status_verify_replay_and_rejected_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let base = ["--log-dir", &log, "--store-dir", &store];
    let with = |extra: &[&str]| run_with(extra, &base);
    assert!(
        with(&["run", "--orders", "400", "--stop-after-idle", "1s"])
            .status
            .success()
    );

    // Without --count-rows, status reads only the dead-letter table.
    let cheap = json(&with(&["status", "--json"]));
    assert!(cheap["orders_in_store"].is_null(), "{cheap}");
    assert!(cheap["duplicates_audited"].is_null(), "{cheap}");
    assert!(
        cheap["oldest_parked_at_ms"].as_i64().unwrap() > 0,
        "{cheap}"
    );
    let status = json(&with(&["status", "--json", "--count-rows"]));
    assert_eq!(status["parked_payments"], cheap["parked_payments"]);
    assert_eq!(status["orders_in_store"], 400);
    assert_eq!(status["lag"], 0);
    assert!(status["rejected"].as_u64().unwrap() > 0);
    assert!(status["parked_payments"].as_u64().unwrap() > 0);

    assert!(
        with(&["verify"]).status.success(),
        "store equals the fold of its log"
    );

    let rejected = json(&with(&["rejected", "list", "--json"]));
    let first = &rejected.as_array().unwrap()[0];
    assert!(first["reason"].as_str().unwrap().len() > 5);
    assert!(
        !first["data"].as_str().unwrap().is_empty(),
        "raw bytes kept"
    );

    // Replay into a second store rebuilds the same state.
    let rebuilt = tmp.path().join("rebuilt").display().to_string();
    let replay = |extra: &[&str]| {
        let mut a = vec![
            "replay",
            "--from-log",
            &log,
            "--store-dir",
            &rebuilt,
            "--log-dir",
            &log,
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    assert!(replay(&[]).status.success());
    let again = replay(&[]);
    assert!(!again.status.success(), "a non-empty store is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--truncate"));
    assert!(replay(&["--truncate"]).status.success());
    let verify = run(&[
        "verify",
        "--from-log",
        &log,
        "--log-dir",
        &log,
        "--store-dir",
        &rebuilt,
    ]);
    assert!(verify.status.success());

    let dlq = json(&with(&["dlq", "list", "--json"]));
    assert_eq!(
        dlq.as_array().unwrap().len() as u64,
        status["parked_payments"].as_u64().unwrap()
    );
    let reprocess = json(&with(&["dlq", "reprocess", "--json"]));
    assert_eq!(reprocess["joined"], 0, "nothing parked has an order");

    assert!(with(&["log", "verify"]).status.success());
}

#[test]
fn replay_verify_and_dlq_reprocess_report_progress_on_stderr_only_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let base = ["--log-dir", &log, "--store-dir", &store];
    let with = |extra: &[&str]| run_with(extra, &base);
    assert!(
        with(&["run", "--orders", "300", "--stop-after-idle", "1s"])
            .status
            .success()
    );
    let entries = json(&with(&["status", "--json"]))["log_entries"]
        .as_u64()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // stderr is a pipe here: plain lines, no bar (no carriage returns or
    // escape codes), each phase closed with its full count.
    let rebuilt = tmp.path().join("rebuilt").display().to_string();
    let replay = run(&[
        "replay",
        "--from-log",
        &log,
        "--log-dir",
        &log,
        "--store-dir",
        &rebuilt,
    ]);
    assert!(replay.status.success());
    let (out, err) = (text(&replay.stdout), text(&replay.stderr));
    assert!(
        err.contains(&format!(
            "replay: {entries}/{entries} entries read (100%) in "
        )),
        "{err}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("replay: ") && last.contains(" order states written (100%) in "),
        "the final line sums up the last phase: {err}"
    );
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    // stdout is the result alone, as before.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&format!("replayed {entries} entries from 1 log(s)")));
    assert!(lines[1].starts_with("wrote 300 fact rows"));

    let verify = with(&["verify", "--json"]);
    assert!(verify.status.success());
    assert_eq!(json(&verify)["differences"], 0, "stdout is one JSON value");
    assert_eq!(
        text(&verify.stderr)
            .lines()
            .last()
            .unwrap()
            .split(" in ")
            .next(),
        Some(format!("verify: {entries}/{entries} entries read (100%)").as_str())
    );

    let parked = json(&with(&["status", "--json"]))["parked_payments"]
        .as_u64()
        .unwrap();
    let reprocess = with(&["dlq", "reprocess"]);
    assert!(reprocess.status.success());
    assert_eq!(
        text(&reprocess.stdout),
        format!("joined 0 parked payments; {parked} remain parked (their order has not arrived)\n")
    );
    assert!(
        text(&reprocess.stderr).contains(&format!(
            "dlq reprocess: {parked}/{parked} parked payments checked (100%)"
        )),
        "{}",
        text(&reprocess.stderr)
    );
}

#[test]
fn sigterm_stops_cleanly_and_a_second_owner_is_refused_with_the_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let child = spawn_run(&["--orders", "3000", "--log-dir", &log, "--store-dir", &store]);
    // It has taken the log once it publishes its first status.
    wait_for_status(&tmp.path().join("log"), |_| true);
    let second = run(&["run", "--log-dir", &log, "--store-dir", &store]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&child.id().to_string()),
        "names the pid holding the log: {err}"
    );
    let live = json(&run(&[
        "status",
        "--json",
        "--log-dir",
        &log,
        "--store-dir",
        &store,
    ]));
    assert_eq!(live["running_pid"], child.id());

    sigterm_and_expect_clean_exit(child);
    // Nothing acknowledged was lost: the log verifies, and once the
    // projector resumes from its checkpoint the store equals the log's fold.
    assert!(run(&["log", "verify", "--log-dir", &log]).status.success());
    let resume = run(&[
        "run",
        "--stop-after-idle",
        "1s",
        "--log-dir",
        &log,
        "--store-dir",
        &store,
    ]);
    assert!(resume.status.success());
    assert!(
        run(&["verify", "--log-dir", &log, "--store-dir", &store])
            .status
            .success()
    );
}

/// A failed group commit of the log (injected through ecom-log's failpoint
/// `log::group_commit`, armed by ECOM_FAILPOINTS) stops the log writer.
/// `run` must then exit by itself, non-zero, with an error that names the
/// log directory, says what failed and that a restart re-verifies the log,
/// instead of nacking every redelivery forever. The restart's open and
/// `log verify` then accept the log.
#[test]
fn failed_log_commit_makes_run_exit_non_zero_naming_the_log_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let child = bin()
        .env("ECOM_FAILPOINTS", "log::group_commit=return")
        .args([
            "run",
            "--orders",
            "200",
            "--log-dir",
            &log,
            "--store-dir",
            &store,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ecom-pipeline run");
    let pid = child.id().to_string();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(out) = exited.recv_timeout(Duration::from_secs(60)) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("run kept running for 60 s after its log writer stopped");
    };
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "a fatal log error exits 1");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    for needed in [
        log.as_str(),
        "group commit",
        "log::group_commit",
        "re-verifies",
    ] {
        assert!(
            error.contains(needed),
            "the error names {needed:?}: {error}"
        );
    }

    // The restart: the log opens (verifying it) and verifies in full.
    assert!(run(&["log", "verify", "--log-dir", &log]).status.success());
    assert!(
        run(&["status", "--log-dir", &log, "--store-dir", &store])
            .status
            .success()
    );
}

/// Rewrites a closed log's message-id index into on-disk format 1
/// (`'i' ++ message_id`, no topic byte) and marks it format 1, with sled
/// directly: what a log written by an older release looks like.
fn downgrade_to_format_1(log_dir: &Path) {
    let db = sled::open(log_dir.join("db")).expect("raw sled open");
    let keys: Vec<_> = db.scan_prefix(b"i").map(|kv| kv.unwrap()).collect();
    assert!(!keys.is_empty());
    for (key, value) in keys {
        let mut old = vec![b'i'];
        old.extend_from_slice(&key[2..]);
        db.remove(&key).unwrap();
        assert!(
            db.insert(old, value).unwrap().is_none(),
            "the embedded broker's ids are unique across topics"
        );
    }
    db.insert(b"mformat_version", &1u32.to_be_bytes()[..])
        .unwrap();
    db.flush().unwrap();
}

/// A log from an older release (format 1) is refused with the command that
/// upgrades it; `log upgrade` converts it in place, after which it verifies,
/// the store still equals its fold, and a second upgrade does nothing.
#[test]
fn format_1_log_is_refused_until_log_upgrade_converts_it_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let base = ["--log-dir", &log, "--store-dir", &store];
    let with = |extra: &[&str]| run_with(extra, &base);
    assert!(
        with(&["run", "--orders", "100", "--stop-after-idle", "1s"])
            .status
            .success()
    );
    downgrade_to_format_1(&tmp.path().join("log"));

    let refused = with(&["status"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("ecom-pipeline log upgrade --dir {log}")),
        "names the command: {err}"
    );

    let upgrade = with(&["log", "upgrade", "--dir", &log]);
    assert!(upgrade.status.success());
    assert!(String::from_utf8_lossy(&upgrade.stdout).contains("from format 1 to 2"));
    assert!(with(&["log", "verify", "--dir", &log]).status.success());
    assert!(
        with(&["verify"]).status.success(),
        "every entry is still there"
    );
    let again = with(&["log", "upgrade", "--dir", &log]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}

/// Damage to a stopped pipeline's log. A corrupted entry: `log verify`
/// names it, `log salvage` copies every other record into a new log that
/// verifies and runs from checkpoint 0, and lists the corrupt one. A lost
/// data file: `run` refuses the log instead of starting it empty, and names
/// the lost entries. (A file cut in half is refused too, as "lost records"
/// or, when sled 0.34 panics on it, as "damaged": see ecom-log's
/// `file_damage` tests.)
#[test]
fn a_damaged_log_is_refused_or_reported_and_salvage_keeps_what_is_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, store) = dirs(tmp.path());
    let base = ["--log-dir", &log, "--store-dir", &store];
    let with = |extra: &[&str]| run_with(extra, &base);
    assert!(
        with(&["run", "--orders", "300", "--stop-after-idle", "1s"])
            .status
            .success()
    );
    let before = json(&with(&["status", "--json"]));
    let entries = before["log_entries"].as_u64().unwrap();
    // Flip a byte of entry 5's record, as a bad sector would.
    {
        let db = sled::open(tmp.path().join("log").join("db")).unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&5u64.to_be_bytes());
        let mut value = db.get(&key).unwrap().unwrap().to_vec();
        *value.last_mut().unwrap() ^= 0x20;
        db.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let verify = with(&["log", "verify", "--dir", &log]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("entry seq 5: checksum mismatch"));

    let new = tmp.path().join("salvaged").display().to_string();
    let salvage = with(&["log", "salvage", "--dir", &log, "--into", &new]);
    assert_eq!(salvage.status.code(), Some(1), "one record was lost");
    let out = String::from_utf8_lossy(&salvage.stdout);
    assert!(
        out.contains(&format!("salvaged {} entries", entries - 1)),
        "{out}"
    );
    assert!(out.contains("lost: entry seq 5 (message id"), "{out}");
    assert!(run(&["log", "verify", "--dir", &new]).status.success());
    let salvaged = json(&run(&[
        "status",
        "--json",
        "--log-dir",
        &new,
        "--store-dir",
        &store,
    ]));
    assert_eq!(salvaged["log_entries"], entries - 1, "{salvaged}");
    assert_eq!(salvaged["checkpoint"], 0, "re-applied from the start");
    assert_eq!(salvaged["rejected"], before["rejected"], "{salvaged}");
    // The salvaged log rebuilds a store that verifies against it.
    let fresh = tmp.path().join("store2").display().to_string();
    let on_fresh = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--from-log", &new, "--log-dir", &new, "--store-dir", &fresh]);
        run(&a)
    };
    assert!(on_fresh(&["replay"]).status.success());
    assert!(on_fresh(&["verify"]).status.success());

    // A lost data file: refused (sled either recovers an empty database,
    // which HIGH_WATER exposes as lost records, or reports the rest of its
    // files as corrupted), never started as an empty log.
    std::fs::remove_file(tmp.path().join("log").join("db").join("db")).unwrap();
    let refused = with(&["run", "--orders", "300", "--stop-after-idle", "1s"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        (err.contains(&format!("entries 0..{entries} were acknowledged"))
            || err.contains("is damaged"))
            && err.contains("log salvage"),
        "{err}"
    );
}

#[test]
fn log_lines_carry_no_colour_codes_off_a_terminal_and_json_lines_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = |name: &str| {
        [
            "--log-dir".to_owned(),
            tmp.path().join(name).join("log").display().to_string(),
            "--store-dir".to_owned(),
            tmp.path().join(name).join("store").display().to_string(),
        ]
    };
    // `run` logs at info when it starts and stops; stderr is a pipe here.
    let run_logged = |format: &str, name: &str| {
        let out = bin()
            .env("ECOM_LOG", "info")
            .args(["--log-format", format, "run", "--orders", "20"])
            .args(["--stop-after-idle", "1s"])
            .args(dirs(name))
            .output()
            .expect("run ecom-pipeline");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).expect("log lines are UTF-8")
    };
    let text = run_logged("text", "text");
    assert!(text.contains("pipeline running"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log written to a pipe:\n{text:?}"
    );
    let json = run_logged("json", "json");
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("pipeline running")),
        "{json}"
    );
}
