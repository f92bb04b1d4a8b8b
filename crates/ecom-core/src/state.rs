//! The per-`order_id` state and the pure transition that the projector
//! executes with one conditional write.
//!
//! # Why this module exists
//!
//! Exactly-once used to be a protocol over three tables (facts, audit, DLQ),
//! each written conditionally and reconciled afterwards. Every race between
//! those steps was a place where an audit row could vanish or a winner's
//! fingerprint could stay in the audit. Here all of it collapses into one
//! value per `order_id`, the [`OrderState`], which is written with **one**
//! conditional write (Cassandra: one LWT on `order_state`, `IF revision = r`).
//! The three user-facing tables become *views* of that state, written with
//! plain writes whose timestamps come from the state's revision, so that
//! last-write-wins in the store resolves every race the same way.
//!
//! # The rules, then the code
//!
//! 1. **The state is a join.** [`OrderState`] holds, per `order_id`, the best
//!    version of the order and of the payment, the rank of the best message
//!    of every losing fingerprint, and, while no order exists, every parked
//!    payment version. Folding an event in is commutative, associative and
//!    idempotent (a max per fingerprint), so the state after any set of
//!    events is the same whatever their order, duplicates or split into
//!    batches. `tests::fold_matches_the_model` and the property tests check
//!    it against [`crate::Model`].
//! 2. **One conditional write per transition.** [`plan`] folds a group of
//!    events into the state read at revision `r`; the store accepts the new
//!    state only if the revision is still `r` (then it becomes `r + 1`). A
//!    rejected write re-plans from the state that won. So the state row is
//!    linearizable and each transition is computed from exactly the state it
//!    replaces.
//! 3. **Views are the truth at a revision.** Every view row (a fact row, an
//!    audit row, a parked payment) is a function of the state. The rows a
//!    transition to revision `r` changed are written with timestamp
//!    [`view_ts`]`(r)`. A stale writer can only write the truth of an older
//!    revision, which carries a smaller timestamp, so the newest truth wins
//!    in any arrival order; two writers at one revision write identical
//!    cells.
//! 4. **A transition carries its own views.** The state keeps payloads only
//!    for the winners and parked payments; a displaced winner, or the losing
//!    parked payments of a join, survive only as ranks. So the new state
//!    also holds `pending`: the view rows its transition changed, with the
//!    payloads they need. Every writer first writes the pending views of the
//!    state it read, at that state's revision, and only then attempts its
//!    own conditional write. If the write applies, the views of the replaced
//!    revision are complete; if it is rejected, what was written is the
//!    truth of an older revision, harmless by rule 3. Nothing is ever
//!    written ahead of the state it describes.
//! 5. **Re-applying repairs.** A crash between the conditional write and its
//!    view writes leaves the last transition's views unwritten, but they are
//!    in `pending`: the next transition on the `order_id` writes them first,
//!    and so does re-applying the crashed writer's entries from its log,
//!    which finds them already folded (no conditional write at all) and
//!    writes the current pending views. So a crash at any step converges.
//!
//! The argument for each rule, and for why no read of the join needs to be
//! linearizable any more, is in ARCHITECTURE.md ("Exactly-once v2").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::{
    Content, Entry, Event, FactRow, Fingerprint, Kind, OrderVersion, PaymentVersion, Versioned,
};
use crate::rule::{Decision, decide};

/// The sort key of a message under the conflict rule, without its payload:
/// what the state keeps of a losing version. Smaller is better.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rank {
    /// Negated business version (absent counts as 0), so that smaller wins.
    pub neg_version: i64,
    pub publish_time_us: i64,
    pub message_id: String,
}

impl Rank {
    pub fn of<T: Content>(v: &Versioned<T>) -> Rank {
        Rank {
            neg_version: v.content.business_version().unwrap_or(0).saturating_neg(),
            publish_time_us: v.provenance.publish_time_us,
            message_id: v.provenance.message_id.clone(),
        }
    }
}

