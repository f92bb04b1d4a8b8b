//! One pipeline instance: source → ingest (log append, then ack) →
//! projector, wired with a shared cancellation token. Several instances may
//! share one store; each owns its log.

use std::sync::Arc;

use ecom_ingest::{Delivery, IngestCounters, IngestError, IngestOptions, run_ingest};
use ecom_log::Log;
use ecom_projector::{Applier, Notification, Projector, ProjectorOptions};
use ecom_store::FactStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ServiceError;

pub struct Instance<S> {
    pub log: Log,
    pub projector: Arc<Projector<S>>,
    pub counters: Arc<IngestCounters>,
    ingest: JoinHandle<Result<(), IngestError>>,
    projection: JoinHandle<Result<(), ServiceError>>,
    /// Stops the projector (after the ingest side drained).
    projector_cancel: CancellationToken,
}

impl<S: FactStore> Instance<S> {
    /// Starts ingest and projection. The caller starts a source that sends
    /// into the returned sender; ingest stops when every sender is dropped or
    /// `cancel` fires.
    pub fn start(
        log: Log,
        store: Arc<S>,
        popts: ProjectorOptions,
        notify: Option<mpsc::UnboundedSender<Notification>>,
        ingest: IngestOptions,
        cancel: &CancellationToken,
    ) -> (Self, mpsc::Sender<Delivery>) {
        let (tx, rx) = mpsc::channel(8192);
        let counters = Arc::new(IngestCounters::default());
        let ingest = tokio::spawn(run_ingest(
            rx,
            log.clone(),
            ingest,
            counters.clone(),
            cancel.clone(),
        ));
        let mut applier = Applier::new(store);
        if let Some(tx) = notify {
            applier = applier.with_notifications(tx);
        }
        let projector = Arc::new(Projector::new(log.clone(), applier, popts));
        let projector_cancel = CancellationToken::new();
        let projection = {
            let p = projector.clone();
            let c = projector_cancel.clone();
            tokio::spawn(async move { p.run(c).await.map_err(ServiceError::from) })
        };
        (
            Instance {
                log,
                projector,
                counters,
                ingest,
                projection,
                projector_cancel,
            },
            tx,
        )
    }

    /// Projected everything the log holds.
    pub fn caught_up(&self) -> bool {
        self.log.checkpoint() >= self.log.next_seq()
    }

    /// Ingest or the projector stopped on its own, which only a fatal error
    /// makes them do (a log that can no longer be written, a store error
    /// that retrying cannot fix): cancel, and `shutdown` returns the error.
    pub fn failed(&self) -> bool {
        self.projection.is_finished() || self.ingest.is_finished()
    }

    /// Waits for ingest to settle its last batch, then stops the projector
    /// at a checkpoint. A fatal error of ingest comes first (it is the cause
    /// when both failed), then the projector's.
    pub async fn shutdown(self) -> Result<Log, ServiceError> {
        let ingest = self.ingest.await?;
        self.projector_cancel.cancel();
        let projection = self.projection.await?;
        ingest?;
        projection?;
        Ok(self.log)
    }
}
