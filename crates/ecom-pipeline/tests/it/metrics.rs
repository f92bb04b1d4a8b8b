//! `/metrics`, `/healthz` and `/readyz` of a running pipeline (issue 11):
//! the series an operator's dashboards and alerts use exist under these
//! names, and move while the pipeline works.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::cli::{bin, sigterm_and_expect_clean_exit, wait_for_status};

/// `GET path` on `addr`; the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_owned())
}

/// The address a running pipeline serves its metrics on, from its status
/// file.
pub fn metrics_addr(log_dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log_dir.join("status.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["metrics_addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics_addr in the status file: {text}"))
        .to_owned()
}

/// `run --orders N` on the embedded source with its metrics on a free
/// port, started and serving; `extra` picks the store (the embedded one
/// under `root` by default). Returns the child and the address.
pub fn spawn_serving_run(
    root: &std::path::Path,
    orders: u64,
    extra: &[&str],
) -> (std::process::Child, String) {
    let log_dir = root.join("log");
    let mut cmd = bin();
    cmd.args(["run", "--orders", &orders.to_string()])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--log-dir")
        .arg(&log_dir);
    if extra.is_empty() {
        cmd.arg("--store-dir").arg(root.join("store"));
    }
    let child = cmd
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ecom-pipeline run");
    wait_for_status(&log_dir, |s| s["metrics_addr"].is_string());
    (child, metrics_addr(&log_dir))
}

/// The value of the series `name` (with its labels, as written), if
/// present.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[test]
fn metrics_move_while_the_pipeline_runs_and_probes_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_serving_run(tmp.path(), 60000, &[]);

    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!((code, body.trim()), (200, "ready"));

    let (code, first) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for series in [
        "ecom_messages_received_total",
        "ecom_messages_appended_total",
        "ecom_messages_acked_total",
        "ecom_messages_nacked_total",
        "ecom_messages_rejected_total{class=\"malformed\"}",
        "ecom_messages_rejected_total{class=\"impossible_value\"}",
        "ecom_lwt_total{result=\"unknown\"}",
        "ecom_duplicates_total{kind=\"transport\"}",
        "ecom_duplicates_total{kind=\"business\"}",
        "ecom_conflicts_total",
        "ecom_events_applied_total{outcome=\"order_inserted\"}",
        "ecom_log_entries",
        "ecom_log_size_bytes",
        "ecom_projector_lag_entries",
        "ecom_projector_lag_seconds",
        "ecom_projector_state{state=\"running\"}",
        "ecom_ready",
    ] {
        assert!(
            sample(&first, series).is_some(),
            "{series} missing from /metrics:\n{first}"
        );
    }
    let log_bytes = sample(&first, "ecom_log_size_bytes").unwrap();
    assert!(log_bytes > 0.0, "the log holds files: {log_bytes}");

    // Moving: each counter grows between scrapes while traffic flows, and
    // the histograms the libraries record fill.
    let moving = [
        "ecom_messages_received_total",
        "ecom_messages_acked_total",
        "ecom_events_applied_total{outcome=\"order_inserted\"}",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let later = loop {
        std::thread::sleep(Duration::from_millis(300));
        let (_, page) = http_get(&addr, "/metrics");
        let moved = moving
            .iter()
            .all(|s| sample(&page, s).unwrap_or(0.0) > sample(&first, s).unwrap_or(0.0));
        if moved {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "{moving:?} did not all grow within 60 s:\nfirst:\n{first}\nlast:\n{page}"
        );
    };
    // The dead-letter gauges come from the store, read at start and every
    // 15 s (not at every scrape).
    for series in ["ecom_parked_payments", "ecom_parked_oldest_age_seconds"] {
        assert!(
            sample(&later, series).is_some_and(|v| v >= 0.0),
            "{series} missing from /metrics:\n{later}"
        );
    }
    for histogram in ["ecom_log_append_seconds", "ecom_log_fsync_seconds"] {
        let count = sample(&later, &format!("{histogram}_count")).unwrap_or(0.0);
        assert!(count > 0.0, "{histogram} recorded nothing:\n{later}");
        assert!(
            later.contains(&format!("{histogram}_bucket{{le=\"0.001\"}}")),
            "{histogram} is not a histogram with buckets:\n{later}"
        );
    }
    sigterm_and_expect_clean_exit(child);
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--orders", "10", "--metrics-addr", &addr])
        .arg("--log-dir")
        .arg(tmp.path().join("log"))
        .arg("--store-dir")
        .arg(tmp.path().join("store"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}"))
            && stderr.contains("--metrics-addr"),
        "{stderr}"
    );
}
