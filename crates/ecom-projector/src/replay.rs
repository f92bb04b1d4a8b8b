//! Rebuilding a store from logs, and checking a store against them.
//!
//! Live projection pays several conditional round trips per event; replay
//! does not need them. It folds every entry of every given log into the
//! reference [`Model`] in memory (the same function the projector is tested
//! against), then writes each final row once with unconditional writes into
//! an empty store. Several instances' logs together rebuild one store: the
//! model dedups message ids across logs.

use std::time::Instant;

use ecom_core::{FinalState, Model, decode};
use ecom_log::Log;
use ecom_store::{FactStore, Parked, StoreError, now_ms, snapshot};
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

/// Folds every entry of `logs` into a model. `progress` is called with the
/// number of entries read so far, every few thousand entries.
pub fn fold_logs(
    logs: &[Log],
    mut progress: impl FnMut(u64),
) -> Result<(Model, u64, u64), ReplayError> {
    const CHUNK: usize = 4096;
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
            progress(read);
            from = last + 1;
        }
    }
    Ok((model, read, undecodable))
}

/// Rebuilds `store` from `logs`. Refuses a non-empty store unless `truncate`.
pub async fn replay<S: FactStore>(
    logs: &[Log],
    store: &S,
    truncate: bool,
    mut progress: impl FnMut(&str, u64),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    if !store.is_empty().await? {
        if !truncate {
            return Err(ReplayError::NotEmpty);
        }
        store.truncate().await?;
    }
    let (model, entries_read, undecodable) = fold_logs(logs, |n| progress("read", n))?;
    let state = model.final_state();
    let facts: Vec<_> = state.facts.into_values().collect();
    let audit: Vec<_> = state.audit.into_values().collect();
    let now = now_ms();
    let parked: Vec<_> = state
        .parked
        .into_values()
        .map(|payment| Parked {
            payment,
            parked_at_ms: now,
            attempts: 1,
        })
        .collect();
    const CHUNK: usize = 2048;
    let mut written = 0u64;
    for chunk in facts.chunks(CHUNK) {
        store.put_final(chunk, &[], &[]).await?;
        written += chunk.len() as u64;
        progress("write", written);
    }
    store.put_final(&[], &audit, &parked).await?;
    store.flush().await?;
    // Everything in the logs is in the store now: the checkpoint may move
    // forward (never back) so `run` does not redo it.
    for log in logs {
        let end = log.next_seq();
        if log.checkpoint() < end {
            log.set_checkpoint(end)?;
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(ReplayReport {
        logs: logs.len(),
        entries_read,
        unique_messages: model.messages() as u64,
        undecodable,
        facts_written: facts.len() as u64,
        audit_written: audit.len() as u64,
        parked_written: parked.len() as u64,
        elapsed_s,
        events_per_s: entries_read as f64 / elapsed_s.max(1e-9),
    })
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

/// Compares `store` with the fold of `logs`, row by row.
pub async fn verify<S: FactStore>(logs: &[Log], store: &S) -> Result<VerifyReport, ReplayError> {
    let (model, entries_read, _) = fold_logs(logs, |_| {})?;
    let expected = model.final_state();
    let actual = snapshot(store).await?;
    Ok(VerifyReport::compare(&expected, &actual, entries_read))
}
