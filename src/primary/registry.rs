//! One [`Primary`] per database file in the process: every connection that opens the file
//! as a primary shares its shipper.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Primary;
use crate::config::Config;
use crate::error::{Error, Result};

static PRIMARIES: Mutex<Option<HashMap<PathBuf, Weak<Primary>>>> = Mutex::new(None);

/// The primary of `db_path`, started now (restoring or snapshotting first, as its state
/// requires) if no connection has it open.
pub fn open(db_path: &Path, config: &Config) -> Result<Arc<Primary>> {
    let mut map = PRIMARIES.lock();
    let map = map.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(p) = map.get(db_path).and_then(Weak::upgrade) {
        if p.config.replica_url != config.replica_url {
            return Err(Error::config(
                "replica_url",
                format!(
                    "{} is already open as the primary of {}",
                    db_path.display(),
                    p.config.replica_url
                ),
            ));
        }
        return Ok(p);
    }
    let p = super::startup::start(db_path, config)?;
    map.insert(db_path.to_path_buf(), Arc::downgrade(&p));
    Ok(p)
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
