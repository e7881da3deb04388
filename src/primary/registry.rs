//! One [`Primary`] per database file in the process: every connection that opens the file
//! as a primary shares its shipper.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Primary;
use crate::config::Config;
use crate::error::{Error, Result};

static PRIMARIES: Mutex<Option<HashMap<PathBuf, Weak<Primary>>>> = Mutex::new(None);

/// The primary of `db_path` for a new connection, started now (restoring or snapshotting
/// first, as its state requires) if no connection has it open.
///
/// A primary whose last connection has closed lives on while its tasks finish a round. A
/// new connection waits for it to go (up to `open_timeout`), so that an open after the last
/// close starts from the files on disk with its own settings, as in a new process.
pub fn open(db_path: &Path, config: &Config) -> Result<Arc<Primary>> {
    let deadline = Instant::now() + config.open_timeout;
    loop {
        let mut guard = PRIMARIES.lock();
        let map = guard.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        let p = match map.get(db_path).and_then(Weak::upgrade) {
            Some(p) if p.connections.load(Ordering::SeqCst) == 0 && Instant::now() < deadline => {
                drop(p);
                drop(guard);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Some(p) if p.config.replica_url != config.replica_url => {
                return Err(Error::config(
                    "replica_url",
                    format!(
                        "{} is already open as the primary of {}",
                        db_path.display(),
                        p.config.replica_url
                    ),
                ));
            }
            Some(p) => p,
            None => {
                let p = super::startup::start(db_path, config)?;
                map.insert(db_path.to_path_buf(), Arc::downgrade(&p));
                p
            }
        };
        p.connection_opened();
        return Ok(p);
    }
}

/// The open primary whose WAL is `wal_path`, if any.
pub fn by_wal(wal_path: &Path) -> Option<Arc<Primary>> {
    let db = wal_path.to_str()?.strip_suffix("-wal")?;
    let map = PRIMARIES.lock();
    map.as_ref()?.get(Path::new(db)).and_then(Weak::upgrade)
}

/// Whether `path` is the WAL, shm or journal of an open primary (SQLite asks whether they
/// exist; for a replica they never do).
pub fn is_primary_side_file(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    let db = ["-wal", "-shm", "-journal"]
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix));
    let Some(db) = db else { return false };
    let map = PRIMARIES.lock();
    map.as_ref()
        .and_then(|m| m.get(Path::new(db)))
        .is_some_and(|w| w.strong_count() > 0)
}
