//! `log archive` and replay from an archive (issue 10, first slice): the
//! archive of an instance whose log is gone rebuilds the store the log
//! built, and damage in the archive is named, never skipped.

use std::path::Path;

use super::cli::{json, run, run_with};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The archive's data files, in name order.
fn data_files(archive: &Path, instance: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(archive.join(instance).join("entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    files.sort();
    files
}

/// A temporary directory with a log, a store and an archive in it, and
/// `ecom-pipeline` run against the three.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.tmp.path().join(name).display().to_string()
    }

    /// Fills the log and the store: `run` of the embedded source without
    /// `--archive` (with it, `run` would archive by itself; these tests
    /// drive the offline commands).
    fn fill(&self, orders: u64) {
        let (log, store) = (self.path("log"), self.path("store"));
        let ran = run(&[
            "run",
            "--orders",
            &orders.to_string(),
            "--stop-after-idle",
            "1s",
            "--log-dir",
            &log,
            "--store-dir",
            &store,
        ]);
        assert!(ran.status.success(), "{}", stderr(&ran));
    }

    /// `ecom-pipeline <extra> --log-dir … --store-dir … --archive …`.
    fn with(&self, extra: &[&str]) -> std::process::Output {
        let (log, store, archive) = (self.path("log"), self.path("store"), self.path("archive"));
        run_with(
            extra,
            &[
                "--log-dir",
                &log,
                "--store-dir",
                &store,
                "--archive",
                &archive,
            ],
        )
    }
}

#[test]
fn an_archived_instance_rebuilds_the_store_its_log_built_and_damage_is_named() {
    let fx = Fixture::new();
    let p = |name: &str| fx.path(name);
    let (log, archive) = (p("log"), p("archive"));
    let with = |extra: &[&str]| fx.with(extra);
    fx.fill(1500);
    let status = json(&with(&["status", "--json"]));
    let (entries, rejected) = (
        status["log_entries"].as_u64().unwrap(),
        status["rejected"].as_u64().unwrap(),
    );
    assert_eq!(status["lag"], 0, "{status}");

    // Sealed in segments of 1000: the whole log (all of it is projected).
    let sealed = with(&[
        "log",
        "archive",
        "--instance",
        "shop-1",
        "--segment-entries",
        "1000",
    ]);
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let said = stdout(&sealed);
    let segments = entries.div_ceil(1000);
    assert!(
        said.contains(&format!(
            "archived {entries} entries in {segments} segment(s)"
        )) && said.contains(&format!("{rejected} quarantined messages"))
            && said.contains("as instance shop-1"),
        "{said}"
    );
    assert_eq!(
        data_files(Path::new(&archive), "shop-1").len() as u64,
        segments
    );
    // Again: nothing new.
    let again = with(&["log", "archive", "--instance", "shop-1"]);
    assert!(
        stdout(&again).contains("archived 0 entries in 0 segment(s) and 0 quarantined"),
        "{}",
        stdout(&again)
    );

    // The instance's log is lost: its archive alone rebuilds the store,
    // which equals what the log says (verify against the log) and what the
    // archive says.
    let rebuilt = p("rebuilt");
    let from_archive = [
        "--from-archive",
        "shop-1",
        "--archive",
        &archive,
        "--store-dir",
        &rebuilt,
        "--log-dir",
        &p("unused-log"),
    ];
    let replayed = run_with(&["replay"], &from_archive);
    assert!(replayed.status.success(), "{}", stderr(&replayed));
    assert!(
        stdout(&replayed).contains(&format!("replayed {entries} entries")),
        "{}",
        stdout(&replayed)
    );
    let against_log = run(&["verify", "--from-log", &log, "--store-dir", &rebuilt]);
    assert!(
        against_log.status.success() && stdout(&against_log).contains("differences: 0"),
        "the archive-built store equals the log's fold: {}",
        stdout(&against_log)
    );
    assert!(run_with(&["verify"], &from_archive).status.success());
    assert!(
        !Path::new(&p("unused-log")).exists(),
        "an archive-only replay opens no log"
    );

    // One flipped byte in the middle segment: named, and the store is not
    // touched.
    let victim = &data_files(Path::new(&archive), "shop-1")[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(victim, bytes).unwrap();
    let refused = run_with(&["replay", "--truncate"], &from_archive);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "names the damaged file: {err}");
    assert!(
        run_with(&["verify"], &from_archive).status.code() != Some(0),
        "verify refuses the damaged archive too"
    );
    let still = run(&["verify", "--from-log", &log, "--store-dir", &rebuilt]);
    assert!(
        stdout(&still).contains("differences: 0"),
        "a refused replay left the store as it was: {}",
        stdout(&still)
    );

    // No archive configured: a clear error.
    let none = run(&["log", "archive", "--log-dir", &log]);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("--archive"), "{}", stderr(&none));
}

