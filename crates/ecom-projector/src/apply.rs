//! The exactly-once apply protocol for one event, over conditional writes.
//!
//! Every step is idempotent and every decision is re-made from fresh state
//! when a conditional write is rejected, so the outcome is the same whatever
//! the order of events, duplicates, crashes between steps, or how many
//! instances apply events to one store concurrently. The target is
//! [`ecom_core::Model::final_state`].
//!
//! Three rules carry the argument:
//!
//! 1. **Winner by CAS.** A fact row's order (or payment) is only replaced by a
//!    better-ranked version, conditionally on the provenance read. The winner
//!    therefore only ever improves, and a version beaten once is a loser for
//!    good.
//! 2. **Audit before replace, then reconcile.** A losing version is written
//!    to `duplicate_orders` *before* the winner is replaced (a crash never
//!    loses it), as the best-ranked message of its fingerprint. Afterwards the
//!    writer re-reads the winner and removes an audit row that names the
//!    winner's own fingerprint (possible when an earlier-published copy of a
//!    once-losing version arrives later, or when two instances race). A
//!    removal is conditional on the provenance read and is itself followed by
//!    a check that the winner did not move meanwhile (if it did, the removed
//!    row is written back).
//! 3. **The join writes, then checks.** A payment whose order is missing is
//!    parked *then* the order is re-read; an order is written *then* the
//!    parked payments are read. With linearizable reads at least one side sees
//!    the other, so no payment stays parked once its order exists.

use std::sync::Arc;

use ecom_core::rule::compare;
use ecom_core::{Decision, Entry, Event, FactRow, Kind, OrderVersion, PaymentVersion, decide};
use ecom_store::{Cas, FactStore, Parked, Result, now_ms};
use serde::Serialize;
use tokio::sync::mpsc;

/// What the projector reports to side channels (Pub/Sub's `dlq_payments_data`
/// and `duplicate_orders` topics).
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A payment was parked for the first time (its order is missing).
    Parked(PaymentVersion),
    /// A losing version was recorded in `duplicate_orders`.
    Conflict(Entry),
}

/// Counts of what applying events did. Per run, not part of the store state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApplyStats {
    pub events: u64,
    pub orders_inserted: u64,
    pub orders_replaced: u64,
    pub payments_applied: u64,
    pub payments_joined_from_dlq: u64,
    pub payments_parked: u64,
    pub business_duplicates: u64,
    pub conflicts: u64,
    /// The same message id applied again (another instance's log had it too).
    pub same_message: u64,
}

impl ApplyStats {
    pub fn add(&mut self, o: &ApplyStats) {
        self.events += o.events;
        self.orders_inserted += o.orders_inserted;
        self.orders_replaced += o.orders_replaced;
        self.payments_applied += o.payments_applied;
        self.payments_joined_from_dlq += o.payments_joined_from_dlq;
        self.payments_parked += o.payments_parked;
        self.business_duplicates += o.business_duplicates;
        self.conflicts += o.conflicts;
        self.same_message += o.same_message;
    }
}

/// Applies events to a store. Cheap to clone.
pub struct Applier<S> {
    store: Arc<S>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
}

impl<S> Clone for Applier<S> {
    fn clone(&self) -> Self {
        Applier {
            store: self.store.clone(),
            notify: self.notify.clone(),
        }
    }
}

fn entry_beats(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (Entry::Order(a), Entry::Order(b)) => compare(a, b).is_lt(),
        (Entry::Payment(a), Entry::Payment(b)) => compare(a, b).is_lt(),
        _ => false,
    }
}

fn winner_fingerprint(row: &FactRow, kind: Kind) -> Option<ecom_core::Fingerprint> {
    match kind {
        Kind::Order => Some(row.order.fingerprint),
        Kind::Payment => row.payment.as_ref().map(|p| p.fingerprint),
    }
}

impl<S: FactStore> Applier<S> {
    pub fn new(store: Arc<S>) -> Self {
        Applier {
            store,
            notify: None,
        }
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
        let mut stats = ApplyStats {
            events: 1,
            ..Default::default()
        };
        match event {
            Event::Order(o) => self.apply_order(o, &mut stats).await?,
            Event::Payment(p) => self.apply_payment(p, &mut stats).await?,
        }
        Ok(stats)
    }

