//! Deterministic simulation: thousands of seeded runs of the embedded broker,
//! 1–3 instances with their own logs and one shared sled store, with
//! crashes, outages, redeliveries and reorderings, each checked against the
//! model. What is simulated and checked: `ecom_proptests::sim`.
//!
//! - `cargo test -p ecom-proptests --test simulation` runs seeds 0..2000.
//! - `ECOM_SIM_SEEDS=N` runs N seeds (long mode), from `ECOM_SIM_FIRST_SEED`
//!   (default 0).
//! - `ECOM_SIM_SEED=S` replays seed S alone and prints its schedule.
//! - `ECOM_SIM_DIR` chooses where the logs go (default `/dev/shm` if
//!   present).

use std::time::Instant;

use ecom_proptests::sim::{self, Outcome};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// Runs `seeds` on two threads; returns every outcome, or panics with the
/// first failures and the command that replays each.
fn run_seeds(seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    let root = sim::sim_root();
    let threads = 2u64;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = seeds.clone();
                let root = &root;
                s.spawn(move || {
                    seeds
                        .filter(|seed| seed % threads == t)
                        .map(|seed| {
                            std::panic::catch_unwind(|| sim::run(seed, root)).unwrap_or_else(
                                |panic| {
                                    let what = panic
                                        .downcast_ref::<String>()
                                        .cloned()
                                        .or_else(|| {
                                            panic.downcast_ref::<&str>().map(|s| s.to_string())
                                        })
                                        .unwrap_or_default();
                                    Err(sim::Failure {
                                        seed,
                                        reason: format!("panicked: {what}"),
                                        trace: Vec::new(),
                                    })
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let mut failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    failures.sort_by_key(|f| f.seed);
    if !failures.is_empty() {
        let shown: Vec<String> = failures.iter().take(5).map(|f| f.to_string()).collect();
        panic!(
            "{} of {} seeds failed:\n{}",
            failures.len(),
            results.len(),
            shown.join("\n")
        );
    }
    results.into_iter().map(|r| r.expect("checked")).collect()
}

/// Every seed ends in the model's state, loses nothing, and its logs
/// replay to the same state. Also checks that the seeds, together, did
/// exercise what they are meant to (crashes, outages, redeliveries,
/// conflicts, parked payments, malformed messages, several instances):
/// a simulation that stopped injecting faults would fail here.
#[test]
fn seeded_runs_with_crashes_and_redeliveries_end_in_the_model_state() {
    if let Some(seed) = env_u64("ECOM_SIM_SEED") {
        match sim::run(seed, &sim::sim_root()) {
            Ok(out) => {
                for line in &out.trace {
                    println!("{line}");
                }
                println!(
                    "seed {seed}: ok, {out:?}",
                    out = Outcome {
                        trace: vec![],
                        ..out
                    }
                );
            }
            Err(f) => {
                for line in &f.trace {
                    println!("{line}");
                }
                panic!("{f}");
            }
        }
        return;
    }
    let n = env_u64("ECOM_SIM_SEEDS").unwrap_or(2000);
    let first = env_u64("ECOM_SIM_FIRST_SEED").unwrap_or(0);
    let started = Instant::now();
    let outcomes = run_seeds(first..first + n);
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let multi = outcomes.iter().filter(|o| o.instances > 1).count() as u64;
    let totals = [
        ("crashes", sum(|o| o.crashes)),
        ("outages", sum(|o| o.outages)),
        ("redeliveries", sum(|o| o.redelivered)),
        ("conflicts", sum(|o| o.conflicts)),
        ("parked", sum(|o| o.parked)),
        ("malformed", sum(|o| o.malformed)),
        ("multi-instance seeds", multi),
    ];
    println!(
        "{n} seeds from {first} in {:.1}s: published {}, delivered {}, {totals:?}",
        started.elapsed().as_secs_f64(),
        sum(|o| o.published),
        sum(|o| o.delivered),
    );
    if n >= 100 {
        for (what, count) in totals {
            assert!(
                count >= n / 10,
                "only {count} {what} in {n} seeds: the simulation no longer exercises them"
            );
        }
    }
}

/// The schedule is a function of the seed.
#[test]
fn the_same_seed_gives_the_same_schedule() {
    let root = sim::sim_root();
    for seed in [1, 2, 3, 42, 1234] {
        let a = sim::run(seed, &root).unwrap_or_else(|f| panic!("{f}"));
        let b = sim::run(seed, &root).unwrap_or_else(|f| panic!("{f}"));
        assert!(a.trace.len() > 10, "seed {seed}: a trivial schedule");
        if let Some(at) =
            (0..a.trace.len().max(b.trace.len())).find(|&k| a.trace.get(k) != b.trace.get(k))
        {
            panic!(
                "seed {seed} gave two schedules; first difference at action {at}:\n  {:?}\n  {:?}",
                a.trace.get(at),
                b.trace.get(at)
            );
        }
        assert_eq!(a, b, "seed {seed}: same schedule, different outcome");
    }
}
