//! Why a bench run stopped. A bench never reports a figure for a run that
//! went wrong: a failed request, a store that does not match its log, a
//! stage that stalled.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A stage needs a server that was not configured.
    #[error("stage `{stage}` needs {what}: {hint}")]
    Missing {
        stage: &'static str,
        what: &'static str,
        hint: &'static str,
    },
    #[error(transparent)]
    Log(#[from] ecom_log::LogError),
    #[error(transparent)]
    Store(#[from] ecom_store::StoreError),
    #[error(transparent)]
    Cassandra(#[from] ecom_cassandra::CassandraError),
    #[error(transparent)]
    PubSub(#[from] ecom_pubsub::PubSubError),
    #[error(transparent)]
    Projector(#[from] ecom_projector::projector::ProjectorError),
    #[error(transparent)]
    Replay(#[from] ecom_projector::ReplayError),
    /// The bare sled loop failed.
    #[error("the bare sled loop in {}: {source}", dir.display())]
    Sled { dir: PathBuf, source: sled::Error },
    #[error("{what} ({}): {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The measured run did not produce the right result (the figure would
    /// be meaningless), or did not finish.
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> BenchError {
        let path = path.to_path_buf();
        move |source| BenchError::Io { what, path, source }
    }
}
