//! The archive's file format, sans-io: object names, encoding a segment
//! (data file and manifest) from log records, and checking and decoding one.
//!
//! Everything here works on bytes and values so that every rule of the
//! format (documented in the crate root) is testable without a store.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ecom_core::{RawMessage, Topic};
use ecom_log::{LogEntry, Quarantined};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ArchiveError;

/// The `format_version` of the manifests (and data files) this crate writes
/// and reads. Bump it on any change to the layout, the lines or the manifest.
pub const FORMAT_VERSION: u32 = 1;

const DATA_SUFFIX: &str = ".jsonl.gz";
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Which of the log's two sequences a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    /// Log entries (the messages the projector applies).
    Entries,
    /// Quarantined (rejected) messages, with their reason.
    Quarantine,
}

impl SegmentKind {
    /// The folder under `<instance>/`, also the manifest's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Entries => "entries",
            SegmentKind::Quarantine => "quarantine",
        }
    }
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one sealed segment holds; the JSON of `<name>.manifest.json`.
/// Field order is the order in the file (do not reorder fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub instance: String,
    pub kind: SegmentKind,
    /// First sequence number in the segment.
    pub first_seq: u64,
    /// Last sequence number in the segment (inclusive).
    pub last_seq: u64,
    /// Records in the segment, `last_seq - first_seq + 1`.
    pub count: u64,
    pub first_appended_at_ms: i64,
    pub last_appended_at_ms: i64,
    /// Size of the data file in bytes (compressed).
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the data file (compressed).
    pub sha256: String,
}

impl Manifest {
    /// Where its data file is.
    pub fn data_path(&self) -> Path {
        object_path(
            &self.instance,
            self.kind,
            self.first_seq,
            self.last_seq,
            DATA_SUFFIX,
        )
    }

    /// Where the manifest itself is.
    pub fn manifest_path(&self) -> Path {
        object_path(
            &self.instance,
            self.kind,
            self.first_seq,
            self.last_seq,
            MANIFEST_SUFFIX,
        )
    }

    /// The manifest's bytes: pretty JSON (people read manifests), one
    /// trailing newline.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            serde_json::to_vec_pretty(self).expect("a struct of strings and integers serializes");
        out.push(b'\n');
        out
    }

    /// Parses the manifest at `path` and checks it against its name and
    /// the archive it was listed in.
    pub(crate) fn parse(
        path: &Path,
        bytes: &[u8],
        instance: &str,
        kind: SegmentKind,
    ) -> Result<Manifest, ArchiveError> {
        let bad = |reason: String| ArchiveError::BadManifest {
            path: path.to_string(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not manifest JSON: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} (this program reads {FORMAT_VERSION}); use the version that wrote it",
                manifest.format_version
            )));
        }
        if manifest.instance != instance || manifest.kind != kind {
            return Err(bad(format!(
                "it describes the {} archive of instance {:?} but lies in the {kind} archive of {instance:?}",
                manifest.kind, manifest.instance
            )));
        }
        if manifest.first_seq > manifest.last_seq
            || manifest.count != manifest.last_seq - manifest.first_seq + 1
        {
            return Err(bad(format!(
                "count {} does not fit seqs {}..={}",
                manifest.count, manifest.first_seq, manifest.last_seq
            )));
        }
        if manifest.manifest_path() != *path {
            return Err(bad(format!(
                "its seqs {}..={} do not match its name",
                manifest.first_seq, manifest.last_seq
            )));
        }
        Ok(manifest)
    }
}

/// One record of a segment, as the log had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivedRecord {
    Entry(LogEntry),
    Quarantined(Quarantined),
}

impl ArchivedRecord {
    pub fn seq(&self) -> u64 {
        match self {
            ArchivedRecord::Entry(e) => e.seq,
            ArchivedRecord::Quarantined(q) => q.seq,
        }
    }

