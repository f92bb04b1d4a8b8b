//! One process owns a log directory: an exclusive `flock` on `<dir>/LOCK`
//! (via fs4), with the owner's pid written inside for error messages.
//!
//! `flock` locks belong to the open file description, so a second `open` of
//! the same directory in the same process takes a new descriptor and is
//! refused just like another process would be. The kernel drops the lock
//! when the descriptor closes, including when the process is killed, so a
//! stale `LOCK` file never blocks anyone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::LogError;

pub(crate) struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, LogError> {
        let path = dir.join("LOCK");
        // No truncation before we hold the lock: the pid inside belongs to
        // the holder until then.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LogError::io(&path))?;
        if !FileExt::try_lock_exclusive(&file).map_err(LogError::io(&path))? {
            return Err(LogError::Locked {
                dir: dir.to_path_buf(),
                pid: read_pid(&path),
            });
        }
        file.set_len(0).map_err(LogError::io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(LogError::io(&path))?;
        Ok(DirLock { file, path })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // We still hold the lock here, so clearing the pid cannot race with
        // a new owner. Closing the file (right after) releases the lock.
        if let Err(e) = self.file.set_len(0) {
            tracing::debug!(path = %self.path.display(), error = %e, "could not clear the pid in LOCK");
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
