//! The narrow interface between the projector and wherever the facts land.
//!
//! Every write that can race with another instance is conditional, with the
//! semantics of a Cassandra lightweight transaction: insert-if-absent, or
//! update/delete-if a column still holds the value the caller read. A
//! conditional write reports [`Cas::Applied`] or [`Cas::Rejected`] with the
//! current value, so the caller re-decides from fresh state. The projector
//! (ecom-projector) builds the exactly-once protocol from these primitives;
//! stores only have to make each primitive atomic and linearizable per
//! `order_id`.
//!
//! Two implementations exist: [`sled_store::SledStore`] (embedded, the
//! default, CAS over sled trees) and ecom-cassandra's store (LWTs).

use std::future::Future;

use ecom_core::{
    Entry, FactRow, FinalState, Fingerprint, Kind, OrderVersion, PaymentVersion, Provenance,
};
use serde::{Deserialize, Serialize};

pub mod sled_store;

pub use sled_store::SledStore;

/// Outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas<T> {
    Applied,
    /// The condition did not hold; carries what the store holds now.
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

/// Row counts, for `status` and `demo`.
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

/// The conditional-write interface of a fact store.
///
/// All reads of single keys must be linearizable with the conditional writes
/// (Cassandra: SERIAL/LOCAL_SERIAL reads), because the join relies on
/// write-then-check.
pub trait FactStore: Send + Sync + 'static {
    // --- orders_payments_facts ---------------------------------------------
    fn read_fact(&self, order_id: i64) -> impl Future<Output = Result<Option<FactRow>>> + Send;
    /// Insert a row with the order's columns and no payment, if absent.
    fn insert_fact(
        &self,
        order: &OrderVersion,
    ) -> impl Future<Output = Result<Cas<FactRow>>> + Send;
    /// Replace the order columns iff the row's order provenance is `expected`.
    /// Never touches the payment columns.
    fn replace_order(
        &self,
        expected: &Provenance,
        order: &OrderVersion,
    ) -> impl Future<Output = Result<Cas<FactRow>>> + Send;
    /// Replace the payment columns iff the row exists and its payment
    /// provenance is `expected` (`None`: no payment yet).
    fn replace_payment(
        &self,
        expected: Option<&Provenance>,
        payment: &PaymentVersion,
    ) -> impl Future<Output = Result<Cas<FactRow>>> + Send;

    // --- duplicate_orders ----------------------------------------------------
    fn read_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send;
    fn insert_audit(&self, entry: &Entry) -> impl Future<Output = Result<Cas<Entry>>> + Send;
    /// Replace the entry iff its provenance is `expected`.
    fn replace_audit(
        &self,
        expected: &Provenance,
        entry: &Entry,
    ) -> impl Future<Output = Result<Cas<Entry>>> + Send;
    /// Delete the entry iff its provenance is `expected`.
    fn delete_audit(
        &self,
        order_id: i64,
        kind: Kind,
        fingerprint: Fingerprint,
        expected: &Provenance,
    ) -> impl Future<Output = Result<Cas<Entry>>> + Send;

    // --- dlq_payments --------------------------------------------------------
    fn parked_for(&self, order_id: i64) -> impl Future<Output = Result<Vec<Parked>>> + Send;
    fn insert_parked(&self, parked: &Parked) -> impl Future<Output = Result<Cas<Parked>>> + Send;
    /// Replace the parked payment iff its provenance is `expected` (keeps
    /// `parked_at_ms`/`attempts` from the argument).
    fn replace_parked(
        &self,
        expected: &Provenance,
        parked: &Parked,
    ) -> impl Future<Output = Result<Cas<Parked>>> + Send;
    /// Record one more failed attempt; best effort, not conditional.
    fn touch_parked(
        &self,
        order_id: i64,
        fingerprint: Fingerprint,
        attempts: i32,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Unconditional: a parked row is stale for good once its order exists.
    fn delete_parked(
        &self,
        order_id: i64,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<()>> + Send;

    // --- whole-store operations ---------------------------------------------
    fn scan_facts(&self) -> impl Future<Output = Result<Vec<FactRow>>> + Send;
    fn scan_audit(&self) -> impl Future<Output = Result<Vec<Entry>>> + Send;
    fn scan_parked(&self) -> impl Future<Output = Result<Vec<Parked>>> + Send;
    fn counts(&self) -> impl Future<Output = Result<StoreCounts>> + Send;
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send;
    /// Delete every row of the three tables.
    fn truncate(&self) -> impl Future<Output = Result<()>> + Send;
    /// Unconditional bulk writes of final rows, for `replay` into an empty
    /// store. Not safe against concurrent projection.
    fn put_final(
        &self,
        facts: &[FactRow],
        audit: &[Entry],
        parked: &[Parked],
    ) -> impl Future<Output = Result<()>> + Send;
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
