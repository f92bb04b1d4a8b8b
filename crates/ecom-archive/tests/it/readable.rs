//! A segment is readable without us: gzip and JSON lines, as an analyst
//! reads it with `zcat | jq`. This reads the local files with flate2 and
//! serde_json alone and checks every documented field.

use std::io::{BufRead, BufReader};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ecom_archive::SegmentKind;
use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::Digest;

use crate::support::{INSTANCE, backends, fill, message, open_log, per_segment};

/// The names of the files in `dir`, sorted.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn segments_are_gzip_json_lines_with_the_documented_fields() {
    let backend = backends().into_iter().find(|b| b.name == "local").unwrap();
    let root = backend.dir.clone().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = open_log(log_dir.path());
    fill(&log, 6, 2).await;
    backend.archive.seal(&log, 6, per_segment(4)).await.unwrap();
    let entries = log.read_from(0, 6).unwrap();

    let entries_dir = root.join(INSTANCE).join("entries");
    assert_eq!(
        file_names(&entries_dir),
        [
            "00000000000000000000-00000000000000000003.jsonl.gz",
            "00000000000000000000-00000000000000000003.manifest.json",
            "00000000000000000004-00000000000000000005.jsonl.gz",
            "00000000000000000004-00000000000000000005.manifest.json",
        ]
    );

    let mut seq = 0;
    for stem in [
        "00000000000000000000-00000000000000000003",
        "00000000000000000004-00000000000000000005",
    ] {
        let data = std::fs::read(entries_dir.join(format!("{stem}.jsonl.gz"))).unwrap();
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(entries_dir.join(format!("{stem}.manifest.json"))).unwrap(),
        )
        .unwrap();
        let sha: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest["sha256"], sha.as_str());
        assert_eq!(manifest["bytes"], data.len());
        assert_eq!(manifest["kind"], "entries");
        assert_eq!(manifest["instance"], INSTANCE);
        assert_eq!(manifest["format_version"], 1);

        let lines: Vec<String> = BufReader::new(GzDecoder::new(data.as_slice()))
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(manifest["count"], lines.len());
        assert_eq!(manifest["first_seq"], seq);
        for line in lines {
            let json: Value = serde_json::from_str(&line).unwrap();
            let expected = message(seq);
            // serde_json's Value sorts keys: read their order from the text.
            let positions: Vec<usize> = [
                "seq",
                "appended_at_ms",
                "message_id",
                "topic",
                "publish_time_us",
                "attributes",
                "data_base64",
            ]
            .iter()
            .map(|key| line.find(&format!("\"{key}\":")).expect(key))
            .collect();
            assert!(positions.is_sorted(), "documented order: {line}");
            assert_eq!(
                json.as_object().unwrap().len(),
                7,
                "documented fields only, no reason for an entry: {line}"
            );
            assert_eq!(json["seq"], seq);
            assert_eq!(json["appended_at_ms"], entries[seq as usize].appended_at_ms);
            assert_eq!(json["message_id"], expected.message_id.as_str());
            assert_eq!(json["topic"], expected.topic.name());
            assert_eq!(json["publish_time_us"], expected.publish_time_us);
            assert_eq!(json["attributes"]["origin"], "test \"quoted\"\nsecond line");
            assert_eq!(json["attributes"]["région"], format!("é-{seq}-😀").as_str());
            let data = STANDARD
                .decode(json["data_base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(data, expected.data);
            seq += 1;
        }
        assert_eq!(manifest["last_seq"], seq - 1);
    }
    assert_eq!(seq, 6);

    let quarantine_dir = root.join(INSTANCE).join(SegmentKind::Quarantine.as_str());
    let data =
        std::fs::read(quarantine_dir.join("00000000000000000000-00000000000000000001.jsonl.gz"))
            .unwrap();
    let lines: Vec<Value> = BufReader::new(GzDecoder::new(data.as_slice()))
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["seq"], 1);
    assert_eq!(
        lines[1]["reason"],
        "malformed message 1: expected value at line 1"
    );
    assert_eq!(lines[1]["message_id"], "msg-7");
    assert_eq!(
        STANDARD
            .decode(lines[1]["data_base64"].as_str().unwrap())
            .unwrap(),
        [0xc3, 0x28, b'{', 1]
    );
}
