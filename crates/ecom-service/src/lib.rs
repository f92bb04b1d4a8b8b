//! The long-running pipeline as a library.
//!
//! # Why this crate exists
//!
//! `ecom-pipeline run` is a service: a source, ingest, the durable log, the
//! projector and the store, wired under one cancellation tree, with a
//! status file, metrics and health endpoints, and a shutdown that makes
//! every acknowledged message durable and stops the projector at a
//! checkpoint. That wiring has behaviour worth testing (which task stops
//! first, what a failure of one does to the others, what the status file
//! says), so it lives here, where tests call it directly
//! (`tests/service.rs`), and the binary only parses arguments and prints.
//!
//! - [`run`] / [`Service`]: one instance from start to clean stop.
//! - [`Instance`]: ingest and projection over one log, without a source
//!   (what `demo` drives with its own broker).
//! - [`status`]: the status file `run` writes and `status` reads.
//! - [`telemetry`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`signals`]: SIGTERM/SIGINT into the cancellation tree.

pub mod instance;
pub mod retention;
pub mod service;
pub mod signals;
pub mod status;
pub mod telemetry;

pub use instance::Instance;
pub use service::{Service, ServiceReport, Source, StoreSpec, open_embedded, run};
pub use status::{StatusReport, status_from_log};

/// Why a service stopped with an error. Each says what to do next; a
/// non-zero exit lets a supervisor restart the process, and opening the log
/// again re-verifies it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Log(#[from] ecom_log::LogError),
    #[error("the pipeline stopped; exiting non-zero so that it is restarted: {0}")]
    Ingest(#[from] ecom_ingest::IngestError),
    #[error("the projector stopped: {0}")]
    Projector(#[from] ecom_projector::projector::ProjectorError),
    #[error("the Pub/Sub source stopped: {0}")]
    Source(#[from] ecom_pubsub::PubSubError),
    #[error(transparent)]
    Store(#[from] ecom_store::StoreError),
    #[error(
        "cannot open the embedded store in {dir} (is a pipeline running on it? one process owns it): {source}"
    )]
    EmbeddedStore {
        dir: std::path::PathBuf,
        #[source]
        source: ecom_store::StoreError,
    },
    #[error(
        "cannot serve metrics on {addr}: {source}; pass a free address with --metrics-addr (host:port; port 0 picks one; `off` disables the endpoint)"
    )]
    MetricsBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("--metrics-addr {0:?}: expected host:port (e.g. 127.0.0.1:9464) or `off`")]
    MetricsAddr(String),
    #[error("a pipeline task panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}