    async fn apply_order(&self, o: &OrderVersion, stats: &mut ApplyStats) -> Result<()> {
        let order_id = o.content.order_id;
        loop {
            let Some(row) = self.store.read_fact(order_id).await? else {
                if self.store.insert_fact(o).await?.applied() {
                    stats.orders_inserted += 1;
                    break;
                }
                continue;
            };
            match decide(&row.order, o) {
                Decision::SameMessage => stats.same_message += 1,
                Decision::Duplicate => stats.business_duplicates += 1,
                Decision::Upgrade => {
                    if !self
                        .store
                        .replace_order(&row.order.provenance, o)
                        .await?
                        .applied()
                    {
                        continue;
                    }
                    stats.business_duplicates += 1;
                }
                Decision::Displace => {
                    self.record_loser(Entry::Order(row.order.clone())).await?;
                    if !self
                        .store
                        .replace_order(&row.order.provenance, o)
                        .await?
                        .applied()
                    {
                        continue;
                    }
                    stats.orders_replaced += 1;
                    stats.conflicts += 1;
                    self.reconcile(order_id, Kind::Order).await?;
                }
                Decision::Lose => {
                    self.record_loser(Entry::Order(o.clone())).await?;
                    stats.conflicts += 1;
                    self.reconcile(order_id, Kind::Order).await?;
                }
            }
            break;
        }
        // Write-then-check, order side: the row exists now, so drain whatever
        // was parked before it did.
        self.drain(order_id, stats).await
    }

    async fn apply_payment(&self, p: &PaymentVersion, stats: &mut ApplyStats) -> Result<()> {
        let order_id = p.content.order_id;
        let row = match self.store.read_fact(order_id).await? {
            Some(row) => row,
            None => {
                self.park(p, stats).await?;
                // Write-then-check, payment side: the order may have been
                // written after our read and drained before our park.
                match self.store.read_fact(order_id).await? {
                    None => return Ok(()),
                    Some(row) => row,
                }
            }
        };
        self.apply_payment_to(p, row, stats).await?;
        self.drain(order_id, stats).await
    }

    /// Applies a payment to an existing fact row (re-reading on conflict).
    async fn apply_payment_to(
        &self,
        p: &PaymentVersion,
        mut row: FactRow,
        stats: &mut ApplyStats,
    ) -> Result<()> {
        let order_id = p.content.order_id;
        loop {
            let current = row.payment.as_ref();
            match current {
                None => {
                    if self.store.replace_payment(None, p).await?.applied() {
                        stats.payments_applied += 1;
                        return Ok(());
                    }
                }
                Some(cur) => match decide(cur, p) {
                    Decision::SameMessage => {
                        stats.same_message += 1;
                        return Ok(());
                    }
                    Decision::Duplicate => {
                        stats.business_duplicates += 1;
                        return Ok(());
                    }
                    Decision::Upgrade => {
                        if self
                            .store
                            .replace_payment(Some(&cur.provenance), p)
                            .await?
                            .applied()
                        {
                            stats.business_duplicates += 1;
                            return Ok(());
                        }
                    }
                    Decision::Displace => {
                        self.record_loser(Entry::Payment(cur.clone())).await?;
                        if self
                            .store
                            .replace_payment(Some(&cur.provenance), p)
                            .await?
                            .applied()
                        {
                            stats.payments_applied += 1;
                            stats.conflicts += 1;
                            self.reconcile(order_id, Kind::Payment).await?;
                            return Ok(());
                        }
                    }
                    Decision::Lose => {
                        self.record_loser(Entry::Payment(p.clone())).await?;
                        stats.conflicts += 1;
                        self.reconcile(order_id, Kind::Payment).await?;
                        return Ok(());
                    }
                },
            }
            // Rejected: someone changed the row; re-read and re-decide.
            row = match self.store.read_fact(order_id).await? {
                Some(r) => r,
                None => {
                    return Err(ecom_store::StoreError::Corrupt(format!(
                        "orders_payments_facts row {order_id} disappeared while a payment was applied; rows are never deleted outside `replay --truncate`"
                    )));
                }
            };
        }
    }