    pub fn appended_at_ms(&self) -> i64 {
        match self {
            ArchivedRecord::Entry(e) => e.appended_at_ms,
            ArchivedRecord::Quarantined(q) => q.appended_at_ms,
        }
    }

    pub fn message(&self) -> &RawMessage {
        match self {
            ArchivedRecord::Entry(e) => &e.message,
            ArchivedRecord::Quarantined(q) => &q.message,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            ArchivedRecord::Entry(_) => None,
            ArchivedRecord::Quarantined(q) => Some(&q.reason),
        }
    }
}

/// One line as written (do not reorder fields: the order is the format's).
#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    appended_at_ms: i64,
    message_id: &'a str,
    topic: &'static str,
    publish_time_us: i64,
    attributes: &'a BTreeMap<String, String>,
    data_base64: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// One line as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    seq: u64,
    appended_at_ms: i64,
    message_id: String,
    topic: String,
    publish_time_us: i64,
    attributes: BTreeMap<String, String>,
    data_base64: String,
    reason: Option<String>,
}

/// `<instance>/<kind>/<first:020>-<last:020><suffix>`.
fn object_path(instance: &str, kind: SegmentKind, first: u64, last: u64, suffix: &str) -> Path {
    Path::from_iter([
        instance.to_string(),
        kind.as_str().to_string(),
        format!("{first:020}-{last:020}{suffix}"),
    ])
}

/// The folder of one kind's objects.
pub(crate) fn kind_dir(instance: &str, kind: SegmentKind) -> Path {
    Path::from_iter([instance, kind.as_str()])
}

/// What an object's file name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectName {
    Data { first: u64, last: u64 },
    Manifest { first: u64, last: u64 },
}

/// Parses a file name of the layout; `None` for anything else (such
/// objects are not part of the archive and are left alone).
pub(crate) fn parse_name(file_name: &str) -> Option<ObjectName> {
    let (stem, manifest) = if let Some(stem) = file_name.strip_suffix(MANIFEST_SUFFIX) {
        (stem, true)
    } else {
        (file_name.strip_suffix(DATA_SUFFIX)?, false)
    };
    let (first, last) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    Some(if manifest {
        ObjectName::Manifest { first, last }
    } else {
        ObjectName::Data { first, last }
    })
}

/// Whether `instance` is one path segment of the layout.
pub(crate) fn valid_instance(instance: &str) -> bool {
    !instance.is_empty()
        && !instance.starts_with('.')
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encodes `records` (non-empty, consecutive sequence numbers, all of
/// `kind`) as a data file and its manifest.
pub(crate) fn encode_segment(
    instance: &str,
    kind: SegmentKind,
    records: &[ArchivedRecord],
) -> (Vec<u8>, Manifest) {
    let (first, last) = match (records.first(), records.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => panic!("encode_segment needs at least one record"),
    };
    // The gzip header's mtime stays 0 (GzEncoder's default): re-sealing the
    // same records after a crash writes the same bytes.
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq(),
            first.seq() + i as u64,
            "segments hold consecutive records"
        );
        assert_eq!(
            record.reason().is_some(),
            kind == SegmentKind::Quarantine,
            "a segment holds one kind of record"
        );
        let message = record.message();
        let line = LineOut {
            seq: record.seq(),
            appended_at_ms: record.appended_at_ms(),
            message_id: &message.message_id,
            topic: message.topic.name(),
            publish_time_us: message.publish_time_us,
            attributes: &message.attributes,
            data_base64: BASE64.encode(&message.data),
            reason: record.reason(),
        };
        // Writing into a Vec cannot fail, and the line is strings and
        // integers only.
        serde_json::to_writer(&mut gz, &line).expect("a line serializes into memory");
        gz.write_all(b"\n").expect("writing to memory");
    }
    let data = gz.finish().expect("gzip into memory");
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        instance: instance.to_string(),
        kind,
        first_seq: first.seq(),
        last_seq: last.seq(),
        count: records.len() as u64,
        first_appended_at_ms: first.appended_at_ms(),
        last_appended_at_ms: last.appended_at_ms(),
        bytes: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    (data, manifest)
}