/// A payment waiting for its order, with when it was first parked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedPayment {
    pub payment: PaymentVersion,
    /// When this fingerprint was first parked, milliseconds since the epoch.
    /// Kept in the state so every writer writes the same cell.
    pub parked_at_ms: i64,
}

/// One view row a transition changed, kept in the new state until the next
/// transition (rule 4): with the state it is enough to write that row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PendingView {
    /// The fact row (its content is the state's winners).
    Fact,
    /// An audit row and the losing version it holds (whose payload the
    /// state itself no longer keeps).
    Audit(Entry),
    AuditDelete(Kind, Fingerprint),
    /// A parked row (its payload is in the state's `parked`).
    Parked(Fingerprint),
    ParkedDelete(Fingerprint),
}

/// Everything the store knows about one `order_id`. Serialized as one value
/// (the `order_state` table) with [`STATE_FORMAT`]; do not reorder or
/// rename fields without bumping it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    /// The winning order version.
    pub order: Option<OrderVersion>,
    /// The winning payment version; only when `order` is set.
    pub payment: Option<PaymentVersion>,
    /// Best-ranked message of every order fingerprint that lost.
    pub order_losers: BTreeMap<Fingerprint, Rank>,
    /// Best-ranked message of every payment fingerprint that lost; only when
    /// `order` is set.
    pub payment_losers: BTreeMap<Fingerprint, Rank>,
    /// Payments without their order, best message per fingerprint; empty as
    /// soon as `order` is set.
    pub parked: BTreeMap<Fingerprint, ParkedPayment>,
    /// The view rows the transition to this state changed (rule 4).
    #[serde(default)]
    pub pending: Vec<PendingView>,
}

/// Version of the serialized [`OrderState`]; stored with it.
pub const STATE_FORMAT: u32 = 1;

/// A state row as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    /// 1 after the first conditional write, +1 per transition.
    pub revision: i64,
    pub state: OrderState,
}

const VIEW_TS_BASE: i64 = 1 << 52;

/// Write timestamp of the views that are the truth at `revision`.
///
/// Far above wall-clock microseconds (2^52 µs is the year 2112), so view rows
/// written by an older protocol or by hand with a default timestamp never
/// shadow them; four slots per revision leave room for [`touch_ts`] between
/// two revisions.
pub fn view_ts(revision: i64) -> i64 {
    VIEW_TS_BASE + 4 * revision
}

/// Timestamp of `dlq reprocess`'s attempt counter at `revision`: above that
/// revision's views, below the next one's.
pub fn touch_ts(revision: i64) -> i64 {
    view_ts(revision) + 1
}

/// One write to a view table, with its timestamp (last write wins).
#[derive(Debug, Clone, PartialEq)]
pub enum ViewWrite {
    /// The whole `orders_payments_facts` row.
    Fact {
        row: FactRow,
        ts: i64,
    },
    Audit {
        entry: Entry,
        ts: i64,
    },
    AuditDelete {
        order_id: i64,
        kind: Kind,
        fingerprint: Fingerprint,
        ts: i64,
    },
    Parked {
        parked: ParkedPayment,
        attempts: i32,
        ts: i64,
    },
    ParkedDelete {
        order_id: i64,
        fingerprint: Fingerprint,
        ts: i64,
    },
    /// Only the `attempts` column of a parked row.
    ParkedAttempts {
        order_id: i64,
        fingerprint: Fingerprint,
        attempts: i32,
        ts: i64,
    },
}

/// Counts of what applying events did. Per run, not part of the store state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    pub events: u64,
    pub orders_inserted: u64,
    pub orders_replaced: u64,
    pub payments_applied: u64,
    pub payments_joined_from_dlq: u64,
    pub payments_parked: u64,
    pub business_duplicates: u64,
    pub conflicts: u64,
    /// The same message applied again (a re-applied log entry, or another
    /// instance's log had it too).
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

