//! Publish → row readable in `orders_payments_facts`, at a steady rate the
//! pipeline sustains: by default half of the end-to-end sustained rate,
//! which the stage measures first on the same running pipeline (a burst of
//! new orders published as fast as the publisher goes, timed until the
//! projector has applied the last of them). The rates of the separate
//! stages overstate it: with the whole pipeline, the Pub/Sub server and
//! Cassandra on one small machine, each stage gets less of it than alone,
//! and a rate the pipeline does not sustain measures the age of a growing
//! backlog, not the pipeline's latency.
//!
//! The whole pipeline runs in this process: the real Pub/Sub source, ingest
//! into a fresh log, the projector into a fresh keyspace. A publisher sends
//! new orders (distinct ids) on a fixed schedule; for a sample of them a
//! reader (a session of its own) polls the row with a plain read at the
//! store's consistency, which is what any reader of the table sees. The
//! clock starts just before the publish call, so the publisher's own
//! batching counts, as it would for a producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecom_cassandra::{CassandraConfig, CassandraStore};
use ecom_ingest::{IngestCounters, IngestOptions, run_ingest};
use ecom_log::{Log, LogOptions};
use ecom_projector::{Applier, Projector, ProjectorOptions};
use ecom_pubsub::{ProduceKind, ProduceSpec, PubSubConfig, SourceCounters, plan};
use google_cloud_pubsub::model::Message;
use tokio_util::sync::CancellationToken;

use crate::ingest::fresh_project;
use crate::projection::Scratch;
use crate::{BenchError, BenchOptions, Row};

/// Sampled messages per second: enough for a p99, few enough that the
/// readers' polls do not load Cassandra noticeably.
const SAMPLES_PER_S: f64 = 25.0;
const POLL: Duration = Duration::from_millis(5);
/// Reads in flight for the timing polls, on a session of their own: the
/// polls first shared the projector's session and its in-flight bound, so
/// a slow row meant more pollers, fewer slots for the projector, and
/// slower rows (a feedback loop that turned a backlog of seconds into one
/// of tens of seconds).
const READERS_IN_FLIGHT: usize = 4;
/// A sample not readable after this long fails the stage.
const GIVE_UP: Duration = Duration::from_secs(60);
/// The estimate used to size the burst when this run measured no stage.
const DEFAULT_RATE: f64 = 400.0;
/// The burst lasts about this long at the estimated rate.
const BURST_SECS: f64 = 5.0;
/// Ids far above the other stages' so a row can only come from here; the
/// burst's ids below the steady phase's.
const BURST_FIRST_ID: i64 = 9_000_000;
const STEADY_FIRST_ID: i64 = 10_000_000;

/// The slower of ingest and unique-order live projection measured
/// separately in `rows`: an upper estimate of the end-to-end rate, used
/// only to size the burst that measures it.
pub(crate) fn separate_stages_rate(rows: &[Row]) -> f64 {
    let ingest = rows.iter().find(|r| r.stage == "ingest").map(|r| r.ours);
    let projection = rows
        .iter()
        .find(|r| r.stage == "projection" && r.workload == crate::Workload::UniqueOrders.name())
        .map(|r| r.ours);
    match (ingest, projection) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => DEFAULT_RATE,
    }
}

