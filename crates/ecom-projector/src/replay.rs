//! Rebuilding a store from logs, and checking a store against them.
//!
//! Live projection pays one conditional write per `order_id` group; replay
//! does not need any. It folds every entry of every given log into the
//! reference [`Model`] in memory (the same function the projector is tested
//! against), then writes each `order_state` row and each view row once with
//! plain writes into an empty store: state rows with a timestamp below any
//! conditional write's, view rows as the truth at revision 1 (see
//! [`ecom_core::state`]), so live projection after a replay supersedes both.
//! Several instances' logs together rebuild one store: the model dedups
//! message ids (per topic) across logs.

use std::time::Instant;

use ecom_core::{FinalState, Model, Progress, ProgressFn, decode};
use ecom_core::{ViewWrite, view_ts};
use ecom_log::{Log, LogEntry};
use ecom_store::{FactStore, StoreError, now_ms, snapshot};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `replay` targets a store that already has rows.
    #[error(
        "the target store is not empty; replay rebuilds from scratch: pass --truncate to empty it first"
    )]
    NotEmpty,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] ecom_log::LogError),
    /// An archive and a log given as one instance's history do not fit.
    #[error("{0}")]
    Mismatch(String),
}

/// An instance's history, in sequence order from 0: what replay and verify
/// fold. A [`Log`] is one; [`ArchivedHistory`] is an archive's entries
/// followed by the log's tail.
pub trait History {
    /// Up to `max` entries from sequence `from`, in order; empty at the end.
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<LogEntry>, ReplayError>;
    /// How many entries it holds (for progress).
    fn entries(&self) -> u64;
    /// Everything it holds is in the store now (after a replay): a log's
    /// checkpoint may move forward (never back) so `run` does not redo it.
    fn mark_replayed(&self) -> Result<(), ReplayError>;
}

fn checkpoint_to_end(log: &Log) -> Result<(), ReplayError> {
    let end = log.next_seq();
    if log.checkpoint() < end {
        log.set_checkpoint(end)?;
    }
    Ok(())
}

impl History for Log {
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<LogEntry>, ReplayError> {
        Ok(Log::read_from(self, from, max)?)
    }

    fn entries(&self) -> u64 {
        self.stats().entries
    }

    fn mark_replayed(&self) -> Result<(), ReplayError> {
        checkpoint_to_end(self)
    }
}

/// One instance's archived entries (sequences `0..n`, read from its
/// archive by the caller), then its log from `n` on, if the log still
/// exists: how an instance whose log was lost, or (later) pruned, is
/// replayed. This crate does not read archives itself (see ARCHITECTURE.md,
/// crate edges); the binary reads them with `ecom-archive`.
pub struct ArchivedHistory {
    name: String,
    archived: Vec<LogEntry>,
    tail: Option<Log>,
}

