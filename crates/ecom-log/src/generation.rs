//! Which sled database in the log directory is the log: generations.
//!
//! sled 0.34 does not give disk space back when keys are removed (pruning
//! 30 000 archived entries grew the directory from 47.7 to 62.0 MB, and a
//! reopen did not shrink it). The only way to return space is to write the
//! live keys into a fresh database and delete the old one whole:
//! [`Log::compact`](crate::Log::compact) does that, and this module is the
//! naming and switching it relies on.
//!
//! ```text
//! <dir>/db/          generation 0: every log starts here
//! <dir>/db.<n>/      generation n, written by the n-th compaction
//! <dir>/CURRENT      "db.<n>\n": the generation that is the log (absent: db)
//! ```
//!
//! Switching is one atomic rename of `CURRENT.tmp` over `CURRENT`, after the
//! new generation is durable and before anything is written to it, so a
//! crash at any point leaves `CURRENT` naming a complete generation. Every
//! other generation directory is garbage: [`remove_stale`] deletes it when
//! the log is opened (a compaction interrupted before or after its switch).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::LogError;
use crate::writer::{Durability, sync_dir};

const CURRENT: &str = "CURRENT";
const CURRENT_TMP: &str = "CURRENT.tmp";
const FIRST: &str = "db";

/// One open sled database of the log and the files to fsync for it.
pub(crate) struct Generation {
    /// Its directory name inside the log directory (`db`, `db.<n>`).
    pub(crate) name: String,
    pub(crate) db: sled::Db,
    pub(crate) durability: Durability,
}

impl Generation {
    /// Opens (creating if missing) generation `name` of the log in `dir`.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        cache_capacity_bytes: u64,
    ) -> Result<Generation, LogError> {
        let db_dir = dir.join(name);
        let db = crate::open_sled(
            dir,
            sled::Config::new()
                .path(&db_dir)
                .cache_capacity(cache_capacity_bytes)
                .flush_every_ms(None),
        )?;
        let durability = Durability::new(&db_dir).map_err(LogError::io(&db_dir.join("db")))?;
        Ok(Generation {
            name: name.to_string(),
            db,
            durability,
        })
    }

    /// The generation number: 0 for `db`, n for `db.<n>`.
    pub(crate) fn number(&self) -> u64 {
        number(&self.name).unwrap_or(0)
    }
}

fn number(name: &str) -> Option<u64> {
    if name == FIRST {
        return Some(0);
    }
    name.strip_prefix("db.")?.parse().ok()
}

/// The name of the generation `n`.
pub(crate) fn name(n: u64) -> String {
    if n == 0 {
        FIRST.to_string()
    } else {
        format!("db.{n}")
    }
}

/// The generation `CURRENT` names (`db` when there is no `CURRENT`).
pub(crate) fn current(dir: &Path) -> Result<String, LogError> {
    let path = dir.join(CURRENT);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FIRST.to_string()),
        Err(e) => return Err(LogError::io(&path)(e)),
    };
    let name = text.trim_end_matches('\n');
    if number(name).is_none() || name.contains('/') {
        return Err(LogError::Damaged {
            dir: dir.to_path_buf(),
            file: path,
            reason: format!("names {name:?}, which is not a log generation (db or db.<n>)"),
        });
    }
    if !dir.join(name).is_dir() {
        return Err(LogError::Damaged {
            dir: dir.to_path_buf(),
            file: path,
            reason: format!("names generation {name}, but {name}/ is missing"),
        });
    }
    Ok(name.to_string())
}

/// The sled directory of the log in `dir` (for tools that open it raw).
pub(crate) fn current_db_dir(dir: &Path) -> Result<PathBuf, LogError> {
    Ok(dir.join(current(dir)?))
}

/// How far [`switch`] got when it failed.
pub(crate) enum SwitchError {
    /// `CURRENT` still names the old generation.
    NotSwitched(LogError),
    /// `CURRENT` was renamed, but the directory fsync that makes the rename
    /// durable failed: after a crash either generation may be the log.
    NotDurable(LogError),
}

/// Makes `name` the log's generation: durable once this returns.
pub(crate) fn switch(dir: &Path, name: &str) -> Result<(), SwitchError> {
    let tmp = dir.join(CURRENT_TMP);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(format!("{name}\n").as_bytes())?;
        file.sync_all()
    });
    written.map_err(|e| SwitchError::NotSwitched(LogError::io(&tmp)(e)))?;
    let path = dir.join(CURRENT);
    std::fs::rename(&tmp, &path).map_err(|e| SwitchError::NotSwitched(LogError::io(&path)(e)))?;
    sync_dir(dir).map_err(SwitchError::NotDurable)
}

/// Deletes every generation directory except `keep`, and a leftover
/// `CURRENT.tmp`. Returns the names removed.
pub(crate) fn remove_stale(dir: &Path, keep: &str) -> Result<Vec<String>, LogError> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = entry.path();
        if name == CURRENT_TMP {
            std::fs::remove_file(&path).map_err(LogError::io(&path))?;
        } else if name != keep && number(&name).is_some() && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(LogError::io(&path))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_is_a_generation() {
        assert_eq!(number(&name(0)), Some(0));
        assert_eq!(number(&name(7)), Some(7));
        for other in ["db.", "db.x", "dbx", "LOCK", "HIGH_WATER", "db.-1"] {
            assert_eq!(number(other), None, "{other}");
        }
    }

    #[test]
    fn current_defaults_to_db_and_refuses_a_bad_or_dangling_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current(dir.path()).unwrap(), "db");
        std::fs::write(dir.path().join(CURRENT), "db.3\n").unwrap();
        let e = current(dir.path()).unwrap_err().to_string();
        assert!(e.contains("db.3/ is missing"), "{e}");
        std::fs::create_dir(dir.path().join("db.3")).unwrap();
        assert_eq!(current(dir.path()).unwrap(), "db.3");
        std::fs::write(dir.path().join(CURRENT), "../elsewhere\n").unwrap();
        let e = current(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a log generation"), "{e}");
    }

    #[test]
    fn switch_then_remove_stale_keeps_only_the_current_generation() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["db", "db.1", "db.2", "elsewhere"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        assert!(switch(dir.path(), "db.1").is_ok());
        assert_eq!(current(dir.path()).unwrap(), "db.1");
        // A switch to db.2 cut short before its rename.
        std::fs::write(dir.path().join(CURRENT_TMP), "db.2\n").unwrap();
        let mut removed = remove_stale(dir.path(), "db.1").unwrap();
        removed.sort();
        assert_eq!(removed, ["db", "db.2"]);
        assert!(dir.path().join("db.1").is_dir());
        assert!(dir.path().join("elsewhere").is_dir());
        assert!(!dir.path().join(CURRENT_TMP).exists());
    }
}
