//! Who ships: of all the processes that open a database as a primary, exactly one — the
//! leader — copies its WAL and uploads. It is the process holding an exclusive lock (flock)
//! on `<db>-litestream/lock`; the kernel releases it when the process exits or is killed, and
//! another process takes it over (`registry.rs` retries every `TAKEOVER_POLL`).
//!
//! A second lock, `start.lock`, is held while a process starts up as the leader (it may
//! restore the database file): a process opening the database meanwhile waits for it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a follower tries to become the leader.
pub const TAKEOVER_POLL: Duration = Duration::from_millis(200);

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn lock_path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("lock")
}

/// The leader's lock, held until dropped.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

/// Becomes the leader if no process is: Some(lease) then, None when another process leads.
pub fn try_lead(meta_dir: &Path) -> Result<Option<Lease>> {
    let path = lock_path(meta_dir);
    let file = open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lease { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// Whether some process (this one included) is the leader now.
pub fn leader_alive(meta_dir: &Path) -> Result<bool> {
    Ok(try_lead(meta_dir)?.is_none())
}

/// Held while a process starts up as the leader, or checks that none is starting.
pub struct StartGuard {
    _file: File,
}

/// Waits (up to `timeout`) until no other process is starting up as the leader.
pub fn start_guard(meta_dir: &Path, timeout: Duration) -> Result<StartGuard> {
    let path = meta_dir.join("start.lock");
    let file = open(&path)?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(StartGuard { _file: file }),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Timeout {
                    what: format!(
                        "waiting for another process to start up ({})",
                        path.display()
                    ),
                    after: timeout,
                })
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_at_a_time_and_the_next_when_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!leader_alive(dir.path()).unwrap());
        let first = try_lead(dir.path()).unwrap().expect("nobody leads yet");
        assert!(try_lead(dir.path()).unwrap().is_none(), "one leader");
        assert!(leader_alive(dir.path()).unwrap());
        drop(first);
        assert!(try_lead(dir.path()).unwrap().is_some(), "taken over");

        let g = start_guard(dir.path(), Duration::from_secs(1)).unwrap();
        let t = Instant::now();
        assert!(start_guard(dir.path(), Duration::from_millis(50)).is_err());
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(g);
        start_guard(dir.path(), Duration::from_millis(50)).unwrap();
    }
}
