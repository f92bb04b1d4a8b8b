//! Log append at batch sizes 1, 10, 100 and 1000, beside sled doing only the
//! durable part: the same key-value pairs the log writes (each message's
//! framed record and its dedup-index key, from `ecom_log::encoded_pairs`) as
//! one `sled::Batch`, `flush`, and the `fdatasync` of sled's data file that
//! the log adds (sled 0.34's flush is `sync_file_range`). One caller, one
//! batch at a time, so each batch pays one durable flush on both sides; what
//! ours adds is encoding on the caller, the dedup lookups and the
//! group-commit hand-off to the writer thread.
//!
//! The index key doubles sled's work per message, so a second bare figure,
//! the message bytes alone under a sequence key, goes into the row's note:
//! it is what a log without dedup would cost.

use std::fs::File;
use std::time::Instant;

use ecom_core::workload::{WorkloadSpec, generate};
use ecom_log::{Incoming, Log, LogOptions};

use crate::data::raw;
use crate::{BenchError, BenchOptions, Row};

const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
/// Best of this many alternating rounds, ours and bare: the machine is
/// noisy, and the best round is the one least disturbed.
const ROUNDS: usize = 2;

pub(crate) async fn run(
    opts: &BenchOptions,
    say: &mut impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for b in BATCH_SIZES {
        let batches = (opts.messages as usize / b).clamp(20, 500);
        let n = b * batches;
        let messages: Vec<Incoming> = generate(&WorkloadSpec {
            invalid: 0,
            ..WorkloadSpec::demo(n as u64, 5)
        })
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, p)| Incoming::Valid(raw(i, p.topic, p.data)))
        .collect();
        say(&format!(
            "batch {b}: {batches} batches, ours and bare sled, best of {ROUNDS}"
        ));
        let pairs = ecom_log::encoded_pairs(&messages)?;
        let bytes_only: Vec<ecom_log::KeyValue> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let value = bincode::serialize(m.message()).expect("a message serializes");
                ((i as u64).to_be_bytes().to_vec(), value)
            })
            .collect();
        let (mut ours, mut bare, mut unindexed) = (0f64, 0f64, 0f64);
        for _ in 0..ROUNDS {
            ours = ours.max(ours_per_s(opts, &messages, b).await?);
            bare = bare.max(bare_per_s(opts, &pairs, 2 * b)? / 2.0);
            unindexed = unindexed.max(bare_per_s(opts, &bytes_only, b)?);
        }
        rows.push(Row::against_ceiling(
            "log-append",
            &format!("batch {b}"),
            ours,
            bare,
            "messages/s",
            Some(0.8),
            format!(
                "{n} messages, one caller; ceiling: sled batch + flush + fdatasync of the same \
                 records and index keys; without the index key (no dedup) sled does {}/s",
                crate::figure(unindexed)
            ),
        ));
    }
    Ok(rows)
}

async fn ours_per_s(
    opts: &BenchOptions,
    messages: &[Incoming],
    b: usize,
) -> Result<f64, BenchError> {
    let dir = tempfile::tempdir_in(&opts.work_dir)
        .map_err(BenchError::io("temporary log directory", &opts.work_dir))?;
    let log = Log::open(dir.path(), LogOptions::default())?;
    // Built before the clock starts: the caller hands over its batch.
    let batches: Vec<Vec<Incoming>> = messages.chunks(b).map(<[Incoming]>::to_vec).collect();
    let t = Instant::now();
    for batch in batches {
        log.append(batch).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    if log.next_seq() != messages.len() as u64 {
        return Err(BenchError::Failed(format!(
            "log append: {} entries after appending {} distinct messages",
            log.next_seq(),
            messages.len()
        )));
    }
    Ok(messages.len() as f64 / secs)
}

/// Key-value pairs per second, `b` pairs per durable batch.
fn bare_per_s(
    opts: &BenchOptions,
    pairs: &[ecom_log::KeyValue],
    b: usize,
) -> Result<f64, BenchError> {
    let dir = tempfile::tempdir_in(&opts.work_dir)
        .map_err(BenchError::io("temporary sled directory", &opts.work_dir))?;
    let sled_err = |source| BenchError::Sled {
        dir: dir.path().to_path_buf(),
        source,
    };
    // The same settings as the log's own sled (ecom-log: `Log::open`).
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(LogOptions::default().cache_capacity_bytes)
        .flush_every_ms(None)
        .open()
        .map_err(sled_err)?;
    let data_path = dir.path().join("db");
    let data_file = File::open(&data_path).map_err(BenchError::io("sled data file", &data_path))?;
    let t = Instant::now();
    for chunk in pairs.chunks(b) {
        let mut batch = sled::Batch::default();
        for (k, v) in chunk {
            batch.insert(k.as_slice(), v.as_slice());
        }
        db.apply_batch(batch).map_err(sled_err)?;
        db.flush().map_err(sled_err)?;
        data_file
            .sync_data()
            .map_err(BenchError::io("fdatasync of sled's data file", &data_path))?;
    }
    Ok(pairs.len() as f64 / t.elapsed().as_secs_f64())
}
