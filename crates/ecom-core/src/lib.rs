//! The sans-io core of ecom-pipeline.
//!
//! Everything here is a plain function over plain types: decoding and
//! validating producer messages ([`decode`]), the deterministic conflict rule
//! that picks a winner between versions of one order or payment ([`rule`]),
//! and the reference [`model`] of the final state, which is a function of the
//! *set* of unique events alone. The projector (ecom-projector) executes the
//! same rule against a store with conditional writes; property tests and
//! `demo` compare what it produced with [`model::Model::final_state`].

pub mod bad_input;
pub mod decode;
pub mod event;
pub mod failpoint;
#[cfg(test)]
mod fixtures;
pub mod model;
pub mod progress;
pub mod rule;
pub mod source;
pub mod state;
pub mod workload;

pub use decode::{Rejection, decode};
pub use event::{
    Content, Entry, Event, FactRow, Fingerprint, Kind, Order, OrderVersion, Payment,
    PaymentVersion, Provenance, RawMessage, Topic, Versioned,
};
pub use model::{FinalState, Model};
pub use progress::{Progress, ProgressFn};
pub use rule::{Decision, decide};
pub use source::{Acker, Delivery, Notification};
pub use state::{
    ApplyStats, OrderState, ParkedPayment, PendingView, Plan, Rank, StoredState, ViewWrite,
    pending_writes, plan, touch_ts, view_ts,
};
