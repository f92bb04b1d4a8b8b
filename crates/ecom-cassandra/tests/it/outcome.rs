use std::time::Duration;

use ecom_cassandra::outcome::{
    Goal, Stamp, decide_after_unknown_outcome, entry_stamp, order_stamp, payment_stamp,
};
use ecom_cassandra::{Consistency, is_transient, outcome_unknown};
use ecom_core::{Entry, FactRow};
use ecom_store::Cas;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};

use crate::common::*;

fn db(e: DbError) -> ExecutionError {
    ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "from the test".into()))
}

fn cas_write_timeout() -> ExecutionError {
    db(DbError::WriteTimeout {
        consistency: Consistency::LocalSerial,
        received: 0,
        required: 1,
        write_type: WriteType::Cas,
    })
}

/// The write timed out; the SERIAL re-read (faked here) decides.
#[test]
fn cas_timeout_is_resolved_by_serial_read() {
    // Timeouts and Unavailable leave the outcome unknown; refusals before
    // Paxos do not, and neither do errors in the statement.
    assert!(outcome_unknown(&cas_write_timeout()));
    assert!(outcome_unknown(&ExecutionError::RequestTimeout(
        Duration::from_secs(10)
    )));
    assert!(outcome_unknown(&db(DbError::Unavailable {
        consistency: Consistency::LocalQuorum,
        required: 2,
        alive: 1,
    })));
    assert!(outcome_unknown(&db(DbError::Other(0x1700))));
    assert!(!outcome_unknown(&db(DbError::Overloaded)));
    assert!(!outcome_unknown(&db(DbError::Invalid)));
    assert!(!outcome_unknown(&db(DbError::SyntaxError)));
    assert!(!outcome_unknown(&ExecutionError::EmptyPlan));
    // All of those except the statement errors are worth a retry later.
    assert!(is_transient(&cas_write_timeout()) && is_transient(&db(DbError::Overloaded)));
    assert!(!is_transient(&db(DbError::Invalid)));

    let ours = order(1, "ours");
    let theirs = order_with(1, "theirs", 3.0, "x");
    let goal = Goal::Holds(Stamp::new("ours", ours.fingerprint));
    let row = |o: &ecom_core::OrderVersion| FactRow {
        order: o.clone(),
        payment: None,
    };

    // Our insert landed (perhaps completed by the read's Paxos round).
    assert_eq!(
        decide_after_unknown_outcome(&goal, Some(row(&ours)), order_stamp),
        Cas::Applied
    );
    // Someone else's did: rejected with their row, to re-decide from.
    assert_eq!(
        decide_after_unknown_outcome(&goal, Some(row(&theirs)), order_stamp),
        Cas::Rejected(Some(row(&theirs)))
    );
    // Nothing landed.
    assert_eq!(
        decide_after_unknown_outcome(&goal, None::<FactRow>, order_stamp),
        Cas::Rejected(None)
    );
    // Same message id but other content (fingerprint) is not ours.
    let mut same_msg = theirs.clone();
    same_msg.provenance = ours.provenance.clone();
    assert_eq!(
        decide_after_unknown_outcome(&goal, Some(row(&same_msg)), order_stamp),
        Cas::Rejected(Some(row(&same_msg)))
    );

    // A payment write: the row exists but its payment is absent or another.
    let p = payment(1, "pay", "Completed");
    let pay_goal = Goal::Holds(Stamp::new("pay", p.fingerprint));
    assert_eq!(
        decide_after_unknown_outcome(&pay_goal, Some(row(&ours)), payment_stamp),
        Cas::Rejected(Some(row(&ours)))
    );
    let joined = FactRow {
        order: ours.clone(),
        payment: Some(p.clone()),
    };
    assert_eq!(
        decide_after_unknown_outcome(&pay_goal, Some(joined), payment_stamp),
        Cas::Applied
    );

    // A conditional delete: applied iff the entry is gone.
    let e = Entry::Order(ours.clone());
    assert_eq!(
        decide_after_unknown_outcome(&Goal::Absent, None::<Entry>, entry_stamp),
        Cas::Applied
    );
    assert_eq!(
        decide_after_unknown_outcome(&Goal::Absent, Some(e.clone()), entry_stamp),
        Cas::Rejected(Some(e))
    );
}
