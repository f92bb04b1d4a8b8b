//! The status file: what a running pipeline says about itself.
//!
//! # Why this module exists
//!
//! One process owns a log directory, so `status` cannot open a running
//! instance's log. The running instance writes `<log_dir>/status.json`
//! every second instead (write, then rename: a reader never sees half a
//! file), and `status` reads it. Both use [`StatusReport`], so the file's
//! shape has one definition.

use std::path::Path;

use ecom_log::Log;
use serde::Serialize;

/// What `status` reports, and what a running pipeline writes to
/// `<log_dir>/status.json` every second (the log is locked while it runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct StatusReport {
    pub source: String,
    pub running_pid: Option<u32>,
    pub log_entries: u64,
    /// The lowest entry the log holds: entries below were archived and
    /// pruned (`log prune`). 0 when nothing was pruned.
    #[serde(default)]
    pub first_seq: u64,
    pub last_seq: Option<u64>,
    pub checkpoint: u64,
    pub lag: u64,
    pub rejected: u64,
    pub duplicates_message_id: u64,
    pub orders_in_store: Option<u64>,
    pub payments_joined: Option<u64>,
    pub parked_payments: Option<u64>,
    /// When the longest-parked payment was parked (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_parked_at_ms: Option<i64>,
    pub duplicates_audited: Option<u64>,
    pub projector: Option<serde_json::Value>,
    pub ingest: Option<serde_json::Value>,
    pub updated_at_ms: i64,
    /// Where the running pipeline serves `/metrics`, `/healthz` and
    /// `/readyz` (absent: not serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// Archive, prune and compaction (absent: no archive configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::RetentionStatus>,
    /// Configuration problems `status` found (not written by `run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl StatusReport {
    pub fn add_parked(&mut self, p: ecom_store::ParkedSummary) {
        self.parked_payments = Some(p.parked);
        self.oldest_parked_at_ms = p.oldest_parked_at_ms;
    }
}

pub fn status_from_log(log: &Log) -> StatusReport {
    let s = log.stats();
    StatusReport {
        source: "log".into(),
        running_pid: None,
        log_entries: s.entries,
        first_seq: s.first_seq,
        last_seq: s.next_seq.checked_sub(1),
        checkpoint: s.checkpoint,
        lag: s.next_seq.saturating_sub(s.checkpoint),
        rejected: s.rejected,
        duplicates_message_id: s.duplicates_message_id,
        updated_at_ms: ecom_store::now_ms(),
        ..Default::default()
    }
}

/// Writes `report` to `path` atomically (a temporary file, then a rename).
pub fn write_status_file(path: &Path, report: &StatusReport) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