#[test]
fn a_pruned_log_with_its_archive_replays_and_verifies_as_before_and_without_it_says_so() {
    let fx = Fixture::new();
    let p = |name: &str| fx.path(name);
    let (log, store, archive) = (p("log"), p("store"), p("archive"));
    let with = |extra: &[&str]| fx.with(extra);
    fx.fill(2000);
    let before = json(&with(&["status", "--json"]));
    let entries = before["log_entries"].as_u64().unwrap();

    // Nothing archived yet: nothing to prune, and it says why.
    let early = with(&["log", "prune"]);
    assert!(!early.status.success());
    assert!(stderr(&early).contains("log archive"), "{}", stderr(&early));

    let sealed = with(&["log", "archive", "--segment-entries", "700"]);
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let pruned = with(&["log", "prune"]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains(&format!("pruned {entries} archived entries")),
        "{}",
        stdout(&pruned)
    );
    assert!(
        stdout(&pruned).contains("compacted (generation 1"),
        "prune gives the space back: {}",
        stdout(&pruned)
    );
    assert!(
        std::path::Path::new(&fx.path("log"))
            .join("CURRENT")
            .exists(),
        "the log moved to a new generation"
    );
    let after = json(&with(&["status", "--json"]));
    assert_eq!(after["log_entries"], 0, "{after}");
    assert_eq!(after["first_seq"], entries, "{after}");
    let said = stdout(&with(&["status"]));
    assert!(
        said.contains(&format!("(entries below {entries} archived and pruned)")),
        "{said}"
    );
    assert_eq!(after["checkpoint"], before["checkpoint"], "{after}");
    assert!(with(&["log", "verify"]).status.success());

    // The store still equals the fold of archive + log.
    let verified = with(&["verify"]);
    assert!(
        verified.status.success() && stdout(&verified).contains("differences: 0"),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    // Without the archive the pruned log cannot be folded: named.
    let blind = run(&["verify", "--log-dir", &log, "--store-dir", &store]);
    assert!(!blind.status.success());
    assert!(
        stderr(&blind).contains("pruned") && stderr(&blind).contains("--archive"),
        "{}",
        stderr(&blind)
    );
    // Replay from archive + log into a fresh store: identical.
    let fresh = p("fresh");
    let replayed = run_with(
        &["replay", "--store-dir", &fresh],
        &["--log-dir", &log, "--archive", &archive],
    );
    assert!(replayed.status.success(), "{}", stderr(&replayed));
    let same = run(&[
        "verify",
        "--log-dir",
        &log,
        "--archive",
        &archive,
        "--store-dir",
        &fresh,
    ]);
    assert!(
        stdout(&same).contains("differences: 0"),
        "{}",
        stdout(&same)
    );

    // More traffic after pruning (the embedded broker gives it new message
    // ids; that a pruned id still dedups is ecom-log's prune test): a
    // second archive + prune continues from where the first stopped.
    fx.fill(2600);
    assert!(
        with(&["log", "archive", "--segment-entries", "700"])
            .status
            .success()
    );
    assert!(with(&["log", "prune"]).status.success());
    let verified = with(&["verify"]);
    assert!(
        stdout(&verified).contains("differences: 0"),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
}

/// The S3 server of the test command (`scripts/fake-s3.sh`, exported as
/// `ECOM_OBJECT_STORE`), or `None` to skip: never when `CI` or
/// `ECOM_REQUIRE_OBJECT_STORE=1` is set, then a missing server fails.
fn object_store_endpoint() -> Option<String> {
    match std::env::var("ECOM_OBJECT_STORE") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ => {
            let required = std::env::var("CI").is_ok()
                || std::env::var("ECOM_REQUIRE_OBJECT_STORE").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "ECOM_OBJECT_STORE is not set but CI or ECOM_REQUIRE_OBJECT_STORE=1 requires the \
                 object-storage test: run scripts/fake-s3.sh start and export what it prints"
            );
            eprintln!("skipping: ECOM_OBJECT_STORE is not set (scripts/fake-s3.sh start)");
            None
        }
    }
}

/// One plain HTTP/1.1 request to the S3 server (path style; it checks no
/// signature): the status line and the rest of the answer.
fn s3_request(endpoint: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = endpoint
        .strip_prefix("http://")
        .expect("ECOM_OBJECT_STORE is http://host:port")
        .trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host)
        .unwrap_or_else(|e| panic!("S3 server at {endpoint} (ECOM_OBJECT_STORE): {e}"));
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// A bucket name no earlier test against the same server has used.
fn unique_bucket() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ecom-e2e-{}-{nanos}", std::process::id())
}

/// `ecom-pipeline <args>` configured for the S3 server the way a user
/// configures a real bucket: object_store's standard AWS_* variables (and
/// no others inherited from the test's environment).
fn run_s3(endpoint: &str, args: &[&str]) -> std::process::Output {
    run_env(
        args,
        &[
            ("AWS_ENDPOINT", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "ecom-test"),
            ("AWS_SECRET_ACCESS_KEY", "ecom-test-secret-value"),
        ],
    )
}

