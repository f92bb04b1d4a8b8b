//! End-to-end tests of the `ecom-pipeline` binary on the embedded default.

mod bad_input;
mod cli;
mod crash;
mod harness;
mod pubsub;
