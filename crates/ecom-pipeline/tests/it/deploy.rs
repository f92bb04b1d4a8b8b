//! The deployment files (issue 11) checked against the real thing, since
//! the machines this repo is built on have no Docker engine and no cluster.
//!
//! - The Grafana dashboard (`deploy/grafana/ecom-pipeline.json`): every
//!   metric name in every PromQL expression must be served by a real
//!   `ecom-pipeline run` (a scrape of its `/metrics`); a name ending in
//!   `_bucket`, `_sum` or `_count` must be a histogram there. And every
//!   metric the scrape serves must be on the dashboard, so a new metric
//!   gets a panel (or a decision not to). Two series exist only with the
//!   Cassandra store (`ecom_lwt_total`, `ecom_cassandra_request_seconds`):
//!   they are checked against a second run on Cassandra when
//!   `ECOM_CASSANDRA` is set, as in the test command; without it that part
//!   skips, and fails instead with `CI` or `ECOM_REQUIRE_CASSANDRA=1`.
//! - The Kubernetes manifests, compose file, Prometheus configuration and
//!   Dockerfile: `scripts/deploy-check.sh` (kubernetes-validate against the
//!   Kubernetes schemas, strict, then the wiring between the files). When
//!   the validator cannot be installed (no PyPI) the test skips, and fails
//!   instead with `CI`, `ECOM_REQUIRE_PUBSUB=1` or `ECOM_REQUIRE_CASSANDRA=1`
//!   (what `scripts/test.sh` sets).
//!
//! The checks can fail, and the tests show it each run: the dashboard
//! check is run again on the dashboard with one metric renamed
//! (`ecom_projector_lag_seconds` → `ecom_projector_lag_secs`) and must name
//! it; the script is run again on a copy of the files with a misspelt
//! StatefulSet field (`terminationGracePeriodSecond`) and with a
//! Prometheus target dropped, and must fail each time. By hand, once, on
//! the real files: the same rename in `deploy/grafana/ecom-pipeline.json`
//! failed `dashboard_queries_name_only_metrics_a_running_pipeline_serves`
//! with "the dashboard uses metrics a running pipeline does not serve:
//! [\"ecom_projector_lag_secs\"]", and `replicas: "three"` in
//! `deploy/kubernetes/statefulset.yaml` failed `deploy_files_validate`
//! with kubernetes-validate's "spec.replicas: 'three' is not of type
//! 'integer', 'null'".
//!
//! Run alone: `cargo test -p ecom-pipeline --test it deploy -- --nocapture`
//! (no server needed; with `ECOM_CASSANDRA` the Cassandra-only series are
//! checked too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::cli::{run, sigterm_and_expect_clean_exit};
use super::metrics::{http_get, spawn_serving_run};
use super::pubsub::one_at_a_time;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Series that only the Cassandra store records.
const CASSANDRA_ONLY: &[&str] = &["ecom_lwt_total", "ecom_cassandra_request_seconds"];

/// Every PromQL expression of the dashboard: panel targets (also inside
/// collapsed rows) and the templating queries.
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    walk(&dashboard["templating"], &mut out);
    out
}

/// The `ecom_` metric names an expression uses. Quoted strings (label
/// values, regexes) are skipped; an identifier counts as a metric name
/// when it starts with `ecom_` and is followed by `{`, `[`, `)`, `,`,
/// whitespace or the end: anything else means the expression is not what
/// this parser understands, and it says so.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if ident.starts_with("ecom_") {
                let next = chars.get(i).copied();
                assert!(
                    next.is_none_or(|n| "{[),".contains(n) || n.is_whitespace()),
                    "cannot tell whether {ident:?} is a metric in {expr:?} (followed by {next:?})"
                );
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Metric family → type, from a scrape's `# TYPE` lines.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// The dashboard's names that `page` does not serve (with the reason).
fn not_served(names: &BTreeSet<String>, page: &str) -> Vec<String> {
    let fam = families(page);
    let mut missing = Vec::new();
    for name in names {
        if fam.contains_key(name) {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s));
        match base.map(|b| (b, fam.get(b))) {
            Some((_, Some(kind))) if kind == "histogram" => {}
            Some((b, Some(kind))) => {
                missing.push(format!("{name} ({b} is a {kind}, not a histogram)"))
            }
            _ => missing.push(name.clone()),
        }
    }
    missing
}

/// The family a dashboard name belongs to (`…_bucket` → its histogram).
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn dashboard_names(text: &str) -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(text).expect("deploy/grafana/ecom-pipeline.json is not valid JSON");
    let exprs = dashboard_expressions(&dashboard);
    assert!(exprs.len() > 10, "too few expressions found: {exprs:?}");
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

