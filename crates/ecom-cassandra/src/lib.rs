//! The fact store in Apache Cassandra (or ScyllaDB), through the scylla
//! driver.
//!
//! Four tables (see `schema.cql`): `order_state`, the only one written with
//! lightweight transactions, and the three views, written with plain writes
//! that carry explicit timestamps (`USING TIMESTAMP`). [`statements`] lists
//! every statement and its consistency; ARCHITECTURE.md ("Exactly-once v2")
//! has the argument.
//!
//! # Statements
//!
//! All DML is prepared once at [`CassandraStore::connect`] with named bind
//! markers; values are always bound, never formatted into CQL. The keyspace
//! is part of the statement text; it is validated as a plain identifier
//! first ([`validate_keyspace`]).
//!
//! LWTs commit at [`CassandraConfig::consistency`] (LOCAL_QUORUM by
//! default) with Paxos at [`CassandraConfig::serial_consistency`]
//! (LOCAL_SERIAL, linearizable within one datacenter only: see its docs).
//! Reads of `order_state` run at the write consistency: they only feed a
//! plan that the LWT's `IF revision = ?` validates.
//!
//! # LWT results
//!
//! The first column of an LWT's result is `[applied]`. When it is false, an
//! `IF NOT EXISTS` result carries the whole current row, which the store
//! returns in [`Cas::Rejected`](ecom_store::Cas); an `IF revision = ?` result
//! carries only the revision, and the caller re-reads.
//!
//! # Unknown outcomes
//!
//! A timed-out LWT may or may not have been applied. It is never retried,
//! neither by the driver (LWT statements are non-idempotent with a
//! fall-through retry policy) nor here. The row is re-read at SERIAL (up to
//! five times, with backoff), which finishes or supersedes our proposal, and
//! the store reports a rejection carrying that final row: the projector
//! re-plans from it, and because folding is idempotent, a write that did
//! land turns the re-plan into a no-op.
//!
//! # Concurrency
//!
//! At most [`CassandraConfig::max_in_flight`] requests run at once (a
//! semaphore). The projector keeps one transition per `order_id` in flight
//! per instance; between instances, `IF revision = ?` decides.
//!
//! # Cargo features
//!
//! - `tls` (default): TLS via the driver's rustls 0.23 support. rustls
//!   brings aws-lc-rs, a C library (about 20 s more on a clean build; needs
//!   a C compiler). `--no-default-features` drops it; asking for TLS then
//!   fails with [`CassandraError::TlsNotCompiled`].

mod config;
mod error;
mod lazy;
mod rows;
mod schema;
mod session;
pub mod statements;
mod store;
pub mod testing;
mod tls;
pub mod topology;

pub use config::{
    CassandraConfig, DEFAULT_KEYSPACE, parse_consistency, parse_serial_consistency,
    validate_keyspace,
};
pub use error::{CassandraError, is_transient, outcome_unknown};
pub use lazy::LazyCassandraStore;
pub use schema::{SCHEMA_CQL, apply_schema, drop_keyspace, schema_statements};
pub use scylla::statement::{Consistency, SerialConsistency};
pub use store::CassandraStore;

/// The failpoints this build has (none without the cargo feature
/// `failpoints`): inside the store's steps that are several statements, a
/// crash after some of them: the view rows of one transition
/// (`write_views`), the state rows of a replay chunk (`put_states`), the
/// tables `replay --truncate` empties. Armed with `return(crash)` they abort
/// the process there (see `ecom_core::failpoint`).
pub const FAILPOINTS: &[&str] = if cfg!(feature = "failpoints") {
    &[
        "cassandra::between_view_writes",
        "cassandra::between_state_writes",
        "cassandra::between_truncates",
    ]
} else {
    &[]
};
pub use topology::{SerialConsistencyWarning, TopologyError, check_serial_consistency_for};