/// Checks the data file `bytes` against `manifest` and decodes its records.
pub(crate) fn decode_segment(
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<Vec<ArchivedRecord>, ArchiveError> {
    let path = manifest.data_path().to_string();
    if bytes.len() as u64 != manifest.bytes {
        return Err(ArchiveError::SizeMismatch {
            path,
            expected: manifest.bytes,
            actual: bytes.len() as u64,
        });
    }
    let actual = sha256_hex(bytes);
    if actual != manifest.sha256 {
        return Err(ArchiveError::ChecksumMismatch {
            path,
            expected: manifest.sha256.clone(),
            actual,
        });
    }
    let mut text = Vec::new();
    let mut gz = GzDecoder::new(bytes);
    gz.read_to_end(&mut text)
        .map_err(|e| ArchiveError::BadData {
            path: path.clone(),
            reason: format!("not one complete gzip stream: {e}"),
        })?;
    // GzDecoder reads one member; anything after it is not ours.
    if !gz.into_inner().is_empty() {
        return Err(ArchiveError::BadData {
            path,
            reason: "bytes follow the gzip stream".to_string(),
        });
    }
    if !text.is_empty() && text.last() != Some(&b'\n') {
        return Err(ArchiveError::BadData {
            path,
            reason: "the last line has no newline".to_string(),
        });
    }
    let mut records = Vec::with_capacity(manifest.count as usize);
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let bad = |reason: String| ArchiveError::BadLine {
            path: path.clone(),
            line: i + 1,
            reason,
        };
        let expected_seq = manifest.first_seq + i as u64;
        let record = decode_line(line, manifest.kind).map_err(bad)?;
        if record.seq() != expected_seq {
            return Err(bad(format!(
                "seq {} where seq {expected_seq} belongs",
                record.seq()
            )));
        }
        records.push(record);
    }
    if records.len() as u64 != manifest.count {
        return Err(ArchiveError::CountMismatch {
            path,
            expected: manifest.count,
            found: records.len() as u64,
        });
    }
    Ok(records)
}

