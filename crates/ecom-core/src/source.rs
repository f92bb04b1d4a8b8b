//! What passes between a source and the rest of the pipeline.
//!
//! # Why this module exists
//!
//! Sources (the embedded broker, Pub/Sub) hand messages over and settle
//! them when told; they also carry the projector's side-channel reports
//! (parked payments, recorded conflicts) out to their topics. Those three
//! shapes are all a source needs to know about the pipeline. Defining them
//! here, beside [`RawMessage`], lets `ecom-broker` and `ecom-pubsub`
//! depend on this crate alone: a source cannot reach into ingest's batching
//! or the projector's store protocol, and changing either does not rebuild
//! or re-test the sources.

use crate::{Entry, PaymentVersion, RawMessage};

/// How a source settles one message. Called at most once.
///
/// Ingest (`ecom-ingest`) is the only caller: it acks a message only after
/// the log append that holds it returned, which is after its fsync.
pub trait Acker: Send + 'static {
    fn ack(self: Box<Self>);
    fn nack(self: Box<Self>);
}

/// A message as a source hands it over, with the means to settle it.
pub struct Delivery {
    pub message: RawMessage,
    pub acker: Box<dyn Acker>,
}

/// What the projector reports to side channels (Pub/Sub's
/// `dlq_payments_data` and `duplicate_orders` topics).
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A payment was parked for the first time (its order is missing).
    Parked(PaymentVersion),
    /// A losing version was recorded in `duplicate_orders`.
    Conflict(Entry),
}
