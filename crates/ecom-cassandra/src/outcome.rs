//! Deciding a conditional write whose outcome is unknown.
//!
//! An LWT that times out (or loses its connection, or meets `Unavailable` in
//! the commit phase) may or may not have been applied, and a proposal a
//! replica accepted may still be committed by the next Paxos round on the
//! key. Retrying the write blindly could apply it twice (or apply it on top
//! of someone else's newer write). Instead the store re-reads the key at
//! SERIAL: a SERIAL read is itself a Paxos round, so it first finishes any
//! accepted-but-uncommitted proposal and, by taking a higher ballot, makes
//! sure no older proposal can be committed after it. What it returns is
//! therefore final. If the key now holds exactly what we wrote (same message
//! id and fingerprint), the write counts as [`Cas::Applied`]; otherwise it is
//! [`Cas::Rejected`] with the current value, and the caller re-decides from
//! it, as after any rejection.
//!
//! [`decide_after_unknown_outcome`] is that decision, as a pure function.

use ecom_core::{Entry, FactRow, Fingerprint};
use ecom_store::{Cas, Parked};

/// What identifies the values one write put in a row: the message they came
/// from and their fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub message_id: String,
    pub fingerprint: Fingerprint,
}

impl Stamp {
    pub fn new(message_id: &str, fingerprint: Fingerprint) -> Self {
        Stamp {
            message_id: message_id.to_owned(),
            fingerprint,
        }
    }
}

/// What the key holds if the write was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// The written values, identified by their stamp.
    Holds(Stamp),
    /// Nothing (a conditional delete).
    Absent,
}

/// Decides an unknown outcome from `current`, the value a SERIAL read
/// returned afterwards. `stamp` extracts the part of a value the write would
/// have set (e.g. a fact row's payment), or `None` if that part is empty.
pub fn decide_after_unknown_outcome<T>(
    goal: &Goal,
    current: Option<T>,
    stamp: impl Fn(&T) -> Option<Stamp>,
) -> Cas<T> {
    let applied = match (goal, &current) {
        (Goal::Absent, None) => true,
        (Goal::Holds(want), Some(cur)) => stamp(cur).as_ref() == Some(want),
        _ => false,
    };
    if applied {
        Cas::Applied
    } else {
        Cas::Rejected(current)
    }
}

/// The stamp of a fact row's order columns.
pub fn order_stamp(row: &FactRow) -> Option<Stamp> {
    Some(Stamp::new(
        &row.order.provenance.message_id,
        row.order.fingerprint,
    ))
}

/// The stamp of a fact row's payment columns (`None` before a payment joined).
pub fn payment_stamp(row: &FactRow) -> Option<Stamp> {
    row.payment
        .as_ref()
        .map(|p| Stamp::new(&p.provenance.message_id, p.fingerprint))
}

pub fn entry_stamp(entry: &Entry) -> Option<Stamp> {
    Some(Stamp::new(
        &entry.provenance().message_id,
        entry.fingerprint(),
    ))
}

pub fn parked_stamp(parked: &Parked) -> Option<Stamp> {
    Some(Stamp::new(
        &parked.payment.provenance.message_id,
        parked.payment.fingerprint,
    ))
}