/// What one event did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Already in the state (same message id).
    Known,
    Changed,
    /// A business duplicate that changed nothing.
    Nothing,
}

/// Adds `rank` as the best message of a losing fingerprint.
fn add_loser(losers: &mut BTreeMap<Fingerprint, Rank>, fp: Fingerprint, rank: Rank) -> Effect {
    match losers.get(&fp) {
        Some(cur) if cur.message_id == rank.message_id => Effect::Known,
        Some(cur) if *cur <= rank => Effect::Nothing,
        _ => {
            losers.insert(fp, rank);
            Effect::Changed
        }
    }
}

/// What folding one version into a winner and its losers did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// There was no winner: it is the first.
    First,
    /// The same message as the winner.
    Known,
    /// A worse copy of the winner's business event.
    Duplicate,
    /// A better copy of the winner's business event took its place.
    Upgraded,
    /// Another version beat the winner, which now loses.
    Displaced,
    /// It loses: what that did to the losers.
    Lost(Effect),
}

impl Outcome {
    /// The effect and the counts of the outcomes that are the same for
    /// orders and payments.
    fn effect(self, stats: &mut ApplyStats) -> Effect {
        match self {
            Outcome::Known => Effect::Known,
            Outcome::Duplicate => Effect::Nothing,
            Outcome::Upgraded => {
                stats.business_duplicates += 1;
                Effect::Changed
            }
            Outcome::Lost(e) => {
                if e == Effect::Changed {
                    stats.conflicts += 1;
                }
                e
            }
            Outcome::First | Outcome::Displaced => Effect::Changed,
        }
    }
}

/// The conflict rule applied to one key (the order, or the payment): the
/// winner only improves, and every other fingerprint keeps its best rank.
fn fold_winner<T: Content + Clone>(
    winner: &mut Option<Versioned<T>>,
    losers: &mut BTreeMap<Fingerprint, Rank>,
    v: &Versioned<T>,
) -> Outcome {
    let Some(cur) = winner.as_ref() else {
        losers.remove(&v.fingerprint);
        *winner = Some(v.clone());
        return Outcome::First;
    };
    match decide(cur, v) {
        Decision::SameMessage => Outcome::Known,
        Decision::Duplicate => Outcome::Duplicate,
        Decision::Upgrade => {
            *winner = Some(v.clone());
            Outcome::Upgraded
        }
        Decision::Displace => {
            losers.insert(cur.fingerprint, Rank::of(cur));
            losers.remove(&v.fingerprint);
            *winner = Some(v.clone());
            Outcome::Displaced
        }
        Decision::Lose => Outcome::Lost(add_loser(losers, v.fingerprint, Rank::of(v))),
    }
}

impl OrderState {
    /// The `orders_payments_facts` row this state stands for.
    pub fn fact(&self) -> Option<FactRow> {
        self.order.as_ref().map(|o| FactRow {
            order: o.clone(),
            payment: self.payment.clone(),
        })
    }

    /// The audit keys this state stands for, with the rank of the message
    /// each holds. Payment versions are audited only once the order exists.
    fn audit_view(&self) -> BTreeMap<(Kind, Fingerprint), &Rank> {
        let mut out = BTreeMap::new();
        for (fp, r) in &self.order_losers {
            out.insert((Kind::Order, *fp), r);
        }
        if self.order.is_some() {
            for (fp, r) in &self.payment_losers {
                out.insert((Kind::Payment, *fp), r);
            }
        }
        out
    }

    /// Folds one event in, adding to `stats`.
    fn fold(&mut self, event: &Event, now_ms: i64, stats: &mut ApplyStats) -> Effect {
        stats.events += 1;
        let effect = match event {
            Event::Order(o) => self.fold_order(o, stats),
            Event::Payment(p) => self.fold_payment(p, now_ms, stats),
        };
        match effect {
            Effect::Known => stats.same_message += 1,
            Effect::Nothing => stats.business_duplicates += 1,
            Effect::Changed => {}
        }
        effect
    }

