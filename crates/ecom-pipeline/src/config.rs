//! Configuration: every setting defined once, layered defaults < TOML file
//! < environment < flags.
//!
//! # Why this module exists
//!
//! Settings used to be written five times (flag, environment variable, file
//! key, a merged struct, the library's config) and had drifted. Now each
//! component has one typed, deserializable struct: [`Config`] for the
//! pipeline's own settings, [`CassandraConfig`] and [`PubSubConfig`] in
//! their crates, each with its defaults. [`SETTINGS`] is the one list that
//! says, per setting, its key, its environment variable and its flag;
//! figment layers the defaults, the TOML file (`--config`/`ECOM_CONFIG`),
//! the environment variables of that list and the flags given on the command
//! line, and deserializes the result. Unknown keys in the file are an error,
//! so a typo does not silently fall back to a default. The README's table
//! is generated from [`SETTINGS`] and a test fails when it is stale; another
//! test sets every setting through each of the three layers.
//!
//! Secrets (the Cassandra password) are a `SecretString`, which never
//! prints; `Debug` of the configuration redacts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args, ValueEnum, parser::ValueSource};
use ecom_cassandra::CassandraConfig;
use ecom_pubsub::PubSubConfig;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
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

/// Options every command shares. Each setting's flag is here (or in
/// [`crate::pubsub::PubSubArgs`]); its environment variable, file key and
/// default are in [`SETTINGS`] and the component structs.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (the keys are in the README's configuration
    /// table: log_dir, store, [cassandra] keyspace, [pubsub] project, ...).
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
    #[arg(long, global = true)]
    pub log_dir: Option<PathBuf>,
    /// Where facts land.
    #[arg(long, global = true, value_enum)]
    pub store: Option<StoreKind>,
    /// Directory of the embedded store.
    #[arg(long, global = true)]
    pub store_dir: Option<PathBuf>,
    /// Log entries the projector applies per checkpoint.
    #[arg(long, global = true)]
    pub projector_batch: Option<usize>,
    /// Order ids the projector applies concurrently (Cassandra: LWTs in flight).
    #[arg(long, global = true)]
    pub projector_concurrency: Option<usize>,
    /// `run`: serve Prometheus `/metrics`, `/healthz` and `/readyz` here
    /// (port 0 picks a free one, written to the status file as
    /// `metrics_addr`); `off` disables the endpoint.
    #[arg(long, global = true)]
    pub metrics_addr: Option<String>,
    /// Where logs are archived: a directory (or file:///path), or a bucket:
    /// gs://bucket[/prefix] or s3://bucket[/prefix] (credentials from the
    /// standard GOOGLE_* / AWS_* environment variables).
    #[arg(long, global = true)]
    pub archive: Option<String>,
    /// This instance's name in the archive (default: the host name and the
    /// log directory's name).
    #[arg(long, global = true)]
    pub instance: Option<String>,
    /// `run` with an archive: keep the log directory under this size
    /// ("50MB", "2GiB", or bytes) by archiving, pruning and compacting;
    /// ingest waits when nothing more can go.
    #[arg(long, global = true)]
    pub log_max_bytes: Option<String>,
    /// `run` with an archive: archived entries older than this leave the
    /// local log (e.g. "6h").
    #[arg(long, global = true)]
    pub log_retention: Option<String>,
    /// How long message ids of pruned entries still dedup redeliveries:
    /// at least the subscription's message retention (e.g. "7d").
    #[arg(long, global = true)]
    pub dedup_retention: Option<String>,
    /// Cassandra contact points, comma-separated host:port.
    #[arg(long, global = true)]
    pub cassandra: Option<String>,
    /// Cassandra keyspace.
    #[arg(long, global = true)]
    pub cassandra_keyspace: Option<String>,
    /// Cassandra username.
    #[arg(long, global = true)]
    pub cassandra_username: Option<String>,
    /// Cassandra password (prefer ECOM_CASSANDRA_PASSWORD: a flag shows in
    /// the process list; never logged).
    #[arg(long, global = true)]
    pub cassandra_password: Option<String>,
    /// Consistency of writes and scans.
    #[arg(long, global = true)]
    pub cassandra_consistency: Option<String>,
    /// Serial consistency of lightweight transactions (LOCAL_SERIAL is
    /// linearizable within one datacenter only: use SERIAL when instances
    /// run in more than one datacenter).
    #[arg(long, global = true)]
    pub cassandra_serial_consistency: Option<String>,
    /// Most Cassandra requests in flight.
    #[arg(long, global = true)]
    pub cassandra_max_in_flight: Option<usize>,
    /// Connect to Cassandra over TLS.
    #[arg(long, global = true)]
    pub cassandra_tls: Option<bool>,
    /// CA certificate (PEM) for Cassandra TLS.
    #[arg(long, global = true)]
    pub cassandra_tls_ca: Option<PathBuf>,
    /// Client-side timeout of one Cassandra request (e.g. "10s").
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub cassandra_request_timeout: Option<std::time::Duration>,
}

