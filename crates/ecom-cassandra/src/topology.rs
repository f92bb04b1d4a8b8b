//! Whether the configured serial consistency is safe for where the keyspace
//! is replicated.
//!
//! The projection protocol relies on its lightweight transactions and
//! SERIAL-consistency reads being linearizable for every pipeline instance.
//! `LOCAL_SERIAL` (the default, and the cheaper choice) runs Paxos among the
//! replicas of the coordinator's datacenter only, so it is linearizable only
//! within one datacenter. With instances in two datacenters, two conditional
//! writes to the same row can both be accepted, and the exactly-once and
//! conflict-resolution guarantees no longer hold. That is a deployment
//! mistake nothing else would reveal, so `setup cassandra` and `status` warn
//! when the keyspace is replicated to more than one datacenter
//! (`NetworkTopologyStrategy` with more than one datacenter at a replication
//! factor above 0) and the serial consistency is `LOCAL_SERIAL`.
//!
//! The warning is about the keyspace, not about where instances actually
//! run: a multi-datacenter keyspace written from one datacenter only is
//! fine with `LOCAL_SERIAL`, which is why this warns and does not refuse.
//!
//! [`serial_consistency_warning`] is the decision, a pure function of the
//! replication map as `system_schema.keyspaces` stores it;
//! [`check_serial_consistency`] reads that map (a prepared statement) and
//! decides.

use std::collections::HashMap;
use std::fmt;

use scylla::client::session::Session;
use scylla::statement::SerialConsistency;

use crate::{CassandraConfig, CassandraError};

/// Why the replication of a keyspace could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Connecting, preparing the query or running it failed; the inner
    /// error says what to do.
    #[error(transparent)]
    Cassandra(#[from] CassandraError),
    /// `system_schema.keyspaces` answered, but not with a replication map
    /// (a server this crate does not know).
    #[error(
        "cannot read the replication of keyspace `{keyspace}` from system_schema.keyspaces: {reason}; this needs Apache Cassandra 3.0 or later (or ScyllaDB)"
    )]
    Unreadable { keyspace: String, reason: String },
}

/// `LOCAL_SERIAL` on a keyspace replicated to more than one datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConsistencyWarning {
    pub keyspace: String,
    /// The datacenters with a replication factor above 0, sorted.
    pub datacenters: Vec<String>,
}

impl fmt::Display for SerialConsistencyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keyspace `{}` is replicated to {} datacenters ({}) but the serial consistency is LOCAL_SERIAL, \
             which is linearizable only within one datacenter: pipeline instances in different datacenters \
             can then both win a conditional write on the same row, which breaks exactly-once and the conflict rule; \
             set --cassandra-serial-consistency SERIAL, or run every instance in one datacenter",
            self.keyspace,
            self.datacenters.len(),
            self.datacenters.join(", ")
        )
    }
}

/// The datacenters a `NetworkTopologyStrategy` replication map places
/// replicas in (replication factor above 0), sorted; empty for any other
/// strategy (`SimpleStrategy` knows no datacenters, `LocalStrategy` and
/// `EverywhereStrategy` are not used for data keyspaces).
///
/// `replication` is the map as `system_schema.keyspaces` stores it: `class`
/// (the strategy's full or short class name) and one entry per datacenter
/// whose value is the replication factor, `"3"`, or `"3/1"` with transient
/// replicas.
pub fn replicated_datacenters(replication: &HashMap<String, String>) -> Vec<String> {
    let is_nts = replication
        .get("class")
        .is_some_and(|c| c.rsplit('.').next() == Some("NetworkTopologyStrategy"));
    if !is_nts {
        return Vec::new();
    }
    let mut dcs: Vec<String> = replication
        .iter()
        .filter(|(k, _)| k.as_str() != "class" && k.as_str() != "replication_factor")
        .filter(|(_, rf)| {
            let full = rf.split('/').next().unwrap_or("").trim();
            full.parse::<u32>().is_ok_and(|n| n > 0)
        })
        .map(|(dc, _)| dc.clone())
        .collect();
    dcs.sort();
    dcs
}

/// The warning for `serial` on a keyspace with this replication map, if
/// any: `LOCAL_SERIAL` and more than one datacenter in
/// [`replicated_datacenters`]. `SERIAL` is linearizable across datacenters
/// and never warns.
pub fn serial_consistency_warning(
    keyspace: &str,
    replication: &HashMap<String, String>,
    serial: SerialConsistency,
) -> Option<SerialConsistencyWarning> {
    if serial != SerialConsistency::LocalSerial {
        return None;
    }
    let datacenters = replicated_datacenters(replication);
    (datacenters.len() > 1).then(|| SerialConsistencyWarning {
        keyspace: keyspace.to_owned(),
        datacenters,
    })
}

