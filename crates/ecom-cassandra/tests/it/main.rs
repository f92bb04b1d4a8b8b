//! Integration tests of `CassandraStore` against a real Cassandra
//! (`ECOM_CASSANDRA=127.0.0.1:9042`, see `ecom_cassandra::testing`), plus the
//! pure parts (unknown-outcome decision, config) that need no server.

mod audit;
mod bulk;
mod common;
mod config;
mod facts;
mod outcome;
mod parked;
mod throughput;
mod topology;
