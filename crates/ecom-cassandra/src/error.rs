//! Errors of connecting and setting up, and how driver errors map onto
//! [`StoreError`] once the store runs.

use ecom_store::StoreError;
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextRowError, PagerExecutionError, PrepareError,
    RequestAttemptError, SchemaAgreementError,
};

/// Why [`CassandraStore::connect`](crate::CassandraStore::connect) or
/// [`apply_schema`](crate::apply_schema) failed. Every message says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum CassandraError {
    /// The configured keyspace is not a plain lowercase identifier; it is
    /// spliced into statement text, so nothing else is accepted.
    #[error(
        "invalid keyspace name {0:?}: use 1 to 48 characters of a-z, 0-9 and _, starting with a letter"
    )]
    InvalidKeyspace(String),
    /// A consistency level string could not be parsed.
    #[error("invalid consistency level {value:?}: expected {expected}")]
    InvalidConsistency {
        value: String,
        expected: &'static str,
    },
    /// The configuration is inconsistent (no contact points, zero
    /// `max_in_flight`, a username without a password, ...).
    #[error("invalid Cassandra configuration: {0}")]
    InvalidConfig(String),
    /// `tls` is set but this binary was built without the `tls` feature.
    #[error(
        "TLS was requested but this build has no TLS support: rebuild with `--features ecom-cassandra/tls`"
    )]
    TlsNotCompiled,
    /// The CA file for TLS could not be read or holds no usable certificate.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No contact point answered, or the handshake (authentication, TLS)
    /// failed.
    #[error(
        "cannot connect to Cassandra at {contact_points}: {source}; is Cassandra running? \
         start it with `scripts/cassandra.sh start` (and check the contact points{auth_hint})"
    )]
    Connect {
        contact_points: String,
        auth_hint: &'static str,
        #[source]
        source: Box<NewSessionError>,
    },
    /// The keyspace does not exist.
    #[error("keyspace `{0}` is missing: run `ecom-pipeline setup cassandra`")]
    KeyspaceMissing(String),
    /// The keyspace exists but some of the tables do not.
    #[error(
        "keyspace `{keyspace}` lacks table(s) {tables:?}: run `ecom-pipeline setup cassandra` \
         (a keyspace from before `order_state` existed: then rebuild it from the logs with `ecom-pipeline replay --truncate`)"
    )]
    TablesMissing {
        keyspace: String,
        tables: Vec<String>,
    },
    /// Preparing a statement failed, typically because a table does not have
    /// the columns of `schema.cql`.
    #[error(
        "cannot prepare the {what} statement: {source}; do the tables match schema.cql? \
         (`ecom-pipeline setup cassandra` creates missing tables but does not alter existing ones)"
    )]
    Prepare {
        what: &'static str,
        #[source]
        source: Box<PrepareError>,
    },
    /// A request made while connecting or applying the schema failed.
    #[error(
        "Cassandra request failed while {what}: {source}; check that Cassandra is healthy (`scripts/cassandra.sh status`) and retry"
    )]
    Request {
        what: String,
        #[source]
        source: Box<ExecutionError>,
    },
    /// The nodes did not agree on the schema version after DDL.
    #[error(
        "the cluster did not reach schema agreement: {0}; check that all nodes are up (`nodetool status`) and re-run `ecom-pipeline setup cassandra`"
    )]
    SchemaAgreement(#[from] Box<SchemaAgreementError>),
}

impl From<CassandraError> for StoreError {
    fn from(e: CassandraError) -> Self {
        match e {
            CassandraError::Connect { .. } | CassandraError::SchemaAgreement(_) => {
                StoreError::Unavailable(e.to_string())
            }
            CassandraError::Request { ref source, .. } if is_transient(source) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// Whether a failed attempt might succeed later: the node or the network is
/// overloaded, down, or slow.
fn transient_attempt(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::WriteFailure { .. }
                | DbError::TruncateError
                | DbError::RateLimitReached { .. }
                | DbError::Other(CAS_WRITE_UNKNOWN)
        ),
        _ => false,
    }
}

/// Cassandra's `CAS_WRITE_UNKNOWN` error code (native protocol v5; sent as a
/// CAS write timeout to v4 clients, but be ready for it).
const CAS_WRITE_UNKNOWN: i32 = 0x1700;

/// Whether a request failed for a reason that retrying later can fix
/// (mapped to [`StoreError::Unavailable`]).
pub fn is_transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_) => true,
        ExecutionError::LastAttemptError(a) => transient_attempt(a),
        ExecutionError::PrepareError(p) => prepare_transient(p),
        ExecutionError::SchemaAgreementError(_) | ExecutionError::MetadataError(_) => true,
        _ => false,
    }
}

