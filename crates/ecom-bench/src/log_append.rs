//! Log append at batch sizes 1, 10, 100 and 1000, beside sled doing only the
//! durable part: the same bytes as one `sled::Batch`, `flush`, and the
//! `fdatasync` of sled's data file that the log adds (sled 0.34's flush is
//! `sync_file_range`). One caller, one batch at a time, so each batch pays
//! one durable flush on both sides; what ours adds is the record framing
//! (CRC, version), the message-id dedup index and the group-commit hand-off
//! to the writer thread.

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
        let (mut ours, mut bare) = (0f64, 0f64);
        for _ in 0..ROUNDS {
            ours = ours.max(ours_per_s(opts, &messages, b).await?);
            bare = bare.max(bare_per_s(opts, &messages, b)?);
        }
        rows.push(Row::against_ceiling(
            "log-append",
            &format!("batch {b}"),
            ours,
            bare,
            "messages/s",
            Some(0.8),
            format!("{n} messages, one caller; ceiling: sled batch + flush + fdatasync of the same bytes"),
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
    let t = Instant::now();
    for batch in messages.chunks(b) {
        log.append(batch.to_vec()).await?;
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

fn bare_per_s(opts: &BenchOptions, messages: &[Incoming], b: usize) -> Result<f64, BenchError> {
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
    let values: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| bincode::serialize(m.message()).expect("a message serializes"))
        .collect();
    let t = Instant::now();
    for (k, chunk) in values.chunks(b).enumerate() {
        let mut batch = sled::Batch::default();
        for (i, v) in chunk.iter().enumerate() {
            batch.insert(&((k * b + i) as u64).to_be_bytes(), v.as_slice());
        }
        db.apply_batch(batch).map_err(sled_err)?;
        db.flush().map_err(sled_err)?;
        data_file
            .sync_data()
            .map_err(BenchError::io("fdatasync of sled's data file", &data_path))?;
    }
    Ok(messages.len() as f64 / t.elapsed().as_secs_f64())
}