/// The pipeline's own settings, and its components' (one struct each).
/// Missing keys take the defaults of [`Config::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log_dir: PathBuf,
    pub store: StoreKind,
    pub store_dir: PathBuf,
    pub projector_batch: usize,
    /// `None`: 1 on the embedded store, 64 on Cassandra.
    pub projector_concurrency: Option<usize>,
    /// `host:port` or `off`.
    pub metrics_addr: String,
    /// Archive location (`None`: no archive).
    pub archive: Option<String>,
    /// Name in the archive (`None`: host name and log directory name).
    pub instance: Option<String>,
    /// Bound on the log directory (`None`: unbounded).
    #[serde(deserialize_with = "byte_size")]
    pub log_max_bytes: Option<u64>,
    /// Age after which archived entries leave the log (`None`: kept).
    #[serde(with = "humantime_serde")]
    pub log_retention: Option<Duration>,
    /// How long the ids of pruned entries are kept for dedup.
    #[serde(with = "humantime_serde")]
    pub dedup_retention: Duration,
    pub cassandra: CassandraConfig,
    pub pubsub: PubSubConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_dir: PathBuf::from(".ecom/log"),
            store: StoreKind::Embedded,
            store_dir: PathBuf::from(".ecom/store"),
            projector_batch: 1024,
            projector_concurrency: None,
            metrics_addr: "127.0.0.1:9464".to_owned(),
            archive: None,
            instance: None,
            log_max_bytes: None,
            log_retention: None,
            // Pub/Sub's default message retention: a subscription can
            // redeliver (or be sought back) that far.
            dedup_retention: Duration::from_secs(7 * 24 * 3600),
            cassandra: CassandraConfig::default(),
            pubsub: PubSubConfig::default(),
        }
    }
}

/// How a setting's text from the environment or a flag becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Switch,
}

/// One setting: where it lives in the file, which environment variable and
/// which flag set it, and what the README says about it.
#[derive(Debug)]
pub struct Setting {
    /// Key path in the file (`cassandra.keyspace` is `keyspace` under
    /// `[cassandra]`) and in [`Config`].
    pub key: &'static str,
    pub env: &'static str,
    /// The flag, `--` and all; its clap id is the name with `_` for `-`.
    pub flag: &'static str,
    pub kind: Kind,
    /// The default as the README shows it (the README's table is rendered
    /// and checked by a test, which alone reads these two).
    #[cfg_attr(not(test), allow(dead_code))]
    pub default: &'static str,
    /// A value the tests set through each layer (differs from the default).
    #[cfg_attr(not(test), allow(dead_code))]
    pub example: &'static str,
}

macro_rules! setting {
    ($key:literal, $env:literal, $flag:literal, $kind:ident, $default:literal, $example:literal) => {
        Setting {
            key: $key,
            env: $env,
            flag: $flag,
            kind: Kind::$kind,
            default: $default,
            example: $example,
        }
    };
}