pub(crate) async fn run(
    opts: &BenchOptions,
    pbase: &PubSubConfig,
    cbase: &CassandraConfig,
    fixed_rate: Option<f64>,
    estimate: f64,
    say: &mut impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let pcfg = fresh_project(pbase, "latency");
    ecom_pubsub::setup(&pcfg).await?;
    let scratch = Scratch::new(cbase, opts.concurrency).await?;
    let dir = tempfile::tempdir_in(&opts.work_dir)
        .map_err(BenchError::io("temporary log directory", &opts.work_dir))?;
    let log = Log::open(dir.path(), LogOptions::default())?;

    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel(8192);
    let ingest = tokio::spawn(run_ingest(
        rx,
        log.clone(),
        IngestOptions::default(),
        Arc::new(IngestCounters::default()),
        cancel.clone(),
    ));
    let source = {
        let (cfg, c) = (pcfg.clone(), cancel.clone());
        tokio::spawn(async move {
            ecom_pubsub::run_source(&cfg, tx, Arc::new(SourceCounters::default()), c).await
        })
    };
    let projector = Arc::new(Projector::new(
        log.clone(),
        Applier::new(scratch.store.clone()),
        ProjectorOptions {
            concurrency: opts.concurrency,
            ..ProjectorOptions::default()
        },
    ));
    let projection_cancel = CancellationToken::new();
    let projection = {
        let (p, c) = (projector.clone(), projection_cancel.clone());
        tokio::spawn(async move { p.run(c).await })
    };

    let mut rows = Vec::new();
    let steady = async {
        let rate = match fixed_rate {
            Some(r) => r,
            None => {
                let burst = ((estimate * BURST_SECS) as u64).clamp(200, opts.messages.max(200));
                say(&format!(
                    "end-to-end sustained rate: a burst of {burst} orders, timed until projected"
                ));
                let sustained = sustained_rate(&pcfg, &log, burst).await?;
                rows.push(Row::at_most(
                    "latency",
                    "end-to-end sustained rate (publish → log → Cassandra)",
                    sustained,
                    "messages/s",
                    None,
                    format!(
                        "{burst} new orders published at once, timed from the first publish until the projector applied the last; the steady phase runs at half this; separate stages' rate: {estimate:.0}/s"
                    ),
                ));
                sustained / 2.0
            }
        };
        let total = ((rate * opts.latency_secs as f64) as u64).max(1);
        let sample_every = ((rate / SAMPLES_PER_S).round() as u64).max(1);
        say(&format!(
            "{total} orders at {rate:.0}/s for {}s, every {sample_every}th timed",
            opts.latency_secs
        ));
        let reader = Arc::new(scratch.reader(READERS_IN_FLIGHT).await?);
        let ms = publish_and_time(&pcfg, &reader, total, rate, sample_every).await?;
        Ok::<_, BenchError>((rate, total, ms))
    };
    let measured = steady.await;
    cancel.cancel();
    let _ = source.await;
    let _ = ingest.await;
    projection_cancel.cancel();
    let _ = projection.await;
    scratch.drop().await;
    let (rate, total, mut ms) = measured?;
    if ms.is_empty() {
        return Err(BenchError::Failed("latency: no sample was timed".into()));
    }
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let note = format!(
        "{} samples of {total} orders published at {rate:.0}/s; server: {}; read at {:?}",
        ms.len(),
        pcfg.describe_endpoint(),
        cbase.consistency
    );
    let w = format!("publish → readable at {rate:.0}/s");
    rows.extend([
        Row::at_most(
            "latency",
            &format!("{w}, p50"),
            pick(0.5),
            "ms",
            None,
            note.clone(),
        ),
        Row::at_most(
            "latency",
            &format!("{w}, p99"),
            pick(0.99),
            "ms",
            Some(250.0),
            note.clone(),
        ),
        Row::at_most("latency", &format!("{w}, max"), pick(1.0), "ms", None, note),
    ]);
    Ok(rows)
}

/// `count` orders with distinct ids from `first_id`, as the producer
/// publishes them.
fn new_orders(first_id: i64, count: u64, seed: u64) -> Vec<(ecom_core::Topic, Vec<u8>)> {
    plan(&ProduceSpec {
        kind: ProduceKind::Orders,
        count,
        first_id,
        seed,
        ..ProduceSpec::default()
    })
}

/// Publishes `burst` new orders as fast as the publisher goes and returns
/// them per second, timed from the first publish until the projector's
/// checkpoint passed the last of them.
async fn sustained_rate(pcfg: &PubSubConfig, log: &Log, burst: u64) -> Result<f64, BenchError> {
    let messages = new_orders(BURST_FIRST_ID, burst, 23);
    let publisher = ecom_pubsub::publisher(pcfg, "orders_data").await?;
    let start = Instant::now();
    let published: Vec<_> = messages
        .into_iter()
        .map(|(_, data)| publisher.publish(Message::new().set_data(data)))
        .collect();
    for p in published {
        p.await
            .map_err(|e| BenchError::Failed(format!("publish failed: {e}")))?;
    }
    let mut last_progress = (Instant::now(), log.checkpoint());
    while log.checkpoint() < burst {
        let now = log.checkpoint();
        if now != last_progress.1 {
            last_progress = (Instant::now(), now);
        } else if last_progress.0.elapsed() > GIVE_UP {
            return Err(BenchError::Failed(format!(
                "latency: the burst stalled at {now} of {burst} projected for {GIVE_UP:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(burst as f64 / start.elapsed().as_secs_f64())
}

/// Publishes `total` new orders at `rate` and returns the publish →
/// readable time, in ms, of every `sample_every`th.
async fn publish_and_time(
    pcfg: &PubSubConfig,
    store: &Arc<CassandraStore>,
    total: u64,
    rate: f64,
    sample_every: u64,
) -> Result<Vec<f64>, BenchError> {
    const FIRST_ID: i64 = STEADY_FIRST_ID;
    let messages = new_orders(FIRST_ID, total, 21);
    let publisher = ecom_pubsub::publisher(pcfg, "orders_data").await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, data)) in messages.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let sent = Instant::now();
        let published = publisher.publish(Message::new().set_data(data));
        let timed = (i as u64).is_multiple_of(sample_every);
        let (store, order_id) = (store.clone(), FIRST_ID + i as i64);
        tasks.spawn(async move {
            published
                .await
                .map_err(|e| BenchError::Failed(format!("publish failed: {e}")))?;
            if !timed {
                return Ok(None);
            }
            loop {
                if store.fact_exists(order_id).await? {
                    return Ok(Some(sent.elapsed().as_secs_f64() * 1000.0));
                }
                if sent.elapsed() > GIVE_UP {
                    return Err(BenchError::Failed(format!(
                        "latency: order {order_id} not readable {GIVE_UP:?} after it was published"
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        });
    }
    let mut ms = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| BenchError::Failed(format!("latency task: {e}")))?;
        if let Some(x) = r? {
            ms.push(x);
        }
    }
    Ok(ms)
}
