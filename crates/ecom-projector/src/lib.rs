//! The projector: folds the log, in sequence order, into a fact store.
//!
//! [`apply`] executes the exactly-once transition of [`ecom_core::state`]
//! for a group of events of one `order_id`, with one conditional write; [`projector`] tails a log and advances the
//! checkpoint after the store confirmed; [`replay`] rebuilds a store from
//! logs by folding them locally first; [`verify`] compares a store with the
//! fold of logs.
//!
//! With the cargo feature `failpoints`, the steps where a crash matters
//! carry failpoints ([`FAILPOINTS`]; armed with `return(crash)` they abort
//! the process there, see `ecom_core::failpoint`), so tests can crash the
//! real binary between any two of them.

pub mod apply;
pub mod projector;
pub mod replay;

pub use apply::{Applier, Notification};
pub use ecom_core::ApplyStats;
pub use projector::{Projector, ProjectorOptions, ProjectorState, ProjectorStatus};
pub use replay::{
    ArchivedHistory, History, ReplayError, ReplayReport, VerifyReport, fold_logs, replay, verify,
};

/// The failpoints this build has (none without the cargo feature
/// `failpoints`), in the order a run meets them: between the store's
/// confirmation of a batch and its checkpoint; between the steps of
/// [`Applier::apply_group`] (the previous revision's views written; the
/// conditional write applied; the new revision's views written, the
/// notifications not sent); between the steps of [`replay()`] (a chunk's
/// state rows written; a chunk complete); between two rows of
/// `dlq reprocess` ([`Applier::reprocess_parked`]).
pub const FAILPOINTS: &[&str] = if cfg!(feature = "failpoints") {
    &[
        "projector::after_flush_before_checkpoint",
        "apply::after_pending_views",
        "apply::after_conditional_write",
        "apply::after_new_views",
        "replay::after_states",
        "replay::after_chunk",
        "dlq::between_rows",
    ]
} else {
    &[]
};
