//! The projector: folds the log, in sequence order, into a fact store.
//!
//! [`apply`] executes the exactly-once transition of [`ecom_core::state`]
//! for a group of events of one `order_id`, with one conditional write; [`projector`] tails a log and advances the
//! checkpoint after the store confirmed; [`replay`] rebuilds a store from
//! logs by folding them locally first; [`verify`] compares a store with the
//! fold of logs.

pub mod apply;
pub mod projector;
pub mod replay;

pub use apply::{Applier, Notification};
pub use ecom_core::ApplyStats;
pub use projector::{Projector, ProjectorOptions, ProjectorState, ProjectorStatus};
pub use replay::{ReplayError, ReplayReport, VerifyReport, fold_logs, replay, verify};
