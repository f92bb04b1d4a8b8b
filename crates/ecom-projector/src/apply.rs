//! The exactly-once apply step: one conditional write per `order_id` group.
//!
//! The rules live in [`ecom_core::state`] (the state is a join; one
//! conditional write per transition; views are the truth at a revision;
//! what leaves the state is written before it leaves; re-applying
//! repairs). This module only executes a [`ecom_core::Plan`] against a
//! store:
//!
//! 1. Take the current state: the one this applier last wrote or read for
//!    the id (a small cache), else for a group that starts with an order
//!    assume there is none (a new order is the common case, and
//!    `insert_state` returns the row when there is one), else read it (a
//!    plain read). Whichever it is, the conditional write validates it.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ecom_core::{ApplyStats, Event, StoredState, ViewWrite, plan, touch_ts};
use ecom_store::{Cas, FactStore, Result, StoreError, now_ms};
use tokio::sync::mpsc;

/// Rejections in a row after which a group gives up with an error: far
/// beyond what contention between a few instances produces.
const MAX_REJECTIONS: u32 = 10_000;

/// Defined in `ecom-core`, so that the sources that publish these need not
/// depend on the projector.
pub use ecom_core::Notification;

/// State rows remembered per applier, at most; the cache is emptied when
/// full. It only saves reads: every use is validated by a conditional write.
const CACHED_STATES: usize = 8192;

/// A state this applier read or wrote, and whether the views of its
/// revision are known to be written.
#[derive(Clone)]
struct Cached {
    state: StoredState,
    views_done: bool,
}

/// Applies events to a store. Cheap to clone; clones share a small cache of
/// the states they wrote or read.
pub struct Applier<S> {
    store: Arc<S>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
    cache: Arc<Mutex<HashMap<i64, Cached>>>,
}

impl<S> Clone for Applier<S> {
    fn clone(&self) -> Self {
        Applier {
            store: self.store.clone(),
            notify: self.notify.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<S: FactStore> Applier<S> {
    pub fn new(store: Arc<S>) -> Self {
        Applier {
            store,
            notify: None,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cached(&self, order_id: i64) -> Option<Cached> {
        self.cache
            .lock()
            .expect("state cache")
            .get(&order_id)
            .cloned()
    }

    fn cache(&self, order_id: i64, state: StoredState, views_done: bool) {
        let mut cache = self.cache.lock().expect("state cache");
        if cache.len() >= CACHED_STATES && !cache.contains_key(&order_id) {
            cache.clear();
        }
        cache.insert(order_id, Cached { state, views_done });
    }

    fn forget(&self, order_id: i64) {
        self.cache.lock().expect("state cache").remove(&order_id);
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
        // The state this applier last wrote or read for the id, if it still
        // remembers it; else, for an order, assume a new id and try the
        // insert first (a rejection returns the row); else read. Any of
        // these may be stale: the conditional write validates it.
        let (mut current, mut views_done) = match self.cached(order_id) {
            Some(c) => (Some(c.state), c.views_done),
            None => match events.first() {
                Some(Event::Order(_)) => (None, true),
                _ => (self.store.read_state(order_id).await?, false),
            },
        };
        let mut rejections = 0u32;
        loop {
            let plan = plan(order_id, current.as_ref(), events, now_ms())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Rule 4: complete the current revision's views first (unless
            // this applier wrote them itself).
            if !views_done && !plan.before.is_empty() {
                self.store.write_views(&plan.before).await?;
                ecom_core::failpoint!("apply::after_pending_views");
            }
            let Some(next) = plan.next else {
                if let Some(s) = current {
                    self.cache(order_id, s, true);
                }
                return Ok(plan.stats);
            };
            let cas = match &current {
                None => self.store.insert_state(order_id, &next).await?,
                Some(s) => self.store.update_state(order_id, s.revision, &next).await?,
            };
            match cas {
                Cas::Applied => {
                    // Rule 5's case: the state moved, its views not yet.
                    ecom_core::failpoint!("apply::after_conditional_write");
                    self.store.write_views(&plan.after).await?;
                    // The notifications are not part of the store's record.
                    ecom_core::failpoint!("apply::after_new_views");
                    let revision = current.as_ref().map_or(0, |s| s.revision) + 1;
                    self.cache(
                        order_id,
                        StoredState {
                            revision,
                            state: next,
                        },
                        true,
                    );
                    for p in plan.parked {
                        self.emit(Notification::Parked(p));
                    }
                    for e in plan.conflicts {
                        self.emit(Notification::Conflict(e));
                    }
                    return Ok(plan.stats);
                }
                Cas::Rejected(now) => {
                    self.forget(order_id);
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
                    views_done = false;
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
    pub async fn reprocess_parked(&self) -> Result<(u64, u64)> {
        self.reprocess_parked_with_progress(&ecom_core::progress::ignore)
            .await
    }

    /// [`Self::reprocess_parked`], telling `progress` how many of the parked
    /// rows it has checked (`"parked payments checked"`).
    pub async fn reprocess_parked_with_progress(
        &self,
        progress: ecom_core::ProgressFn<'_>,
    ) -> Result<(u64, u64)> {
        let mut joined = 0;
        let mut remaining = 0;
        let rows = self.store.scan_parked().await?;
        let total = rows.len() as u64;
        let report = |done: u64| {
            progress(ecom_core::Progress {
                what: "parked payments checked",
                done,
                total: Some(total),
            })
        };
        for (i, parked) in rows.into_iter().enumerate() {
            if i > 0 {
                ecom_core::failpoint!("dlq::between_rows");
                if i % 256 == 0 {
                    report(i as u64);
                }
            }
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
        report(total);
        Ok((joined, remaining))
    }
}
