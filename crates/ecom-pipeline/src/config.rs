//! Configuration: defaults < TOML file < environment < flags.
//!
//! clap reads flags and environment variables (each flag names its variable
//! in `--help`); the TOML file, if given with `--config`/`ECOM_CONFIG`, fills
//! in whatever neither set. Unknown keys in the file are an error, so a typo
//! does not silently fall back to a default.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// How `run` and every other command write their log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a
    /// terminal, so files and journald get no escape codes.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded sled store (default).
    Embedded,
    /// Apache Cassandra, through lightweight transactions.
    Cassandra,
}

/// The TOML file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub log_dir: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub store_dir: Option<PathBuf>,
    pub projector_batch: Option<usize>,
    pub projector_concurrency: Option<usize>,
    #[serde(default)]
    pub cassandra: CassandraFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassandraFile {
    pub contact_points: Option<String>,
    pub keyspace: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub consistency: Option<String>,
    pub serial_consistency: Option<String>,
    pub max_in_flight: Option<usize>,
    pub tls: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
}

/// Options every command shares.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (keys: log_dir, store, store_dir,
    /// projector_batch, projector_concurrency, [cassandra] ...).
    #[arg(long, global = true, env = "ECOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr (the filter is ECOM_LOG). Flag or
    /// environment only: logging starts before the file is read.
    #[arg(
        long,
        global = true,
        env = "ECOM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Directory of this instance's durable log. One process owns it.
    #[arg(long, global = true, env = "ECOM_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Where facts land.
    #[arg(long, global = true, env = "ECOM_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Directory of the embedded store.
    #[arg(long, global = true, env = "ECOM_STORE_DIR")]
    pub store_dir: Option<PathBuf>,
    /// Log entries the projector applies per checkpoint.
    #[arg(long, global = true, env = "ECOM_PROJECTOR_BATCH")]
    pub projector_batch: Option<usize>,
    /// Order ids the projector applies concurrently (Cassandra: LWTs in flight).
    #[arg(long, global = true, env = "ECOM_PROJECTOR_CONCURRENCY")]
    pub projector_concurrency: Option<usize>,
    /// Cassandra contact points, comma-separated host:port.
    #[arg(long, global = true, env = "ECOM_CASSANDRA")]
    pub cassandra: Option<String>,
    /// Cassandra keyspace.
    #[arg(long, global = true, env = "ECOM_CASSANDRA_KEYSPACE")]
    pub cassandra_keyspace: Option<String>,
    /// Cassandra username.
    #[arg(long, global = true, env = "ECOM_CASSANDRA_USERNAME")]
    pub cassandra_username: Option<String>,
    /// Cassandra password (prefer the environment variable; never logged).
    #[arg(
        long,
        global = true,
        env = "ECOM_CASSANDRA_PASSWORD",
        hide_env_values = true
    )]
    pub cassandra_password: Option<String>,
    /// Consistency of writes and scans (default LOCAL_QUORUM).
    #[arg(long, global = true, env = "ECOM_CASSANDRA_CONSISTENCY")]
    pub cassandra_consistency: Option<String>,
    /// Serial consistency of lightweight transactions (default LOCAL_SERIAL,
    /// linearizable within one datacenter only: use SERIAL when instances
    /// run in more than one datacenter).
    #[arg(long, global = true, env = "ECOM_CASSANDRA_SERIAL_CONSISTENCY")]
    pub cassandra_serial_consistency: Option<String>,
    /// Most Cassandra requests in flight.
    #[arg(long, global = true, env = "ECOM_CASSANDRA_MAX_IN_FLIGHT")]
    pub cassandra_max_in_flight: Option<usize>,
    /// Connect to Cassandra over TLS.
    #[arg(long, global = true, env = "ECOM_CASSANDRA_TLS")]
    pub cassandra_tls: Option<bool>,
    /// CA certificate (PEM) for Cassandra TLS.
    #[arg(long, global = true, env = "ECOM_CASSANDRA_TLS_CA")]
    pub cassandra_tls_ca: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_dir: PathBuf,
    pub store: StoreKind,
    pub store_dir: PathBuf,
    pub projector_batch: usize,
    pub projector_concurrency: Option<usize>,
    pub cassandra: CassandraSettings,
}

#[derive(Clone, Default)]
pub struct CassandraSettings {
    pub contact_points: Option<String>,
    pub keyspace: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub consistency: Option<String>,
    pub serial_consistency: Option<String>,
    pub max_in_flight: Option<usize>,
    pub tls: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for CassandraSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraSettings")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("max_in_flight", &self.max_in_flight)
            .field("tls", &self.tls)
            .finish()
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "config file {} is not valid (see `ecom-pipeline --help` for the keys)",
            path.display()
        )
    })
}

impl Config {
    pub fn resolve(g: &GlobalArgs) -> anyhow::Result<Config> {
        let file = match &g.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let c = file.cassandra;
        Ok(Config {
            log_dir: g
                .log_dir
                .clone()
                .or(file.log_dir)
                .unwrap_or_else(|| PathBuf::from(".ecom/log")),
            store: g.store.or(file.store).unwrap_or(StoreKind::Embedded),
            store_dir: g
                .store_dir
                .clone()
                .or(file.store_dir)
                .unwrap_or_else(|| PathBuf::from(".ecom/store")),
            projector_batch: g.projector_batch.or(file.projector_batch).unwrap_or(1024),
            projector_concurrency: g.projector_concurrency.or(file.projector_concurrency),
            cassandra: CassandraSettings {
                contact_points: g.cassandra.clone().or(c.contact_points),
                keyspace: g.cassandra_keyspace.clone().or(c.keyspace),
                username: g.cassandra_username.clone().or(c.username),
                password: g.cassandra_password.clone().or(c.password),
                consistency: g.cassandra_consistency.clone().or(c.consistency),
                serial_consistency: g
                    .cassandra_serial_consistency
                    .clone()
                    .or(c.serial_consistency),
                max_in_flight: g.cassandra_max_in_flight.or(c.max_in_flight),
                tls: g.cassandra_tls.or(c.tls),
                tls_ca_file: g.cassandra_tls_ca.clone().or(c.tls_ca_file),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_file_key_is_an_error() {
        let err = toml::from_str::<FileConfig>("log_dri = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "log_dir = \"from-file\"\nstore_dir = \"store-file\"\n",
        )
        .unwrap();
        let g = GlobalArgs {
            config: Some(path),
            log_format: LogFormat::Text,
            log_dir: Some("from-flag".into()),
            store: None,
            store_dir: None,
            projector_batch: None,
            projector_concurrency: None,
            cassandra: None,
            cassandra_keyspace: None,
            cassandra_username: None,
            cassandra_password: Some("s3cret".into()),
            cassandra_consistency: None,
            cassandra_serial_consistency: None,
            cassandra_max_in_flight: None,
            cassandra_tls: None,
            cassandra_tls_ca: None,
        };
        let c = Config::resolve(&g).unwrap();
        assert_eq!(c.log_dir, PathBuf::from("from-flag"));
        assert_eq!(c.store_dir, PathBuf::from("store-file"));
        assert_eq!(c.store, StoreKind::Embedded);
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
