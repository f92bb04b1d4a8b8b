//! The streaming-pull source: both subscriptions, pulled concurrently, into
//! ingest's channel.
//!
//! Each message becomes a [`Delivery`] whose [`Acker`] owns the Pub/Sub
//! handler and the flow-control permits. Ingest acks it after the log append
//! returned, or nacks it. Dropping an unsettled delivery nacks it (the
//! client library's behaviour), so Pub/Sub redelivers it at once.
//!
//! Shutdown: on cancel the pull loops stop and drop their `MessageStream`s,
//! which closes the gRPC streams (a stream that is shut down but kept alive
//! keeps receiving messages that then stay stuck until it closes). The
//! client's lease loop runs on its own task and, with the default
//! `WaitForProcessing` behaviour, keeps extending leases and sending acks for
//! handlers that are still out, so deliveries already sent to ingest can still
//! be acked after the stream is gone. `run_source` waits for that (up to
//! `shutdown_timeout`) before it returns; what is still unsettled then is
//! redelivered once its lease expires, and the log's message-id dedup makes
//! the redelivery harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ecom_core::{Acker, Delivery};
use ecom_core::{RawMessage, Topic};
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{PubSubConfig, PubSubError, SUBSCRIPTIONS, build_client};

/// Counters of [`run_source`], updated per message.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    /// Nacked explicitly or by dropping an unsettled delivery.
    pub nacked: AtomicU64,
    /// Exactly-once subscriptions: acks the server did not confirm.
    pub ack_failures: AtomicU64,
    pub stream_errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceStats {
    pub received: u64,
    pub acked: u64,
    pub nacked: u64,
    pub ack_failures: u64,
    pub stream_errors: u64,
}

impl SourceCounters {
    pub fn snapshot(&self) -> SourceStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SourceStats {
            received: g(&self.received),
            acked: g(&self.acked),
            nacked: g(&self.nacked),
            ack_failures: g(&self.ack_failures),
            stream_errors: g(&self.stream_errors),
        }
    }
}

/// Pulls both [`SUBSCRIPTIONS`] into `tx` until `cancel` fires (then `Ok`),
/// or until a stream fails permanently (then `Err`, after stopping the other
/// one). A missing subscription is [`PubSubError::NotFound`].
pub async fn run_source(
    cfg: &PubSubConfig,
    tx: mpsc::Sender<Delivery>,
    counters: Arc<SourceCounters>,
    cancel: CancellationToken,
) -> Result<(), PubSubError> {
    cfg.validate()?;
    let subscriber: Subscriber = build_client!(cfg, "subscriber", Subscriber::builder())?;
    tracing::info!(endpoint = %cfg.describe_endpoint(), project = %cfg.project, "Pub/Sub source starting");
    let flow = Flow {
        messages: Arc::new(Semaphore::new(cfg.max_outstanding_messages)),
        bytes: Arc::new(Semaphore::new(cfg.max_outstanding_bytes)),
        max_bytes: cfg.max_outstanding_bytes,
    };
    // Stops both pulls on the caller's cancel or on the first failure.
    let stop = cancel.child_token();
    let pulls = SUBSCRIPTIONS.map(|(sub, topic)| {
        let topic = Topic::from_name(topic).expect("SUBSCRIPTIONS name known topics");
        let pull = Pull {
            cfg,
            subscriber: &subscriber,
            subscription: cfg.subscription_path(sub),
            topic,
            tx: tx.clone(),
            counters: counters.clone(),
            flow: flow.clone(),
            stop: stop.clone(),
        };
        let stop = stop.clone();
        async move {
            let r = pull.run().await;
            if r.is_err() {
                stop.cancel();
            }
            r
        }
    });
    drop(tx);
    let [a, b] = pulls;
    let (ra, rb) = tokio::join!(a, b);
    tracing::info!(stats = ?counters.snapshot(), "Pub/Sub source stopped");
    match (ra, rb) {
        (Err(e), _) | (_, Err(e)) => {
            if matches!(e, PubSubError::IngestClosed) && cancel.is_cancelled() {
                Ok(())
            } else {
                Err(e)
            }
        }
        _ => Ok(()),
    }
}

/// The ingest ceiling of `ecom-pipeline bench`: streaming pull on both
/// [`SUBSCRIPTIONS`] with the same subscriber settings as [`run_source`],
/// acknowledging every message the moment it arrives (no log, no channel),
/// until `expected` messages were acknowledged or `cancel` fires.
pub async fn pull_and_ack(
    cfg: &PubSubConfig,
    expected: u64,
    cancel: CancellationToken,
) -> Result<SourceStats, PubSubError> {
    cfg.validate()?;
    let subscriber: Subscriber = build_client!(cfg, "subscriber", Subscriber::builder())?;
    let counters = SourceCounters::default();
    let stop = cancel.child_token();
    let pulls = SUBSCRIPTIONS.map(|(sub, _)| {
        let subscription = cfg.subscription_path(sub);
        let (subscriber, counters, stop) = (&subscriber, &counters, stop.clone());
        async move {
            let mut stream = subscriber
                .subscribe(&subscription)
                .set_max_lease_extension(cfg.max_lease_extension)
                .set_max_lease(cfg.max_lease)
                .set_max_outstanding_messages(cfg.max_outstanding_messages as i64)
                .set_max_outstanding_bytes(cfg.max_outstanding_bytes as i64)
                .build();
            let token = stream.shutdown_token();
            let result = loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break Ok(()),
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok((_, handler))) => {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        handler.ack();
                        if counters.acked.fetch_add(1, Ordering::Relaxed) + 1 >= expected {
                            stop.cancel();
                        }
                    }
                    Some(Err(e)) => {
                        break Err(PubSubError::from_rpc(&subscription, e, |source| {
                            PubSubError::Stream {
                                subscription: subscription.clone(),
                                source,
                            }
                        }));
                    }
                    None => {
                        break Err(PubSubError::StreamEnded {
                            subscription: subscription.clone(),
                        });
                    }
                }
            };
            drop(stream);
            // Lets the lease loop send the acks it holds.
            let _ = tokio::time::timeout(cfg.shutdown_timeout, token.shutdown()).await;
            if result.is_err() {
                stop.cancel();
            }
            result
        }
    });
    let [a, b] = pulls;
    let (ra, rb) = tokio::join!(a, b);
    ra?;
    rb?;
    Ok(counters.snapshot())
}

