//! `ecom-pipeline bench`: every stage of the pipeline beside its own ceiling,
//! on the same data, in the same run.
//!
//! This machine class is shared and noisy (2 cores, Cassandra and the Pub/Sub
//! server on the same cores), so an absolute figure from one run says little
//! and a figure from another run says less. What does mean something is the
//! ratio of a stage to a bare loop that does only that stage's unavoidable
//! work, measured right beside it. Every [`Row`] is one such pair:
//!
//! | stage | ours | ceiling |
//! |---|---|---|
//! | `log-append` | [`ecom_log::Log::append`] of batches of 1, 10, 100, 1000 | the same bytes as one `sled::Batch` + `flush` + `fdatasync` per batch |
//! | `ingest` | Pub/Sub pull → log → ack | pull → ack, same server and subscriber settings, no log |
//! | `projection` | the projector draining a filled log into Cassandra | (a) single-LWT inserts, (b) plain prepared writes of one row per entry, same concurrency |
//! | `replay` | `replay` of the same log into an empty keyspace | (b) again, measured beside it |
//! | `latency` | publish → row readable, p50/p99/max, at half the end-to-end sustained rate (measured first) | the target (≤ 250 ms p99) |
//! | `memory`, `disk` | peak RSS of a real `ecom-pipeline run` child process; log bytes per message | the targets (≤ 150 MB; reported) |
//!
//! A measurement of a wrong result is worthless, so the projection and
//! replay stages `verify` the store against the fold of the log and fail the
//! bench on any difference. Nothing here asserts on time: the figures are
//! printed and written as JSON; targets are marked met or not.

mod data;
mod error;
mod footprint;
mod ingest;
mod latency;
mod log_append;
mod projection;

use std::path::PathBuf;

use serde::Serialize;

pub use data::Workload;
pub use error::BenchError;

use ecom_cassandra::CassandraConfig;
use ecom_pubsub::PubSubConfig;

/// One measurement: a stage of ours beside its ceiling (or its target).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub stage: String,
    pub workload: String,
    pub ours: f64,
    /// The bare loop's figure, in the same unit; `None` for rows measured
    /// against an absolute target (latency, memory, disk).
    pub ceiling: Option<f64>,
    pub unit: String,
    /// `ours / ceiling` for throughputs.
    pub ratio: Option<f64>,
    /// What counts as met, e.g. `ratio >= 0.9` or `<= 150 MB`; empty when
    /// the row is reported without a target.
    pub target: String,
    pub met: Option<bool>,
    /// What the ceiling is, and the settings a reader needs to judge the
    /// figure (which server, how many in flight).
    pub note: String,
}

impl Row {
    /// A throughput beside its ceiling; `min_ratio`: the target, if any.
    pub fn against_ceiling(
        stage: &str,
        workload: &str,
        ours: f64,
        ceiling: f64,
        unit: &str,
        min_ratio: Option<f64>,
        note: String,
    ) -> Row {
        let ratio = ours / ceiling;
        Row {
            stage: stage.into(),
            workload: workload.into(),
            ours,
            ceiling: Some(ceiling),
            unit: unit.into(),
            ratio: Some(ratio),
            target: min_ratio
                .map(|r| format!("ratio >= {r}"))
                .unwrap_or_default(),
            met: min_ratio.map(|r| ratio >= r),
            note,
        }
    }

    /// A figure against an absolute upper bound, if any.
    pub fn at_most(
        stage: &str,
        workload: &str,
        ours: f64,
        unit: &str,
        max: Option<f64>,
        note: String,
    ) -> Row {
        Row {
            stage: stage.into(),
            workload: workload.into(),
            ours,
            ceiling: None,
            unit: unit.into(),
            ratio: None,
            target: max.map(|m| format!("<= {m} {unit}")).unwrap_or_default(),
            met: max.map(|m| ours <= m),
            note,
        }
    }
}

