//! Tails one log and applies its entries, in sequence order, to a store.
//!
//! **Invariant:** the checkpoint (next sequence to apply, kept in the log's
//! own sled database) advances only after the store confirmed every entry
//! below it and `FactStore::flush` returned. A crash between a store write
//! and the checkpoint re-applies a few entries, which is harmless because
//! [`crate::apply`] is idempotent.
//!
//! Within a batch, entries are grouped by `order_id` (everything an entry
//! touches lives under its order_id) and each group is folded into its
//! order's state and written with one conditional write
//! ([`Applier::apply_group`]); groups run concurrently up to `concurrency`.
//! So a batch costs one conditional write per distinct `order_id` in it, at
//! most one in flight per `order_id`, and an error leaves every group either
//! applied or not (each group's state moves in one step), never half-way.
//!
//! A retryable store error (store unreachable, timeouts) pauses the
//! projector with exponential backoff; ingestion into the log goes on, and
//! projection resumes by itself from the checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecom_core::decode;
use ecom_log::{Log, LogEntry};
use ecom_store::{FactStore, StoreError};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use ecom_core::ApplyStats;

#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Log entries read and applied per checkpoint.
    pub batch_size: usize,
    /// Order ids applied concurrently within a batch.
    pub concurrency: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch_size: 1024,
            concurrency: 1,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProjectorState {
    Running,
    /// Waiting for the store; `reason` is the last error.
    Paused {
        reason: String,
        retry_in_ms: u64,
    },
    Stopped,
}

/// Shared, readable while the projector runs (for `status` and `demo`).
#[derive(Debug, Clone, Serialize)]
pub struct ProjectorStatus {
    pub state: ProjectorState,
    pub stats: ApplyStats,
    /// Entries the log held that could not be decoded (a bug if non-zero:
    /// the ingest path validates before appending).
    pub undecodable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// A fatal store error (not a connectivity problem).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] ecom_log::LogError),
}

pub struct Projector<S> {
    log: Log,
    applier: Applier<S>,
    opts: ProjectorOptions,
    status: Arc<Mutex<ProjectorStatus>>,
}

impl<S: FactStore> Projector<S> {
    pub fn new(log: Log, applier: Applier<S>, opts: ProjectorOptions) -> Self {
        Projector {
            log,
            applier,
            opts,
            status: Arc::new(Mutex::new(ProjectorStatus {
                state: ProjectorState::Running,
                stats: ApplyStats::default(),
                undecodable: 0,
            })),
        }
    }

    pub fn status(&self) -> ProjectorStatus {
        self.status.lock().expect("status lock").clone()
    }

    pub fn status_handle(&self) -> Arc<Mutex<ProjectorStatus>> {
        self.status.clone()
    }

    fn set_state(&self, state: ProjectorState) {
        self.status.lock().expect("status lock").state = state;
    }

    /// Applies one batch from the checkpoint. Returns how many entries it
    /// applied (0: caught up).
    #[tracing::instrument(name = "projector_batch", level = "debug", skip_all, fields(from))]
    pub async fn step(&self) -> Result<usize, ProjectorError> {
        let from = self.log.checkpoint();
        tracing::Span::current().record("from", from);
        let entries = self.log.read_from(from, self.opts.batch_size)?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let n = entries.len();
        let (stats, undecodable) = self.apply_batch(entries).await?;
        self.applier.store().flush().await?;
        // The store has the batch, the checkpoint does not say so yet.
        ecom_core::failpoint!("projector::after_flush_before_checkpoint");
        self.log.set_checkpoint(last + 1)?;
        let mut status = self.status.lock().expect("status lock");
        status.stats.add(&stats);
        status.undecodable += undecodable;
        Ok(n)
    }

    async fn apply_batch(&self, entries: Vec<LogEntry>) -> Result<(ApplyStats, u64), StoreError> {
        let mut undecodable = 0;
        let mut groups: HashMap<i64, Vec<ecom_core::Event>> = HashMap::new();
        let mut order: Vec<i64> = Vec::new();
        for entry in entries {
            match decode(&entry.message) {
                Ok(event) => {
                    let k = event.order_id();
                    let g = groups.entry(k).or_default();
                    if g.is_empty() {
                        order.push(k);
                    }
                    g.push(event);
                }
                Err(reason) => {
                    undecodable += 1;
                    tracing::error!(seq = entry.seq, message_id = %entry.message.message_id, %reason,
                        "log entry does not decode; skipped (it was valid when appended: is this binary older than the log?)");
                }
            }
        }
        let mut total = ApplyStats::default();
        let applier = &self.applier;
        let mut results = futures::stream::iter(order.into_iter().map(|k| {
            let events = groups.remove(&k).unwrap_or_default();
            async move { applier.apply_group(k, &events).await }
        }))
        .buffer_unordered(self.opts.concurrency.max(1));
        while let Some(r) = results.next().await {
            total.add(&r?);
        }
        Ok((total, undecodable))
    }

    /// Applies everything up to the log's current end, pausing on retryable
    /// errors. Returns when caught up or cancelled.
    pub async fn catch_up(&self, cancel: &CancellationToken) -> Result<(), ProjectorError> {
        let mut backoff = self.opts.min_backoff;
        while !cancel.is_cancelled() {
            match self.step().await {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    backoff = self.opts.min_backoff;
                    self.set_state(ProjectorState::Running);
                }
                Err(ProjectorError::Store(e)) if e.is_retryable() => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "projector paused: store unavailable; ingestion continues, projection resumes by itself");
                    self.set_state(ProjectorState::Paused {
                        reason: e.to_string(),
                        retry_in_ms: backoff.as_millis() as u64,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Tails the log until `cancel`, then stops at a checkpoint.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), ProjectorError> {
        let mut appended = self.log.subscribe();
        loop {
            self.catch_up(&cancel).await?;
            if cancel.is_cancelled() {
                break;
            }
            if self.log.checkpoint() < self.log.next_seq() {
                continue;
            }
            tokio::select! {
                r = appended.changed() => {
                    if r.is_err() {
                        break;
                    }
                }
                _ = cancel.cancelled() => break,
            }
        }
        self.set_state(ProjectorState::Stopped);
        Ok(())
    }
}
