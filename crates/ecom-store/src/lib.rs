//! The narrow interface between the projector and wherever the facts land.
//!
//! A store has two kinds of tables, and the trait says which is which:
//!
//! - **`order_state`**, one row per `order_id` holding an
//!   [`ecom_core::OrderState`] and its revision, is the only table written
//!   conditionally: [`FactStore::insert_state`] (insert-if-absent) and
//!   [`FactStore::update_state`] (replace-if-revision), with the semantics
//!   of a Cassandra lightweight transaction. Each is atomic and linearizable
//!   per `order_id`; that is all the exactly-once argument asks of a store.
//! - **The views** (`orders_payments_facts`, `duplicate_orders`,
//!   `dlq_payments`) are written only with [`FactStore::write_views`]: plain
//!   writes, each carrying its own timestamp, where the write with the
//!   highest timestamp wins whatever the arrival order (Cassandra's cell
//!   reconciliation; on equal timestamps a deletion wins, then the greater
//!   value). The projector chooses the timestamps from the state's revision
//!   (see [`ecom_core::state`]).
//!
//! Reads of `order_state` need not be linearizable: a read only feeds a plan
//! that the conditional write validates. Nothing reads the views to decide
//! anything.
//!
//! Two implementations exist: [`sled_store::SledStore`] (embedded, the
//! default) and ecom-cassandra's store.

use std::future::Future;

pub use ecom_core::{
    Entry, FactRow, FinalState, OrderState, PaymentVersion, StoredState, ViewWrite,
};
use serde::{Deserialize, Serialize};

pub mod sled_store;

pub use sled_store::SledStore;

/// Outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas<T> {
    Applied,
    /// The condition did not hold; carries what the store holds now when
    /// the store returned it (`None`: the caller re-reads).
    Rejected(Option<T>),
}

impl<T> Cas<T> {
    pub fn applied(&self) -> bool {
        matches!(self, Cas::Applied)
    }
}

/// A payment parked in `dlq_payments` because its order is not in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub payment: PaymentVersion,
    /// When it was first parked, milliseconds since the Unix epoch.
    pub parked_at_ms: i64,
    /// How many times a projection attempt found its order missing.
    pub attempts: i32,
}

impl Parked {
    pub fn order_id(&self) -> i64 {
        self.payment.content.order_id
    }
}

/// The dead-letter table at a glance: what a running pipeline reports as
/// its parked gauges. Reads `dlq_payments` alone, a queue that stays small
/// while orders keep arriving (see `schema.cql` on its tombstones), never
/// the facts or the audit, which grow without bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParkedSummary {
    pub parked: u64,
    /// When the longest-parked payment was parked (ms since the epoch).
    pub oldest_parked_at_ms: Option<i64>,
}

/// Row counts, for `status --count-rows` and `demo`. Whole-table scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub facts: u64,
    pub payments_joined: u64,
    pub audit: u64,
    pub parked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time. Retryable: the
    /// projector pauses with backoff and resumes by itself.
    #[error(
        "store unavailable: {0}; the projector retries with backoff (check that the database is up and reachable)"
    )]
    Unavailable(String),
    /// A row could not be decoded. Fatal: the store holds data this version
    /// cannot read.
    #[error(
        "store holds an unreadable row ({0}); run `ecom-pipeline verify` and rebuild with `ecom-pipeline replay --truncate`"
    )]
    Corrupt(String),
    /// Any other store failure. Fatal.
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether retrying later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The interface of a fact store: a conditionally written state table and
/// three timestamped views (see the module docs).
pub trait FactStore: Send + Sync + 'static {
    // --- order_state ----------------------------------------------------------
    /// The state row of `order_id`, if any. Need not be linearizable.
    fn read_state(&self, order_id: i64)
    -> impl Future<Output = Result<Option<StoredState>>> + Send;
    /// Inserts `state` at revision 1 iff `order_id` has no state row.
    /// Rejected carries the current row when the store returns it.
    fn insert_state(
        &self,
        order_id: i64,
        state: &OrderState,
    ) -> impl Future<Output = Result<Cas<StoredState>>> + Send;
    /// Replaces the row iff its revision is `expected_revision`; the new row
    /// has revision `expected_revision + 1`.
    fn update_state(
        &self,
        order_id: i64,
        expected_revision: i64,
        state: &OrderState,
    ) -> impl Future<Output = Result<Cas<StoredState>>> + Send;

    // --- views ------------------------------------------------------------------
    /// Plain timestamped writes to the views; idempotent, any order.
    fn write_views(&self, writes: &[ViewWrite]) -> impl Future<Output = Result<()>> + Send;

    // --- whole-store operations ---------------------------------------------
    fn scan_facts(&self) -> impl Future<Output = Result<Vec<FactRow>>> + Send;
    fn scan_audit(&self) -> impl Future<Output = Result<Vec<Entry>>> + Send;
    fn scan_parked(&self) -> impl Future<Output = Result<Vec<Parked>>> + Send;
    /// Reads every row of every table: for one-off checks, not for polling.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts>> + Send;
    fn parked_summary(&self) -> impl Future<Output = Result<ParkedSummary>> + Send;
    /// No state row and no view row.
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send;
    /// Delete every row of the four tables.
    fn truncate(&self) -> impl Future<Output = Result<()>> + Send;
    /// Unconditional writes of final state rows at revision 1, for `replay`
    /// into an empty store, with a timestamp below any conditional write's
    /// so a later conditional write always supersedes them. Not safe
    /// against concurrent projection.
    fn put_states(&self, states: &[(i64, OrderState)]) -> impl Future<Output = Result<()>> + Send;
    /// Make every write so far durable. The projector calls it before it
    /// advances its checkpoint.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Reads the whole store into the shape of the model's final state
