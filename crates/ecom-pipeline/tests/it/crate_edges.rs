//! The crate graph is the one ARCHITECTURE.md documents.
//!
//! Its "Crate edges" table says which ecom crates each crate depends on
//! (and what it must not know). This reads that table and every crate's
//! `[dependencies]` and fails on any difference, in either direction, so an
//! edge such as a source depending on ingest cannot come back unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/ecom-pipeline sits two levels below the repository root")
}

/// `crate -> ecom crates it depends on`, from ARCHITECTURE.md's table.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let table = text
        .split("<!-- crate-edges: begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- crate-edges: end -->").next())
        .expect("ARCHITECTURE.md has the crate-edges markers");
    let mut out = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let deps = cells[2]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_owned())
            .filter(|d| d.starts_with("ecom-"))
            .collect();
        out.insert(name, deps);
    }
    out
}

/// `crate -> ecom crates in its [dependencies]`, from the manifests.
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Table = text.parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_owned();
        let deps = doc
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("ecom-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, deps);
    }
    out
}

#[test]
fn every_crate_depends_on_what_architecture_md_says_and_nothing_else() {
    let (documented, actual) = (documented(), actual());
    assert!(
        documented.len() >= 10,
        "the table was not parsed: {documented:?}"
    );
    let mut differences = Vec::new();
    for name in documented
        .keys()
        .chain(actual.keys())
        .collect::<BTreeSet<_>>()
    {
        match (documented.get(name), actual.get(name)) {
            (Some(d), Some(a)) if d == a => {}
            (Some(d), Some(a)) => differences.push(format!(
                "{name}: documented {d:?}, Cargo.toml has {a:?} (extra: {:?}, missing: {:?})",
                a.difference(d).collect::<Vec<_>>(),
                d.difference(a).collect::<Vec<_>>()
            )),
            (Some(_), None) => differences.push(format!("{name}: documented, but no such crate")),
            (None, _) => differences.push(format!("{name}: a crate missing from the table")),
        }
    }
    assert!(
        differences.is_empty(),
        "ARCHITECTURE.md's crate edges and the manifests differ (change the table only if the new edge is intended):\n{}",
        differences.join("\n")
    );
}