/// Scrapes a running pipeline until `done` holds for the page (or fails
/// after 60 s, showing the last page).
fn scrape_until(addr: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, page) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{page}");
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the scrape did not get there within 60 s:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether `page` has a sample of the series `name` (a family, or one of
/// a histogram's `_bucket`/`_sum`/`_count`).
fn has_sample(page: &str, name: &str) -> bool {
    page.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[test]
fn dashboard_queries_name_only_metrics_a_running_pipeline_serves() {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/ecom-pipeline.json"))
        .expect("read deploy/grafana/ecom-pipeline.json");
    let names = dashboard_names(&text);
    eprintln!("dashboard uses {} metric names: {names:?}", names.len());

    let tmp = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_serving_run(tmp.path(), 3000, &[]);
    // Histograms appear once something was recorded, the parked count once
    // the store was first counted.
    let page = scrape_until(&addr, |p| {
        [
            "ecom_log_append_seconds_count",
            "ecom_log_fsync_seconds_count",
            "ecom_parked_payments",
        ]
        .iter()
        .all(|f| has_sample(p, f))
    });
    sigterm_and_expect_clean_exit(child);

    let missing = not_served(&names, &page);
    let unexpected: Vec<&String> = missing
        .iter()
        .filter(|m| !CASSANDRA_ONLY.contains(&family_of(m)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the dashboard uses metrics a running pipeline does not serve: {unexpected:?}\nscrape:\n{page}"
    );

    // Every metric the pipeline serves is on the dashboard.
    let on_dashboard: BTreeSet<&str> = names.iter().map(|n| family_of(n)).collect();
    let off: Vec<String> = families(&page)
        .into_keys()
        .filter(|f| f.starts_with("ecom_") && !on_dashboard.contains(f.as_str()))
        .collect();
    assert!(off.is_empty(), "served but on no dashboard panel: {off:?}");

    // The check can fail: a renamed metric is caught, by name.
    let renamed = text.replace("ecom_projector_lag_seconds", "ecom_projector_lag_secs");
    let caught = not_served(&dashboard_names(&renamed), &page);
    assert!(
        caught.contains(&"ecom_projector_lag_secs".to_owned()),
        "a renamed metric went unnoticed: {caught:?}"
    );
    // And so is a histogram suffix on a series that is not a histogram.
    let wrong = BTreeSet::from(["ecom_projector_lag_entries_bucket".to_owned()]);
    assert_eq!(not_served(&wrong, &page).len(), 1);

    let cassandra_names: BTreeSet<String> = missing.into_iter().collect();
    if cassandra_names.is_empty() {
        return;
    }
    eprintln!("only the Cassandra store serves {cassandra_names:?}: checking them on Cassandra");
    check_on_cassandra(&cassandra_names);
}

/// Runs the pipeline on the Cassandra store (fresh keyspace, embedded
/// source) and checks `names` against its scrape.
fn check_on_cassandra(names: &BTreeSet<String>) {
    let Some(contact) = ecom_cassandra::testing::contact_points() else {
        return;
    };
    // The outage test stops Cassandra for a while: not during this run.
    let _server = one_at_a_time();
    let cassandra = contact[0].clone();
    let keyspace = ecom_cassandra::testing::unique_keyspace();
    let common = [
        "--store",
        "cassandra",
        "--cassandra",
        &cassandra,
        "--cassandra-keyspace",
        &keyspace,
    ];
    let out = run(&[&["setup", "cassandra"][..], &common[..]].concat());
    assert!(out.status.success(), "setup cassandra failed");
    let tmp = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_serving_run(tmp.path(), 300, &common);
    // A histogram's samples are its `_bucket`/`_sum`/`_count` series.
    let page = scrape_until(&addr, |p| {
        ["ecom_lwt_total", "ecom_cassandra_request_seconds_count"]
            .iter()
            .all(|f| has_sample(p, f))
    });
    sigterm_and_expect_clean_exit(child);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(super::harness::drop_keyspaces(&cassandra, &[&keyspace]));
    let missing = not_served(names, &page);
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics a pipeline on Cassandra does not serve: {missing:?}\nscrape:\n{page}"
    );
}

/// Whether a missing tool must fail the test rather than skip it: in CI
/// and in the test command, which require the servers.
fn required() -> bool {
    std::env::var_os("CI").is_some()
        || std::env::var("ECOM_REQUIRE_PUBSUB").as_deref() == Ok("1")
        || std::env::var("ECOM_REQUIRE_CASSANDRA").as_deref() == Ok("1")
}

fn deploy_check(args: &[&Path]) -> Output {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/deploy-check.sh"))
        .args(args)
        .output()
        .expect("run scripts/deploy-check.sh");
    eprintln!(
        "$ scripts/deploy-check.sh {}\n{}{}",
        args.iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the files the script checks, for breaking.
fn copy_of_deploy_files(into: &Path) {
    let root = repo_root();
    std::fs::copy(root.join("Dockerfile"), into.join("Dockerfile")).unwrap();
    let status = Command::new("cp")
        .arg("-R")
        .arg(root.join("deploy"))
        .arg(into.join("deploy"))
        .status()
        .unwrap();
    assert!(status.success(), "cp -R deploy");
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn deploy_files_validate() {
    let install = deploy_check(&[Path::new("install")]);
    if !install.status.success() {
        assert!(
            !required(),
            "cannot install the validator (scripts/deploy-check.sh install), and CI or \
             ECOM_REQUIRE_* requires the deployment checks: see its output above"
        );
        eprintln!("skipped: the validator could not be installed (see above)");
        return;
    }
    let out = deploy_check(&[]);
    assert!(out.status.success(), "scripts/deploy-check.sh failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("all deployment checks passed"),
        "the script ended early: {stderr}"
    );

    // The checks can fail: a misspelt Kubernetes field (a schema error)…
    let tmp = tempfile::tempdir().unwrap();
    copy_of_deploy_files(tmp.path());
    let sts = tmp.path().join("deploy/kubernetes/statefulset.yaml");
    edit(
        &sts,
        "terminationGracePeriodSeconds:",
        "terminationGracePeriodSecond:",
    );
    let out = deploy_check(&[tmp.path()]);
    assert!(
        !out.status.success() && combined(&out).contains("terminationGracePeriodSecond"),
        "a misspelt StatefulSet field passed"
    );
    // …and a pipeline instance Prometheus does not scrape (a wiring error).
    let tmp = tempfile::tempdir().unwrap();
    copy_of_deploy_files(tmp.path());
    edit(
        &tmp.path().join("deploy/prometheus.yml"),
        "          - pipeline-3:9464\n",
        "",
    );
    let out = deploy_check(&[tmp.path()]);
    assert!(
        !out.status.success() && combined(&out).contains("FAIL  prometheus.yml: targets"),
        "a pipeline instance without a Prometheus target passed"
    );
}
