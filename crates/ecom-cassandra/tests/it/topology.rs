//! Reading a keyspace's replication from the real cluster for the
//! LOCAL_SERIAL-across-datacenters warning.
//!
//! Cassandra 5.0 refuses a `NetworkTopologyStrategy` datacenter it does not
//! know ("Unrecognized strategy option"), and the local cluster has one
//! datacenter, `datacenter1`. So the throwaway keyspace is replicated there
//! only, and the two-datacenter case combines the map read from the server
//! with a second datacenter entry in the same form (the pure decision is
//! unit-tested in `topology.rs`).

use ecom_cassandra::topology::{
    check_serial_consistency, keyspace_replication, serial_consistency_warning,
};
use ecom_cassandra::{
    SerialConsistency, apply_schema, check_serial_consistency_for, drop_keyspace, testing,
};

use crate::common::init_tracing;

#[tokio::test]
async fn replication_is_read_from_the_cluster_and_local_serial_warns_only_across_datacenters() {
    init_tracing();
    let Some(cfg) = testing::test_config() else {
        return;
    };
    apply_schema(
        &cfg,
        "CREATE KEYSPACE IF NOT EXISTS ecom_store WITH replication = \
         {'class': 'NetworkTopologyStrategy', 'datacenter1': 1};",
    )
    .await
    .expect("create the throwaway keyspace");

    let result = async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(&cfg.contact_points)
            .build()
            .await
            .expect("session");
        let replication = keyspace_replication(&session, &cfg.keyspace)
            .await
            .unwrap()
            .expect("the keyspace exists");
        assert_eq!(
            replication.get("class").map(String::as_str),
            Some("org.apache.cassandra.locator.NetworkTopologyStrategy"),
            "{replication:?}"
        );
        assert_eq!(
            replication.get("datacenter1").map(String::as_str),
            Some("1"),
            "{replication:?}"
        );

        // One datacenter: no warning at either level, through every entry point.
        for serial in [SerialConsistency::LocalSerial, SerialConsistency::Serial] {
            let w = check_serial_consistency(&session, &cfg.keyspace, serial)
                .await
                .unwrap();
            assert_eq!(w, None, "{serial:?}");
        }
        assert_eq!(check_serial_consistency_for(&cfg).await.unwrap(), None);

        // The same map with a second datacenter, as a two-DC cluster stores it.
        let mut two_dcs = replication.clone();
        two_dcs.insert("dc_elsewhere".into(), "3".into());
        let w = serial_consistency_warning(&cfg.keyspace, &two_dcs, SerialConsistency::LocalSerial)
            .expect("LOCAL_SERIAL across two datacenters warns");
        assert_eq!(w.datacenters, ["datacenter1", "dc_elsewhere"]);
        assert_eq!(
            serial_consistency_warning(&cfg.keyspace, &two_dcs, SerialConsistency::Serial),
            None
        );

        // A keyspace that does not exist has no replication to warn about.
        assert_eq!(
            keyspace_replication(&session, "ecom_no_such_keyspace")
                .await
                .unwrap(),
            None
        );
    };
    // Drop the keyspace whatever the assertions said.
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    drop_keyspace(&cfg).await.expect("drop the keyspace");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
