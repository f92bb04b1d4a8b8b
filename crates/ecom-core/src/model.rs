//! The reference model: the final state of the store as a function of the
//! set of unique events.
//!
//! It is the specification the projector is tested against, and it is also
//! how `replay` works: fold every log entry into a [`Model`], then write each
//! final row once.
//!
//! The final state, per `order_id`:
//! - no order seen: no fact row; every distinct payment version is parked;
//! - otherwise a fact row holding the best order version and the best
//!   payment version (if any) under [`crate::rule`]; every other distinct
//!   version (by fingerprint, keeping the best-ranked message of each) is an
//!   audit entry in `duplicate_orders`.

use std::collections::{BTreeMap, HashSet};

use crate::event::{Content, Entry, Event, FactRow, Fingerprint, Kind, PaymentVersion, Versioned};
use crate::rule;

/// The state every store must converge to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalState {
    pub facts: BTreeMap<i64, FactRow>,
    /// `duplicate_orders`, keyed by (order_id, kind, fingerprint).
    pub audit: BTreeMap<(i64, Kind, Fingerprint), Entry>,
    /// `dlq_payments`, keyed by (order_id, fingerprint).
    pub parked: BTreeMap<(i64, Fingerprint), PaymentVersion>,
}

impl FinalState {
    /// Payments joined into a fact row.
    pub fn payments_joined(&self) -> usize {
        self.facts.values().filter(|r| r.payment.is_some()).count()
    }

    /// Parked payments whose order exists: always a bug when it is non-zero
    /// after projection settled.
    pub fn parked_with_order(&self) -> usize {
        self.parked
            .keys()
            .filter(|(order_id, _)| self.facts.contains_key(order_id))
            .count()
    }

    /// Human-readable differences between `self` (expected) and `actual`, at
    /// most `limit` of them, plus the total count.
    pub fn diff(&self, actual: &FinalState, limit: usize) -> (usize, Vec<String>) {
        let mut out = Vec::new();
        let mut total = 0;
        let mut note = |s: String| {
            total += 1;
            if out.len() < limit {
                out.push(s);
            }
        };
        diff_maps(
            "orders_payments_facts",
            &self.facts,
            &actual.facts,
            &mut note,
        );
        diff_maps("duplicate_orders", &self.audit, &actual.audit, &mut note);
        diff_maps("dlq_payments", &self.parked, &actual.parked, &mut note);
        (total, out)
    }
}

fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    table: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    note: &mut impl FnMut(String),
) {
    for (k, v) in expected {
        match actual.get(k) {
            None => note(format!("{table} {k:?}: missing from the store")),
            Some(a) if a != v => note(format!(
                "{table} {k:?}: store has {a:?}, log fold has {v:?}"
            )),
            Some(_) => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            note(format!(
                "{table} {k:?}: in the store but not in the log fold"
            ));
        }
    }
}

/// Best version per fingerprint, per order_id.
type Versions<T> = BTreeMap<i64, BTreeMap<Fingerprint, Versioned<T>>>;

/// Folds events in any order; the result depends only on the set of events.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Transport dedup key: Pub/Sub message ids are unique within a topic,
    /// not across topics, and each kind comes from its own topic.
    seen: HashSet<(Kind, String)>,
    orders: Versions<crate::event::Order>,
    payments: Versions<crate::event::Payment>,
}

fn add<T: Content + Clone>(versions: &mut Versions<T>, order_id: i64, v: &Versioned<T>) {
    let slot = versions.entry(order_id).or_default();
    match slot.get_mut(&v.fingerprint) {
        Some(best) => {
            if rule::compare(v, best).is_lt() {
                *best = v.clone();
            }
        }
        None => {
            slot.insert(v.fingerprint, v.clone());
        }
    }
}

