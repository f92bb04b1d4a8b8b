//! The behaviour suite against the embedded sled store.

use std::sync::Arc;

use ecom_ingest::classify;
use ecom_log::{Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions};
use ecom_proptests::*;
use ecom_store::SledStore;
use proptest::prelude::*;

fn sled() -> SledStore {
    SledStore::temporary().expect("temporary sled store")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Redeliveries, business duplicates and conflicting versions through
    /// one instance end in the model's state.
    #[test]
    fn dedup_ends_in_the_model_state(d in published(40).prop_flat_map(|m| (Just(m.clone()), delivery(m, 1)))) {
        let (msgs, delivery) = d;
        block_on(async {
            let store = Arc::new(sled());
            let logs = run_instances(&delivery, store.clone(), 1).await;
            assert_store_is(store.as_ref(), &expected(&msgs)).await;
            let logs: Vec<_> = logs.into_iter().map(|(_, l)| l).collect();
            // Every transport duplicate was stopped by the log: each message id once.
            let entries: u64 = logs.iter().map(|l| l.stats().entries + l.stats().rejected).sum();
            assert_eq!(entries as usize, msgs.len());
        });
    }

    /// Any permutation, payments first included, split across 1–3
    /// instances with their own logs and one shared store, interleaving at
    /// every store operation, ends in the model's state; replaying all logs
    /// into an empty store gives the same state.
    #[test]
    fn join_ordering_across_instances_ends_in_the_model_state(
        d in published(40).prop_flat_map(|m| (Just(m.clone()), delivery(m, 3))),
        concurrency in 1usize..4,
        seed in any::<u64>(),
    ) {
        let (msgs, delivery) = d;
        block_on(async {
            let store = Arc::new(Yielding::new(sled(), seed));
            let logs = run_instances(&delivery, store.clone(), concurrency).await;
            let want = expected(&msgs);
            assert_store_is(store.as_ref(), &want).await;
            let logs: Vec<_> = logs.into_iter().map(|(_, l)| l).collect();
            assert_replay_rebuilds(&logs, &sled(), &want).await;
        });
    }

    /// Stopping the projector at any store operation (crash or outage) and
    /// resuming from the checkpoint, any number of times, ends in the
    /// model's state; so does replaying the log into an empty store.
    #[test]
    fn crash_at_any_point_then_resume_ends_in_the_model_state(
        d in published(40).prop_flat_map(|m| (Just(m.clone()), delivery(m, 1))),
        budgets in prop::collection::vec(0u64..40, 1..6),
        after in prop::collection::vec(any::<bool>(), 6),
    ) {
        let (msgs, delivery) = d;
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
            for batch in &delivery.instances[0] {
                log.append(batch.iter().cloned().map(classify).collect()).await.unwrap();
            }
            let store = Arc::new(FailAfter::new(sled(), budgets[0]));
            // A crash just before the failing operation, or just after it
            // reached the store (its result lost).
            store.fail_after_applying(after[0]);
            let mut crashes = budgets[1..].iter().zip(&after[1..]);
            loop {
                // A fresh projector each time: nothing survives a crash but
                // the log (with its checkpoint) and the store.
                let projector = Projector::new(log.clone(), Applier::new(store.clone()),
                    ProjectorOptions { batch_size: 5, ..Default::default() });
                let mut crashed = false;
                loop {
                    match projector.step().await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => { crashed = true; break }
                    }
                }
                if !crashed {
                    break;
                }
                match crashes.next() {
                    Some((budget, after)) => {
                        store.refill(*budget);
                        store.fail_after_applying(*after);
                    }
                    None => store.refill(u64::MAX),
                }
            }
            let want = expected(&msgs);
            assert_store_is(&store.inner, &want).await;
            assert_replay_rebuilds(std::slice::from_ref(&log), &sled(), &want).await;
        });
    }
}
