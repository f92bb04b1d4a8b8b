//! Logs with awkward messages, and archives on every kind of store: a
//! local directory, `InMemory`, and a real S3 server (the one
//! `scripts/fake-s3.sh` starts) when `ECOM_OBJECT_STORE` names it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use ecom_archive::Archive;
use ecom_core::{RawMessage, Topic};
use ecom_log::{Incoming, Log, LogOptions};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use tempfile::TempDir;

pub const INSTANCE: &str = "instance-a";

pub fn per_segment(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// An archive and direct access to its store (to damage it).
pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn ObjectStore>,
    pub archive: Archive,
    /// The local directory, for the local backend.
    pub dir: Option<PathBuf>,
    _tmp: Option<TempDir>,
}

/// The stores every scenario runs on: a local directory (through
/// `Archive::local`), `InMemory`, and a fresh bucket on the S3 server at
/// `ECOM_OBJECT_STORE`, with the archive under a prefix (skipped when the
/// variable is unset, unless `CI` or `ECOM_REQUIRE_OBJECT_STORE=1` require
/// it: then the test fails).
pub fn backends() -> Vec<Backend> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let local = Archive::local(&dir, INSTANCE).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut backends = vec![
        Backend {
            name: "local",
            store,
            archive: local,
            dir: Some(dir),
            _tmp: Some(tmp),
        },
        Backend {
            name: "memory",
            store: memory.clone(),
            archive: Archive::new(memory, INSTANCE).unwrap(),
            dir: None,
            _tmp: None,
        },
    ];
    if let Some(endpoint) = object_store_endpoint() {
        let store = s3_store(&endpoint, &new_bucket(&endpoint), Some("ecom/archive"));
        backends.push(Backend {
            name: "s3",
            store: store.clone(),
            archive: Archive::new(store, INSTANCE).unwrap(),
            dir: None,
            _tmp: None,
        });
    }
    backends
}

/// The S3 server's endpoint from `ECOM_OBJECT_STORE`, or `None` to skip
/// the S3 backend (never when `CI` or `ECOM_REQUIRE_OBJECT_STORE=1`).
pub fn object_store_endpoint() -> Option<String> {
    match std::env::var("ECOM_OBJECT_STORE") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ => {
            let required = std::env::var("CI").is_ok()
                || std::env::var("ECOM_REQUIRE_OBJECT_STORE").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "ECOM_OBJECT_STORE is not set but CI or ECOM_REQUIRE_OBJECT_STORE=1 requires the \
                 object-storage tests: run scripts/fake-s3.sh start and export what it prints"
            );
            eprintln!(
                "skipping the S3 backend: ECOM_OBJECT_STORE is not set (scripts/fake-s3.sh start)"
            );
            None
        }
    }
}

/// A bucket name no other test (of this run or an earlier one against the
/// same server) has used.
pub fn unique_bucket_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "ecom-archive-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh bucket on the server (`PUT /<bucket>`, path style; the
/// test server checks no signature) and returns its name.
pub fn new_bucket(endpoint: &str) -> String {
    use std::io::{Read, Write};
    let bucket = unique_bucket_name();
    let host = endpoint
        .strip_prefix("http://")
        .expect("ECOM_OBJECT_STORE is http://host:port")
        .trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host)
        .unwrap_or_else(|e| panic!("S3 server at {endpoint} (ECOM_OBJECT_STORE): {e}"));
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {answer}"
    );
    bucket
}

/// An S3 client for `bucket` on the test server, optionally under a prefix.
pub fn s3_store(endpoint: &str, bucket: &str, prefix: Option<&str>) -> Arc<dyn ObjectStore> {
    let s3 = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id("ecom-test")
        .with_secret_access_key("ecom-test-secret")
        .build()
        .unwrap();
    match prefix {
        Some(prefix) => Arc::new(PrefixStore::new(s3, prefix)),
        None => Arc::new(s3),
    }
}

pub fn open_log(dir: &FsPath) -> Log {
    Log::open(dir, LogOptions::default()).expect("open log")
}

/// Message `i`: alternating topics, and every third one with bytes that
/// are neither UTF-8 nor JSON, attributes with quotes, a newline and
/// non-ASCII text.
pub fn message(i: u64) -> RawMessage {
    let topic = if i.is_multiple_of(2) {
        Topic::Orders
    } else {
        Topic::Payments
    };
    let data = if i.is_multiple_of(3) {
        vec![0xff, 0xfe, 0x00, b'\n', 0x80, i as u8]
    } else {
        format!(r#"{{"order_id": {i}, "item": "Laptop \"15\"", "price": 734.2183}}"#).into_bytes()
    };
    RawMessage {
        message_id: format!("msg-{i}"),
        topic,
        publish_time_us: 1_705_800_000_000_000 + i as i64,
        data,
        attributes: BTreeMap::from([
            (
                "origin".to_string(),
                "test \"quoted\"\nsecond line".to_string(),
            ),
            ("région".to_string(), format!("é-{i}-😀")),
        ]),
    }
}

/// Appends entries `0..entries` and `quarantined` rejected messages (their
/// ids continue after the entries'), in small batches so that appended_at
/// differs between group commits.
pub async fn fill(log: &Log, entries: u64, quarantined: u64) {
    for chunk in (0..entries).collect::<Vec<_>>().chunks(7) {
        let batch = chunk.iter().map(|&i| Incoming::Valid(message(i))).collect();
        log.append(batch).await.unwrap();
    }
    let batch = (0..quarantined)
        .map(|q| {
            let mut m = message(entries + q);
            m.data = vec![0xc3, 0x28, b'{', q as u8];
            Incoming::Rejected(
                m,
                format!("malformed message {q}: expected value at line 1"),
            )
        })
        .collect();
    log.append(batch).await.unwrap();
}

/// Every object in the store with its bytes, sorted by path.
pub async fn objects(store: &dyn ObjectStore) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((meta.location.to_string(), bytes.to_vec()));
    }
    out.sort();
    out
}

/// The path of an entries object, as the crate docs lay it out.
pub fn entries_path(first: u64, last: u64, suffix: &str) -> Path {
    Path::from(format!("{INSTANCE}/entries/{first:020}-{last:020}{suffix}"))
}