/// Splits the distinct versions of one key into the winner and the losers.
fn winner<T: Content + Clone>(
    versions: &BTreeMap<Fingerprint, Versioned<T>>,
) -> Option<&Versioned<T>> {
    versions.values().reduce(|a, b| rule::better(a, b))
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one event. Returns false for a message id already folded (a
    /// transport duplicate), which changes nothing.
    pub fn apply(&mut self, event: &Event) -> bool {
        let kind = match event {
            Event::Order(_) => Kind::Order,
            Event::Payment(_) => Kind::Payment,
        };
        if !self
            .seen
            .insert((kind, event.provenance().message_id.clone()))
        {
            return false;
        }
        match event {
            Event::Order(o) => add(&mut self.orders, o.content.order_id, o),
            Event::Payment(p) => add(&mut self.payments, p.content.order_id, p),
        }
        true
    }

    /// Number of distinct message ids folded.
    pub fn messages(&self) -> usize {
        self.seen.len()
    }

    /// The `order_state` rows that stand for this model's final state, one
    /// per `order_id`, as the projector would have left them (see
    /// [`crate::state`]). `now_ms` becomes the parking time of parked
    /// payments.
    pub fn states(&self, now_ms: i64) -> Vec<(i64, crate::state::OrderState)> {
        let empty = BTreeMap::new();
        let ids: std::collections::BTreeSet<i64> = self
            .orders
            .keys()
            .chain(self.payments.keys())
            .copied()
            .collect();
        ids.into_iter()
            .map(|id| {
                let orders = self.orders.get(&id).unwrap_or(&empty);
                let payments = self.payments.get(&id);
                let orders: BTreeMap<_, _> = orders.iter().map(|(k, v)| (*k, v.clone())).collect();
                let payments: BTreeMap<_, _> = payments
                    .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
                    .unwrap_or_default();
                (
                    id,
                    crate::state::state_from_versions(&orders, &payments, now_ms),
                )
            })
            .collect()
    }

    /// The audit entries of one `order_id` in the final state.
    pub fn audit_entries(&self, order_id: i64) -> Vec<Entry> {
        let mut out = Vec::new();
        let Some(orders) = self.orders.get(&order_id) else {
            return out;
        };
        let Some(order) = winner(orders) else {
            return out;
        };
        for v in orders.values() {
            if v.fingerprint != order.fingerprint {
                out.push(Entry::Order(v.clone()));
            }
        }
        if let Some(ps) = self.payments.get(&order_id)
            && let Some(w) = winner(ps)
        {
            for v in ps.values() {
                if v.fingerprint != w.fingerprint {
                    out.push(Entry::Payment(v.clone()));
                }
            }
        }
        out
    }

    pub fn final_state(&self) -> FinalState {
        let mut state = FinalState::default();
        for (&order_id, versions) in &self.orders {
            let Some(order) = winner(versions) else {
                continue;
            };
            for v in versions.values() {
                if v.fingerprint != order.fingerprint {
                    state.audit.insert(
                        (order_id, Kind::Order, v.fingerprint),
                        Entry::Order(v.clone()),
                    );
                }
            }
            let payment = self.payments.get(&order_id).and_then(|ps| {
                let w = winner(ps)?;
                for v in ps.values() {
                    if v.fingerprint != w.fingerprint {
                        state.audit.insert(
                            (order_id, Kind::Payment, v.fingerprint),
                            Entry::Payment(v.clone()),
                        );
                    }
                }
                Some(w.clone())
            });
            state.facts.insert(
                order_id,
                FactRow {
                    order: order.clone(),
                    payment,
                },
            );
        }
        for (&order_id, versions) in &self.payments {
            if self.orders.contains_key(&order_id) {
                continue;
            }
            for v in versions.values() {
                state.parked.insert((order_id, v.fingerprint), v.clone());
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{order, payment};

    #[test]
    fn earliest_published_order_wins_and_loser_is_audited() {
        let mut m = Model::new();
        m.apply(&order(1, "Pending", "b", 20));
        m.apply(&order(1, "Shipped", "a", 10));
        let s = m.final_state();
        assert_eq!(s.facts[&1].order.content.order_status, "Shipped");
        assert_eq!(s.audit.len(), 1);
    }

    /// Defect 5: Pub/Sub message ids are unique per topic only; an order
    /// and a payment may carry the same id and are both events.
    #[test]
    fn the_same_message_id_on_two_topics_is_two_events() {
        let mut m = Model::new();
        assert!(m.apply(&order(9, "Shipped", "42", 1)));
        assert!(m.apply(&payment(9, "PayPal", "42", 2)));
        assert!(
            !m.apply(&payment(9, "PayPal", "42", 2)),
            "a redelivery is still one"
        );
        assert_eq!(m.messages(), 2);
        assert_eq!(m.final_state().payments_joined(), 1);
    }

    #[test]
    fn payment_without_order_is_parked_and_joined_when_order_arrives() {
        let mut m = Model::new();
        m.apply(&payment(5, "PayPal", "p", 1));
        assert_eq!(m.final_state().parked.len(), 1);
        m.apply(&order(5, "Shipped", "o", 2));
        let s = m.final_state();
        assert!(s.parked.is_empty());
        assert_eq!(s.payments_joined(), 1);
    }
}
