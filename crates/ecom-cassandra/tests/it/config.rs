use std::time::Duration;

use ecom_cassandra::testing::{fresh_store, test_config};
use ecom_cassandra::{
    CassandraConfig, CassandraError, CassandraStore, Consistency, SerialConsistency,
    parse_consistency, parse_serial_consistency,
};

use crate::common::init_tracing;

#[tokio::test]
async fn credentials_are_redacted_in_debug() {
    init_tracing();
    let cfg = CassandraConfig {
        username: Some("ecom".into()),
        password: Some("hunter2-s3cret".into()),
        // Nothing listens on port 1: connecting fails fast.
        contact_points: vec!["127.0.0.1:1".into()],
        request_timeout: Duration::from_secs(2),
        ..CassandraConfig::default()
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("<redacted>") && shown.contains("ecom"),
        "{shown}"
    );
    assert!(!format!("{:#?}", cfg).contains("hunter2"));

    let err = CassandraStore::connect(cfg)
        .await
        .expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(matches!(err, CassandraError::Connect { .. }), "{err:?}");
    assert!(msg.contains("scripts/cassandra.sh start"), "{msg}");
    assert!(
        !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{msg}"
    );
}

#[test]
fn consistency_levels_parse_from_strings() {
    assert_eq!(
        CassandraConfig::default().consistency,
        Consistency::LocalQuorum
    );
    assert_eq!(
        CassandraConfig::default().serial_consistency,
        SerialConsistency::LocalSerial
    );
    assert_eq!(
        parse_consistency("LOCAL_QUORUM").unwrap(),
        Consistency::LocalQuorum
    );
    assert_eq!(parse_consistency("quorum").unwrap(), Consistency::Quorum);
    assert_eq!(parse_consistency(" ONE ").unwrap(), Consistency::One);
    assert_eq!(
        parse_consistency("local-one").unwrap(),
        Consistency::LocalOne
    );
    assert!(parse_consistency("SERIAL").is_err());
    assert!(parse_consistency("MOST").is_err());
    assert_eq!(
        parse_serial_consistency("SERIAL").unwrap(),
        SerialConsistency::Serial
    );
    assert_eq!(
        parse_serial_consistency("local_serial").unwrap(),
        SerialConsistency::LocalSerial
    );
    let err = parse_serial_consistency("QUORUM").unwrap_err().to_string();
    assert!(err.contains("SERIAL or LOCAL_SERIAL"), "{err}");
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_connecting() {
    for cfg in [
        CassandraConfig {
            keyspace: "Robert'); DROP".into(),
            ..CassandraConfig::default()
        },
        CassandraConfig {
            contact_points: vec![],
            ..CassandraConfig::default()
        },
        CassandraConfig {
            max_in_flight: 0,
            ..CassandraConfig::default()
        },
        CassandraConfig {
            username: Some("u".into()),
            ..CassandraConfig::default()
        },
    ] {
        let err = CassandraStore::connect(cfg).await.expect_err("must fail");
        assert!(
            matches!(
                err,
                CassandraError::InvalidKeyspace(_) | CassandraError::InvalidConfig(_)
            ),
            "{err:?}"
        );
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_needs_a_readable_pem_ca_file() {
    let dir = std::env::temp_dir().join(format!("ecom-cassandra-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for ca in [None, Some(dir.join("missing.pem")), Some(not_pem)] {
        let cfg = CassandraConfig {
            tls: true,
            tls_ca_file: ca,
            ..CassandraConfig::default()
        };
        let err = CassandraStore::connect(cfg).await.expect_err("must fail");
        assert!(matches!(err, CassandraError::Tls(_)), "{err:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn missing_keyspace_says_to_run_setup() {
    init_tracing();
    let Some(cfg) = test_config() else { return };
    let err = CassandraStore::connect(cfg)
        .await
        .expect_err("keyspace does not exist");
    assert!(matches!(err, CassandraError::KeyspaceMissing(_)), "{err:?}");
    assert!(
        err.to_string().contains("ecom-pipeline setup cassandra"),
        "{err}"
    );
}

#[tokio::test]
async fn applying_the_schema_twice_is_harmless() {
    init_tracing();
    let Some(store) = fresh_store().await else {
        return;
    };
    ecom_cassandra::apply_schema(store.config(), ecom_cassandra::SCHEMA_CQL)
        .await
        .unwrap();
    ecom_cassandra::testing::drop_store(store).await;
}
