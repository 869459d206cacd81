//! One writer per run directory: two local commands training into the same directory (the
//! same experiment started twice, a `train --resume` beside a `run`) would interleave their
//! metrics and overwrite each other's checkpoints. An advisory lock (`flock`) on
//! `DIR/.stepwise.lock`, held while the process writes there, refuses the second; the
//! kernel releases it however the holder ends, so a crash leaves no stale lock behind.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

const LOCK_FILE: &str = ".stepwise.lock";

/// The lock of a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _held: Option<File>,
}

/// Locks `dir` for this process, or says which process holds it. Where the file system
/// has no locks (some network mounts), warns and goes on unlocked.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "{} is being written by another stepwise process{holder}: wait for it to end, \
                 or choose another --out",
                dir.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            tracing::warn!(
                "{}: not locked ({e}); two processes writing this directory would mix their files",
                path.display()
            );
            return Ok(DirLock { _held: None });
        }
    }
    // The holder's pid, for the message above; the lock, not the contents, is what counts.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(DirLock { _held: Some(file) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_granted_once_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts
        // as another process's would.
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another stepwise process"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        lock_dir(dir.path()).unwrap();
    }
}
