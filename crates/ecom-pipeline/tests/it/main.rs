//! End-to-end tests of the `ecom-pipeline` binary on the embedded default.

mod archive;
mod bad_input;
mod cli;
mod crash;
mod crate_edges;
mod deploy;
mod fault_proxy;
mod full_disk;
mod harness;
mod metrics;
mod outage;
mod pubsub;
mod scale_out;
mod support;