/// Every setting. The README's configuration table is rendered from this
/// list ([`readme_table`]).
pub const SETTINGS: &[Setting] = &[
    setting!(
        "log_dir",
        "ECOM_LOG_DIR",
        "--log-dir",
        Text,
        "`.ecom/log`",
        "/var/lib/ecom/log"
    ),
    setting!(
        "store",
        "ECOM_STORE",
        "--store",
        Text,
        "`embedded` (or `cassandra`)",
        "cassandra"
    ),
    setting!(
        "store_dir",
        "ECOM_STORE_DIR",
        "--store-dir",
        Text,
        "`.ecom/store`",
        "/var/lib/ecom/store"
    ),
    setting!(
        "projector_batch",
        "ECOM_PROJECTOR_BATCH",
        "--projector-batch",
        Number,
        "1024",
        "256"
    ),
    setting!(
        "projector_concurrency",
        "ECOM_PROJECTOR_CONCURRENCY",
        "--projector-concurrency",
        Number,
        "none: 1 embedded, 64 Cassandra",
        "16"
    ),
    setting!(
        "metrics_addr",
        "ECOM_METRICS_ADDR",
        "--metrics-addr",
        Text,
        "`127.0.0.1:9464` (`off` disables)",
        "0.0.0.0:9464"
    ),
    setting!(
        "archive",
        "ECOM_ARCHIVE",
        "--archive",
        Text,
        "none (a directory, file:///path, gs://bucket[/prefix] or s3://bucket[/prefix]; `log archive` seals into it)",
        "/var/lib/ecom/archive"
    ),
    setting!(
        "instance",
        "ECOM_INSTANCE",
        "--instance",
        Text,
        "none: `<host name>-<log directory name>`",
        "shop-eu-1"
    ),
    setting!(
        "log_max_bytes",
        "ECOM_LOG_MAX_BYTES",
        "--log-max-bytes",
        Text,
        "none: unbounded (with `archive`: e.g. `50MB`, `2GiB`; compacts at 40 %, holds ingest at 65 %)",
        "50MB"
    ),
    setting!(
        "log_retention",
        "ECOM_LOG_RETENTION",
        "--log-retention",
        Text,
        "none: archived entries stay until `log_max_bytes` needs room",
        "6h"
    ),
    setting!(
        "dedup_retention",
        "ECOM_DEDUP_RETENTION",
        "--dedup-retention",
        Text,
        "`7days` (Pub/Sub's default message retention; up to 31 days)",
        "31days"
    ),
    setting!(
        "cassandra.contact_points",
        "ECOM_CASSANDRA",
        "--cassandra",
        Text,
        "`127.0.0.1:9042` (comma-separated host:port)",
        "10.0.0.1:9042,10.0.0.2:9042"
    ),
    setting!(
        "cassandra.keyspace",
        "ECOM_CASSANDRA_KEYSPACE",
        "--cassandra-keyspace",
        Text,
        "`ecom_store`",
        "ecom_prod"
    ),
    setting!(
        "cassandra.username",
        "ECOM_CASSANDRA_USERNAME",
        "--cassandra-username",
        Text,
        "none",
        "ecom"
    ),
    setting!(
        "cassandra.password",
        "ECOM_CASSANDRA_PASSWORD",
        "--cassandra-password",
        Text,
        "none (never printed; prefer the environment)",
        "s3cret-pw"
    ),
    setting!(
        "cassandra.consistency",
        "ECOM_CASSANDRA_CONSISTENCY",
        "--cassandra-consistency",
        Text,
        "`LOCAL_QUORUM`",
        "QUORUM"
    ),
    setting!(
        "cassandra.serial_consistency",
        "ECOM_CASSANDRA_SERIAL_CONSISTENCY",
        "--cassandra-serial-consistency",
        Text,
        "`LOCAL_SERIAL` (one datacenter only: with instances in several, use `SERIAL`; `setup cassandra` and `status` warn)",
        "SERIAL"
    ),
    setting!(
        "cassandra.max_in_flight",
        "ECOM_CASSANDRA_MAX_IN_FLIGHT",
        "--cassandra-max-in-flight",
        Number,
        "64",
        "128"
    ),
    setting!(
        "cassandra.tls",
        "ECOM_CASSANDRA_TLS",
        "--cassandra-tls",
        Switch,
        "false",
        "true"
    ),
    setting!(
        "cassandra.tls_ca_file",
        "ECOM_CASSANDRA_TLS_CA",
        "--cassandra-tls-ca",
        Text,
        "none",
        "/etc/ecom/ca.pem"
    ),
    setting!(
        "cassandra.request_timeout",
        "ECOM_CASSANDRA_REQUEST_TIMEOUT",
        "--cassandra-request-timeout",
        Text,
        "`10s`",
        "20s"
    ),
    setting!(
        "pubsub.project",
        "GOOGLE_CLOUD_PROJECT",
        "--project",
        Text,
        "none (required for Pub/Sub)",
        "shop-prod"
    ),
    setting!(
        "pubsub.ack_deadline",
        "ECOM_PUBSUB_ACK_DEADLINE",
        "--pubsub-ack-deadline",
        Text,
        "`1m` (`setup pubsub`)",
        "120s"
    ),
    setting!(
        "pubsub.exactly_once",
        "ECOM_PUBSUB_EXACTLY_ONCE",
        "--pubsub-exactly-once",
        Switch,
        "false (`setup pubsub`)",
        "true"
    ),
    setting!(
        "pubsub.message_ordering",
        "ECOM_PUBSUB_ORDERING",
        "--pubsub-ordering",
        Switch,
        "false (`setup pubsub`)",
        "true"
    ),
    setting!(
        "pubsub.dead_letter_max_attempts",
        "ECOM_PUBSUB_DEAD_LETTER_ATTEMPTS",
        "--pubsub-dead-letter-attempts",
        Number,
        "none (`setup pubsub`)",
        "10"
    ),
    setting!(
        "pubsub.max_outstanding_messages",
        "ECOM_PUBSUB_MAX_OUTSTANDING_MESSAGES",
        "--pubsub-max-outstanding-messages",
        Number,
        "5000",
        "2000"
    ),
    setting!(
        "pubsub.max_outstanding_bytes",
        "ECOM_PUBSUB_MAX_OUTSTANDING_BYTES",
        "--pubsub-max-outstanding-bytes",
        Number,
        "104857600",
        "1048576"
    ),
    setting!(
        "pubsub.max_lease_extension",
        "ECOM_PUBSUB_MAX_LEASE_EXTENSION",
        "--pubsub-max-lease-extension",
        Text,
        "`1m`",
        "30s"
    ),
    setting!(
        "pubsub.max_lease",
        "ECOM_PUBSUB_MAX_LEASE",
        "--pubsub-max-lease",
        Text,
        "`1h`",
        "2h"
    ),
    setting!(
        "pubsub.publish_timeout",
        "ECOM_PUBSUB_PUBLISH_TIMEOUT",
        "--pubsub-publish-timeout",
        Text,
        "`30s`",
        "45s"
    ),
    setting!(
        "pubsub.shutdown_timeout",
        "ECOM_PUBSUB_SHUTDOWN_TIMEOUT",
        "--pubsub-shutdown-timeout",
        Text,
        "`30s`",
        "10s"
    ),
];

