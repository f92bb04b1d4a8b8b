//! Connecting to the cluster and checking that the schema is there.

use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::config::validate_keyspace;
use crate::rows::{AUDIT, FACTS, PARKED, STATE};
use crate::{CassandraConfig, CassandraError};

/// Opens a session to the cluster (no keyspace selected; statements name it).
pub(crate) async fn open_session(cfg: &CassandraConfig) -> Result<Session, CassandraError> {
    validate_keyspace(&cfg.keyspace)?;
    if cfg.contact_points.is_empty() {
        return Err(CassandraError::InvalidConfig(
            "no contact points: give at least one host:port".into(),
        ));
    }
    if cfg.max_in_flight == 0 {
        return Err(CassandraError::InvalidConfig(
            "max_in_flight must be at least 1".into(),
        ));
    }
    if cfg.username.is_some() != cfg.password.is_some() {
        return Err(CassandraError::InvalidConfig(
            "set both username and password, or neither".into(),
        ));
    }
    tracing::info!(
        contact_points = ?cfg.contact_points,
        keyspace = %cfg.keyspace,
        tls = cfg.tls,
        authenticated = cfg.username.is_some(),
        "connecting to Cassandra"
    );
    let profile = ExecutionProfile::builder()
        .consistency(cfg.consistency)
        .serial_consistency(Some(cfg.serial_consistency))
        .request_timeout(Some(cfg.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(Duration::from_secs(5))
        .keyspaces_to_fetch([cfg.keyspace.clone()]);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.user(user, secrecy::ExposeSecret::expose_secret(password));
    }
    if cfg.tls {
        builder = builder.tls_context(Some(crate::tls::context(cfg)?));
    }
    builder
        .build()
        .await
        .map_err(|source| CassandraError::Connect {
            contact_points: cfg.contact_points.join(","),
            auth_hint: if cfg.username.is_some() {
                ", username and password"
            } else {
                "; if the cluster requires authentication, set username and password"
            },
            source: Box::new(source),
        })
}

/// Fails with a helpful error if the keyspace or one of the tables is
/// missing.
pub(crate) async fn check_schema(session: &Session, keyspace: &str) -> Result<(), CassandraError> {
    let request = |source| CassandraError::Request {
        what: "checking the schema".into(),
        source: Box::new(source),
    };
    let res = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(request)?;
    let tables: Vec<String> = res
        .into_rows_result()
        .ok()
        .and_then(|r| {
            r.rows::<(String,)>()
                .ok()
                .map(|it| it.filter_map(|r| r.ok()).map(|r| r.0).collect())
        })
        .unwrap_or_default();
    let missing: Vec<String> = [STATE, FACTS, AUDIT, PARKED]
        .iter()
        .filter(|t| !tables.iter().any(|x| x == *t))
        .map(|t| t.to_string())
        .collect();
    if missing.len() == 4 {
        let res = session
            .query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .map_err(request)?;
        let exists = res.into_rows_result().is_ok_and(|r| r.rows_num() > 0);
        if !exists {
            return Err(CassandraError::KeyspaceMissing(keyspace.to_owned()));
        }
    }
    if !missing.is_empty() {
        return Err(CassandraError::TablesMissing {
            keyspace: keyspace.to_owned(),
            tables: missing,
        });
    }
    Ok(())
}
