//! A primary: a local database written through the VFS, whose committed transactions this
//! process ships to the replica as LTX files — no sidecar daemon.
//!
//! The VFS tells the primary three things (see `vfs/passthrough.rs`): a write transaction
//! ended (SQLite released the WAL write lock), SQLite is restarting the WAL from its
//! beginning, and SQLite synced the WAL at a commit. Everything else happens in two
//! background tasks (`ship.rs`): the copier copies newly committed frames from the WAL into
//! its mirrors (`mirror.rs`), and the shipper turns what the mirrors hold into LTX files and
//! uploads them.
//!
//! Nothing committed is lost between them because a WAL restart first copies what the
//! copier has not reached and seals the mirror (if that fails, the restart is refused with
//! SQLITE_BUSY, which SQLite treats as "readers still need the log": it goes on appending).
//! After a crash the mirrors and the WAL therefore hold whatever had not shipped, and the
//! state file (`state.rs`) says where shipping stopped.

mod compact;
pub mod local;
mod mirror;
mod registry;
mod ship;
mod startup;
pub mod state;
pub mod sums;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::config::{Config, SyncMode};
use crate::error::{Error, Result};
use crate::storage::Store;
pub use registry::{by_wal, is_primary_side_file, open};
use state::Position;

/// What has shipped, for sync waiters, `litestream_lag` and `litestream_stats`.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The newest state the replica holds.
    pub shipped: Option<Position>,
    /// Write-transaction ends noted up to which everything committed has shipped.
    pub shipped_notes: u64,
    /// The most a waiter (a flush, a `sync=remote` commit) wants `shipped_notes` to reach.
    pub wanted_notes: u64,
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
    /// The persisted state and its file, changed only through `update_state`.
    state: Mutex<(state::State, state::StateFile)>,
    /// The copies of the WAL the shipper reads; the copier and WAL restarts write them.
    mirrors: Mutex<mirror::Mirrors>,
    /// Wakes the copier (a write transaction ended, or someone waits for shipping).
    wake: Arc<tokio::sync::Notify>,
    /// Set by the copier when it has caught up and waits: only then does a commit wake it.
    /// While commits keep coming it copies at its own pace, which spares each commit a
    /// thread wake-up.
    copier_idle: AtomicBool,
    /// Connections (main-database handles) open on it. The last one to close flushes; one
    /// with none left is not handed to a new connection (`registry::open`).
    connections: AtomicUsize,
    /// The last WAL restart was refused (its warning is not repeated).
    restart_refused: AtomicBool,
    /// Wakes the shipper (the copier finished a round).
    copied: Arc<tokio::sync::Notify>,
    /// Someone waits for the shipper (a flush, a `sync=remote` commit): it cuts short the
    /// `sync_interval` pause.
    hurry: Arc<tokio::sync::Notify>,
    pub opened_at: SystemTime,
}

impl Drop for Primary {
    fn drop(&mut self) {
        // Lets the shipper task see that nobody holds the primary any more, and end.
        self.wake.notify_one();
        self.copied.notify_one();
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

    fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection closed (or failed to open). The last one ships what is pending, for a
    /// bounded time (`shutdown_timeout`).
    pub fn connection_closed(&self) {
        if self.connections.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        if let Err(e) = self.flush() {
            crate::log_warn!(
                "litestream: {}: closed with transactions not yet shipped; they ship at the next open ({e})",
                self.db_path.display()
            );
        }
    }

    /// A write transaction ended: wake the shipper to look for newly committed frames.
    pub fn note_write_end(&self) {
        self.last_note_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        // SeqCst with the copier's going idle (`ship::copy_loop`): one of the two sees the
        // other, so a commit is never left uncopied while the copier sleeps.
        // The load first: while the copier is busy a commit writes nothing shared but `notes`.
        self.notes.fetch_add(1, Ordering::SeqCst);
        if self.copier_idle.load(Ordering::SeqCst) && self.copier_idle.swap(false, Ordering::SeqCst)
        {
            self.wake.notify_one();
        }
    }

    /// SQLite is restarting the WAL (it will overwrite it from the beginning): copy what the
    /// copier has not reached and seal the mirror. False refuses the restart, which leaves
    /// the WAL growing until a restart succeeds.
    pub fn before_wal_restart(&self) -> bool {
        let sealed = self.copy_new().and_then(|()| self.mirrors.lock().seal());
        self.copied.notify_one();
        // SQLite retries a refused restart at every write (and its busy handler in a loop):
        // say it once until a restart succeeds again.
        let was_refused = self
            .restart_refused
            .swap(sealed.is_err(), Ordering::Relaxed);
        match sealed {
            Ok(()) => true,
            Err(e) => {
                if !was_refused {
                    crate::log_warn!(
                        "litestream: {}: WAL restarts refused until its frames can be copied: {e}",
                        self.db_path.display()
                    );
                }
                false
            }
        }
    }

    /// Copies what was committed in the WAL since the last copy into its mirror.
    fn copy_new(&self) -> Result<()> {
        let notes = self.notes.load(Ordering::SeqCst);
        let mut m = self.mirrors.lock();
        m.copy_new()?;
        m.notes = m.notes.max(notes);
        Ok(())
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
        p.wanted_notes = p.wanted_notes.max(target);
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
            Ok(()) => {
                self.mirrors.lock().clear().is_ok()
                    && self.update_state(true, |s| s.shipped.wal = None).is_ok()
            }
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
        let mut guard = self.state.lock();
        let (s, file) = &mut *guard;
        f(s);
        file.save(s, durable)
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