/// A stage of the bench (`--stages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    LogAppend,
    Ingest,
    Projection,
    Replay,
    Latency,
    /// Peak RSS of the two memory runs and the log's bytes per message.
    Memory,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::LogAppend,
        Stage::Ingest,
        Stage::Projection,
        Stage::Replay,
        Stage::Latency,
        Stage::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::LogAppend => "log-append",
            Stage::Ingest => "ingest",
            Stage::Projection => "projection",
            Stage::Replay => "replay",
            Stage::Latency => "latency",
            Stage::Memory => "memory",
        }
    }

    fn needs_cassandra(self) -> bool {
        matches!(self, Stage::Projection | Stage::Replay | Stage::Latency)
    }

    fn needs_pubsub(self) -> bool {
        matches!(self, Stage::Ingest | Stage::Latency)
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Stage::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stage `{s}`; one of: {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to run and against what.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub stages: Vec<Stage>,
    /// Messages per throughput measurement (log append, ingest, projection,
    /// replay).
    pub messages: u64,
    /// Messages of the memory and disk runs.
    pub backlog: u64,
    /// Requests in flight to Cassandra (the projector's concurrency and the
    /// store's `max_in_flight`, for ours and the bare loops alike).
    pub concurrency: usize,
    /// How long the latency stage publishes.
    pub latency_secs: u64,
    /// Publish rate of the latency stage; `None`: half of the end-to-end
    /// sustained rate, measured first by the stage itself.
    pub latency_rate: Option<f64>,
    /// Scratch space for logs and embedded stores (removed afterwards).
    pub work_dir: PathBuf,
    /// Contact points and credentials; every measurement gets a fresh
    /// keyspace (dropped afterwards).
    pub cassandra: Option<CassandraConfig>,
    /// The Pub/Sub emulator; every measurement gets a fresh project.
    pub pubsub: Option<PubSubConfig>,
    /// The `ecom-pipeline` executable the memory stage runs as a child.
    pub pipeline_binary: Option<PathBuf>,
}

/// Runs the stages in order, calling `say` with a line before each
/// measurement and `progress` with the stages finished (`"stages run"`)
/// after each stage, and returns every row.
pub async fn run(
    opts: &BenchOptions,
    mut say: impl FnMut(&str),
    progress: ecom_core::ProgressFn<'_>,
) -> Result<Vec<Row>, BenchError> {
    let mut stages = opts.stages.clone();
    stages.sort();
    stages.dedup();
    for s in &stages {
        if s.needs_cassandra() && opts.cassandra.is_none() {
            return Err(BenchError::Missing {
                stage: s.name(),
                what: "Cassandra",
                hint: "start it (scripts/cassandra.sh start, or scripts/bench.sh which starts both servers) and pass --cassandra",
            });
        }
        if s.needs_pubsub()
            && opts
                .pubsub
                .as_ref()
                .is_none_or(|p| p.emulator_host.is_none())
        {
            return Err(BenchError::Missing {
                stage: s.name(),
                what: "the Pub/Sub emulator",
                hint: "each measurement creates a throwaway project, which only an emulator allows: \
                       start one (scripts/pubsub-emulator.sh start, or scripts/bench.sh) and set PUBSUB_EMULATOR_HOST",
            });
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let total = stages.len() as u64;
    for (i, stage) in stages.into_iter().enumerate() {
        let mut say = |m: &str| say(&format!("{stage}: {m}"));
        let new = match stage {
            Stage::LogAppend => log_append::run(opts, &mut say).await?,
            Stage::Ingest => ingest::run(opts, pubsub(opts), &mut say).await?,
            Stage::Projection => projection::run(opts, cassandra(opts), false, &mut say).await?,
            Stage::Replay => projection::run(opts, cassandra(opts), true, &mut say).await?,
            Stage::Latency => {
                let estimate = latency::separate_stages_rate(&rows);
                latency::run(
                    opts,
                    pubsub(opts),
                    cassandra(opts),
                    opts.latency_rate,
                    estimate,
                    &mut say,
                )
                .await?
            }
            Stage::Memory => footprint::run(opts, &mut say).await?,
        };
        rows.extend(new);
        progress(ecom_core::Progress {
            what: "stages run",
            done: i as u64 + 1,
            total: Some(total),
        });
    }
    Ok(rows)
}

fn cassandra(opts: &BenchOptions) -> &CassandraConfig {
    opts.cassandra.as_ref().expect("checked in run")
}

fn pubsub(opts: &BenchOptions) -> &PubSubConfig {
    opts.pubsub.as_ref().expect("checked in run")
}

/// The rows as a fixed-width table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = [
        "stage", "workload", "ours", "ceiling", "unit", "ratio", "target", "met",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.stage.clone(),
                r.workload.clone(),
                figure(r.ours),
                r.ceiling.map(figure).unwrap_or_else(|| "-".into()),
                r.unit.clone(),
                r.ratio
                    .map(|x| format!("{x:.2}x"))
                    .unwrap_or_else(|| "-".into()),
                if r.target.is_empty() {
                    "-".into()
                } else {
                    r.target.clone()
                },
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |out: &mut String, c: &[&str]| {
        for (i, (s, w)) in c.iter().zip(width).enumerate() {
            let pad = w - s.chars().count();
            // Figures right-aligned, words left-aligned.
            if (2..=3).contains(&i) || i == 5 {
                out.push_str(&" ".repeat(pad));
                out.push_str(s);
            } else {
                out.push_str(s);
                out.push_str(&" ".repeat(pad));
            }
            out.push_str("  ");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &header);
    for c in &cells {
        line(&mut out, &c.each_ref().map(String::as_str));
    }
    out
}

/// A figure with thousands separators and at most one decimal.
fn figure(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rows_mark_the_target_met_or_not() {
        let r = Row::against_ceiling("ingest", "w", 90.0, 100.0, "msg/s", Some(0.9), "".into());
        assert_eq!(r.ratio, Some(0.9));
        assert_eq!(r.met, Some(true));
        let r = Row::against_ceiling("ingest", "w", 89.0, 100.0, "msg/s", Some(0.9), "".into());
        assert_eq!(r.met, Some(false));
        let r = Row::against_ceiling("projection", "w", 50.0, 100.0, "ev/s", None, "".into());
        assert_eq!((r.met, r.target.as_str()), (None, ""));
        let r = Row::at_most("memory", "w", 151.0, "MB", Some(150.0), "".into());
        assert_eq!((r.met, r.target.as_str()), (Some(false), "<= 150 MB"));
    }

    #[test]
    fn stages_parse_by_name_and_unknown_ones_list_the_choices() {
        assert_eq!("log-append".parse::<Stage>(), Ok(Stage::LogAppend));
        let e = "logs".parse::<Stage>().unwrap_err();
        assert!(e.contains("log-append, ingest"), "{e}");
    }

    #[test]
    fn table_aligns_columns_and_formats_figures() {
        let rows = [
            Row::against_ceiling(
                "log-append",
                "batch 1",
                2345.6,
                2500.0,
                "messages/s",
                Some(0.8),
                "".into(),
            ),
            Row::at_most("memory", "drain", 42.25, "MB", Some(150.0), "".into()),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains("2 346") && lines[1].contains("2 500") && lines[1].contains("0.94x"),
            "{t}"
        );
        assert!(
            lines[2].contains("42.2") && lines[2].contains("<= 150 MB") && lines[2].contains("yes"),
            "{t}"
        );
        assert_eq!(figure(1_234_567.0), "1 234 567");
    }
}