/// The arguments as `&str`s.
fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = super::support::bin();
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name.starts_with("GOOGLE_") || name == "ECOM_ARCHIVE" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.args(args).output().expect("run ecom-pipeline");
    eprintln!(
        "$ ecom-pipeline {}\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn an_s3_archive_is_sealed_pruned_and_replayed_into_an_identical_store() {
    let Some(endpoint) = object_store_endpoint() else {
        return;
    };
    let bucket = unique_bucket();
    let created = s3_request(&endpoint, "PUT", &format!("/{bucket}"));
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let url = format!("s3://{bucket}/ecom/prod");
    let fx = Fixture::new();
    let p = |name: &str| fx.path(name);
    let (log, store) = (p("log"), p("store"));
    let dirs = ["--log-dir", &log, "--store-dir", &store];
    let s3 = |extra: &[&str], common: &[&str]| {
        let mut args = extra.to_vec();
        args.extend_from_slice(common);
        run_s3(&endpoint, &args)
    };

    let ran = run_with(
        &["run", "--orders", "1500", "--stop-after-idle", "1s"],
        &dirs,
    );
    assert!(ran.status.success(), "{}", stderr(&ran));
    let before = json(&run_with(&["status", "--json"], &dirs));
    let entries = before["log_entries"].as_u64().unwrap();
    assert_eq!(before["lag"], 0, "{before}");

    // Seal into the bucket, under the prefix, then prune the log.
    let with_archive = [&dirs[..], &["--archive", url.as_str()]].concat();
    let sealed = s3(
        &[
            "log",
            "archive",
            "--instance",
            "shop-1",
            "--segment-entries",
            "400",
        ],
        &with_archive,
    );
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let segments = entries.div_ceil(400);
    assert!(
        stdout(&sealed).contains(&format!(
            "archived {entries} entries in {segments} segment(s)"
        )),
        "{}",
        stdout(&sealed)
    );
    let listed = s3_request(
        &endpoint,
        "GET",
        &format!("/{bucket}?list-type=2&prefix=ecom/prod/shop-1/entries/"),
    );
    assert_eq!(
        listed.matches(".manifest.json</Key>").count() as u64,
        segments,
        "one manifest per segment under the prefix: {listed}"
    );
    let pruned = s3(&["log", "prune"], &with_archive);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains(&format!("pruned {entries} archived entries")),
        "{}",
        stdout(&pruned)
    );
    let after = json(&run_with(&["status", "--json"], &dirs));
    assert_eq!(after["log_entries"], 0, "{after}");

    // The store equals the fold of archive + pruned log.
    let verified = s3(&["verify"], &with_archive);
    assert!(
        verified.status.success() && stdout(&verified).contains("differences: 0"),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );

    // The instance is lost: its archive alone rebuilds a store that equals
    // the original one (both verify clean against the same archive).
    let rebuilt = p("rebuilt");
    let from_archive = |store: &str| {
        vec![
            "--from-archive".to_string(),
            "shop-1".into(),
            "--archive".into(),
            url.clone(),
            "--store-dir".into(),
            store.to_string(),
            "--log-dir".into(),
            p("unused-log"),
        ]
    };
    let replayed = s3(&["replay"], &args(&from_archive(&rebuilt)));
    assert!(replayed.status.success(), "{}", stderr(&replayed));
    assert!(
        stdout(&replayed).contains(&format!("replayed {entries} entries")),
        "{}",
        stdout(&replayed)
    );
    for store in [&rebuilt, &store] {
        let same = s3(&["verify"], &args(&from_archive(store)));
        assert!(
            same.status.success() && stdout(&same).contains("differences: 0"),
            "{store}: {}{}",
            stdout(&same),
            stderr(&same)
        );
    }

    // A deleted object is named, and the replay touches nothing.
    let victim = format!("{:020}-{:020}.jsonl.gz", 400, 799);
    let deleted = s3_request(
        &endpoint,
        "DELETE",
        &format!("/{bucket}/ecom/prod/shop-1/entries/{victim}"),
    );
    assert!(deleted.starts_with("HTTP/1.1 204"), "{deleted}");
    let refused = s3(&["replay", "--truncate"], &args(&from_archive(&rebuilt)));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(&victim) && stderr(&refused).contains("missing"),
        "{}",
        stderr(&refused)
    );

    // A bucket that does not exist, and no credentials: each says what to
    // do, and no secret is printed.
    let nowhere = format!("s3://{}/x", unique_bucket());
    let missing = s3(
        &["log", "archive", "--instance", "shop-1"],
        &[&dirs[..], &["--archive", nowhere.as_str()]].concat(),
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("create the bucket"),
        "{}",
        stderr(&missing)
    );
    assert!(!stderr(&missing).contains("ecom-test-secret-value"));
    let anonymous = run_env(
        &[&["log", "archive"][..], &with_archive[..]].concat(),
        &[("AWS_ENDPOINT", endpoint.as_str())],
    );
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        stderr(&anonymous)
    );
}