/// (volatile DLQ fields dropped), for verification.
pub async fn snapshot<S: FactStore>(store: &S) -> Result<FinalState> {
    let mut state = FinalState::default();
    for row in store.scan_facts().await? {
        state.facts.insert(row.order_id(), row);
    }
    for entry in store.scan_audit().await? {
        state
            .audit
            .insert((entry.order_id(), entry.kind(), entry.fingerprint()), entry);
    }
    for parked in store.scan_parked().await? {
        state.parked.insert(
            (parked.order_id(), parked.payment.fingerprint),
            parked.payment,
        );
    }
    Ok(state)
}

/// Now in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which [`FactStore`] method a forwarded call is, for wrappers that act
/// before forwarding (count, yield, fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ReadState,
    /// A conditional write (one Paxos round in Cassandra).
    InsertState,
    /// A conditional write (one Paxos round in Cassandra).
    UpdateState,
    WriteViews,
    /// Scans, counts, `is_empty`: whole-store reads.
    Scan,
    /// `truncate`, `put_states`.
    Admin,
    Flush,
}

/// Implements [`FactStore`] for a wrapper by forwarding every method to the
/// store that `$target` evaluates to. In each method `$self` is the wrapper,
/// `$op` the method's [`Op`], `$call` the inner call's (not yet polled)
/// future, and `$body` what to do with it (`$call.await` to just forward);
/// `$target` may `.await?`. The one place where the trait is forwarded: the
/// lazy Cassandra store, the binary's store choice and the test wrappers all
/// use it.
#[macro_export]
macro_rules! forward_fact_store {
    (impl [$($g:tt)*] for $ty:ty, to $target:expr, |$self:ident, $op:ident, $call:ident| $body:expr) => {
        impl<$($g)*> $crate::FactStore for $ty {
            async fn read_state(&$self, order_id: i64) -> $crate::Result<Option<$crate::StoredState>> {
                let $op = $crate::Op::ReadState;
                let $call = $target.read_state(order_id);
                $body
            }
            async fn insert_state(&$self, order_id: i64, state: &$crate::OrderState) -> $crate::Result<$crate::Cas<$crate::StoredState>> {
                let $op = $crate::Op::InsertState;
                let $call = $target.insert_state(order_id, state);
                $body
            }
            async fn update_state(&$self, order_id: i64, expected_revision: i64, state: &$crate::OrderState) -> $crate::Result<$crate::Cas<$crate::StoredState>> {
                let $op = $crate::Op::UpdateState;
                let $call = $target.update_state(order_id, expected_revision, state);
                $body
            }
            async fn write_views(&$self, writes: &[$crate::ViewWrite]) -> $crate::Result<()> {
                let $op = $crate::Op::WriteViews;
                let $call = $target.write_views(writes);
                $body
            }
            async fn scan_facts(&$self) -> $crate::Result<Vec<$crate::FactRow>> {
                let $op = $crate::Op::Scan;
                let $call = $target.scan_facts();
                $body
            }
            async fn scan_audit(&$self) -> $crate::Result<Vec<$crate::Entry>> {
                let $op = $crate::Op::Scan;
                let $call = $target.scan_audit();
                $body
            }
            async fn scan_parked(&$self) -> $crate::Result<Vec<$crate::Parked>> {
                let $op = $crate::Op::Scan;
                let $call = $target.scan_parked();
                $body
            }
            async fn counts(&$self) -> $crate::Result<$crate::StoreCounts> {
                let $op = $crate::Op::Scan;
                let $call = $target.counts();
                $body
            }
            async fn parked_summary(&$self) -> $crate::Result<$crate::ParkedSummary> {
                let $op = $crate::Op::Scan;
                let $call = $target.parked_summary();
                $body
            }
            async fn is_empty(&$self) -> $crate::Result<bool> {
                let $op = $crate::Op::Scan;
                let $call = $target.is_empty();
                $body
            }
            async fn truncate(&$self) -> $crate::Result<()> {
                let $op = $crate::Op::Admin;
                let $call = $target.truncate();
                $body
            }
            async fn put_states(&$self, states: &[(i64, $crate::OrderState)]) -> $crate::Result<()> {
                let $op = $crate::Op::Admin;
                let $call = $target.put_states(states);
                $body
            }
            async fn flush(&$self) -> $crate::Result<()> {
                let $op = $crate::Op::Flush;
                let $call = $target.flush();
                $body
            }
        }
    };
}
