//! The conflict rule: which of two versions of one order (or of the payment
//! of one order) wins.
//!
//! The rule is a total order over versions, so the winner depends only on the
//! set of versions seen, never on arrival order or on how many instances
//! applied them: the higher business `version` wins (absent counts as 0);
//! between equal versions the earliest-published message wins; ties are broken
//! by the smaller message id, which is unique.

use std::cmp::{Ordering, Reverse};

use crate::event::{Content, Versioned};

/// The sort key of a version: smaller is better.
fn rank<T: Content>(v: &Versioned<T>) -> (Reverse<i64>, i64, &str) {
    (
        Reverse(v.content.business_version().unwrap_or(0)),
        v.provenance.publish_time_us,
        v.provenance.message_id.as_str(),
    )
}

/// Compares two versions under the rule: `Less` means `a` beats `b`.
pub fn compare<T: Content>(a: &Versioned<T>, b: &Versioned<T>) -> Ordering {
    rank(a).cmp(&rank(b))
}

/// What applying `incoming` against the `current` winner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The very same message (a transport duplicate seen by another instance): nothing.
    SameMessage,
    /// Same business event, incoming ranks better: take its provenance
    /// (and, for an `event_id` identity, its content). A business duplicate.
    Upgrade,
    /// Same business event, incoming ranks worse: nothing. A business duplicate.
    Duplicate,
    /// A different version that beats the current one: the current version
    /// becomes a loser (audit) and the incoming one replaces it.
    Displace,
    /// A different version that loses: it goes to the audit table.
    Lose,
}

impl Decision {
    /// Whether this decision is a business duplicate (same event, another message).
    pub fn is_business_duplicate(self) -> bool {
        matches!(self, Decision::Upgrade | Decision::Duplicate)
    }

    /// Whether this decision records a conflicting version in the audit table.
    pub fn is_conflict(self) -> bool {
        matches!(self, Decision::Displace | Decision::Lose)
    }
}

pub fn decide<T: Content>(current: &Versioned<T>, incoming: &Versioned<T>) -> Decision {
    if current.provenance.message_id == incoming.provenance.message_id {
        return Decision::SameMessage;
    }
    let incoming_wins = compare(incoming, current) == Ordering::Less;
    match (current.fingerprint == incoming.fingerprint, incoming_wins) {
        (true, true) => Decision::Upgrade,
        (true, false) => Decision::Duplicate,
        (false, true) => Decision::Displace,
        (false, false) => Decision::Lose,
    }
}

/// Returns whichever of `a` and `b` wins.
pub fn better<'a, T: Content>(a: &'a Versioned<T>, b: &'a Versioned<T>) -> &'a Versioned<T> {
    if compare(b, a) == Ordering::Less {
        b
    } else {
        a
    }
}
