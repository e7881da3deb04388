//! One [`Primary`] per database file in the process: every connection that opens the file
//! as a primary shares it. Creating one decides whether this process leads (`lease.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{lease, progress, startup, DbOpener, Primary};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::storage::url::Timeouts;
use crate::storage::Store;

static PRIMARIES: Registry<PathBuf, Primary> = Registry::new();

/// The primary of `db_path` for a new connection, started now if no connection of this
/// process has it open: as the leader when no process leads (restoring or snapshotting
/// first, as its state requires), else as a follower that takes over when the leader goes.
///
/// A primary whose last connection has closed lives on while its tasks finish a round. A
/// new connection waits for it to go (up to `open_timeout`), so that an open after the last
/// close starts from the files on disk with its own settings, as in a new process.
pub fn open(db_path: &Path, config: &Config, open_db: DbOpener) -> Result<Arc<Primary>> {
    let deadline = Instant::now() + config.open_timeout;
    loop {
        let p = match PRIMARIES.get(db_path) {
            Some(p) if p.connections.load(Ordering::SeqCst) == 0 && Instant::now() < deadline => {
                drop(p);
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
            // Other databases of the process go on while this one starts (it may wait for
            // another process, or restore); a connection that started it meanwhile wins.
            None => {
                PRIMARIES.insert_or_get(db_path.to_path_buf(), &start(db_path, config, open_db)?)
            }
        };
        p.connection_opened();
        return Ok(p);
    }
}

fn start(db_path: &Path, config: &Config, open_db: DbOpener) -> Result<Arc<Primary>> {
    let meta_dir = Primary::meta_dir_for(db_path, config);
    std::fs::create_dir_all(&meta_dir)
        .map_err(|e| Error::io(format!("creating {}", meta_dir.display()), e))?;
    let store = Arc::new(Store::open(
        &config.replica_url,
        Timeouts {
            retry_for: config.open_timeout,
        },
        config.age.clone(),
        &config.sse,
    )?);
    let p = Arc::new(Primary {
        db_path: db_path.to_path_buf(),
        meta_dir: meta_dir.clone(),
        wake_to: super::wake::Address::of(&meta_dir),
        checkpoint_asked: Mutex::new(None),
        restart_unanswered: Mutex::new(None),
        restarts: Default::default(),
        config: config.clone(),
        store,
        connections: AtomicUsize::new(0),
        leader: OnceLock::new(),
        db: Mutex::new(None),
        open_db,
        pinned: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        held_write: AtomicUsize::new(0),
        held_checkpoint: AtomicUsize::new(0),
        opened_at: std::time::SystemTime::now(),
        takeover: Default::default(),
        restored: Mutex::new(None),
    });
    // While a process starts up as the leader, the others wait: it may be restoring the
    // database file they are about to open.
    let guard = lease::start_guard(&meta_dir, config.open_timeout.max(Duration::from_secs(30)))?;
    match lease::try_lead(&meta_dir)? {
        Some(lease) => startup::lead(&p, lease, false)?,
        None => agree_with_leader(&p)?,
    }
    drop(guard);
    if !p.is_leader() {
        follow(&p)?;
    }
    if p.is_wal_mode() {
        p.wal_mode_ready();
    }
    Ok(p)
}

/// Settings that must be the same in every process of a database.
fn agree_with_leader(p: &Primary) -> Result<()> {
    let Some(published) = progress::read(&p.meta_dir)? else {
        return Ok(());
    };
    if !lease::leader_alive(&p.meta_dir)? {
        return Ok(());
    }
    if published.replica_url != p.config.replica_url {
        return Err(Error::config(
            "replica_url",
            format!(
                "{} is the primary of {} in process {}; every process must name the same replica",
                p.db_path.display(),
                published.replica_url,
                published.pid
            ),
        ));
    }
    if published.checksum != p.config.primary.checksum {
        return Err(Error::config(
            "checksum",
            format!(
                "process {} writes {} checksums for {}; every process must use the same setting",
                published.pid,
                if published.checksum {
                    "with"
                } else {
                    "without"
                },
                p.db_path.display()
            ),
        ));
    }
    Ok(())
}

/// A process that does not lead tries, every `TAKEOVER_POLL`, to become the leader (when
/// the leader exits or is killed, the kernel releases its lock), and at once when one of its
/// connections finds that no process leads (`Primary::takeover`).
fn follow(p: &Arc<Primary>) -> Result<()> {
    let rt = crate::runtime::handle()?;
    let weak = Arc::downgrade(p);
    let asked = p.takeover.clone();
    rt.spawn(async move {
        let mut warned = false;
        let mut failed = false;
        loop {
            // After a failed start-up, the next try waits the whole poll however often
            // connections ask (every refused restart asks).
            if std::mem::take(&mut failed) {
                tokio::time::sleep(lease::TAKEOVER_POLL).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(lease::TAKEOVER_POLL) => {}
                _ = asked.notified() => {}
            }
            let Some(p) = weak.upgrade() else { return };
            if p.is_leader() || p.connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            let outcome = tokio::task::spawn_blocking(move || -> Result<bool> {
                let Some(lease) = lease::try_lead(&p.meta_dir)? else {
                    return Ok(false);
                };
                startup::lead(&p, lease, true)?;
                Ok(true)
            })
            .await;
            match outcome {
                Ok(Ok(true)) => return,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    failed = true;
                    if !warned {
                        crate::log_warn!("litestream: taking over shipping failed: {e}");
                        warned = true;
                    }
                }
                Err(e) => {
                    failed = true;
                    crate::log_warn!("litestream: taking over shipping failed: {e}");
                }
            }
        }
    });
    Ok(())
}

/// The open primary of the database `db_path`, if any.
pub fn by_db(db_path: &Path) -> Option<Arc<Primary>> {
    PRIMARIES.get(db_path)
}

/// The open primary whose WAL is `wal_path`, if any.
pub fn by_wal(wal_path: &Path) -> Option<Arc<Primary>> {
    let db = wal_path.to_str()?.strip_suffix("-wal")?;
    PRIMARIES.get(Path::new(db))
}

/// Whether `path` is the WAL, shm or journal of an open primary (SQLite asks whether they
/// exist; for a replica they never do).
pub fn is_primary_side_file(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    let db = ["-wal", "-shm", "-journal"]
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix));
    db.is_some_and(|db| PRIMARIES.get(Path::new(db)).is_some())
}
