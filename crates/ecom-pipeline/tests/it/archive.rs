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
    let ran = with(&["run", "--orders", "1500", "--stop-after-idle", "1s"]);
    assert!(ran.status.success(), "{}", stderr(&ran));
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
    assert!(
        with(&["run", "--orders", "2000", "--stop-after-idle", "1s"])
            .status
            .success()
    );
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
    assert!(
        with(&["run", "--orders", "2600", "--stop-after-idle", "1s"])
            .status
            .success()
    );
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
