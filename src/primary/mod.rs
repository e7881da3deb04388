//! A primary: a local database written through the VFS, whose committed transactions this
//! process ships to the replica as LTX files — no sidecar daemon.
//!
//! The VFS tells the primary three things (see `vfs/passthrough.rs`): a write transaction
//! ended (SQLite released the WAL write lock), SQLite wants to restart the WAL from its
//! beginning, and SQLite synced the WAL at a commit. Everything else happens in the
//! background shipper (`ship.rs`), which reads newly committed frames straight from the
//! WAL file, turns them into one LTX file per batch, and uploads it.
//!
//! Nothing committed is lost between the two because the WAL keeps every frame until SQLite
//! restarts it, and the primary refuses a restart (SQLITE_BUSY, which SQLite treats as
//! "readers still need the log": it goes on appending) while anything committed has not
//! shipped. After a crash the WAL therefore still holds whatever had not shipped, and the
//! state file (`state.rs`) says where shipping stopped.

mod compact;
pub mod local;
mod registry;
mod ship;
mod startup;
pub mod state;
pub mod sums;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::config::{Config, SyncMode};
use crate::error::{Error, Result};
use crate::storage::Store;
pub use registry::{by_wal, is_primary_side_file, open};
use state::Position;

/// How long a WAL restart waits for the shipper before SQLite is told to go on appending.
const RESTART_WAIT: Duration = Duration::from_millis(500);

/// What has shipped, for sync waiters, `litestream_lag` and `litestream_stats`.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The newest state the replica holds.
    pub shipped: Option<Position>,
    /// Write-transaction ends noted up to which everything committed has shipped.
    pub shipped_notes: u64,
    /// The newest TXID encoded (shipped or waiting).
    pub encoded_txid: u64,
    pub pending_files: usize,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub last_upload: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Set when shipping stopped for good (another primary won the replica).
    pub stopped: Option<String>,
}

pub struct Primary {
    pub db_path: PathBuf,
    wal_path: PathBuf,
    meta_dir: PathBuf,
    pub config: Config,
    store: Arc<Store>,
    node_id: u64,
    /// Write-transaction ends seen (commits, rollbacks, checkpoints under the write lock).
    notes: AtomicU64,
    /// When the newest of them happened (ms since the epoch): the timestamp of its file.
    last_note_ms: AtomicI64,
    progress: Mutex<Progress>,
    shipped_cv: Condvar,
    /// The persisted state (`state.json`), changed only through `update_state`.
    state: Mutex<state::State>,
    wake: Arc<tokio::sync::Notify>,
    /// Someone waits for the shipper (a flush, a `sync=remote` commit, a WAL restart): it
    /// cuts short the `sync_interval` pause.
    hurry: Arc<tokio::sync::Notify>,
    pub opened_at: SystemTime,
}

impl Drop for Primary {
    fn drop(&mut self) {
        // Lets the shipper task see that nobody holds the primary any more, and end.
        self.wake.notify_one();
        self.hurry.notify_one();
    }
}

impl Primary {
    pub fn meta_dir_for(db_path: &Path, config: &Config) -> PathBuf {
        match &config.primary.meta_dir {
            Some(dir) => PathBuf::from(dir),
            None => beside(db_path, "-litestream"),
        }
    }

    pub fn replica_url(&self) -> &str {
        self.store.url()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    /// A write transaction ended: wake the shipper to look for newly committed frames.
    pub fn note_write_end(&self) {
        self.last_note_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.notes.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// SQLite wants to restart the WAL (overwrite it from the beginning), which it may only
    /// once every transaction committed in it has shipped. The shipper is usually one
    /// upload behind, so wait for it a little: refusing would leave the WAL growing, and
    /// SQLite checkpointing at every commit once it passes its auto-checkpoint size.
    pub fn before_wal_restart(&self) -> bool {
        if self.all_shipped() {
            return true;
        }
        let target = self.notes.load(Ordering::Acquire);
        self.wait_shipped(target, RESTART_WAIT).is_ok()
    }

    /// Whether everything committed has shipped.
    pub fn all_shipped(&self) -> bool {
        let noted = self.notes.load(Ordering::Acquire);
        let p = self.progress.lock();
        p.shipped_notes >= noted && p.pending_files == 0
    }

    /// SQLite synced the WAL at a commit. With `sync=remote`, waits until that commit has
    /// shipped; an error fails the COMMIT.
    pub fn on_wal_sync(&self) -> Result<()> {
        if self.config.primary.sync != SyncMode::Remote {
            return Ok(());
        }
        self.note_write_end();
        let target = self.notes.load(Ordering::Acquire);
        self.wait_shipped(
            target,
            self.config.open_timeout.max(Duration::from_secs(30)),
        )
    }

    /// Waits until every write noted up to `target` has shipped, shipping stops, or
    /// `timeout` passes.
    fn wait_shipped(&self, target: u64, timeout: Duration) -> Result<()> {
        self.wake.notify_one();
        self.hurry.notify_one();
        let deadline = std::time::Instant::now() + timeout;
        let mut p = self.progress.lock();
        loop {
            if let Some(why) = &p.stopped {
                return Err(Error::Reported {
                    code: libsqlite3_sys::SQLITE_IOERR_FSYNC,
                    message: format!("litestream: replication stopped: {why}"),
                });
            }
            if p.shipped_notes >= target {
                return Ok(());
            }
            if self.shipped_cv.wait_until(&mut p, deadline).timed_out() {
                let why = p.last_error.clone().unwrap_or_else(|| "no answer".into());
                return Err(Error::Timeout {
                    what: format!(
                        "shipping to {} (pending TXIDs after {}; last error: {why})",
                        self.store.url(),
                        p.shipped.map_or(0, |s| s.txid)
                    ),
                    after: timeout,
                });
            }
        }
    }

    /// Ships what is pending, waiting up to `shutdown_timeout` (the last connection is
    /// closing, or SQLite is about to delete the WAL).
    pub fn flush(&self) -> Result<()> {
        self.note_write_end();
        let target = self.notes.load(Ordering::Acquire);
        self.wait_shipped(target, self.config.primary.shutdown_timeout)
    }

    /// SQLite is deleting the WAL after checkpointing all of it at close. Allowed when
    /// everything shipped (the state then says the database file alone holds the shipped
    /// state); otherwise the WAL is kept, so the next open ships what is left.
    pub fn may_delete_wal(&self) -> bool {
        match self.flush() {
            // The database file alone holds the shipped state from now on.
            Ok(()) => self.update_state(true, |s| s.shipped.wal = None).is_ok(),
            Err(e) => {
                crate::log_warn!(
                    "litestream: {}: keeping the WAL, it holds transactions not yet shipped ({e})",
                    self.db_path.display()
                );
                false
            }
        }
    }

    /// Changes the persisted state and writes it out.
    fn update_state(&self, durable: bool, f: impl FnOnce(&mut state::State)) -> Result<()> {
        let mut s = self.state.lock();
        f(&mut s);
        state::save(&self.meta_dir, &s, durable)
    }

    fn set_progress(&self, f: impl FnOnce(&mut Progress)) {
        let mut p = self.progress.lock();
        f(&mut p);
        drop(p);
        self.shipped_cv.notify_all();
    }
}

/// A file beside the database, named as SQLite names them (`app.db-wal`, `app.db-shm`).
pub fn beside(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
