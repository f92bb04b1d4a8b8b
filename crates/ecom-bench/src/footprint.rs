//! Memory and disk: peak RSS of a real `ecom-pipeline run` while it drains a
//! large backlog from the embedded source, and while its projector catches
//! up on a large log; and bytes on disk per message in the log.
//!
//! Each run is a child process, so the figure is the pipeline's alone (not
//! this bench's); its peak is `VmHWM` from `/proc/<pid>/status`, sampled
//! every 50 ms (it is a high-water mark, so sampling misses nothing but
//! growth in the last interval before exit).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ecom_core::workload::{WorkloadSpec, generate};
use ecom_log::{Log, LogOptions};

use crate::data::fill_log;
use crate::{BenchError, BenchOptions, Row};

const RSS_TARGET_MB: f64 = 150.0;

pub(crate) async fn run(
    opts: &BenchOptions,
    say: &mut impl FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let binary = opts.pipeline_binary.as_deref().ok_or(BenchError::Missing {
        stage: "memory",
        what: "the ecom-pipeline executable",
        hint: "run the bench through `ecom-pipeline bench`",
    })?;
    let orders = (opts.backlog as f64 / 1.97).ceil() as u64;
    let mut rows = Vec::new();

    let work = tempfile::tempdir_in(&opts.work_dir)
        .map_err(BenchError::io("temporary directory", &opts.work_dir))?;
    let (drain_log, drain_store) = (
        work.path().join("drain-log"),
        work.path().join("drain-store"),
    );
    say(&format!(
        "draining a backlog of {orders} generated orders (about {} messages) from the embedded source",
        opts.backlog
    ));
    let peak = peak_rss_mb(
        binary,
        &drain_log,
        &drain_store,
        &[
            "--source",
            "embedded",
            "--orders",
            &orders.to_string(),
            "--stop-after-idle",
            "2s",
        ],
    )?;
    let log = Log::open(&drain_log, LogOptions::default())?;
    let messages = log.next_seq() + log.stats().rejected;
    drop(log);
    let bytes = dir_bytes(&drain_log)?;
    rows.push(Row::at_most(
        "memory",
        &format!("drain {messages} messages (embedded source → log → embedded store)"),
        peak,
        "MB",
        Some(RSS_TARGET_MB),
        "peak RSS of the `run` process; the embedded source publishes its backlog as it is pulled, so, as with a real server, the backlog itself is not in the process".into(),
    ));
    rows.push(Row::at_most(
        "disk",
        &format!("log after {messages} messages"),
        bytes as f64 / messages.max(1) as f64,
        "bytes/message",
        None,
        format!(
            "{:.1} MB on disk (allocated blocks) for {messages} messages; the raw JSON is {:.0} bytes/message",
            bytes as f64 / 1e6,
            mean_payload(orders)
        ),
    ));

    let catch_log = work.path().join("catch-up-log");
    say(&format!("filling a log with {messages} messages"));
    let spec = WorkloadSpec::demo(orders, 9);
    let generated: Vec<_> = generate(&spec)
        .into_iter()
        .map(|p| (p.topic, p.data))
        .collect();
    let log = fill_log(&catch_log, &generated).await?;
    let entries = log.next_seq();
    drop(log);
    drop(generated);
    say(&format!("projector catching up on {entries} entries"));
    let peak = peak_rss_mb(
        binary,
        &catch_log,
        &work.path().join("catch-up-store"),
        &[
            "--source",
            "embedded",
            "--orders",
            "0",
            "--stop-after-idle",
            "1s",
        ],
    )?;
    rows.push(Row::at_most(
        "memory",
        &format!("projector catches up on {entries} entries (embedded store)"),
        peak,
        "MB",
        Some(RSS_TARGET_MB),
        "peak RSS of the `run` process".into(),
    ));
    Ok(rows)
}

/// Runs `ecom-pipeline run <args>` on `log_dir` and an embedded store in
/// `store_dir` to the end and returns its peak RSS in MB.
fn peak_rss_mb(
    binary: &Path,
    log_dir: &Path,
    store_dir: &Path,
    args: &[&str],
) -> Result<f64, BenchError> {
    let mut child = Command::new(binary)
        .arg("--log-dir")
        .arg(log_dir)
        .args(["--store", "embedded", "--store-dir"])
        .arg(store_dir)
        .arg("run")
        .args(args)
        .env("ECOM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BenchError::io("cannot start the pipeline", binary))?;
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let started = Instant::now();
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = vm_hwm_kb(&text)
        {
            peak_kb = peak_kb.max(kb);
        }
        match child
            .try_wait()
            .map_err(BenchError::io("waiting for the pipeline", binary))?
        {
            Some(status) => break status,
            None if started.elapsed() > Duration::from_secs(1800) => {
                let _ = child.kill();
                return Err(BenchError::Failed(
                    "the memory run did not finish in 30 minutes".into(),
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    if !status.success() {
        return Err(BenchError::Failed(format!(
            "`ecom-pipeline run {}` exited with {status}",
            args.join(" ")
        )));
    }
    if peak_kb == 0 {
        return Err(BenchError::Failed(format!(
            "could not read VmHWM from {} (is /proc mounted?)",
            status_path.display()
        )));
    }
    Ok(peak_kb as f64 / 1024.0)
}

fn vm_hwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Bytes of allocated blocks under `dir`, recursively (what `du` counts).
fn dir_bytes(dir: &Path) -> Result<u64, BenchError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(BenchError::io("reading the log directory", dir))? {
        let entry = entry.map_err(BenchError::io("reading the log directory", dir))?;
        let meta = entry
            .metadata()
            .map_err(BenchError::io("reading the log directory", &entry.path()))?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

/// Mean JSON payload of the drain's workload, from a sample.
fn mean_payload(orders: u64) -> f64 {
    let sample = generate(&WorkloadSpec::demo(orders.min(2000), 7));
    sample.iter().map(|p| p.data.len()).sum::<usize>() as f64 / sample.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let text = "Name:\tecom\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kb(text), Some(12345));
        assert_eq!(vm_hwm_kb("Name: x\n"), None);
    }
}