    /// Parks a payment, keeping the best-ranked message per fingerprint.
    async fn park(&self, p: &PaymentVersion, stats: &mut ApplyStats) -> Result<()> {
        let order_id = p.content.order_id;
        loop {
            let current = self
                .store
                .parked_for(order_id)
                .await?
                .into_iter()
                .find(|c| c.payment.fingerprint == p.fingerprint);
            match current {
                None => {
                    let parked = Parked {
                        payment: p.clone(),
                        parked_at_ms: now_ms(),
                        attempts: 1,
                    };
                    if self.store.insert_parked(&parked).await?.applied() {
                        stats.payments_parked += 1;
                        self.emit(Notification::Parked(p.clone()));
                        return Ok(());
                    }
                }
                Some(cur) => {
                    if cur.payment.provenance == p.provenance {
                        stats.same_message += 1;
                        return Ok(());
                    }
                    if !compare(p, &cur.payment).is_lt() {
                        stats.business_duplicates += 1;
                        return Ok(());
                    }
                    let better = Parked {
                        payment: p.clone(),
                        ..cur.clone()
                    };
                    if self
                        .store
                        .replace_parked(&cur.payment.provenance, &better)
                        .await?
                        .applied()
                    {
                        stats.business_duplicates += 1;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Re-projects every payment parked for `order_id`, whose row exists.
    async fn drain(&self, order_id: i64, stats: &mut ApplyStats) -> Result<()> {
        for parked in self.store.parked_for(order_id).await? {
            let Some(row) = self.store.read_fact(order_id).await? else {
                return Ok(());
            };
            self.apply_payment_to(&parked.payment, row, stats).await?;
            // Unconditional: a parked row is stale for good once its order
            // exists. A better copy parked concurrently applies itself, because
            // its writer checks the order after parking.
            self.store
                .delete_parked(order_id, parked.payment.fingerprint)
                .await?;
            stats.payments_joined_from_dlq += 1;
        }
        Ok(())
    }

    /// Re-projects every parked payment whose order exists now; counts
    /// another attempt on the others. Returns (joined, still parked).
    pub async fn reprocess_parked(&self) -> Result<(u64, u64, ApplyStats)> {
        let mut stats = ApplyStats::default();
        let mut joined = 0;
        let mut remaining = 0;
        for parked in self.store.scan_parked().await? {
            let order_id = parked.order_id();
            if self.store.read_fact(order_id).await?.is_some() {
                let before = stats.payments_joined_from_dlq;
                self.drain(order_id, &mut stats).await?;
                joined += stats.payments_joined_from_dlq - before;
            } else {
                remaining += 1;
                self.store
                    .touch_parked(order_id, parked.payment.fingerprint, parked.attempts + 1)
                    .await?;
            }
        }
        Ok((joined, remaining, stats))
    }

    /// Records a losing version, keeping the best-ranked message of its
    /// fingerprint.
    async fn record_loser(&self, entry: Entry) -> Result<()> {
        loop {
            let current = self
                .store
                .read_audit(entry.order_id(), entry.kind(), entry.fingerprint())
                .await?;
            let cas = match &current {
                None => self.store.insert_audit(&entry).await?,
                Some(cur) if entry_beats(&entry, cur) => {
                    self.store.replace_audit(cur.provenance(), &entry).await?
                }
                Some(_) => return Ok(()),
            };
            if cas.applied() {
                self.emit(Notification::Conflict(entry));
                return Ok(());
            }
        }
    }

    /// Removes an audit row naming the current winner's fingerprint (see the
    /// module docs, rule 2).
    async fn reconcile(&self, order_id: i64, kind: Kind) -> Result<()> {
        loop {
            let Some(row) = self.store.read_fact(order_id).await? else {
                return Ok(());
            };
            let Some(winner) = winner_fingerprint(&row, kind) else {
                return Ok(());
            };
            let Some(stale) = self.store.read_audit(order_id, kind, winner).await? else {
                return Ok(());
            };
            match self
                .store
                .delete_audit(order_id, kind, winner, stale.provenance())
                .await?
            {
                Cas::Rejected(_) => continue,
                Cas::Applied => {
                    // Check after the delete: if the winner moved meanwhile,
                    // the row we removed became a true loser; write it back.
                    let moved = match self.store.read_fact(order_id).await? {
                        Some(now) => winner_fingerprint(&now, kind) != Some(winner),
                        None => false,
                    };
                    if !moved {
                        return Ok(());
                    }
                    self.record_loser(stale).await?;
                }
            }
        }
    }
}
