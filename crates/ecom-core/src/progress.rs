//! How far a long operation is, in plain types.
//!
//! `replay`, `verify`, `dlq reprocess`, `produce` and `bench` can run for
//! minutes. The libraries that do the work report their progress through a
//! [`ProgressFn`] and know nothing of terminals; the binary decides how to
//! show it (a bar on a terminal, a line every few seconds otherwise). Pass
//! [`&ignore`](ignore) where nobody is watching.

/// One report: `done` of `total` units of the named work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// What is counted and what is done to it, plural: `"entries read"`,
    /// `"order states written"`. A new `what` starts a new phase.
    pub what: &'a str,
    pub done: u64,
    /// `None`: not known in advance.
    pub total: Option<u64>,
}

/// Where a long operation sends its [`Progress`]. Called from the task doing
/// the work, at most every few thousand units: keep it cheap.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

/// The [`ProgressFn`] that drops every report.
pub fn ignore(_: Progress<'_>) {}
