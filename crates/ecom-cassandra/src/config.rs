//! Connection settings for [`CassandraStore`](crate::CassandraStore).
//!
//! [`CassandraConfig`] is the one definition of these settings: the binary
//! deserializes it straight from its layered configuration (the TOML file's
//! `[cassandra]` table, the environment, flags), so a setting added here is
//! settable everywhere, and nothing copies it field by field.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::CassandraError;

/// The default keyspace, as written in `schema.cql`.
pub const DEFAULT_KEYSPACE: &str = "ecom_store";

/// How to reach Cassandra and how to talk to it.
///
/// `Debug` never prints the password, and the password's type
/// ([`SecretString`]) has no `Display` and a redacting `Debug`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    /// Deserialized from a list or a comma-separated string.
    #[serde(deserialize_with = "contact_points")]
    pub contact_points: Vec<String>,
    /// Keyspace holding the three tables. Must match `^[a-z][a-z0-9_]{0,47}$`.
    pub keyspace: String,
    /// Set both `username` and `password` for PasswordAuthenticator.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Encrypt connections (needs the `tls` cargo feature, on by default).
    pub tls: bool,
    /// PEM file with the CA certificate(s) that signed the nodes' certificates.
    /// Required when `tls` is set. The driver verifies the node certificate
    /// against the node's IP address, so the certificates need IP SANs.
    pub tls_ca_file: Option<PathBuf>,
    /// Consistency of writes (including the commit phase of LWTs) and scans.
    #[serde(deserialize_with = "consistency")]
    pub consistency: Consistency,
    /// Consistency of the Paxos phase of LWTs, and of the single-key reads
    /// the projector uses between them (`read_fact`, `read_audit`,
    /// `parked_for`).
    ///
    /// `LocalSerial` (the default) is linearizable only within one
    /// datacenter. If pipeline instances run in more than one datacenter,
    /// use `Serial`: with `LocalSerial` two instances can both win a
    /// conditional write on the same row and the protocol's guarantees
    /// (exactly-once, the conflict rule) no longer hold. See
    /// [`topology`](crate::topology), which `setup cassandra` and `status`
    /// use to warn about a multi-datacenter keyspace at `LocalSerial`.
    #[serde(deserialize_with = "serial_consistency")]
    pub serial_consistency: SerialConsistency,
    /// Upper bound on concurrent requests from this store.
    pub max_in_flight: usize,
    /// Client-side timeout of one request. Keep it above the server's
    /// `write_request_timeout` + `cas_contention_timeout` so that the server
    /// reports a timeout first.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn contact_points<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Points {
        Joined(String),
        List(Vec<String>),
    }
    let points: Vec<String> = match Points::deserialize(d)? {
        Points::Joined(s) => s.split(',').map(str::to_owned).collect(),
        Points::List(v) => v,
    };
    let points: Vec<String> = points
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if points.is_empty() {
        return Err(serde::de::Error::custom(
            "no contact point: give host:port of at least one node",
        ));
    }
    Ok(points)
}

fn consistency<'de, D: Deserializer<'de>>(d: D) -> Result<Consistency, D::Error> {
    parse_consistency(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn serial_consistency<'de, D: Deserializer<'de>>(d: D) -> Result<SerialConsistency, D::Error> {
    parse_serial_consistency(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            contact_points: vec!["127.0.0.1:9042".to_owned()],
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for CassandraConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CassandraConfig")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Parses a non-serial consistency level: `ONE`, `TWO`, `THREE`, `QUORUM`,
/// `ALL`, `LOCAL_QUORUM`, `EACH_QUORUM`, `LOCAL_ONE`, `ANY` (case-insensitive;
/// `-` may stand for `_`). `SERIAL`/`LOCAL_SERIAL` belong in
/// `serial_consistency` and are rejected here.
pub fn parse_consistency(s: &str) -> Result<Consistency, CassandraError> {
    let c = match normalize(s).as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(CassandraError::InvalidConsistency {
                value: s.to_owned(),
                expected: "ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE or ANY",
            });
        }
    };
    Ok(c)
}

/// Parses a serial consistency level: `SERIAL` or `LOCAL_SERIAL`.
pub fn parse_serial_consistency(s: &str) -> Result<SerialConsistency, CassandraError> {
    match normalize(s).as_str() {
        "SERIAL" => Ok(SerialConsistency::Serial),
        "LOCAL_SERIAL" => Ok(SerialConsistency::LocalSerial),
        _ => Err(CassandraError::InvalidConsistency {
            value: s.to_owned(),
            expected: "SERIAL or LOCAL_SERIAL",
        }),
    }
}

fn normalize(s: &str) -> String {
    s.trim().to_ascii_uppercase().replace('-', "_")
}

/// Checks that `ks` is a plain lowercase CQL identifier
/// (`^[a-z][a-z0-9_]{0,47}$`), so it can be spliced into statement text.
pub fn validate_keyspace(ks: &str) -> Result<(), CassandraError> {
    let mut chars = ks.chars();
    let ok = ks.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CassandraError::InvalidKeyspace(ks.to_owned()))
    }
}

/// The consistency level of a linearizable (Paxos) read at this serial
/// consistency.
pub(crate) fn serial_read_consistency(sc: SerialConsistency) -> Consistency {
    match sc {
        SerialConsistency::Serial => Consistency::Serial,
        SerialConsistency::LocalSerial => Consistency::LocalSerial,
    }
}
