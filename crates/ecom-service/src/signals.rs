//! SIGTERM and SIGINT into the service's cancellation tree.
//!
//! # Why this module exists
//!
//! The first signal must stop the service cleanly (the root token of
//! [`crate::Service`]); a second one exits at once, which the log makes
//! safe. The handlers are installed before the service says it is up: a
//! handler installed later, inside a spawned task, left a window in which
//! SIGTERM killed the process instead of stopping it cleanly.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Installed SIGTERM and SIGINT handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers now; `None` (logged) if the OS refuses.
    pub fn install() -> Option<Signals> {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(Signals { term, int }),
            _ => {
                tracing::warn!("cannot install signal handlers");
                None
            }
        }
    }

    /// First signal: cancels `shutdown` (a clean stop). Second: exits the
    /// process at once with 130.
    pub async fn watch(mut self, shutdown: CancellationToken) {
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        tracing::info!(
            "signal received: finishing the in-flight batch and checkpointing (send again to exit at once)"
        );
        shutdown.cancel();
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        tracing::warn!("second signal: exiting now; the log makes this safe");
        std::process::exit(130);
    }
}