impl ArchivedHistory {
    /// Checks that `archived` is sequences `0..n` without a gap and, with a
    /// `tail`, that the log reaches at least `n` and holds the same message
    /// at `n - 1` (so an archive is not paired with another instance's
    /// log). `name` says which instance, in errors.
    pub fn new(
        name: &str,
        archived: Vec<LogEntry>,
        tail: Option<Log>,
    ) -> Result<Self, ReplayError> {
        if let Some((i, e)) = archived
            .iter()
            .enumerate()
            .find(|(i, e)| e.seq != *i as u64)
        {
            return Err(ReplayError::Mismatch(format!(
                "the archive of {name} is not contiguous: entry {i} has sequence {}; run `log verify` on its archive",
                e.seq
            )));
        }
        let n = archived.len() as u64;
        if let Some(log) = &tail
            && log.first_seq() > n
        {
            return Err(ReplayError::Mismatch(format!(
                "the log in {} was pruned below entry {} but the archive of {name} ends at {n}: entries {n}..{} are in neither (was the archive moved, or is this another instance's archive?)",
                log.dir().display(),
                log.first_seq(),
                log.first_seq()
            )));
        }
        // Where both hold an entry, the last archived one must be the log's:
        // an archive paired with another instance's log is refused.
        if let (Some(log), Some(last)) = (&tail, archived.last())
            && last.seq >= log.first_seq()
        {
            let theirs = Log::read_from(log, last.seq, 1)?;
            let same = theirs.first().is_some_and(|e| e.message == last.message);
            if !same {
                return Err(ReplayError::Mismatch(format!(
                    "the archive of {name} does not match the log in {}: the archive's entry {} is not the log's (is this the archive of that log's instance?)",
                    log.dir().display(),
                    last.seq
                )));
            }
        }
        Ok(ArchivedHistory {
            name: name.to_owned(),
            archived,
            tail,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log after the archive, if there is one.
    pub fn tail(&self) -> Option<&Log> {
        self.tail.as_ref()
    }
}

impl History for ArchivedHistory {
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<LogEntry>, ReplayError> {
        let n = self.archived.len() as u64;
        if from < n {
            let end = (from + max as u64).min(n);
            return Ok(self.archived[from as usize..end as usize].to_vec());
        }
        match &self.tail {
            Some(log) => Ok(Log::read_from(log, from, max)?),
            None => Ok(Vec::new()),
        }
    }

    fn entries(&self) -> u64 {
        let tail = self.tail.as_ref().map_or(0, |l| l.next_seq());
        tail.max(self.archived.len() as u64)
    }

    fn mark_replayed(&self) -> Result<(), ReplayError> {
        self.tail.as_ref().map_or(Ok(()), checkpoint_to_end)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub logs: usize,
    pub entries_read: u64,
    /// Distinct message ids across all logs.
    pub unique_messages: u64,
    pub undecodable: u64,
    pub facts_written: u64,
    pub audit_written: u64,
    pub parked_written: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
}

/// Folds every entry of `logs` into a model. `progress` hears the entries
/// read so far (`"entries read"`, of all the logs' entries), every few
/// thousand entries.
pub fn fold_logs<H: History>(
    logs: &[H],
    progress: ProgressFn<'_>,
) -> Result<(Model, u64, u64), ReplayError> {
    const CHUNK: usize = 4096;
    let total = logs.iter().map(|l| l.entries()).sum();
    let mut model = Model::new();
    let mut read = 0u64;
    let mut undecodable = 0u64;
    for log in logs {
        let mut from = 0;
        loop {
            let entries = log.read_from(from, CHUNK)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            for entry in &entries {
                match decode(&entry.message) {
                    Ok(event) => {
                        model.apply(&event);
                    }
                    Err(reason) => {
                        undecodable += 1;
                        tracing::error!(seq = entry.seq, %reason, "log entry does not decode; skipped");
                    }
                }
            }
            read += entries.len() as u64;
            progress(Progress {
                what: "entries read",
                done: read,
                total: Some(total),
            });
            from = last + 1;
        }
    }
    Ok((model, read, undecodable))
}

/// Rebuilds `store` from `logs`. Refuses a non-empty store unless `truncate`.
/// `progress` hears the entries read, then the order states written.
///
/// Every entry of every log is read, checksummed and folded *before* the
/// store is touched: a damaged entry anywhere fails the replay with the store
/// as it was, never emptied.
pub async fn replay<S: FactStore, H: History>(
    logs: &[H],
    store: &S,
    truncate: bool,
    progress: ProgressFn<'_>,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let empty = store.is_empty().await?;
    if !empty && !truncate {
        return Err(ReplayError::NotEmpty);
    }
    let (model, entries_read, undecodable) = fold_logs(logs, progress)?;
    if !empty {
        store.truncate().await?;
    }
    let now = now_ms();
    let states = model.states(now);
    let mut facts_written = 0u64;
    let mut audit_written = 0u64;
    let mut parked_written = 0u64;
    const CHUNK: usize = 2048;
    let mut done = 0u64;
    for chunk in states.chunks(CHUNK) {
        // State rows first: a replay interrupted after them leaves missing
        // views, never views without their state. A re-run of `replay
        // --truncate` completes them; `run` alone does not (it repairs an
        // order's views only when it applies another event of that order,
        // and the checkpoints may already be at the logs' end).
        store.put_states(chunk).await?;
        ecom_core::failpoint!("replay::after_states");
        let mut views = Vec::new();
        for (order_id, state) in chunk {
            let (f, a, p) = final_views(*order_id, state, &model, &mut views)?;
            facts_written += f;
            audit_written += a;
            parked_written += p;
        }
        store.write_views(&views).await?;
        // A chunk complete, the next one (or the checkpoints) not begun.
        ecom_core::failpoint!("replay::after_chunk");
        done += chunk.len() as u64;
        progress(Progress {
            what: "order states written",
            done,
            total: Some(states.len() as u64),
        });
    }
    store.flush().await?;
    // Everything in the logs is in the store now: the checkpoint may move
    // forward (never back) so `run` does not redo it.
    for log in logs {
        log.mark_replayed()?;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(ReplayReport {
        logs: logs.len(),
        entries_read,
        unique_messages: model.messages() as u64,
        undecodable,
        facts_written,
        audit_written,
        parked_written,
        elapsed_s,
        events_per_s: entries_read as f64 / elapsed_s.max(1e-9),
    })
}

/// The view rows of one replayed `order_id` at revision 1, with payloads
/// from the model (which keeps every losing version's best message).
fn final_views(
    order_id: i64,
    state: &ecom_core::OrderState,
    model: &Model,
    out: &mut Vec<ViewWrite>,
) -> Result<(u64, u64, u64), ReplayError> {
    let ts = view_ts(1);
    let mut counts = (0, 0, 0);
    if let Some(row) = state.fact() {
        out.push(ViewWrite::Fact { row, ts });
        counts.0 += 1;
    }
    for entry in model.audit_entries(order_id) {
        out.push(ViewWrite::Audit { entry, ts });
        counts.1 += 1;
    }
    for parked in state.parked.values() {
        out.push(ViewWrite::Parked {
            parked: parked.clone(),
            attempts: 1,
            ts,
        });
        counts.2 += 1;
    }
    Ok(counts)
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub entries_read: u64,
    pub expected_facts: u64,
    pub actual_facts: u64,
    pub expected_audit: u64,
    pub actual_audit: u64,
    pub expected_parked: u64,
    pub actual_parked: u64,
    /// Parked payments whose order exists (should be 0).
    pub parked_with_order: u64,
    pub differences: u64,
    /// The first differences, row by row.
    pub samples: Vec<String>,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.differences == 0 && self.parked_with_order == 0
    }

    pub fn compare(expected: &FinalState, actual: &FinalState, entries_read: u64) -> Self {
        let (differences, samples) = expected.diff(actual, 50);
        VerifyReport {
            entries_read,
            expected_facts: expected.facts.len() as u64,
            actual_facts: actual.facts.len() as u64,
            expected_audit: expected.audit.len() as u64,
            actual_audit: actual.audit.len() as u64,
            expected_parked: expected.parked.len() as u64,
            actual_parked: actual.parked.len() as u64,
            parked_with_order: actual.parked_with_order() as u64,
            differences: differences as u64,
            samples,
        }
    }
}

/// Compares `store` with the fold of `logs`, row by row. `progress` hears
/// the entries read (reading the store back is one step, not reported).
pub async fn verify<S: FactStore, H: History>(
    logs: &[H],
    store: &S,
    progress: ProgressFn<'_>,
) -> Result<VerifyReport, ReplayError> {
    let (model, entries_read, _) = fold_logs(logs, progress)?;
    let expected = model.final_state();
    let actual = snapshot(store).await?;
    Ok(VerifyReport::compare(&expected, &actual, entries_read))
}
