//! Throughput of the three hot paths: durable log append (group commit),
//! live projection (conditional writes, embedded store), and the replay fold.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ecom_core::workload::{WorkloadSpec, generate};
use ecom_core::{Event, Model, RawMessage, decode};
use ecom_ingest::classify;
use ecom_log::{Log, LogOptions};
use ecom_projector::Applier;
use ecom_store::SledStore;

fn messages(orders: u64) -> Vec<RawMessage> {
    generate(&WorkloadSpec::demo(orders, 1))
        .into_iter()
        .enumerate()
        .map(|(i, p)| RawMessage {
            message_id: format!("m{i:08}"),
            topic: p.topic,
            publish_time_us: i as i64,
            data: p.data,
            attributes: Default::default(),
        })
        .collect()
}

fn events(msgs: &[RawMessage]) -> Vec<Event> {
    msgs.iter().filter_map(|m| decode(m).ok()).collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let msgs = messages(5_000);
    let evs = events(&msgs);

    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    let mut next = 0u64;
    g.bench_function("batch_1000", |b| {
        b.iter_batched(
            || {
                let batch: Vec<_> = (0..1000)
                    .map(|i| {
                        let mut m = msgs[i % msgs.len()].clone();
                        m.message_id = format!("bench-{next}-{i}");
                        classify(m)
                    })
                    .collect();
                next += 1;
                batch
            },
            |batch| rt.block_on(log.append(batch)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("projection");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(10);
    g.bench_function("apply_embedded", |b| {
        b.iter_batched(
            || Applier::new(Arc::new(SledStore::temporary().unwrap())),
            |applier| {
                rt.block_on(async {
                    for e in &evs {
                        applier.apply(e).await.unwrap();
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("replay_fold", |b| {
        b.iter(|| {
            let mut m = Model::new();
            for e in &evs {
                m.apply(e);
            }
            m.final_state()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
