//! The exactly-once apply step: one conditional write per `order_id` group.
//!
//! The rules live in [`ecom_core::state`] (the state is a join; one
//! conditional write per transition; views are the truth at a revision;
//! what leaves the state is written before it leaves; re-applying
//! repairs). This module only executes a [`ecom_core::Plan`] against a
//! store:
//!
//! 1. Take the current state: for a group that starts with an order whose
//!    id this applier has not seen a state row for, assume there is none (a
//!    new order is the common case, and `insert_state` returns the row when
//!    there is one); otherwise read it (a plain read: the conditional write
//!    validates whatever it feeds).
//! 2. Plan, and write the current revision's pending views (they complete
//!    the previous transition; rule 4). If nothing changes, stop there: a
//!    redelivered event costs no conditional write.
//! 3. The conditional write. Rejected: take the state that won (returned
//!    by the store, or re-read) and go to 2. Applied: write the new
//!    revision's views and report notifications.
//!
//! So the common paths (a new order; a payment for an existing order; a
//! payment before its order) cost exactly one conditional write, and a
//! redelivered event at most one (an order: the rejected insert) or none.
//! A crash anywhere leaves the state at some revision and the views at or
//! behind it; re-applying the log from the checkpoint converges (rule 5).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ecom_core::{ApplyStats, Entry, Event, PaymentVersion, StoredState, ViewWrite, plan, touch_ts};
use ecom_store::{Cas, FactStore, Result, StoreError, now_ms};
use tokio::sync::mpsc;

/// Rejections in a row after which a group gives up with an error: far
/// beyond what contention between a few instances produces.
const MAX_REJECTIONS: u32 = 10_000;

/// What the projector reports to side channels (Pub/Sub's `dlq_payments_data`
/// and `duplicate_orders` topics).
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A payment was parked for the first time (its order is missing).
    Parked(PaymentVersion),
    /// A losing version was recorded in `duplicate_orders`.
    Conflict(Entry),
}

/// Order ids remembered as having a state row, at most; the set is
/// forgotten when full (it is only a hint for which first step is cheaper).
const KNOWN_IDS: usize = 1 << 17;

/// Applies events to a store. Cheap to clone; clones share the hint of
/// which order ids have a state row.
pub struct Applier<S> {
    store: Arc<S>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
    known: Arc<Mutex<HashSet<i64>>>,
}

impl<S> Clone for Applier<S> {
    fn clone(&self) -> Self {
        Applier {
            store: self.store.clone(),
            notify: self.notify.clone(),
            known: self.known.clone(),
        }
    }
}

impl<S: FactStore> Applier<S> {
    pub fn new(store: Arc<S>) -> Self {
        Applier {
            store,
            notify: None,
            known: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn is_known(&self, order_id: i64) -> bool {
        self.known.lock().expect("known ids").contains(&order_id)
    }

    fn remember(&self, order_id: i64) {
        let mut known = self.known.lock().expect("known ids");
        if known.len() >= KNOWN_IDS {
            known.clear();
        }
        known.insert(order_id);
    }

    /// Sends parked payments and recorded conflicts to `tx` as well.
    pub fn with_notifications(mut self, tx: mpsc::UnboundedSender<Notification>) -> Self {
        self.notify = Some(tx);
        self
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn emit(&self, n: Notification) {
        if let Some(tx) = &self.notify {
            // A closed receiver means nobody publishes notifications any more;
            // the store is the record, so dropping one here loses nothing.
            let _ = tx.send(n);
        }
    }

    /// Applies one event. Idempotent: applying it again changes nothing.
    pub async fn apply(&self, event: &Event) -> Result<ApplyStats> {
        self.apply_group(event.order_id(), std::slice::from_ref(event))
            .await
    }

    /// Applies every event of one `order_id` (in log order) with one
    /// conditional write. Idempotent.
    pub async fn apply_group(&self, order_id: i64, events: &[Event]) -> Result<ApplyStats> {
        debug_assert!(events.iter().all(|e| e.order_id() == order_id));
        // An order for an id this applier has not seen a state row for is
        // most likely new: try the insert first (a rejection returns the
        // row). Anything else reads first.
        let mut current: Option<StoredState> = match events.first() {
            Some(Event::Order(_)) if !self.is_known(order_id) => None,
            _ => self.store.read_state(order_id).await?,
        };
        if current.is_some() {
            self.remember(order_id);
        }
        let mut rejections = 0u32;
        loop {
            let plan = plan(order_id, current.as_ref(), events, now_ms())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Rule 4: complete the current revision's views first.
            if !plan.before.is_empty() {
                self.store.write_views(&plan.before).await?;
            }
            let Some(next) = &plan.next else {
                return Ok(plan.stats);
            };
            let cas = match &current {
                None => self.store.insert_state(order_id, next).await?,
                Some(s) => self.store.update_state(order_id, s.revision, next).await?,
            };
            match cas {
                Cas::Applied => {
                    self.remember(order_id);
                    self.store.write_views(&plan.after).await?;
                    for p in plan.parked {
                        self.emit(Notification::Parked(p));
                    }
                    for e in plan.conflicts {
                        self.emit(Notification::Conflict(e));
                    }
                    return Ok(plan.stats);
                }
                Cas::Rejected(now) => {
                    rejections += 1;
                    if rejections >= MAX_REJECTIONS {
                        return Err(StoreError::Other(format!(
                            "order_id {order_id}: {rejections} conditional writes in a row were rejected; \
                             is another process rewriting order_state? The checkpoint did not move, so a restart retries"
                        )));
                    }
                    current = match now {
                        Some(s) => Some(s),
                        None => self.store.read_state(order_id).await?,
                    };
                }
            }
        }
    }

    /// The backstop for parked payments: every `dlq_payments` row is
    /// checked against its `order_state`. A row whose order exists (left
    /// behind by a crash between a conditional write and its view writes)
    /// is repaired: the fact row is rewritten and the parked row deleted, at
    /// the state's revision. A row still parked gets one more attempt
    /// counted. Returns (joined, still parked).
    pub async fn reprocess_parked(&self) -> Result<(u64, u64, ApplyStats)> {
        let stats = ApplyStats::default();
        let mut joined = 0;
        let mut remaining = 0;
        for parked in self.store.scan_parked().await? {
            let order_id = parked.order_id();
            let fp = parked.payment.fingerprint;
            let Some(stored) = self.store.read_state(order_id).await? else {
                tracing::warn!(
                    order_id,
                    "dlq_payments row without an order_state row (written by an older version?); left alone: rebuild with `ecom-pipeline replay --truncate`"
                );
                remaining += 1;
                continue;
            };
            let ts = ecom_core::view_ts(stored.revision);
            let state = &stored.state;
            if state.parked.contains_key(&fp) {
                remaining += 1;
                self.store
                    .write_views(&[ViewWrite::ParkedAttempts {
                        order_id,
                        fingerprint: fp,
                        attempts: parked.attempts.saturating_add(1),
                        ts: touch_ts(stored.revision),
                    }])
                    .await?;
                continue;
            }
            let mut writes = ecom_core::pending_writes(order_id, state, ts);
            writes.push(ViewWrite::ParkedDelete {
                order_id,
                fingerprint: fp,
                ts,
            });
            if let Some(row) = state.fact() {
                writes.push(ViewWrite::Fact { row, ts });
            }
            self.store.write_views(&writes).await?;
            joined += 1;
        }
        Ok((joined, remaining, stats))
    }
}