fn prepare_transient(p: &PrepareError) -> bool {
    match p {
        PrepareError::ConnectionPoolError(_) => true,
        PrepareError::AllAttemptsFailed { first_attempt } => transient_attempt(first_attempt),
        _ => false,
    }
}

/// Whether a conditional write that failed with `e` may nevertheless have
/// been applied (now or later, by the next Paxos round on its key).
///
/// True for every transient error except those that prove the request never
/// reached a coordinator or was refused before Paxos began. A timeout of any
/// kind (client-side, `WriteTimeout` of write type `CAS` or `SIMPLE`, a read
/// timeout in the LWT's read phase), a broken connection, `Unavailable` (can
/// be raised in the commit phase after a quorum accepted the proposal),
/// `WriteFailure` and `CAS_WRITE_UNKNOWN` all leave the outcome unknown.
pub fn outcome_unknown(e: &ExecutionError) -> bool {
    match e {
        // Never sent.
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::PrepareError(_)
        | ExecutionError::BadQuery(_) => false,
        ExecutionError::LastAttemptError(a) => match a {
            RequestAttemptError::UnableToAllocStreamId => false,
            RequestAttemptError::DbError(
                DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::RateLimitReached {
                    rejected_by_coordinator: true,
                    ..
                },
                _,
            ) => false,
            other => transient_attempt(other),
        },
        other => is_transient(other),
    }
}

/// Maps a failed request to the store's error, naming what was attempted.
pub(crate) fn request_error(what: &str, e: ExecutionError) -> StoreError {
    if is_transient(&e) {
        tracing::debug!(%what, error = %e, "Cassandra request failed (transient)");
        StoreError::Unavailable(format!("Cassandra {what}: {e}"))
    } else {
        tracing::warn!(%what, error = %e, "Cassandra request failed");
        StoreError::Other(format!("Cassandra {what}: {e}"))
    }
}

pub(crate) fn pager_error(what: &str, e: PagerExecutionError) -> StoreError {
    match e {
        PagerExecutionError::NextPageError(p) => {
            next_row_error(what, NextRowError::NextPageError(p))
        }
        PagerExecutionError::PrepareError(p) => {
            request_error(what, ExecutionError::PrepareError(p))
        }
        PagerExecutionError::SerializationError(s) => {
            StoreError::Other(format!("Cassandra {what}: {s}"))
        }
        other => StoreError::Unavailable(format!("Cassandra {what}: {other}")),
    }
}

pub(crate) fn next_row_error(what: &str, e: NextRowError) -> StoreError {
    use scylla::errors::NextPageError;
    match e {
        NextRowError::NextPageError(NextPageError::RequestFailure(r)) => {
            request_error(what, r.into_execution_error())
        }
        NextRowError::NextPageError(NextPageError::TypeCheckError(t)) => schema_mismatch(what, t),
        NextRowError::RowDeserializationError(d) => {
            StoreError::Corrupt(format!("Cassandra {what}: cannot decode a row: {d}"))
        }
        other => StoreError::Other(format!("Cassandra {what}: {other}")),
    }
}

/// The table's columns do not have the types this version expects.
pub(crate) fn schema_mismatch(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!(
        "Cassandra {what}: the table does not match schema.cql ({e}); compare it with schema.cql"
    ))
}

pub(crate) fn corrupt(
    table: &str,
    key: impl std::fmt::Display,
    msg: impl std::fmt::Display,
) -> StoreError {
    StoreError::Corrupt(format!("{table} {key}: {msg}"))
}
