//! `<dir>/HIGH_WATER`: how far the log had got, kept outside sled, so that
//! a database file that lost its end is an error instead of a shorter log.
//!
//! sled recovers its file to the longest valid prefix: a truncated or
//! overwritten `db/db` opens cleanly, holding the log as of some earlier
//! group commit (or nothing at all, and an empty database is then a new
//! log). Every entry past that point was acknowledged and is gone without a
//! word. This file records the durable `next_seq` and `next_quarantine_seq`
//! when the log is opened (after its checks passed) and when it is closed
//! (after the final flush); [`check`] on the next open refuses a database
//! that holds less.
//!
//! It costs two small synced writes per open and close, nothing per append.
//! So it catches damage done while the log was closed, or before it was
//! last opened; a file that loses its end while the log is open, and the
//! process then dies without closing, is caught only back to the last
//! open. Format, one line: `next_seq <n> next_quarantine_seq <q>`.

use std::path::{Path, PathBuf};

use crate::LogError;
use crate::writer::sync_dir;

pub(crate) const FILE: &str = "HIGH_WATER";

/// The recorded marks: (next_seq, next_quarantine_seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    pub(crate) next_seq: u64,
    pub(crate) next_quarantine_seq: u64,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The recorded marks, `None` if there is no file (a log from before it
/// existed, or a new one). An unreadable file is an error: it is the
/// evidence.
pub(crate) fn read(dir: &Path) -> Result<Option<Marks>, LogError> {
    let file = path(dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&file)(e)),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        ["next_seq", n, "next_quarantine_seq", q] => match (n.parse(), q.parse()) {
            (Ok(next_seq), Ok(next_quarantine_seq)) => Ok(Some(Marks {
                next_seq,
                next_quarantine_seq,
            })),
            _ => Err(malformed(&file, &text)),
        },
        _ => Err(malformed(&file, &text)),
    }
}

fn malformed(file: &Path, text: &str) -> LogError {
    LogError::Damaged {
        dir: file.parent().unwrap_or(file).to_path_buf(),
        file: file.to_path_buf(),
        reason: format!(
            "it does not read `next_seq <n> next_quarantine_seq <q>` (found {:?})",
            text.chars().take(80).collect::<String>()
        ),
    }
}

/// Records `marks`: written to a temporary file, synced, renamed over the
/// old one, directory synced.
pub(crate) fn write(dir: &Path, marks: Marks) -> Result<(), LogError> {
    let file = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "next_seq {} next_quarantine_seq {}\n",
        marks.next_seq, marks.next_quarantine_seq
    );
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &file))
        .map_err(LogError::io(&file))?;
    sync_dir(dir)
}

/// What the database holds against what was recorded: `Err` names the lost
/// range when it holds less.
pub(crate) fn check(dir: &Path, recorded: Option<Marks>, found: Marks) -> Result<(), LogError> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    if found.next_seq >= recorded.next_seq
        && found.next_quarantine_seq >= recorded.next_quarantine_seq
    {
        return Ok(());
    }
    Err(LogError::Truncated {
        dir: dir.to_path_buf(),
        found_next_seq: found.next_seq,
        recorded_next_seq: recorded.next_seq,
        found_quarantine: found.next_quarantine_seq,
        recorded_quarantine: recorded.next_quarantine_seq,
    })
}
