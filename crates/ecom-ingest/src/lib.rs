//! Ingestion: the one place where messages are acknowledged.
//!
//! A source (the embedded broker, Pub/Sub) sends [`Delivery`]s into a
//! channel; [`run_ingest`] batches them, classifies each (valid, or rejected
//! with a reason), appends the batch to the durable log and acknowledges
//! every message of the batch only after the append returned, which is after
//! the fsync that covers it.
//!
//! **Invariant:** an acknowledged message is on disk, in the log's entries or
//! its quarantine. A failed append nacks the whole batch so the source
//! redelivers it; the log's message-id dedup makes that harmless.
//!
//! A failed append is one of two kinds. A *fatal* one
//! ([`LogError::is_fatal`]: a group commit failed, so the log writer
//! stopped) fails every later append too: nacking forever would only make
//! the source redeliver at once, again and again, while the process looks
//! alive. So ingest nacks the batch and everything still queued, and
//! [`run_ingest`] returns [`IngestError::LogStopped`]; the binary cancels the
//! rest of the pipeline and exits non-zero so that a supervisor restarts it
//! (opening the log then re-verifies it). Any other append error concerns
//! only its batch, which is nacked while ingestion goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ecom_core::{RawMessage, decode};
use ecom_log::{AppendOutcome, Incoming, Log, LogError};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why [`run_ingest`] stopped before its source did.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An append failed fatally ([`LogError::is_fatal`]): the log cannot be
    /// written any more by this process. The failed batch and everything
    /// queued behind it were nacked, nothing after the failure was
    /// acknowledged. The log error says which directory, what failed, and
    /// that a restart re-verifies the log.
    #[error("ingestion stopped, nothing more is acknowledged: {0}")]
    LogStopped(LogError),
}

/// Defined in `ecom-core`, so that sources need not depend on ingest.
pub use ecom_core::{Acker, Delivery};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Most messages per log append.
    pub max_batch: usize,
    /// How long to wait for more messages before appending a partial batch.
    pub linger: Duration,
    /// While this says `true`, take no new deliveries: the log is at its
    /// size bound and nothing in it may be pruned yet (see
    /// `ecom_service::retention`). Deliveries wait in the channel and the
    /// transport holds the rest, as a full disk buffer blocks in Vector.
    pub hold: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_batch: 1000,
            linger: Duration::from_millis(2),
            hold: None,
        }
    }
}

/// Counters, updated per batch.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub delivered: AtomicU64,
    pub appended: AtomicU64,
    pub duplicates_message_id: AtomicU64,
    pub rejected: AtomicU64,
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    pub append_failures: AtomicU64,
    pub batches: AtomicU64,
    /// When the last delivery arrived, ms since the Unix epoch (0: never).
    pub last_delivery_ms: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct IngestStats {
    pub delivered: u64,
    pub appended: u64,
    pub duplicates_message_id: u64,
    pub rejected: u64,
    pub acked: u64,
    pub nacked: u64,
    pub append_failures: u64,
    pub batches: u64,
}

