//! The fact store in Apache Cassandra (or ScyllaDB), through the scylla
//! driver: every [`FactStore`](ecom_store::FactStore) primitive is one
//! prepared statement, and every conditional one is a lightweight
//! transaction (LWT).
//!
//! # Statements
//!
//! All DML is prepared once at [`CassandraStore::connect`] with named bind
//! markers; values are always bound, never formatted into CQL. The keyspace
//! is part of the statement text; it is validated as a plain identifier
//! first ([`validate_keyspace`]).
//!
//! | primitive | statement |
//! |---|---|
//! | `insert_fact` | `INSERT … IF NOT EXISTS` (order columns only) |
//! | `replace_order` | `UPDATE … SET <order columns> IF order_message_id = ? AND order_publish_time_us = ?` |
//! | `replace_payment(None, _)` | `UPDATE … SET <payment columns> IF order_message_id != null AND payment_message_id = null` |
//! | `replace_payment(Some(p), _)` | `UPDATE … IF payment_message_id = ? AND payment_publish_time_us = ?` |
//! | `insert_audit` / `insert_parked` | `INSERT … IF NOT EXISTS` |
//! | `replace_audit` / `replace_parked` | `UPDATE … IF message_id = ? AND publish_time_us = ?` |
//! | `delete_audit` | `DELETE … IF message_id = ? AND publish_time_us = ?` |
//! | `touch_parked` | `UPDATE … SET attempts = ? IF EXISTS` (result ignored) |
//! | `delete_parked` | plain `DELETE` |
//! | `read_fact`, `read_audit`, `parked_for` | `SELECT` by key at SERIAL consistency |
//! | scans, `counts`, `is_empty` | paged `SELECT` at the write consistency |
//! | `truncate` | `TRUNCATE` × 3 |
//! | `put_final` | plain `INSERT`s, `max_in_flight` concurrent |
//!
//! LWTs commit at [`CassandraConfig::consistency`] (LOCAL_QUORUM by
//! default) with Paxos at [`CassandraConfig::serial_consistency`]
//! (LOCAL_SERIAL). The single-key reads the projector interleaves with them
//! run at the serial consistency, so they are linearizable with the LWTs
//! (they also finish any in-progress Paxos round on the key).
//!
//! # LWT results
//!
//! The first column of an LWT's result is `[applied]`. When it is false the
//! rest of the row holds current values, but only the condition's columns for
//! `IF col = ?`; rather than parse those per statement, the store re-reads the
//! key at SERIAL and returns [`Cas::Rejected`](ecom_store::Cas) with that.
//!
//! # Unknown outcomes
//!
//! A timed-out LWT may or may not have been applied. It is never retried,
//! neither by the driver (LWT statements are non-idempotent with a
//! fall-through retry policy) nor here. The key is re-read at SERIAL (up to
//! five times, with backoff) and [`outcome::decide_after_unknown_outcome`]
//! decides: applied iff the row now holds our message id and fingerprint.
//! See [`outcome`] for why a SERIAL read settles it.
//!
//! # Concurrency
//!
//! At most [`CassandraConfig::max_in_flight`] requests run at once (a
//! semaphore), and at most one conditional write per `order_id` (1024
//! striped locks by hash of `order_id`; the projector already serializes per
//! `order_id`, this makes the store safe on its own).
//!
//! # Mixing LWT and plain writes
//!
//! `put_final` and `delete_parked` are plain writes to rows that LWTs touch
//! too. Cassandra orders them by write timestamp, and Paxos timestamps come
//! from the coordinator's clock: keep node clocks in sync (NTP), as for any
//! Cassandra cluster. `put_final` only runs into an empty store before
//! projection starts, and a parked row is never re-created once deleted.
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
pub mod outcome;
mod rows;
mod schema;
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
pub use topology::{SerialConsistencyWarning, TopologyError, check_serial_consistency_for};
