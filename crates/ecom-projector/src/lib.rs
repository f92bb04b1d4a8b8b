//! The projector: folds the log, in sequence order, into a fact store.
//!
//! [`apply`] is the exactly-once protocol for one event, built only from the
//! store's conditional writes; [`projector`] tails a log and advances the
//! checkpoint after the store confirmed; [`replay`] rebuilds a store from
//! logs by folding them locally first; [`verify`] compares a store with the
//! fold of logs.

pub mod apply;
pub mod projector;
pub mod replay;

pub use apply::{Applier, ApplyStats, Notification};
pub use projector::{Projector, ProjectorOptions, ProjectorState, ProjectorStatus};
pub use replay::{ReplayError, ReplayReport, VerifyReport, fold_logs, replay, verify};
