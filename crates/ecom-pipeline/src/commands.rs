//! The short-lived commands: demo, replay, verify, dlq, rejected, log, status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ecom_cassandra::{CassandraConfig, CassandraStore};
use ecom_log::{Log, LogError, LogOptions};
use ecom_projector::Applier;
use ecom_store::{FactStore, SledStore};
use serde::Serialize;

use crate::config::{Config, StoreKind};
use crate::demo::{self, DemoArgs};
use crate::progress::Reporter;
use ecom_projector::ArchivedHistory;
pub use ecom_service::{StatusReport, status_from_log};

/// Runs `$body` with `$s: Arc<impl FactStore>` opened as configured.
macro_rules! with_store {
    ($cfg:expr, |$s:ident| $body:expr) => {
        match $cfg.store {
            $crate::config::StoreKind::Embedded => {
                let $s = std::sync::Arc::new($crate::commands::open_embedded($cfg)?);
                $body
            }
            $crate::config::StoreKind::Cassandra => {
                let $s = std::sync::Arc::new($crate::commands::open_cassandra($cfg).await?);
                $body
            }
        }
    };
}

pub fn open_embedded(cfg: &Config) -> anyhow::Result<SledStore> {
    Ok(ecom_service::open_embedded(&cfg.store_dir)?)
}

/// The Cassandra driver configuration from the resolved settings.
pub fn cassandra_config(cfg: &Config) -> anyhow::Result<CassandraConfig> {
    Ok(cfg.cassandra.clone())
}

pub async fn open_cassandra(cfg: &Config) -> anyhow::Result<CassandraStore> {
    Ok(CassandraStore::connect(cassandra_config(cfg)?).await?)
}

#[derive(Debug, Clone, Subcommand)]
pub enum SetupCommand {
    /// Apply schema.cql (keyspace and tables) idempotently.
    Cassandra,
    /// Create the topics (orders_data, payments_data, dlq_payments_data,
    /// duplicate_orders) and subscriptions (orders_data-sub,
    /// payments_data-sub); what exists already is fine.
    Pubsub,
}