    fn fold_order(&mut self, o: &OrderVersion, stats: &mut ApplyStats) -> Effect {
        match fold_winner(&mut self.order, &mut self.order_losers, o) {
            Outcome::First => {
                stats.orders_inserted += 1;
                self.join_parked(stats);
                Effect::Changed
            }
            Outcome::Displaced => {
                stats.orders_replaced += 1;
                stats.conflicts += 1;
                Effect::Changed
            }
            other => other.effect(stats),
        }
    }

    fn fold_payment(&mut self, p: &PaymentVersion, now_ms: i64, stats: &mut ApplyStats) -> Effect {
        if self.order.is_some() {
            return self.fold_joined_payment(p, stats);
        }
        match self.parked.get(&p.fingerprint) {
            Some(cur) if cur.payment.provenance.message_id == p.provenance.message_id => {
                Effect::Known
            }
            Some(cur) if Rank::of(&cur.payment) <= Rank::of(p) => Effect::Nothing,
            Some(cur) => {
                let parked_at_ms = cur.parked_at_ms;
                self.parked.insert(
                    p.fingerprint,
                    ParkedPayment {
                        payment: p.clone(),
                        parked_at_ms,
                    },
                );
                stats.business_duplicates += 1;
                Effect::Changed
            }
            None => {
                self.parked.insert(
                    p.fingerprint,
                    ParkedPayment {
                        payment: p.clone(),
                        parked_at_ms: now_ms,
                    },
                );
                stats.payments_parked += 1;
                Effect::Changed
            }
        }
    }

    /// Folds a payment into a state whose order exists.
    fn fold_joined_payment(&mut self, p: &PaymentVersion, stats: &mut ApplyStats) -> Effect {
        match fold_winner(&mut self.payment, &mut self.payment_losers, p) {
            Outcome::First => {
                stats.payments_applied += 1;
                Effect::Changed
            }
            Outcome::Displaced => {
                stats.payments_applied += 1;
                stats.conflicts += 1;
                Effect::Changed
            }
            other => other.effect(stats),
        }
    }

    /// The order just arrived: every parked payment joins (the best wins,
    /// the others lose).
    fn join_parked(&mut self, stats: &mut ApplyStats) {
        for (_, pp) in std::mem::take(&mut self.parked) {
            stats.payments_joined_from_dlq += 1;
            self.fold_joined_payment(&pp.payment, &mut ApplyStats::default());
        }
    }

    /// Whether both states decide the same (their pending views aside).
    fn same_decisions(&self, o: &OrderState) -> bool {
        self.order == o.order
            && self.payment == o.payment
            && self.order_losers == o.order_losers
            && self.payment_losers == o.payment_losers
            && self.parked == o.parked
    }
}

/// What the projector must do for one group of events of one `order_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The state after the group; `None` when nothing changed.
    pub next: Option<OrderState>,
    /// The views of the *current* revision's transition, at its timestamp:
    /// written before the conditional write (or, when nothing changed,
    /// instead of it), so that no revision moves on before the views of the
    /// one it replaces are complete (rule 4).
    pub before: Vec<ViewWrite>,
    /// The views this transition changes, at the new revision's timestamp,
    /// written after the conditional write applied.
    pub after: Vec<ViewWrite>,
    pub stats: ApplyStats,
    /// Audit entries recorded for the first time or improved.
    pub conflicts: Vec<Entry>,
    /// Payments parked for the first time.
    pub parked: Vec<PaymentVersion>,
}

/// Error of [`plan`]: a state that cannot have been produced by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "order_state of order_id {order_id} is inconsistent: {what}; run `ecom-pipeline verify` and rebuild with `ecom-pipeline replay --truncate`"
)]
pub struct InconsistentState {
    pub order_id: i64,
    pub what: String,
}

