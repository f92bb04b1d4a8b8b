//! Logs with awkward messages, and archives on both kinds of store.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use ecom_archive::Archive;
use ecom_core::{RawMessage, Topic};
use ecom_log::{Incoming, Log, LogOptions};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
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

/// The two stores every scenario runs on: a local directory (through
/// `Archive::local`) and `InMemory`.
pub fn backends() -> Vec<Backend> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let local = Archive::local(&dir, INSTANCE).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    vec![
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
    ]
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
