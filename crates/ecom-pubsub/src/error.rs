use google_cloud_gax::error::rpc::Code;

/// Everything that can go wrong talking to Pub/Sub.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// The configuration is unusable (empty project, ack deadline out of
    /// range, ...). Fatal.
    #[error("invalid Pub/Sub configuration: {0}")]
    InvalidConfig(String),

    /// A client could not be created: usually no credentials were found.
    /// Fatal.
    #[error(
        "could not create the Pub/Sub {what} client for {endpoint}: {source}; \
         set PUBSUB_EMULATOR_HOST or configure Application Default Credentials"
    )]
    Connect {
        what: &'static str,
        endpoint: String,
        #[source]
        source: google_cloud_gax::client_builder::Error,
    },

    /// A topic or subscription does not exist (publishing, pulling). Fatal
    /// until setup ran.
    #[error("{resource} does not exist; run `ecom-pipeline setup pubsub` with the same project")]
    NotFound { resource: String },

    /// The caller may not use a resource. Fatal.
    #[error(
        "permission denied on {resource}: {detail}; check the credentials' IAM roles \
         (roles/pubsub.editor for setup, publisher/subscriber to run)"
    )]
    PermissionDenied { resource: String, detail: String },

    /// An admin call (create topic/subscription) failed for another reason.
    /// The call may be retried; setup is idempotent.
    #[error("Pub/Sub {operation} failed: {source}; setup is idempotent, run it again")]
    Admin {
        operation: String,
        #[source]
        source: google_cloud_pubsub::Error,
    },

    /// A streaming pull failed with an error the client does not retry.
    #[error(
        "streaming pull on {subscription} failed: {source}; check that the server is up \
         and run `ecom-pipeline setup pubsub` if the subscription is missing"
    )]
    Stream {
        subscription: String,
        #[source]
        source: google_cloud_pubsub::Error,
    },

    /// A streaming pull ended although nobody asked it to (the server closed it).
    #[error("streaming pull on {subscription} ended unexpectedly; restart the source")]
    StreamEnded { subscription: String },

    /// Every publish to a topic failed (after the publisher's retries).
    #[error(
        "publishing to {topic} failed: {source}; check that the server is reachable \
         and run `ecom-pipeline setup pubsub` if the topic is missing"
    )]
    Publish {
        topic: String,
        #[source]
        source: google_cloud_pubsub::error::PublishError,
    },

    /// Ingest's channel closed while the source was still running (ingest
    /// stopped without a cancellation).
    #[error("the ingest channel closed while the Pub/Sub source was running")]
    IngestClosed,
}

impl PubSubError {
    /// Whether retrying the same operation later can succeed without a
    /// change of configuration or setup.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PubSubError::Admin { .. }
                | PubSubError::StreamEnded { .. }
                | PubSubError::Stream { .. }
        )
    }

    /// Maps an RPC error on `resource` to the most telling variant.
    pub(crate) fn from_rpc(
        resource: &str,
        source: google_cloud_pubsub::Error,
        other: impl FnOnce(google_cloud_pubsub::Error) -> PubSubError,
    ) -> PubSubError {
        match code(&source) {
            Some(Code::NotFound) => PubSubError::NotFound {
                resource: resource.to_string(),
            },
            Some(Code::PermissionDenied) => PubSubError::PermissionDenied {
                resource: resource.to_string(),
                detail: source.to_string(),
            },
            _ => other(source),
        }
    }

    pub(crate) fn from_publish(
        topic: &str,
        source: google_cloud_pubsub::error::PublishError,
    ) -> PubSubError {
        use google_cloud_pubsub::error::PublishError;
        if let PublishError::Rpc(e) = &source {
            match code(e) {
                Some(Code::NotFound) => {
                    return PubSubError::NotFound {
                        resource: topic.to_string(),
                    };
                }
                Some(Code::PermissionDenied) => {
                    return PubSubError::PermissionDenied {
                        resource: topic.to_string(),
                        detail: e.to_string(),
                    };
                }
                _ => {}
            }
        }
        PubSubError::Publish {
            topic: topic.to_string(),
            source,
        }
    }
}

pub(crate) fn code(e: &google_cloud_pubsub::Error) -> Option<Code> {
    e.status().map(|s| s.code)
}