/// The losing version `message_id` of `kind`, from the events or from the
/// old state's winners and parked payments (the only places a payload can
/// come from when a version starts losing).
fn find_entry(kind: Kind, message_id: &str, old: &OrderState, events: &[Event]) -> Option<Entry> {
    let from_events = events.iter().find_map(|e| match (kind, e) {
        (Kind::Order, Event::Order(o)) if o.provenance.message_id == message_id => {
            Some(Entry::Order(o.clone()))
        }
        (Kind::Payment, Event::Payment(p)) if p.provenance.message_id == message_id => {
            Some(Entry::Payment(p.clone()))
        }
        _ => None,
    });
    from_events.or_else(|| match kind {
        Kind::Order => old
            .order
            .as_ref()
            .filter(|o| o.provenance.message_id == message_id)
            .map(|o| Entry::Order(o.clone())),
        Kind::Payment => old
            .payment
            .iter()
            .chain(old.parked.values().map(|pp| &pp.payment))
            .find(|p| p.provenance.message_id == message_id)
            .map(|p| Entry::Payment(p.clone())),
    })
}

/// The view writes that `state.pending` stands for, at `ts`.
pub fn pending_writes(order_id: i64, state: &OrderState, ts: i64) -> Vec<ViewWrite> {
    let mut out = Vec::with_capacity(state.pending.len());
    for p in &state.pending {
        match p {
            PendingView::Fact => {
                if let Some(row) = state.fact() {
                    out.push(ViewWrite::Fact { row, ts });
                }
            }
            PendingView::Audit(entry) => out.push(ViewWrite::Audit {
                entry: entry.clone(),
                ts,
            }),
            PendingView::AuditDelete(kind, fp) => out.push(ViewWrite::AuditDelete {
                order_id,
                kind: *kind,
                fingerprint: *fp,
                ts,
            }),
            PendingView::Parked(fp) => {
                if let Some(pp) = state.parked.get(fp) {
                    out.push(ViewWrite::Parked {
                        parked: pp.clone(),
                        attempts: 1,
                        ts,
                    });
                }
            }
            PendingView::ParkedDelete(fp) => out.push(ViewWrite::ParkedDelete {
                order_id,
                fingerprint: *fp,
                ts,
            }),
        }
    }
    out
}

/// Plans the transition of one `order_id` from `current` (as read, `None`
/// for no row) through `events` (all of that `order_id`), at wall-clock
/// `now_ms` (only used as the parking time of a newly parked payment).
pub fn plan(
    order_id: i64,
    current: Option<&StoredState>,
    events: &[Event],
    now_ms: i64,
) -> Result<Plan, InconsistentState> {
    let empty = OrderState::default();
    let (old, revision) = match current {
        Some(s) => (&s.state, s.revision),
        None => (&empty, 0),
    };
    let mut next = OrderState {
        pending: Vec::new(),
        ..old.clone()
    };
    let mut stats = ApplyStats::default();
    for e in events {
        next.fold(e, now_ms, &mut stats);
    }
    let before = pending_writes(order_id, old, view_ts(revision));
    if next.same_decisions(old) {
        return Ok(Plan {
            next: None,
            before,
            after: Vec::new(),
            stats,
            conflicts: Vec::new(),
            parked: Vec::new(),
        });
    }
    let mut pending = Vec::new();
    let mut conflicts = Vec::new();
    let mut parked = Vec::new();

    if next.fact().is_some() && next.fact() != old.fact() {
        pending.push(PendingView::Fact);
    }
    let (old_audit, new_audit) = (old.audit_view(), next.audit_view());
    let keys: BTreeSet<_> = old_audit.keys().chain(new_audit.keys()).copied().collect();
    for key @ (kind, fp) in keys {
        let now = new_audit.get(&key);
        if old_audit.get(&key) == now {
            continue;
        }
        match now {
            None => pending.push(PendingView::AuditDelete(kind, fp)),
            Some(rank) => {
                let entry = find_entry(kind, &rank.message_id, old, events).ok_or_else(|| {
                    InconsistentState {
                        order_id,
                        what: format!(
                            "no payload for the {} audit row {fp} (message {})",
                            kind.as_str(),
                            rank.message_id
                        ),
                    }
                })?;
                conflicts.push(entry.clone());
                pending.push(PendingView::Audit(entry));
            }
        }
    }
    for (fp, pp) in &next.parked {
        if old.parked.get(fp) != Some(pp) {
            if !old.parked.contains_key(fp) {
                parked.push(pp.payment.clone());
            }
            pending.push(PendingView::Parked(*fp));
        }
    }
    for fp in old.parked.keys() {
        if !next.parked.contains_key(fp) {
            pending.push(PendingView::ParkedDelete(*fp));
        }
    }
    next.pending = pending;
    let after = pending_writes(order_id, &next, view_ts(revision + 1));
    Ok(Plan {
        next: Some(next),
        before,
        after,
        stats,
        conflicts,
        parked,
    })
}

