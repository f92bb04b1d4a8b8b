//! Against the local Pub/Sub server (scripts/pubsub-emulator.sh): setup,
//! produce, run --source pubsub, SIGTERM in the middle, resume.
//! Needs PUBSUB_EMULATOR_HOST; fails instead of skipping in CI.

use std::time::Duration;

use super::cli::{
    json, run_with, sigterm_and_expect_clean_exit, spawn_run, wait_for_status,
    wait_for_status_within,
};
pub use super::support::{emulator, one_at_a_time, project};

#[test]
fn sigterm_in_the_middle_of_a_pubsub_run_loses_nothing() {
    if emulator().is_none() {
        return;
    }
    let _server = one_at_a_time();
    let project = project();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log").display().to_string();
    let store = tmp.path().join("store").display().to_string();
    let common = [
        "--project",
        project.as_str(),
        "--log-dir",
        &log,
        "--store-dir",
        &store,
    ];
    let with = |extra: &[&str]| run_with(extra, &common);
    let pubsub_run = || {
        let mut args = vec!["--source", "pubsub"];
        args.extend_from_slice(&common);
        spawn_run(&args)
    };
    // The shortest deadline Pub/Sub allows: messages the server had sent on
    // the stream that SIGTERM closed, but the client never read, are
    // redelivered only when it expires.
    assert!(
        with(&["setup", "pubsub", "--pubsub-ack-deadline", "10s"])
            .status
            .success()
    );
    assert!(
        with(&["setup", "pubsub", "--pubsub-ack-deadline", "10s"])
            .status
            .success(),
        "setup is idempotent"
    );
    let orders = json(&with(&["produce", "orders", "--count", "3000", "--json"]));
    assert_eq!(orders["published"], 3000);
    assert_eq!(orders["failed"], 0);
    let payments = json(&with(&[
        "produce",
        "payments",
        "--count",
        "3000",
        "--orphans",
        "30",
        "--json",
    ]));
    assert_eq!(payments["published"], 3030);

    let child = pubsub_run();
    // Stop it once it has made some progress.
    wait_for_status(&tmp.path().join("log"), |s| {
        s["log_entries"].as_u64().unwrap_or(0) > 0
    });
    sigterm_and_expect_clean_exit(child);

    // Resume: whatever was not acknowledged comes back (at once if the first
    // run nacked it, after the ack deadline if it was still in flight on the
    // closed stream); the log dedups what was appended but not acked. Waiting
    // for the count, bounded well past the deadline, rather than for an idle
    // spell: a 3 s idle spell ended the run before the server redelivered.
    let resumed = pubsub_run();
    // The status file must be the resumed run's own: the first run's can
    // already show the full count (it may have got everything before its
    // SIGTERM), and a SIGTERM sent before the resumed run installed its
    // handler kills it instead of stopping it.
    let resumed_pid = u64::from(resumed.id());
    wait_for_status_within(&tmp.path().join("log"), Duration::from_secs(90), |s| {
        s["running_pid"].as_u64() == Some(resumed_pid)
            && s["log_entries"].as_u64() == Some(6030)
            && s["lag"].as_u64() == Some(0)
    });
    sigterm_and_expect_clean_exit(resumed);
    let status = json(&with(&["status", "--json", "--count-rows"]));
    assert_eq!(
        status["orders_in_store"], 3000,
        "every order landed once: {status}"
    );
    assert_eq!(
        status["payments_joined"], 3000,
        "every payment joined: {status}"
    );
    assert_eq!(
        status["parked_payments"], 30,
        "orphans stay parked: {status}"
    );
    assert_eq!(status["lag"], 0);
    assert_eq!(
        status["log_entries"], 6030,
        "each message id once in the log: {status}"
    );
    assert!(with(&["verify"]).status.success());
}