#[derive(Clone)]
struct Flow {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

struct Pull<'a> {
    cfg: &'a PubSubConfig,
    subscriber: &'a Subscriber,
    subscription: String,
    topic: Topic,
    tx: mpsc::Sender<Delivery>,
    counters: Arc<SourceCounters>,
    flow: Flow,
    stop: CancellationToken,
}

impl Pull<'_> {
    async fn run(self) -> Result<(), PubSubError> {
        let mut stream = self
            .subscriber
            .subscribe(&self.subscription)
            .set_max_lease_extension(self.cfg.max_lease_extension)
            .set_max_lease(self.cfg.max_lease)
            .set_max_outstanding_messages(self.cfg.max_outstanding_messages as i64)
            .set_max_outstanding_bytes(self.cfg.max_outstanding_bytes as i64)
            .build();
        let token = stream.shutdown_token();
        let result = self.pull(&mut stream).await;
        // Close the gRPC stream first (dropping it), then wait for the lease
        // loop to settle the deliveries ingest still holds.
        drop(stream);
        let outstanding =
            self.cfg.max_outstanding_messages - self.flow.messages.available_permits();
        if tokio::time::timeout(self.cfg.shutdown_timeout, token.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                subscription = %self.subscription,
                outstanding,
                "deliveries still unsettled at shutdown; Pub/Sub redelivers them after their lease expires"
            );
        }
        result
    }

    async fn pull(
        &self,
        stream: &mut google_cloud_pubsub::subscriber::MessageStream,
    ) -> Result<(), PubSubError> {
        loop {
            let msg_permit = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                p = self.flow.messages.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                n = stream.next() => n,
            };
            let (message, handler) = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(subscription = %self.subscription, error = %e, "streaming pull failed");
                    return Err(PubSubError::from_rpc(&self.subscription, e, |source| {
                        PubSubError::Stream {
                            subscription: self.subscription.clone(),
                            source,
                        }
                    }));
                }
                None => {
                    if self.stop.is_cancelled() {
                        return Ok(());
                    }
                    self.counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(PubSubError::StreamEnded {
                        subscription: self.subscription.clone(),
                    });
                }
            };
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            let size = message_size(&message).clamp(1, self.flow.max_bytes);
            let bytes_permit = tokio::select! {
                biased;
                // Dropping `handler` nacks the message.
                _ = self.stop.cancelled() => return Ok(()),
                p = self.flow.bytes.clone().acquire_many_owned(size as u32) => p.expect("the semaphore is never closed"),
            };
            let delivery = Delivery {
                message: raw_message(message, self.topic),
                acker: Box::new(PubSubAcker {
                    handler: Some(handler),
                    counters: self.counters.clone(),
                    permits: Some((msg_permit, bytes_permit)),
                }),
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                sent = self.tx.send(delivery) => {
                    if sent.is_err() {
                        return Err(PubSubError::IngestClosed);
                    }
                }
            }
        }
    }
}

fn message_size(m: &Message) -> usize {
    m.data.len()
        + m.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Converts a pulled message; `publish_time` becomes microseconds since the
/// Unix epoch.
fn raw_message(m: Message, topic: Topic) -> RawMessage {
    let publish_time_us = match &m.publish_time {
        Some(t) => t.seconds() * 1_000_000 + i64::from(t.nanos()) / 1000,
        None => {
            tracing::warn!(message_id = %m.message_id, "message without publish_time; using the time of receipt");
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        }
    };
    RawMessage {
        message_id: m.message_id,
        topic,
        publish_time_us,
        data: m.data.to_vec(),
        attributes: m.attributes.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// Settles one Pub/Sub message and returns its flow-control permits.
struct PubSubAcker {
    handler: Option<Handler>,
    counters: Arc<SourceCounters>,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Acker for PubSubAcker {
    fn ack(mut self: Box<Self>) {
        let Some(handler) = self.handler.take() else {
            return;
        };
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
        match handler {
            Handler::ExactlyOnce(h) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let counters = self.counters.clone();
                    // Keep the permits until the server confirmed.
                    let permits = self.permits.take();
                    rt.spawn(async move {
                        if let Err(e) = h.confirmed_ack().await {
                            counters.ack_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "exactly-once ack not confirmed; the message may be redelivered (the log dedups it)");
                        }
                        drop(permits);
                    });
                }
                Err(_) => Handler::ExactlyOnce(h).ack(),
            },
            h => h.ack(),
        }
    }

    fn nack(mut self: Box<Self>) {
        if let Some(h) = self.handler.take() {
            self.counters.nacked.fetch_add(1, Ordering::Relaxed);
            h.nack();
        }
    }
}

impl Drop for PubSubAcker {
    fn drop(&mut self) {
        if let Some(h) = self.handler.take() {
            self.counters.nacked.fetch_add(1, Ordering::Relaxed);
            h.nack();
        }
    }
}
