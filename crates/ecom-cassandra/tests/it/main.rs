//! Integration tests of `CassandraStore` against a real Cassandra
//! (`ECOM_CASSANDRA=127.0.0.1:9042`, see `ecom_cassandra::testing`), plus the
//! pure parts (config) that need no server.

mod bulk;
mod common;
mod config;
mod state;
mod throughput;
mod topology;