/// The replication map of `keyspace` from `system_schema.keyspaces`, or
/// `None` if there is no such keyspace.
pub async fn keyspace_replication(
    session: &Session,
    keyspace: &str,
) -> Result<Option<HashMap<String, String>>, TopologyError> {
    let prepared = session
        .prepare("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?")
        .await
        .map_err(|source| CassandraError::Prepare {
            what: "keyspace replication",
            source: Box::new(source),
        })?;
    let result = session
        .execute_unpaged(&prepared, (keyspace,))
        .await
        .map_err(|source| CassandraError::Request {
            what: format!("reading the replication of keyspace `{keyspace}`"),
            source: Box::new(source),
        })?;
    let unreadable = |reason: String| TopologyError::Unreadable {
        keyspace: keyspace.to_owned(),
        reason,
    };
    let rows = result
        .into_rows_result()
        .map_err(|e| unreadable(e.to_string()))?;
    let row = rows
        .maybe_first_row::<(HashMap<String, String>,)>()
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(row.map(|(replication,)| replication))
}

/// Reads the replication of `keyspace` and returns the warning for
/// `serial`, if any (none for a keyspace that does not exist).
pub async fn check_serial_consistency(
    session: &Session,
    keyspace: &str,
    serial: SerialConsistency,
) -> Result<Option<SerialConsistencyWarning>, TopologyError> {
    Ok(keyspace_replication(session, keyspace)
        .await?
        .and_then(|replication| serial_consistency_warning(keyspace, &replication, serial)))
}

/// [`check_serial_consistency`] for `cfg`'s keyspace and serial
/// consistency, on a session of its own.
pub async fn check_serial_consistency_for(
    cfg: &CassandraConfig,
) -> Result<Option<SerialConsistencyWarning>, TopologyError> {
    let session = crate::session::open_session(cfg).await?;
    check_serial_consistency(&session, &cfg.keyspace, cfg.serial_consistency).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NTS: &str = "org.apache.cassandra.locator.NetworkTopologyStrategy";

    #[test]
    fn local_serial_on_two_datacenters_warns_naming_them() {
        let r = map(&[("class", NTS), ("dc_west", "3"), ("dc_east", "3")]);
        let w = serial_consistency_warning("ks", &r, SerialConsistency::LocalSerial)
            .expect("a warning");
        assert_eq!(w.datacenters, ["dc_east", "dc_west"]);
        let text = w.to_string();
        for needed in ["`ks`", "2 datacenters", "dc_east, dc_west", "SERIAL"] {
            assert!(text.contains(needed), "{needed}: {text}");
        }
    }

    #[test]
    fn serial_on_two_datacenters_does_not_warn() {
        let r = map(&[("class", NTS), ("dc_west", "3"), ("dc_east", "3")]);
        assert_eq!(
            serial_consistency_warning("ks", &r, SerialConsistency::Serial),
            None
        );
    }

    #[test]
    fn one_datacenter_does_not_warn() {
        let r = map(&[("class", NTS), ("datacenter1", "3")]);
        assert_eq!(
            serial_consistency_warning("ks", &r, SerialConsistency::LocalSerial),
            None
        );
    }

    #[test]
    fn a_datacenter_at_replication_factor_0_does_not_count() {
        let r = map(&[("class", NTS), ("dc_west", "3"), ("dc_east", "0")]);
        assert_eq!(replicated_datacenters(&r), ["dc_west"]);
        assert_eq!(
            serial_consistency_warning("ks", &r, SerialConsistency::LocalSerial),
            None
        );
    }

    #[test]
    fn short_class_name_and_transient_replicas_are_understood() {
        let r = map(&[
            ("class", "NetworkTopologyStrategy"),
            ("dc_west", "3/1"),
            ("dc_east", "2"),
        ]);
        assert_eq!(replicated_datacenters(&r), ["dc_east", "dc_west"]);
    }

    #[test]
    fn simple_strategy_knows_no_datacenters_and_does_not_warn() {
        let r = map(&[
            ("class", "org.apache.cassandra.locator.SimpleStrategy"),
            ("replication_factor", "3"),
        ]);
        assert!(replicated_datacenters(&r).is_empty());
        assert_eq!(
            serial_consistency_warning("ks", &r, SerialConsistency::LocalSerial),
            None
        );
    }
}
