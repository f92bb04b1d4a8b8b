//! Test helpers shared with other crates' test suites (cargo feature
//! `testing`; never in a normal build).
//!
//! [`SmallDisk`] exists because a full disk cannot be faked faithfully from
//! inside the process: sled writes through its own file handles and threads,
//! and what matters is what it does when the kernel answers `ENOSPC`. So
//! tests put the log on a real filesystem of a few MiB, a tmpfs mounted with
//! `size=`, let it fill, then enlarge it with `remount` and restart on the
//! same directory.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`). Where it fails, the tests skip
//! with the reason, unless `CI` is set or `ECOM_REQUIRE_CASSANDRA=1` or
//! `ECOM_REQUIRE_PUBSUB=1` is (a run that must prove everything): then they
//! fail with the exact error, because a CI run must not pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A size-limited tmpfs mounted on a fresh directory under the system's
/// temporary directory; unmounted (and the directory removed) on drop.
#[derive(Debug)]
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_bytes` for the test named `what`. `None`
    /// (after printing why) when this machine cannot mount one and the run
    /// does not require it.
    ///
    /// # Panics
    ///
    /// If mounting fails while `CI`, `ECOM_REQUIRE_CASSANDRA=1` or
    /// `ECOM_REQUIRE_PUBSUB=1` is set.
    pub fn mount(size_bytes: u64, what: &str) -> Option<SmallDisk> {
        match SmallDisk::try_mount(size_bytes) {
            Ok(disk) => Some(disk),
            Err(reason) if required() => panic!(
                "{what}: cannot mount a {size_bytes}-byte tmpfs, and this run must not skip \
                 (CI, ECOM_REQUIRE_CASSANDRA=1 or ECOM_REQUIRE_PUBSUB=1 is set): {reason}; run \
                 the tests as root (or with CAP_SYS_ADMIN)"
            ),
            Err(reason) => {
                eprintln!(
                    "skipping {what}: cannot mount a {size_bytes}-byte tmpfs ({reason}); it needs \
                     root or CAP_SYS_ADMIN"
                );
                None
            }
        }
    }

    /// Mounts, or says exactly what failed.
    pub fn try_mount(size_bytes: u64) -> Result<SmallDisk, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ecom-small-disk-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let size = format!("size={size_bytes}");
        if let Err(e) = mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], &path) {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        Ok(SmallDisk { path })
    }

    /// The mount point: put the log directory below it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the size, keeping the contents (`mount -o remount,size=`):
    /// the operator freeing space or moving to a bigger disk.
    ///
    /// # Panics
    ///
    /// If the remount fails.
    pub fn resize(&self, size_bytes: u64) {
        let options = format!("remount,size={size_bytes}");
        if let Err(e) = mount(&["-o", &options], &self.path) {
            panic!("cannot resize the tmpfs at {}: {e}", self.path.display());
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
            // Busy (a child process still has a file open): detach it now,
            // the kernel frees it when the last file closes.
            || Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
        if unmounted {
            let _ = std::fs::remove_dir(&self.path);
        } else {
            eprintln!(
                "could not unmount the test tmpfs at {}; unmount it by hand",
                self.path.display()
            );
        }
    }
}

fn mount(args: &[&str], path: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run `mount`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`mount {} {}` exited with {}: {}",
            args.join(" "),
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn required() -> bool {
    std::env::var_os("CI").is_some()
        || std::env::var("ECOM_REQUIRE_CASSANDRA").is_ok_and(|v| v == "1")
        || std::env::var("ECOM_REQUIRE_PUBSUB").is_ok_and(|v| v == "1")
}