/// `"50MB"`, `"2GiB"`, `"1048576"`: bytes. Decimal units are powers of
/// 1000, binary ones (`KiB`, `MiB`, `GiB`) powers of 1024.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: write e.g. 50MB, 2GiB or a number of bytes")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Deserializes an optional size given as a number of bytes or a string
/// for [`parse_bytes`].
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Bytes(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

impl Setting {
    /// The clap id of [`Self::flag`].
    pub fn arg_id(&self) -> String {
        self.flag.trim_start_matches('-').replace('-', "_")
    }

    /// `text` as this setting's value, or an error naming `origin`.
    fn value(&self, text: &str, origin: &str) -> anyhow::Result<Value> {
        Ok(match self.kind {
            Kind::Text => Value::from(text.to_owned()),
            Kind::Number => Value::from(text.trim().parse::<i64>().map_err(|_| {
                anyhow::anyhow!("{origin} = {text:?}: {} must be a whole number", self.key)
            })?),
            Kind::Switch => Value::from(match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => anyhow::bail!("{origin} = {text:?}: {} must be true or false", self.key),
            }),
        })
    }
}

/// Where the layers come from; tests pass their own environment.
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Flags given on the command line, as text: (setting, value).
    pub flags: Vec<(&'static Setting, String)>,
}

impl Sources<'_> {
    /// The flags of [`SETTINGS`] that were given on the command line.
    pub fn flags_from(matches: &ArgMatches) -> Vec<(&'static Setting, String)> {
        SETTINGS
            .iter()
            .filter_map(|s| {
                let id = s.arg_id();
                if matches.value_source(&id) != Some(ValueSource::CommandLine) {
                    return None;
                }
                let raw = matches.get_raw(&id)?.next()?;
                Some((s, raw.to_string_lossy().into_owned()))
            })
            .collect()
    }
}

