//! Topic and subscription setup. Idempotent: `ALREADY_EXISTS` is success, and
//! an existing subscription is left as it is (its settings are not changed).

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::DeadLetterPolicy;
use serde::Serialize;

use crate::error::code;
use crate::{PubSubConfig, PubSubError, SUBSCRIPTIONS, TOPICS, build_client};

/// What [`setup`] did, by full resource name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupReport {
    pub created: Vec<String>,
    pub already_existed: Vec<String>,
}

impl std::fmt::Display for SetupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.created {
            writeln!(f, "created         {r}")?;
        }
        for r in &self.already_existed {
            writeln!(f, "already existed {r}")?;
        }
        write!(
            f,
            "{} created, {} already existed",
            self.created.len(),
            self.already_existed.len()
        )
    }
}

/// Creates [`TOPICS`] and [`SUBSCRIPTIONS`] (and the dead-letter topics when
/// `dead_letter_max_attempts` is set). Run it again at will.
pub async fn setup(cfg: &PubSubConfig) -> Result<SetupReport, PubSubError> {
    cfg.validate()?;
    let topics: TopicAdmin = build_client!(cfg, "topic admin", TopicAdmin::builder())?;
    let subs: SubscriptionAdmin =
        build_client!(cfg, "subscription admin", SubscriptionAdmin::builder())?;
    tracing::info!(endpoint = %cfg.describe_endpoint(), project = %cfg.project, "setting up Pub/Sub topics and subscriptions");
    let mut report = SetupReport::default();

    let mut topic_names: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    if cfg.dead_letter_max_attempts.is_some() {
        topic_names.extend(SUBSCRIPTIONS.iter().map(|(s, _)| dead_letter_topic(s)));
    }
    for t in &topic_names {
        let name = cfg.topic_path(t);
        let created = ensure(
            &name,
            "create topic",
            topics.create_topic().set_name(&name).send().await,
        )?;
        record(&mut report, name, created);
    }

    for (sub, topic) in SUBSCRIPTIONS {
        let name = cfg.subscription_path(sub);
        let mut req = subs
            .create_subscription()
            .set_name(&name)
            .set_topic(cfg.topic_path(topic))
            .set_ack_deadline_seconds(cfg.ack_deadline.as_secs() as i32)
            .set_enable_exactly_once_delivery(cfg.exactly_once)
            .set_enable_message_ordering(cfg.message_ordering);
        if let Some(max) = cfg.dead_letter_max_attempts {
            req = req.set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(cfg.topic_path(&dead_letter_topic(sub)))
                    .set_max_delivery_attempts(max),
            );
        }
        let created = ensure(&name, "create subscription", req.send().await)?;
        record(&mut report, name, created);
    }
    Ok(report)
}

/// The dead-letter topic of a subscription: `<subscription>-dead-letter`.
pub fn dead_letter_topic(subscription: &str) -> String {
    format!("{subscription}-dead-letter")
}

fn record(report: &mut SetupReport, name: String, created: bool) {
    if created {
        tracing::info!(resource = %name, "created");
        report.created.push(name);
    } else {
        tracing::info!(resource = %name, "already existed");
        report.already_existed.push(name);
    }
}

/// `Ok(true)`: created; `Ok(false)`: it already existed.
fn ensure<T>(
    name: &str,
    op: &str,
    r: Result<T, google_cloud_pubsub::Error>,
) -> Result<bool, PubSubError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(Code::AlreadyExists) => Ok(false),
        // Creating a subscription on a missing topic is NOT_FOUND on the
        // topic; the resource name still tells the user where to look.
        Err(e) => Err(PubSubError::from_rpc(name, e, |source| {
            PubSubError::Admin {
                operation: format!("{op} {name}"),
                source,
            }
        })),
    }
}

/// Whether this process can reach Pub/Sub and both [`SUBSCRIPTIONS`]
/// exist: what a running pipeline's `/readyz` asks every few seconds.
///
/// The streaming pull cannot answer that: the client library reconnects on
/// its own and says nothing while Pub/Sub is away, so a pipeline cut off
/// from it looked ready. One admin client, built once and reused.
pub struct SubscriptionProbe {
    admin: SubscriptionAdmin,
    names: Vec<String>,
}

impl SubscriptionProbe {
    pub async fn new(cfg: &PubSubConfig) -> Result<Self, PubSubError> {
        cfg.validate()?;
        let admin = build_client!(cfg, "subscription admin", SubscriptionAdmin::builder())?;
        Ok(SubscriptionProbe {
            admin,
            names: SUBSCRIPTIONS
                .iter()
                .map(|(s, _)| cfg.subscription_path(s))
                .collect(),
        })
    }

    /// Reads both subscriptions; the error names the one that failed and
    /// how. The caller bounds the time (the client retries transient
    /// errors).
    pub async fn check(&self) -> Result<(), PubSubError> {
        for name in &self.names {
            self.admin
                .get_subscription()
                .set_subscription(name)
                .send()
                .await
                .map_err(|e| {
                    PubSubError::from_rpc(name, e, |source| PubSubError::Admin {
                        operation: format!("get subscription {name}"),
                        source,
                    })
                })?;
        }
        Ok(())
    }
}
