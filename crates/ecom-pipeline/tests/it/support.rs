//! What the `it` and `failpoints` test binaries share besides the
//! harness: running the binary, waiting for its status file, and finding
//! the Pub/Sub server. `failpoints` includes this file and the harness with
//! `#[path]`, so there is one copy of each.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The binary under test, with a quiet log and none of the settings a
/// developer's environment could carry.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecom-pipeline"));
    c.env("ECOM_LOG", "warn");
    // Tests run several pipelines at once: each serves its metrics on a
    // port of its own (the status file says which).
    c.env("ECOM_METRICS_ADDR", "127.0.0.1:0");
    for v in [
        "ECOM_STORE",
        "ECOM_LOG_DIR",
        "ECOM_STORE_DIR",
        "ECOM_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs the binary to completion, echoing the command and its output.
pub fn run(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("run ecom-pipeline");
    eprintln!(
        "$ ecom-pipeline {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits (bounded by `within`) until the running pipeline's status file
/// satisfies `ready`.
pub fn wait_for_status_within(
    log_dir: &Path,
    within: Duration,
    ready: impl Fn(&serde_json::Value) -> bool,
) {
    let file = log_dir.join("status.json");
    let polls = within.as_millis() / 50;
    for _ in 0..polls {
        let status = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if status.as_ref().is_some_and(&ready) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the pipeline did not reach the expected status in {}",
        file.display()
    );
}

/// Sends SIGTERM and asserts a clean (zero) exit.
pub fn sigterm_and_expect_clean_exit(mut child: Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit:?}");
}

/// The Pub/Sub server's address, or `None` to skip; panics instead when
/// `CI` or `ECOM_REQUIRE_PUBSUB=1` says the server is required.
pub fn emulator() -> Option<String> {
    match std::env::var("PUBSUB_EMULATOR_HOST") {
        Ok(h) if !h.is_empty() => Some(h),
        _ if std::env::var_os("CI").is_some()
            || std::env::var("ECOM_REQUIRE_PUBSUB").as_deref() == Ok("1") =>
        {
            panic!(
                "PUBSUB_EMULATOR_HOST is not set: start scripts/pubsub-emulator.sh (scripts/test.sh does)"
            )
        }
        _ => {
            eprintln!("skipped: PUBSUB_EMULATOR_HOST is not set");
            None
        }
    }
}

/// A Pub/Sub project no other test of this process uses.
pub fn project() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Held by each test that drives the Pub/Sub server, so that they run one
/// at a time and their publishing and pulling do not slow each other down.
/// (It does not make the SIGTERM test of `pubsub.rs` deterministic: its resumed run
/// stops after 3 s idle, and messages its first run had in flight come
/// back only when their lease expires, so under load it can miss a few.)
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}