impl Config {
    /// The archive name of the instance whose log is `log_dir`: the
    /// `instance` setting, or the host name and the log directory's name
    /// (unique per host and log, stable across restarts), with anything but
    /// ASCII letters, digits, `.`, `_` and `-` replaced by `-`.
    pub fn instance_name(&self, log_dir: &Path) -> String {
        let name = self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".into());
            let dir = log_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "log".into());
            format!("{host}-{dir}")
        });
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_owned()
    }

    /// Defaults < file < environment < flags, deserialized.
    pub fn resolve(sources: &Sources<'_>) -> anyhow::Result<Config> {
        let mut fig = Figment::new();
        if let Some(path) = sources.file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist (given by --config or ECOM_CONFIG)",
                path.display()
            );
            fig = fig.merge(Toml::file_exact(path));
        }
        for s in SETTINGS {
            if let Some(text) = (sources.env)(s.env).filter(|t| !t.is_empty()) {
                fig = fig.merge(Serialized::global(s.key, s.value(&text, s.env)?));
            }
        }
        for (s, text) in &sources.flags {
            fig = fig.merge(Serialized::global(s.key, s.value(text, s.flag)?));
        }
        fig.extract::<Config>().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: {e} (the settings, their environment variables and file keys are in the README's configuration table)"
            )
        })
    }

    /// From the process's command line, environment and `--config` file.
    pub fn from_cli(g: &GlobalArgs, matches: &ArgMatches) -> anyhow::Result<Config> {
        let env = |name: &str| std::env::var(name).ok();
        Config::resolve(&Sources {
            file: g.config.as_deref(),
            env: &env,
            flags: Sources::flags_from(matches),
        })
        .context("reading the configuration")
    }
}