pub async fn setup(cfg: &Config, cmd: SetupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SetupCommand::Pubsub => return crate::pubsub::setup(cfg).await,
        SetupCommand::Cassandra => {
            let c = cassandra_config(cfg)?;
            ecom_cassandra::apply_schema(&c, ecom_cassandra::SCHEMA_CQL).await?;
            println!(
                "schema applied to keyspace {} on {}",
                c.keyspace,
                c.contact_points.join(",")
            );
            if let Some(warning) = ecom_cassandra::check_serial_consistency_for(&c).await? {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The warnings `status` gives about the configuration: LOCAL_SERIAL on a
/// keyspace replicated to several datacenters (see
/// `ecom_cassandra::topology`). Best effort: a Cassandra that cannot be
/// asked is reported as a warning too, not as a failure of `status`.
async fn configuration_warnings(cfg: &Config) -> Vec<String> {
    if cfg.store != StoreKind::Cassandra {
        return Vec::new();
    }
    let checked = match cassandra_config(cfg) {
        Ok(c) => ecom_cassandra::check_serial_consistency_for(&c)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match checked {
        Ok(None) => Vec::new(),
        Ok(Some(warning)) => vec![warning.to_string()],
        Err(e) => vec![format!(
            "cannot check the keyspace's replication against the serial consistency: {e:#}"
        )],
    }
}

/// Default projector concurrency: the embedded store gains nothing from it;
/// Cassandra needs many LWTs in flight.
pub fn projector_concurrency(cfg: &Config) -> usize {
    cfg.projector_concurrency.unwrap_or(match cfg.store {
        StoreKind::Embedded => 1,
        StoreKind::Cassandra => 64,
    })
}

pub fn open_log(dir: &Path) -> anyhow::Result<Log> {
    Log::open(dir, LogOptions::default()).map_err(anyhow::Error::from)
}

pub async fn demo(cfg: &Config, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let concurrency = projector_concurrency(cfg);
    let report = match cfg.store {
        StoreKind::Embedded => {
            let store = std::sync::Arc::new(SledStore::temporary()?);
            demo::demo(args, store, concurrency).await?
        }
        StoreKind::Cassandra => {
            with_store!(cfg, |store| demo::demo(args, store, concurrency).await?)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        demo::print_human(&report);
    }
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Log directories to rebuild from (default: the configured log dir,
    /// unless --from-archive is given).
    #[arg(long = "from-log", value_name = "DIR")]
    pub from_log: Vec<PathBuf>,
    /// Instances whose archive (in the configured --archive) to rebuild
    /// from, e.g. one whose log was lost.
    #[arg(long = "from-archive", value_name = "INSTANCE")]
    pub from_archive: Vec<String>,
    /// Empty the target store first if it is not empty.
    #[arg(long)]
    pub truncate: bool,
    #[arg(long)]
    pub json: bool,
}

fn log_dirs(cfg: &Config, given: &[PathBuf], archives: &[String]) -> Vec<PathBuf> {
    if given.is_empty() && archives.is_empty() {
        vec![cfg.log_dir.clone()]
    } else {
        given.to_vec()
    }
}

use ecom_service::retention::ARCHIVE_INSTANCE_FILE;

fn archived_instance(log_dir: &Path) -> anyhow::Result<String> {
    let path = log_dir.join(ARCHIVE_INSTANCE_FILE);
    let name = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: it names this log's instance in the archive (written by `log archive`)",
            path.display()
        )
    })?;
    Ok(name.trim().to_owned())
}

/// The histories replay and verify fold: each log, then each archived
/// instance (its archive alone: its log is gone or elsewhere).
async fn histories(
    cfg: &Config,
    from_log: &[PathBuf],
    from_archive: &[String],
) -> anyhow::Result<Vec<ArchivedHistory>> {
    let mut out = Vec::new();
    for log in open_logs(&log_dirs(cfg, from_log, from_archive))? {
        let name = log.dir().display().to_string();
        if log.first_seq() == 0 {
            out.push(ArchivedHistory::new(&name, Vec::new(), Some(log))?);
            continue;
        }
        // Pruned: its beginning is in its archive.
        let location = cfg.archive.as_deref().with_context(|| {
            format!(
                "the log in {name} was archived and pruned below entry {}: pass --archive DIR (or set ECOM_ARCHIVE) so its archive is read too",
                log.first_seq()
            )
        })?;
        let instance = archived_instance(log.dir())?;
        let archived = ecom_archive::Archive::open(location, &instance)?
            .read_entries()
            .await?;
        out.push(ArchivedHistory::new(&instance, archived, Some(log))?);
    }
    if !from_archive.is_empty() {
        let location = cfg.archive.as_deref().context(
            "--from-archive needs the archive's location: pass --archive DIR or set ECOM_ARCHIVE",
        )?;
        for instance in from_archive {
            let archive = ecom_archive::Archive::open(location, instance)?;
            let entries = archive.read_entries().await?;
            anyhow::ensure!(
                !entries.is_empty(),
                "the archive in {location} holds nothing for instance {instance:?} (the names it holds are the directories under it)"
            );
            out.push(ArchivedHistory::new(instance, entries, None)?);
        }
    }
    Ok(out)
}

fn open_logs(dirs: &[PathBuf]) -> anyhow::Result<Vec<Log>> {
    dirs.iter()
        .map(|d| {
            anyhow::ensure!(d.exists(), "log directory {} does not exist", d.display());
            open_log(d)
        })
        .collect()
}

pub async fn replay(cfg: &Config, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let logs = histories(cfg, &args.from_log, &args.from_archive).await?;
    let progress = Reporter::new("replay");
    let report = with_store!(cfg, |store| ecom_projector::replay(
        &logs,
        store.as_ref(),
        args.truncate,
        &|p| progress.update(p)
    )
    .await?);
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "replayed {} entries from {} log(s) ({} unique messages) in {:.2}s: {:.0} events/s",
            report.entries_read,
            report.logs,
            report.unique_messages,
            report.elapsed_s,
            report.events_per_s
        );
        println!(
            "wrote {} fact rows, {} audit rows, {} parked payments",
            report.facts_written, report.audit_written, report.parked_written
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Log directories whose fold the store must equal (default: the
    /// configured log dir, unless --from-archive is given).
    #[arg(long = "from-log", value_name = "DIR")]
    pub from_log: Vec<PathBuf>,
    /// Instances whose archive (in the configured --archive) the store's
    /// content also comes from.
    #[arg(long = "from-archive", value_name = "INSTANCE")]
    pub from_archive: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn verify(cfg: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let logs = histories(cfg, &args.from_log, &args.from_archive).await?;
    let progress = Reporter::new("verify");
    let report = with_store!(cfg, |store| ecom_projector::verify(
        &logs,
        store.as_ref(),
        &|p| progress.update(p)
    )
    .await?);
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "facts: {} expected, {} in store; audit: {} / {}; parked: {} / {}",
            report.expected_facts,
            report.actual_facts,
            report.expected_audit,
            report.actual_audit,
            report.expected_parked,
            report.actual_parked
        );
        for s in &report.samples {
            println!("  {s}");
        }
        if report.parked_with_order > 0 {
            println!(
                "  {} parked payments have an order: run `ecom-pipeline dlq reprocess`",
                report.parked_with_order
            );
        }
        let lag: u64 = logs
            .iter()
            .filter_map(|h| h.tail())
            .map(|l| l.next_seq().saturating_sub(l.checkpoint()))
            .sum();
        if lag > 0 && report.differences > 0 {
            println!(
                "  note: the projector has {lag} log entries left to apply; run the pipeline to catch up, then verify again"
            );
        }
        println!("differences: {}", report.differences);
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List parked payments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-project every parked payment whose order exists now.
    Reprocess {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct ParkedLine {
    order_id: i64,
    payment_id: i64,
    message_id: String,
    parked_at_ms: i64,
    attempts: i32,
}

pub async fn dlq(cfg: &Config, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    with_store!(cfg, |store| match cmd {
        DlqCommand::List { json } => {
            let parked = store.scan_parked().await?;
            let lines: Vec<_> = parked
                .iter()
                .map(|p| ParkedLine {
                    order_id: p.order_id(),
                    payment_id: p.payment.content.payment_id,
                    message_id: p.payment.provenance.message_id.clone(),
                    parked_at_ms: p.parked_at_ms,
                    attempts: p.attempts,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                println!(
                    "{:>12} {:>12} {:>8} {:>14}  message_id",
                    "order_id", "payment_id", "attempts", "parked_at_ms"
                );
                for l in &lines {
                    println!(
                        "{:>12} {:>12} {:>8} {:>14}  {}",
                        l.order_id, l.payment_id, l.attempts, l.parked_at_ms, l.message_id
                    );
                }
                println!("{} parked payments", lines.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Reprocess { json } => {
            let applier = Applier::new(store.clone());
            let progress = Reporter::new("dlq reprocess");
            let (joined, remaining) = applier
                .reprocess_parked_with_progress(&|p| progress.update(p))
                .await?;
            store.flush().await?;
            progress.finish();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"joined": joined, "remaining": remaining})
                );
            } else {
                println!(
                    "joined {joined} parked payments; {remaining} remain parked (their order has not arrived)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    })
}

#[derive(Debug, Clone, Subcommand)]
pub enum RejectedCommand {
    /// List quarantined messages with their reason.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn rejected(cfg: &Config, cmd: RejectedCommand) -> anyhow::Result<ExitCode> {
    let RejectedCommand::List { json } = cmd;
    let log = open_log(&cfg.log_dir)?;
    let rejected = log.rejected()?;
    if json {
        let lines: Vec<_> = rejected
            .iter()
            .map(|q| {
                serde_json::json!({
                    "seq": q.seq,
                    "message_id": q.message.message_id,
                    "topic": q.message.topic.name(),
                    "reason": q.reason,
                    "data": String::from_utf8_lossy(&q.message.data),
                    "appended_at_ms": q.appended_at_ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for q in &rejected {
            println!(
                "#{} {} [{}] {}\n    {}",
                q.seq,
                q.message.message_id,
                q.message.topic.name(),
                q.reason,
                String::from_utf8_lossy(&q.message.data)
            );
        }
        println!("{} rejected messages", rejected.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Subcommand)]
pub enum LogCommand {
    /// Check every entry's checksum and format, the message-id index, and
    /// the checkpoint. Exits non-zero on any problem.
    Verify {
        /// The log directory (default: the configured log dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Convert a log written by an older release to the current on-disk
    /// format, in place (format 1 to 2: the message-id index is rebuilt,
    /// keyed by topic and message id). Stop the pipeline first; running it on
    /// a current log does nothing.
    Upgrade {
        /// The log directory (default: the configured log dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Copy every readable record of a damaged log into a new log directory,
    /// and list what could not be copied. The new log starts at checkpoint
    /// 0 (the projector re-applies every entry, which is harmless). Stop the
    /// pipeline first; the damaged log is only read. Exits 1 if anything was
    /// lost, after copying the rest.
    Salvage {
        /// The damaged log directory (default: the configured log dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A new directory for the salvaged log (must not hold a log).
        #[arg(long)]
        into: PathBuf,
    },
    /// Seal the projected entries (below the checkpoint) and the quarantine
    /// into the archive (--archive), as immutable gzip JSON-lines segments
    /// with manifests, under this instance's name (--instance). Run it
    /// again at will: it continues where the archive ends. Stop the
    /// pipeline first (one process owns a log).
    Archive {
        /// The log directory (default: the configured log dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Most records per segment file.
        #[arg(long, default_value_t = std::num::NonZeroUsize::new(100_000).expect("non-zero"))]
        segment_entries: std::num::NonZeroUsize,
    },
    /// Remove from the log the entries its archive holds (read back and
    /// checked first), below the checkpoint. Their message ids stay in the
    /// log's dedup index. Replay and verify then read the archive and the
    /// log together (pass --archive). Stop the pipeline first.
    Prune {
        /// The log directory (default: the configured log dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn log(cfg: &Config, cmd: LogCommand) -> anyhow::Result<ExitCode> {
    let dir = match cmd {
        LogCommand::Verify { dir } => dir.unwrap_or_else(|| cfg.log_dir.clone()),
        LogCommand::Salvage { dir, into } => {
            let dir = dir.unwrap_or_else(|| cfg.log_dir.clone());
            let report = Log::salvage(&dir, &into).await?;
            println!(
                "salvaged {} entries and {} quarantined messages from {} into {}",
                report.entries_copied,
                report.quarantine_copied,
                dir.display(),
                into.display()
            );
            for lost in &report.lost {
                println!("  lost: {lost}");
            }
            if report.lost.is_empty() {
                println!(
                    "nothing was lost; point the pipeline at {} (its projector re-applies every entry from checkpoint 0)",
                    into.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} problems: the records above are not in the new log; they were acknowledged, so only the source can send them again (Pub/Sub: seek the subscription to a time before the damage; the new log drops what it already holds). Then point the pipeline at {}",
                report.lost.len(),
                into.display()
            );
            return Ok(ExitCode::from(1));
        }
        LogCommand::Archive {
            dir,
            segment_entries,
        } => {
            let dir = dir.unwrap_or_else(|| cfg.log_dir.clone());
            let location = cfg.archive.as_deref().context(
                "no archive configured: pass --archive DIR or set ECOM_ARCHIVE (file key `archive`)",
            )?;
            let instance = cfg.instance_name(&dir);
            let log = open_log(&dir)?;
            let archive = ecom_archive::Archive::open(location, &instance)?;
            ecom_service::retention::claim_instance(&dir, &instance)?;
            let report = archive
                .seal(&log, log.checkpoint(), segment_entries)
                .await?;
            println!(
                "archived {} entries in {} segment(s) and {} quarantined messages in {} segment(s) of {} into {location} as instance {instance}; archived up to entry {} (checkpoint {})",
                report.entries_sealed(),
                report.entries.len(),
                report.quarantine_sealed(),
                report.quarantine.len(),
                dir.display(),
                archive
                    .archived_upto(ecom_archive::SegmentKind::Entries)
                    .await?,
                log.checkpoint()
            );
            for removed in &report.removed_incomplete {
                println!("  removed an incomplete segment: {removed}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        LogCommand::Prune { dir } => {
            let dir = dir.unwrap_or_else(|| cfg.log_dir.clone());
            let location = cfg.archive.as_deref().context(
                "pruning removes only what the archive holds: pass --archive DIR or set ECOM_ARCHIVE",
            )?;
            let instance = archived_instance(&dir)?;
            let bytes_before = ecom_service::telemetry::dir_bytes(&dir);
            let log = open_log(&dir)?;
            let archive = ecom_archive::Archive::open(location, &instance)?;
            // Read back what is about to leave the log: every segment from
            // the log's first entry, checksums and counts checked.
            let mut upto = log.first_seq();
            for m in archive
                .manifests(ecom_archive::SegmentKind::Entries)
                .await?
            {
                if m.last_seq < log.first_seq() {
                    continue;
                }
                archive.read_segment(&m).await?;
                upto = m.last_seq + 1;
            }
            let upto = upto.min(log.checkpoint());
            let removed = log.prune_below(upto)?;
            // sled keeps the space of removed keys: a compaction gives it
            // back, and forgets ids older than dedup_retention.
            let cutoff = ecom_store::now_ms() - cfg.dedup_retention.as_millis() as i64;
            let compacted = log.compact(ecom_log::CompactOptions {
                forget_ids_appended_before_ms: Some(cutoff),
            })?;
            drop(log);
            println!(
                "pruned {removed} archived entries from {}: it now holds entries from {upto}; compacted (generation {}, {} message ids older than dedup_retention forgotten); {} bytes before, {} after",
                dir.display(),
                compacted.generation,
                compacted.ids_forgotten,
                bytes_before,
                ecom_service::telemetry::dir_bytes(&dir)
            );
            return Ok(ExitCode::SUCCESS);
        }
        LogCommand::Upgrade { dir } => {
            let dir = dir.unwrap_or_else(|| cfg.log_dir.clone());
            let report = Log::upgrade(&dir)?;
            if report.upgraded() {
                println!(
                    "upgraded the log in {} from format {} to {}: index rebuilt for {} entries and {} quarantined messages ({} old index keys removed); run `ecom-pipeline log verify --dir {}` to check it, then start the pipeline",
                    dir.display(),
                    report.from_version,
                    report.to_version,
                    report.entries,
                    report.quarantined,
                    report.old_index_keys,
                    dir.display()
                );
            } else {
                println!(
                    "the log in {} is already in format {}; nothing to do",
                    dir.display(),
                    report.to_version
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    // Open without the tail check so a damaged log can still be examined.
    let log = Log::open(
        &dir,
        LogOptions {
            verify_tail_on_open: false,
            ..LogOptions::default()
        },
    )?;
    let report = log.verify()?;
    println!(
        "checked {} entries, {} quarantined, {} index keys in {}",
        report.entries_checked,
        report.quarantine_checked,
        report.index_checked,
        dir.display()
    );
    for p in &report.problems {
        println!("  problem: {p}");
    }
    Ok(if report.is_ok() {
        println!("log ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Also count the store's rows (orders, joined payments, audited
    /// duplicates). Reads every row of those tables: on Cassandra a full
    /// scan, for one-off checks and not for monitoring (the running
    /// pipeline's /metrics are the cheap figures). Without it, the store is
    /// asked only for the parked payments.
    #[arg(long)]
    pub count_rows: bool,
}

pub async fn add_store_counts<S: FactStore>(
    report: &mut StatusReport,
    store: &S,
) -> anyhow::Result<()> {
    let c = store.counts().await?;
    report.orders_in_store = Some(c.facts);
    report.payments_joined = Some(c.payments_joined);
    report.parked_payments = Some(c.parked);
    report.duplicates_audited = Some(c.audit);
    Ok(())
}

pub async fn status(cfg: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let mut report = match Log::open(&cfg.log_dir, LogOptions::default()) {
        Ok(log) => {
            let mut r = status_from_log(&log);
            drop(log);
            with_store!(cfg, |store| {
                if args.count_rows {
                    add_store_counts(&mut r, store.as_ref()).await?;
                }
                r.add_parked(store.parked_summary().await?);
            });
            r
        }
        Err(LogError::Locked { pid, .. }) => {
            let path = cfg.log_dir.join("status.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("the log is in use by pid {pid:?} but it has not written {} yet; try again in a second", path.display())
            })?;
            let mut r: StatusReport = serde_json::from_str(&text)?;
            r.source = format!(
                "running pipeline (pid {})",
                pid.map(|p| p.to_string()).unwrap_or("?".into())
            );
            r
        }
        Err(e) => return Err(e.into()),
    };
    report.warnings = configuration_warnings(cfg).await;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("source:                {}", report.source);
        if report.first_seq > 0 {
            println!(
                "log entries:           {} (entries below {} archived and pruned)",
                report.log_entries, report.first_seq
            );
        } else {
            println!("log entries:           {}", report.log_entries);
        }
        println!(
            "last sequence:         {}",
            report.last_seq.map(|s| s.to_string()).unwrap_or("-".into())
        );
        println!(
            "projector checkpoint:  {} (lag {})",
            report.checkpoint, report.lag
        );
        println!("rejected:              {}", report.rejected);
        println!("duplicate message ids: {}", report.duplicates_message_id);
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
        let rows = |v: Option<u64>| {
            v.map(|v| v.to_string())
                .unwrap_or("- (status --count-rows scans for it)".into())
        };
        println!("orders in store:       {}", rows(report.orders_in_store));
        println!("payments joined:       {}", rows(report.payments_joined));
        let oldest = report
            .oldest_parked_at_ms
            .map(|at| {
                let waited = (ecom_store::now_ms() - at).max(0) as u64 / 1000;
                format!(
                    " (oldest waiting {})",
                    humantime::format_duration(Duration::from_secs(waited))
                )
            })
            .unwrap_or_default();
        println!(
            "parked payments:       {}{oldest}",
            opt(report.parked_payments)
        );
        println!("audited duplicates:    {}", rows(report.duplicates_audited));
        if let Some(r) = &report.retention {
            let bound = r
                .max_bytes
                .map(|m| format!(" of {m} allowed"))
                .unwrap_or_default();
            println!(
                "log size:              {} bytes{bound}{}",
                r.log_bytes,
                if r.held {
                    " (ingest held: at its bound)"
                } else {
                    ""
                }
            );
            println!(
                "archived up to:        {} (archive lag {} entries; {} segments sealed, {} entries pruned, {} compactions, {} bytes reclaimed)",
                r.archived_upto,
                r.archive_lag,
                r.segments_sealed,
                r.entries_pruned,
                r.compactions,
                r.bytes_reclaimed
            );
            if let Some(e) = &r.last_error {
                println!("last archive error:    {e} ({} failures)", r.failures);
            }
        }
        if let Some(p) = &report.projector {
            println!("projector:             {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
