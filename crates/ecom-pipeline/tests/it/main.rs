//! End-to-end tests of the `ecom-pipeline` binary on the embedded default.

mod cli;
mod pubsub;