/// The README's configuration table, rendered from [`SETTINGS`].
#[cfg(test)]
fn readme_table() -> String {
    let mut out = String::from("| file key | environment | flag | default |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let key = match s.key.split_once('.') {
            Some((table, key)) => format!("`[{table}]` `{key}`"),
            None => format!("`{}`", s.key),
        };
        out.push_str(&format!(
            "| {key} | `{}` | `{}` | {} |\n",
            s.env, s.flag, s.default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, FromArgMatches};
    use secrecy::ExposeSecret;

    use super::*;

    fn resolve(
        file: Option<&Path>,
        env: &HashMap<&str, String>,
        argv: &[&str],
    ) -> anyhow::Result<Config> {
        let matches = crate::Cli::command().try_get_matches_from(
            ["ecom-pipeline"]
                .iter()
                .chain(argv)
                .chain(["status"].iter()),
        )?;
        let lookup = |name: &str| env.get(name).cloned();
        Config::resolve(&Sources {
            file,
            env: &lookup,
            flags: Sources::flags_from(&matches),
        })
    }

    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
    }

    /// The value at `key` in the resolved configuration, as text.
    fn shown(c: &Config, key: &str) -> String {
        match key {
            "log_dir" => c.log_dir.display().to_string(),
            "store" => format!("{:?}", c.store).to_lowercase(),
            "store_dir" => c.store_dir.display().to_string(),
            "projector_batch" => c.projector_batch.to_string(),
            "projector_concurrency" => opt(c.projector_concurrency),
            "metrics_addr" => c.metrics_addr.clone(),
            "archive" => opt(c.archive.as_ref()),
            "instance" => opt(c.instance.as_ref()),
            "log_max_bytes" => opt(c.log_max_bytes),
            "log_retention" => opt(c.log_retention.map(humantime::format_duration)),
            "dedup_retention" => humantime::format_duration(c.dedup_retention).to_string(),
            "cassandra.contact_points" => c.cassandra.contact_points.join(","),
            "cassandra.keyspace" => c.cassandra.keyspace.clone(),
            "cassandra.username" => opt(c.cassandra.username.as_ref()),
            "cassandra.password" => c
                .cassandra
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_else(|| "none".into()),
            "cassandra.consistency" => format!("{:?}", c.cassandra.consistency),
            "cassandra.serial_consistency" => format!("{:?}", c.cassandra.serial_consistency),
            "cassandra.max_in_flight" => c.cassandra.max_in_flight.to_string(),
            "cassandra.tls" => c.cassandra.tls.to_string(),
            "cassandra.tls_ca_file" => opt(c.cassandra.tls_ca_file.as_ref().map(|p| p.display())),
            "cassandra.request_timeout" => {
                humantime::format_duration(c.cassandra.request_timeout).to_string()
            }
            "pubsub.project" if c.pubsub.project.is_empty() => "none".into(),
            "pubsub.project" => c.pubsub.project.clone(),
            "pubsub.ack_deadline" => humantime::format_duration(c.pubsub.ack_deadline).to_string(),
            "pubsub.exactly_once" => c.pubsub.exactly_once.to_string(),
            "pubsub.message_ordering" => c.pubsub.message_ordering.to_string(),
            "pubsub.dead_letter_max_attempts" => opt(c.pubsub.dead_letter_max_attempts),
            "pubsub.max_outstanding_messages" => c.pubsub.max_outstanding_messages.to_string(),
            "pubsub.max_outstanding_bytes" => c.pubsub.max_outstanding_bytes.to_string(),
            "pubsub.max_lease_extension" => {
                humantime::format_duration(c.pubsub.max_lease_extension).to_string()
            }
            "pubsub.max_lease" => humantime::format_duration(c.pubsub.max_lease).to_string(),
            "pubsub.publish_timeout" => {
                humantime::format_duration(c.pubsub.publish_timeout).to_string()
            }
            "pubsub.shutdown_timeout" => {
                humantime::format_duration(c.pubsub.shutdown_timeout).to_string()
            }
            other => panic!("setting {other} has no accessor in this test: add it"),
        }
    }

    /// A TOML file setting `s` to its example.
    fn file_setting(s: &Setting) -> String {
        let value = match s.kind {
            Kind::Text => format!("{:?}", s.example),
            Kind::Number | Kind::Switch => s.example.to_owned(),
        };
        match s.key.split_once('.') {
            Some((table, key)) => format!("[{table}]\n{key} = {value}\n"),
            None => format!("{} = {value}\n", s.key),
        }
    }

    #[test]
    fn sizes_parse_with_decimal_and_binary_units_and_bad_ones_say_why() {
        assert_eq!(parse_bytes("50MB"), Ok(50_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes(" 1048576 "), Ok(1_048_576));
        assert_eq!(parse_bytes("64 kib"), Ok(64 << 10));
        let e = parse_bytes("50 furlongs").unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        let e = parse_bytes("MB").unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        assert!(
            parse_bytes("99999999999999GB")
                .unwrap_err()
                .contains("too large")
        );
        let e = resolve(
            None,
            &HashMap::from([("ECOM_LOG_MAX_BYTES", "lots".to_owned())]),
            &[],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not a size"), "{e:#}");
    }

    #[test]
    fn every_setting_is_settable_by_file_environment_and_flag_alike() {
        let dir = tempfile::tempdir().unwrap();
        let default = resolve(None, &HashMap::new(), &[]).unwrap();
        for s in SETTINGS {
            let before = shown(&default, s.key);
            let path = dir.path().join("c.toml");
            std::fs::write(&path, file_setting(s)).unwrap();
            let by_file = shown(&resolve(Some(&path), &HashMap::new(), &[]).unwrap(), s.key);
            let env = HashMap::from([(s.env, s.example.to_owned())]);
            let by_env = shown(&resolve(None, &env, &[]).unwrap(), s.key);
            // A switch such as --pubsub-exactly-once takes no value.
            let takes_value = crate::Cli::command()
                .get_arguments()
                .find(|a| a.get_id() == s.arg_id().as_str())
                .is_some_and(|a| a.get_action().takes_values());
            let argv: &[&str] = if takes_value {
                &[s.flag, s.example]
            } else {
                &[s.flag]
            };
            let by_flag = shown(&resolve(None, &HashMap::new(), argv).unwrap(), s.key);
            assert_ne!(
                by_file, before,
                "{}: the file's example changed nothing",
                s.key
            );
            assert_eq!(
                by_env, by_file,
                "{}: {} disagrees with the file",
                s.key, s.env
            );
            assert_eq!(
                by_flag, by_file,
                "{}: {} disagrees with the file",
                s.key, s.flag
            );
        }
    }

    /// What a README default and a resolved value have in common: no
    /// backticks, no `_`, lower case (`LOCAL_QUORUM` vs `LocalQuorum`).
    fn normalized(s: &str) -> String {
        s.replace(['`', '_'], "").to_lowercase()
    }

    #[test]
    fn the_readme_defaults_are_the_real_defaults() {
        let default = resolve(None, &HashMap::new(), &[]).unwrap();
        for s in SETTINGS {
            let real = normalized(&shown(&default, s.key));
            assert!(
                normalized(s.default).starts_with(&real),
                "{}: the README says the default is {:?}, it is {real:?}",
                s.key,
                s.default
            );
        }
    }

    #[test]
    fn every_field_of_every_component_is_a_listed_setting() {
        use serde_aux::serde_introspection::serde_introspect;
        let mut fields: Vec<String> = serde_introspect::<Config>()
            .iter()
            .filter(|f| !["cassandra", "pubsub"].contains(f))
            .map(|f| f.to_string())
            .collect();
        fields.extend(
            serde_introspect::<CassandraConfig>()
                .iter()
                .map(|f| format!("cassandra.{f}")),
        );
        fields.extend(
            serde_introspect::<PubSubConfig>()
                .iter()
                .map(|f| format!("pubsub.{f}")),
        );
        let listed: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        let unlisted: Vec<&String> = fields
            .iter()
            .filter(|f| !listed.contains(&f.as_str()))
            .collect();
        assert!(
            unlisted.is_empty(),
            "fields with no entry in SETTINGS (no env, no flag, not in the README): {unlisted:?}"
        );
        assert_eq!(
            fields.len(),
            SETTINGS.len(),
            "SETTINGS lists a key that is no field: {listed:?} vs {fields:?}"
        );
    }

    #[test]
    fn flags_override_environment_which_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "log_dir = \"from-file\"\nstore_dir = \"store-file\"\nprojector_batch = 7\n[cassandra]\nkeyspace = \"ks_file\"\n",
        )
        .unwrap();
        let env = HashMap::from([
            ("ECOM_LOG_DIR", "from-env".to_owned()),
            ("ECOM_PROJECTOR_BATCH", "9".to_owned()),
            ("ECOM_CASSANDRA_PASSWORD", "s3cret".to_owned()),
        ]);
        let c = resolve(Some(&path), &env, &["--log-dir", "from-flag"]).unwrap();
        assert_eq!(c.log_dir, PathBuf::from("from-flag"));
        assert_eq!(c.projector_batch, 9);
        assert_eq!(c.store_dir, PathBuf::from("store-file"));
        assert_eq!(c.cassandra.keyspace, "ks_file");
        assert_eq!(c.store, StoreKind::Embedded);
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    }

    #[test]
    fn bad_input_is_an_error_that_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "log_dri = \"x\"\n").unwrap();
        let err = resolve(Some(&path), &HashMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_dri"), "{err}");
        std::fs::write(&path, "[cassandra]\nconsistency = \"MOST\"\n").unwrap();
        let err = resolve(Some(&path), &HashMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MOST") && err.contains("LOCAL_QUORUM"),
            "{err}"
        );
        let env = HashMap::from([("ECOM_PROJECTOR_BATCH", "lots".to_owned())]);
        let err = resolve(None, &env, &[]).unwrap_err().to_string();
        assert!(
            err.contains("ECOM_PROJECTOR_BATCH") && err.contains("whole number"),
            "{err}"
        );
        let missing = dir.path().join("nope.toml");
        let err = resolve(Some(&missing), &HashMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.toml") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn the_readme_table_is_rendered_from_the_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- settings: begin -->\n", "<!-- settings: end -->");
        let start = readme.find(begin).expect("README has the settings markers") + begin.len();
        let stop = readme[start..]
            .find(end)
            .expect("README has the end marker")
            + start;
        let want = readme_table();
        if readme[start..stop] != want {
            if std::env::var_os("ECOM_UPDATE_README").is_some() {
                std::fs::write(
                    &path,
                    format!("{}{want}{}", &readme[..start], &readme[stop..]),
                )
                .unwrap();
                return;
            }
            panic!(
                "the README's configuration table is stale: rerun with ECOM_UPDATE_README=1 to rewrite it from SETTINGS\nwant:\n{want}"
            );
        }
    }

    #[test]
    fn every_listed_flag_exists_and_the_cli_is_consistent() {
        crate::Cli::command().debug_assert();
        let cmd = crate::Cli::command();
        for s in SETTINGS {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_id() == s.arg_id().as_str()),
                "{} is listed for {} but the CLI has no such flag",
                s.flag,
                s.key
            );
        }
        let m = cmd
            .try_get_matches_from(["ecom-pipeline", "status"])
            .unwrap();
        crate::Cli::from_arg_matches(&m).unwrap();
    }
}