impl IngestCounters {
    pub fn snapshot(&self) -> IngestStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestStats {
            delivered: g(&self.delivered),
            appended: g(&self.appended),
            duplicates_message_id: g(&self.duplicates_message_id),
            rejected: g(&self.rejected),
            acked: g(&self.acked),
            nacked: g(&self.nacked),
            append_failures: g(&self.append_failures),
            batches: g(&self.batches),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Classifies a message: valid ones go to the log's entries, rejected ones to
/// its quarantine with the reason.
pub fn classify(message: RawMessage) -> Incoming {
    classify_with_class(message).0
}

/// [`classify`], and the rejection's class for the metrics.
fn classify_with_class(message: RawMessage) -> (Incoming, Option<&'static str>) {
    match decode(&message) {
        Ok(_) => (Incoming::Valid(message), None),
        Err(reason) => {
            let class = reason.class();
            (Incoming::Rejected(message, reason.to_string()), Some(class))
        }
    }
}

/// Runs until the channel closes (every sender dropped) or `cancel` fires;
/// either way the batch in hand is made durable and settled before return.
///
/// Returns early with [`IngestError::LogStopped`] when an append fails
/// fatally: that batch and every delivery still queued are nacked, the
/// channel is closed (so the source's sends fail), and nothing is
/// acknowledged from then on.
pub async fn run_ingest(
    mut rx: mpsc::Receiver<Delivery>,
    log: Log,
    opts: IngestOptions,
    counters: Arc<IngestCounters>,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let mut hold = opts.hold.clone();
    loop {
        if let Some(hold) = hold.as_mut()
            && *hold.borrow()
        {
            tracing::warn!(dir = %log.dir().display(), "the log is at its size bound: taking no deliveries until the projector and the archive let it shrink");
            tokio::select! {
                // A dropped sender means nobody holds any more.
                _ = hold.wait_for(|held| !*held) => {}
                _ = cancel.cancelled() => break,
            }
            tracing::info!(dir = %log.dir().display(), "the log is below its size bound again: taking deliveries");
        }
        let first = tokio::select! {
            d = rx.recv() => d,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + opts.linger;
        while batch.len() < opts.max_batch {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(d)) => batch.push(d),
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if let Err(e) = append_and_settle(&log, batch, &counters).await {
            rx.close();
            let mut queued = 0u64;
            while let Ok(d) = rx.try_recv() {
                d.acker.nack();
                queued += 1;
            }
            counters.nacked.fetch_add(queued, Ordering::Relaxed);
            tracing::error!(
                dir = %log.dir().display(),
                error = %e,
                queued_nacked = queued,
                "the log can no longer be written: ingestion stops; restart the process"
            );
            return Err(IngestError::LogStopped(e));
        }
    }
    Ok(())
}

/// Appends and settles one batch: classify, append, then ack every message
/// (or nack them all if the append failed). `Err` only for a fatal log
/// error (the batch was nacked). [`run_ingest`] calls it per batch; the
/// simulation tests call it directly, so that they drive the very code
/// that acknowledges.
#[tracing::instrument(name = "ingest_batch", level = "debug", skip_all, fields(messages = batch.len()))]
pub async fn append_and_settle(
    log: &Log,
    batch: Vec<Delivery>,
    c: &IngestCounters,
) -> Result<(), LogError> {
    let n = batch.len() as u64;
    c.delivered.fetch_add(n, Ordering::Relaxed);
    c.last_delivery_ms.store(now_ms(), Ordering::Relaxed);
    let mut ackers = Vec::with_capacity(batch.len());
    let mut incoming = Vec::with_capacity(batch.len());
    let mut classes = Vec::with_capacity(batch.len());
    for d in batch {
        ackers.push(d.acker);
        let (message, class) = classify_with_class(d.message);
        incoming.push(message);
        classes.push(class);
    }
    let started = std::time::Instant::now();
    let appended = log.append(incoming).await;
    metrics::histogram!("ecom_log_append_seconds").record(started.elapsed());
    match appended {
        Ok(outcomes) => {
            for (o, class) in outcomes.iter().zip(classes) {
                match o {
                    AppendOutcome::Appended(_) => c.appended.fetch_add(1, Ordering::Relaxed),
                    AppendOutcome::Quarantined(_) => {
                        let class = class.unwrap_or("malformed");
                        metrics::counter!("ecom_messages_rejected_total", "class" => class)
                            .increment(1);
                        c.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    AppendOutcome::Duplicate => {
                        c.duplicates_message_id.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            for a in ackers {
                a.ack();
            }
            c.acked.fetch_add(n, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            for a in ackers {
                a.nack();
            }
            c.nacked.fetch_add(n, Ordering::Relaxed);
            c.append_failures.fetch_add(1, Ordering::Relaxed);
            if e.is_fatal() {
                return Err(e);
            }
            tracing::error!(error = %e, messages = n, "log append failed; nacked the batch so it is redelivered");
            Ok(())
        }
    }
}