/// The state `replay` writes for one `order_id`, from the model's best
/// versions per fingerprint: the state the projector would reach (without
/// pending views: replay writes every view itself).
pub fn state_from_versions(
    orders: &BTreeMap<Fingerprint, OrderVersion>,
    payments: &BTreeMap<Fingerprint, PaymentVersion>,
    now_ms: i64,
) -> OrderState {
    let mut s = OrderState::default();
    let mut ignore = ApplyStats::default();
    // Orders first, so payments join directly instead of parking.
    for o in orders.values() {
        s.fold(&Event::Order(o.clone()), now_ms, &mut ignore);
    }
    for p in payments.values() {
        s.fold(&Event::Payment(p.clone()), now_ms, &mut ignore);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;
    use crate::fixtures::{order, payment};
    use crate::model::FinalState;

    /// Views with the store's last-write-wins rule (ties: deletion wins).
    #[derive(Default)]
    struct Views {
        facts: BTreeMap<i64, (i64, Option<FactRow>)>,
        audit: BTreeMap<(i64, Kind, Fingerprint), (i64, Option<Entry>)>,
        parked: BTreeMap<(i64, Fingerprint), (i64, Option<PaymentVersion>)>,
    }

    fn lww<K: Ord, V>(m: &mut BTreeMap<K, (i64, Option<V>)>, k: K, ts: i64, v: Option<V>) {
        match m.get(&k) {
            Some((cur, _)) if *cur > ts || (*cur == ts && v.is_some()) => {}
            _ => {
                m.insert(k, (ts, v));
            }
        }
    }

    impl Views {
        fn write_all(&mut self, ws: &[ViewWrite]) {
            for w in ws.iter().cloned() {
                match w {
                    ViewWrite::Fact { row, ts } => {
                        lww(&mut self.facts, row.order_id(), ts, Some(row))
                    }
                    ViewWrite::Audit { entry, ts } => lww(
                        &mut self.audit,
                        (entry.order_id(), entry.kind(), entry.fingerprint()),
                        ts,
                        Some(entry),
                    ),
                    ViewWrite::AuditDelete {
                        order_id,
                        kind,
                        fingerprint,
                        ts,
                    } => lww(&mut self.audit, (order_id, kind, fingerprint), ts, None),
                    ViewWrite::Parked { parked, ts, .. } => lww(
                        &mut self.parked,
                        (parked.payment.content.order_id, parked.payment.fingerprint),
                        ts,
                        Some(parked.payment),
                    ),
                    ViewWrite::ParkedDelete {
                        order_id,
                        fingerprint,
                        ts,
                    } => lww(&mut self.parked, (order_id, fingerprint), ts, None),
                    ViewWrite::ParkedAttempts { .. } => {}
                }
            }
        }

        fn state(&self) -> FinalState {
            fn live<K: Ord + Copy, V: Clone>(m: &BTreeMap<K, (i64, Option<V>)>) -> BTreeMap<K, V> {
                m.iter()
                    .filter_map(|(k, (_, v))| v.clone().map(|v| (*k, v)))
                    .collect()
            }
            FinalState {
                facts: live(&self.facts),
                audit: live(&self.audit),
                parked: live(&self.parked),
            }
        }
    }

    /// One writer, one event per transition, every write landing.
    fn run_one_by_one(events: &[Event], views: &mut Views) -> Option<StoredState> {
        let mut stored: Option<StoredState> = None;
        for e in events {
            stored = step(stored, e, views, true);
        }
        stored
    }

    /// One apply of `e`: before-views, conditional write, after-views
    /// (unless `after` is false: a crash right after the conditional write).
    fn step(
        stored: Option<StoredState>,
        e: &Event,
        views: &mut Views,
        after: bool,
    ) -> Option<StoredState> {
        let p = plan(e.order_id(), stored.as_ref(), std::slice::from_ref(e), 0).unwrap();
        views.write_all(&p.before);
        let Some(next) = p.next else {
            return stored;
        };
        if after {
            views.write_all(&p.after);
        }
        Some(StoredState {
            revision: stored.as_ref().map_or(0, |s| s.revision) + 1,
            state: next,
        })
    }

    fn model_of(events: &[Event]) -> FinalState {
        let mut m = Model::new();
        for e in events {
            m.apply(e);
        }
        m.final_state()
    }

    #[test]
    fn fold_matches_the_model() {
        let events = vec![
            payment(1, "PayPal", "p1", 5),
            payment(1, "Card", "p2", 3),
            order(1, "Pending", "o1", 20),
            order(1, "Shipped", "o2", 10),
            order(1, "Pending", "o3", 30),
            payment(1, "PayPal", "p1", 5),
            order(1, "Pending", "o0", 1),
        ];
        let mut views = Views::default();
        run_one_by_one(&events, &mut views);
        assert_eq!(views.state(), model_of(&events));
    }

    /// Defect 2 of the old protocol: an earlier copy of a once-losing
    /// version displaces the winner and the process dies before any view
    /// write; on restart the same entry is applied again. Its fingerprint
    /// must leave the audit and the displaced winner must enter it.
    #[test]
    fn earlier_copy_of_a_loser_wins_and_leaves_the_audit_even_after_a_crash() {
        let w = order(1, "Pending", "w", 20);
        let g0 = order(1, "Shipped", "g0", 30);
        let g = order(1, "Shipped", "g", 10);
        let mut views = Views::default();
        let stored = run_one_by_one(&[w.clone(), g0.clone()], &mut views);
        let stored = step(stored, &g, &mut views, false);
        // Restart: the log hands g over again; it is already folded.
        let again = plan(1, stored.as_ref(), std::slice::from_ref(&g), 0).unwrap();
        assert!(again.next.is_none(), "re-applying changes no state");
        views.write_all(&again.before);
        assert_eq!(views.state(), model_of(&[w, g0, g]));
    }

    /// Rule 4 with a stale writer: a writer that read an old revision writes
    /// that revision's views, which newer ones override whatever the order
    /// of arrival; its own conditional write is rejected.
    #[test]
    fn a_stale_writers_views_never_override_newer_ones() {
        let w = order(2, "Pending", "w", 20);
        let w_early = order(2, "Pending", "w-early", 5);
        let e = order(2, "Shipped", "e", 10);
        let mut views = Views::default();
        let s1 = run_one_by_one(std::slice::from_ref(&w), &mut views);
        // A stale writer plans e against revision 1 (winner w, which e beats)...
        let stale = plan(2, s1.as_ref(), std::slice::from_ref(&e), 0).unwrap();
        // ...while w's earlier copy upgrades the winner at revision 2.
        let s2 = step(s1, &w_early, &mut views, true);
        // The stale writer's views land late; its conditional write fails
        // (revision 1 != 2), so it re-plans from revision 2.
        views.write_all(&stale.before);
        let fresh = step(s2, &e, &mut views, true);
        assert!(fresh.is_some());
        assert_eq!(views.state(), model_of(&[w, w_early, e]));
    }
}
