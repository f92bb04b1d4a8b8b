//! The bench harness at tiny sizes, against the real servers: every stage
//! produces its rows, with finite figures and ratios that are what the
//! figures say. The figures themselves are never asserted (tests do not
//! assert on time); what is asserted is that a stage measures a correct run
//! (projection and replay `verify` the store, or fail) and reports it whole.

use ecom_bench::{BenchError, BenchOptions, Row, Stage, run};

fn options(stages: &[Stage], dir: &std::path::Path) -> BenchOptions {
    BenchOptions {
        stages: stages.to_vec(),
        messages: 300,
        backlog: 2000,
        concurrency: 16,
        latency_secs: 2,
        latency_rate: Some(50.0),
        work_dir: dir.to_path_buf(),
        cassandra: None,
        pubsub: None,
        pipeline_binary: None,
    }
}

/// Cassandra from `ECOM_CASSANDRA`, or `None` to skip (never in CI).
fn with_cassandra(mut o: BenchOptions) -> Option<BenchOptions> {
    o.cassandra = Some(ecom_cassandra::testing::test_config()?);
    Some(o)
}

/// The emulator from `PUBSUB_EMULATOR_HOST`, or `None` to skip (never when
/// `CI` or `ECOM_REQUIRE_PUBSUB=1` is set).
fn with_pubsub(mut o: BenchOptions) -> Option<BenchOptions> {
    let cfg = ecom_pubsub::PubSubConfig::new("ecom-bench-test");
    if cfg.emulator_host.is_none() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var("ECOM_REQUIRE_PUBSUB").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "PUBSUB_EMULATOR_HOST is not set but Pub/Sub tests are required: run scripts/pubsub-emulator.sh start"
        );
        eprintln!("skipping: set PUBSUB_EMULATOR_HOST to run this test");
        return None;
    }
    o.pubsub = Some(cfg);
    Some(o)
}

fn assert_consistent(r: &Row) {
    assert!(r.ours.is_finite() && r.ours > 0.0, "{r:?}");
    if let Some(c) = r.ceiling {
        assert!(c.is_finite() && c > 0.0, "{r:?}");
        let ratio = r.ratio.expect("a row with a ceiling has a ratio");
        assert!((ratio - r.ours / c).abs() < 1e-9, "{r:?}");
    }
    assert_eq!(r.met.is_some(), !r.target.is_empty(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_stage_reports_each_batch_size_beside_bare_sled() {
    let dir = tempfile::tempdir().unwrap();
    let rows = run(
        &options(&[Stage::LogAppend], dir.path()),
        |_| {},
        &ecom_core::progress::ignore,
    )
    .await
    .unwrap();
    let workloads: Vec<&str> = rows.iter().map(|r| r.workload.as_str()).collect();
    assert_eq!(
        workloads,
        ["batch 1", "batch 10", "batch 100", "batch 1000"]
    );
    for r in &rows {
        assert_consistent(r);
        assert_eq!(
            (r.stage.as_str(), r.unit.as_str(), r.target.as_str()),
            ("log-append", "messages/s", "ratio >= 0.8")
        );
        assert_eq!(r.met, Some(r.ratio.unwrap() >= 0.8));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch logs are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_and_replay_stages_verify_the_store_and_report_both_ceilings() {
    let dir = tempfile::tempdir().unwrap();
    let Some(opts) = with_cassandra(options(&[Stage::Replay, Stage::Projection], dir.path()))
    else {
        return;
    };
    let rows = run(&opts, |_| {}, &ecom_core::progress::ignore)
        .await
        .unwrap();
    let stages: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.stage.as_str(), r.target.as_str()))
        .collect();
    // Stages run in their fixed order whatever order they were asked in;
    // per workload: against the LWT loop (target), against plain writes.
    assert_eq!(
        stages,
        [
            ("projection", "ratio >= 1"),
            ("projection", ""),
            ("projection", "ratio >= 1"),
            ("projection", ""),
            ("replay", "ratio >= 1"),
            ("replay", "ratio >= 1"),
        ]
    );
    rows.iter().for_each(assert_consistent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_latency_stages_run_the_real_source_against_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let Some(opts) = with_pubsub(options(&[Stage::Ingest, Stage::Latency], dir.path())) else {
        return;
    };
    let Some(opts) = with_cassandra(opts) else {
        return;
    };
    let rows = run(&opts, |_| {}, &ecom_core::progress::ignore)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!(rows[0].stage, "ingest");
    assert!(
        rows[0].note.contains("emulator at"),
        "the server is named: {}",
        rows[0].note
    );
    let latency: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.workload.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(latency, ["p50", "p99", "max"]);
    assert!(
        rows[1].ours <= rows[2].ours && rows[2].ours <= rows[3].ours,
        "{rows:#?}"
    );
    rows.iter().for_each(assert_consistent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_without_a_rate_measures_the_end_to_end_rate_first_and_runs_at_half_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&[Stage::Latency], dir.path());
    opts.latency_rate = None;
    let Some(opts) = with_pubsub(opts) else {
        return;
    };
    let Some(opts) = with_cassandra(opts) else {
        return;
    };
    let rows = run(&opts, |_| {}, &ecom_core::progress::ignore)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let sustained = &rows[0];
    assert_eq!(
        (sustained.stage.as_str(), sustained.unit.as_str()),
        ("latency", "messages/s"),
        "{sustained:?}"
    );
    assert!(
        sustained.workload.starts_with("end-to-end sustained rate"),
        "{sustained:?}"
    );
    let steady = format!("publish → readable at {:.0}/s, p50", sustained.ours / 2.0);
    assert_eq!(rows[1].workload, steady, "{rows:#?}");
    rows.iter().for_each(assert_consistent);
}

#[tokio::test]
async fn a_stage_whose_server_is_missing_is_refused_with_what_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let e = run(
        &options(&[Stage::Projection], dir.path()),
        |_| {},
        &ecom_core::progress::ignore,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            BenchError::Missing {
                stage: "projection",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("scripts/cassandra.sh start"), "{e}");
    let e = run(
        &options(&[Stage::Ingest], dir.path()),
        |_| {},
        &ecom_core::progress::ignore,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("PUBSUB_EMULATOR_HOST"), "{e}");
    let e = run(
        &options(&[Stage::Memory], dir.path()),
        |_| {},
        &ecom_core::progress::ignore,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("ecom-pipeline bench"), "{e}");
}