fn decode_line(line: &[u8], kind: SegmentKind) -> Result<ArchivedRecord, String> {
    let line: LineIn = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let topic =
        Topic::from_name(&line.topic).ok_or_else(|| format!("unknown topic {:?}", line.topic))?;
    let data = BASE64
        .decode(&line.data_base64)
        .map_err(|e| format!("data_base64 is not standard base64: {e}"))?;
    let message = RawMessage {
        message_id: line.message_id,
        topic,
        publish_time_us: line.publish_time_us,
        data,
        attributes: line.attributes,
    };
    match (kind, line.reason) {
        (SegmentKind::Entries, None) => Ok(ArchivedRecord::Entry(LogEntry {
            seq: line.seq,
            message,
            appended_at_ms: line.appended_at_ms,
        })),
        (SegmentKind::Quarantine, Some(reason)) => Ok(ArchivedRecord::Quarantined(Quarantined {
            seq: line.seq,
            message,
            reason,
            appended_at_ms: line.appended_at_ms,
        })),
        (SegmentKind::Entries, Some(_)) => {
            Err("an entry with a `reason` (quarantine field)".into())
        }
        (SegmentKind::Quarantine, None) => Err("a quarantined record without `reason`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> ArchivedRecord {
        ArchivedRecord::Entry(LogEntry {
            seq,
            message: RawMessage {
                message_id: format!("m{seq}"),
                topic: Topic::Payments,
                publish_time_us: 1_705_800_000_000_000,
                data: vec![0xff, 0x00, b'{'],
                attributes: BTreeMap::from([("k".to_string(), "v\n\"w\"".to_string())]),
            },
            appended_at_ms: 1_705_800_000_123,
        })
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn one_line_is_pinned() {
        let (data, manifest) = encode_segment("a", SegmentKind::Entries, &[entry(7)]);
        assert_eq!(
            gunzip(&data),
            concat!(
                r#"{"seq":7,"appended_at_ms":1705800000123,"message_id":"m7","topic":"payments_data","#,
                r#""publish_time_us":1705800000000000,"attributes":{"k":"v\n\"w\""},"data_base64":"/wB7"}"#,
                "\n"
            )
        );
        assert_eq!(
            manifest.data_path().as_ref(),
            "a/entries/00000000000000000007-00000000000000000007.jsonl.gz"
        );
        assert_eq!(
            manifest.manifest_path().as_ref(),
            "a/entries/00000000000000000007-00000000000000000007.manifest.json"
        );
        assert_eq!((manifest.count, manifest.bytes), (1, data.len() as u64));
        assert_eq!(manifest.sha256, sha256_hex(&data));
        assert_eq!(manifest.sha256.len(), 64);
    }

    #[test]
    fn the_manifest_json_is_pinned() {
        let (_, manifest) = encode_segment("i-1", SegmentKind::Entries, &[entry(0), entry(1)]);
        let text = String::from_utf8(manifest.to_bytes()).unwrap();
        // serde_json's Value sorts keys, so the order is read from the text.
        let positions: Vec<usize> = [
            "format_version",
            "instance",
            "kind",
            "first_seq",
            "last_seq",
            "count",
            "first_appended_at_ms",
            "last_appended_at_ms",
            "bytes",
            "sha256",
        ]
        .iter()
        .map(|key| text.find(&format!("\"{key}\":")).expect(key))
        .collect();
        assert!(positions.is_sorted(), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 10);
        assert_eq!(json["kind"], "entries");
        assert_eq!(json["format_version"], 1);
    }

    #[test]
    fn equal_records_encode_to_equal_bytes() {
        let records = [entry(3), entry(4)];
        assert_eq!(
            encode_segment("a", SegmentKind::Entries, &records),
            encode_segment("a", SegmentKind::Entries, &records)
        );
    }

    #[test]
    fn a_segment_decodes_to_its_records() {
        let records = vec![entry(5), entry(6), entry(7)];
        let (data, manifest) = encode_segment("a", SegmentKind::Entries, &records);
        assert_eq!(decode_segment(&manifest, &data).unwrap(), records);
    }

    #[test]
    fn a_manifest_must_match_its_name_and_place() {
        let (_, manifest) = encode_segment("a", SegmentKind::Entries, &[entry(5), entry(6)]);
        let path = manifest.manifest_path();
        let bytes = manifest.to_bytes();
        assert_eq!(
            Manifest::parse(&path, &bytes, "a", SegmentKind::Entries).unwrap(),
            manifest
        );
        let err = Manifest::parse(&path, &bytes, "a", SegmentKind::Quarantine).unwrap_err();
        assert!(
            err.to_string().contains("lies in the quarantine archive"),
            "{err}"
        );
        let elsewhere =
            Path::from("a/entries/00000000000000000005-00000000000000000009.manifest.json");
        let err = Manifest::parse(&elsewhere, &bytes, "a", SegmentKind::Entries).unwrap_err();
        assert!(err.to_string().contains("do not match its name"), "{err}");
    }

    #[test]
    fn names_parse_back_and_others_are_not_ours() {
        assert_eq!(
            parse_name("00000000000000000005-00000000000000000009.manifest.json"),
            Some(ObjectName::Manifest { first: 5, last: 9 })
        );
        assert_eq!(
            parse_name("00000000000000000005-00000000000000000009.jsonl.gz"),
            Some(ObjectName::Data { first: 5, last: 9 })
        );
        assert_eq!(parse_name("5-9.jsonl.gz"), None);
        assert_eq!(parse_name("README"), None);
    }

    #[test]
    fn instance_names_are_one_plain_segment() {
        assert!(valid_instance("instance-1.eu_west"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é"] {
            assert!(!valid_instance(bad), "{bad:?}");
        }
    }
}
