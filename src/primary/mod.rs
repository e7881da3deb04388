//! A primary: a local database written through the VFS, whose committed transactions are
//! shipped to the replica as LTX files — by the application's own processes, no daemon.
//!
//! Any number of processes (and connections in each) may open one database as a primary.
//! One of them, the *leader* (`lease.rs`), copies what the wal-index says is committed into
//! mirrors of the WAL (`mirror.rs`), whichever process committed it, encodes LTX files from
//! them and uploads them (`ship.rs`); it publishes how far it got (`progress.rs`). When it
//! exits or is killed, another process takes over from the files on disk.
//!
//! The VFS tells the primary five things (see `vfs/passthrough.rs`): a write transaction
//! ended; a checkpoint began (a restart may follow it); SQLite is restarting the WAL from
//! its beginning; a transaction committed (for `sync=remote`, which waits there until the
//! replica holds it); and the last connection of the process closed.
//!
//! Nothing committed is lost to a WAL restart: in the leader's process the restart first
//! copies what the copier has not reached and seals the mirror; in another process it waits
//! until the leader has copied everything and seals it there; if neither can be done, the
//! restart is refused with SQLITE_BUSY, which SQLite treats as "readers still need the log"
//! (it goes on appending). Programs without the extension cannot restart the WAL at all
//! while a process of ours holds the *pin* (`WalLocks::pin`, `vfs/pin.rs`).

mod compact;
mod feed;
mod lease;
pub mod local;
mod mirror;
pub mod progress;
mod record;
mod registry;
mod ship;
pub mod shm;
mod startup;
pub mod state;
pub mod sums;
mod wake;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Store;
use progress::{Mark, Published};
pub use registry::{by_db, by_wal, is_primary_side_file, open};

/// The primary's own handle on its database, made by the VFS (`vfs/pin.rs`). The database
/// file and the wal-index are read only through it: POSIX locks belong to the process, and
/// closing any other descriptor of those files would drop the locks SQLite holds on them.
/// SQLite's WAL locks are taken through it too, in SQLite's own bookkeeping.
pub trait DbFile: Send {
    /// Reads the database file at `offset`; fewer bytes at its end.
    fn read_db(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    fn db_size(&mut self) -> std::io::Result<u64>;
    /// The first bytes of the wal-index (None until SQLite has set it up).
    fn wal_index(&mut self) -> Option<[u8; shm::READ_SIZE]>;
    /// Takes the pin (a shared lock on the read-mark slot `shm::PIN_SLOT`, whose mark no
    /// reader can use): while any process holds it, only processes with this extension can
    /// restart the WAL. Ok(false) while it cannot be taken yet.
    fn pin(&mut self) -> std::io::Result<bool>;
    /// Lets go of the pin.
    fn unpin(&mut self);
    /// Whether a checkpoint of another connection holds SQLite's write and checkpointer
    /// locks (a checkpoint that may be waiting to restart the WAL). Takes each lock for a
    /// moment to find out: call it rarely.
    fn checkpoint_running(&mut self) -> bool;
    /// Takes SQLite's checkpointer lock: while held, no checkpoint changes the database file
    /// and no committed WAL frame can be overwritten. Ok(false) when another holds it.
    fn lock_checkpoints(&mut self) -> std::io::Result<bool>;
    fn unlock_checkpoints(&mut self);
}

/// Opens the primary's handle on a database (None when it does not exist).
pub type DbOpener = fn(&Path) -> std::io::Result<Option<Box<dyn DbFile>>>;

pub struct Primary {
    pub db_path: PathBuf,
    pub meta_dir: PathBuf,
    /// Where the leader listens for wake-ups from the other processes.
    wake_to: wake::Address,
    /// When a checkpoint of this process last hinted the leader to copy.
    checkpoint_asked: Mutex<Option<Instant>>,
    /// The last time a WAL restart of this process (not the leader's) waited for the
    /// leader's copy in vain (`follower_restart`).
    restart_unanswered: Mutex<Option<Unanswered>>,
    restarts: Restarts,
    /// The settings of the first connection of this process; the ones that must agree
    /// between processes are checked against the leader's.
    pub config: Config,
    store: Arc<Store>,
    /// Connections (main-database handles) open on it. The last one to close flushes; one
    /// with none left is not handed to a new connection (`registry::open`).
    connections: AtomicUsize,
    /// Set when this process becomes the leader (at open, or by taking over).
    leader: OnceLock<Arc<ship::Leader>>,
    /// The handle on the database (`DbFile`), opened when first needed.
    db: Mutex<Option<Box<dyn DbFile>>>,
    open_db: DbOpener,
    /// This process holds the pin.
    pinned: AtomicBool,
    /// The last connection of the process is closing: the handle is not opened again.
    closing: AtomicBool,
    /// SQLite's write and checkpointer locks held by connections of this process.
    pub(crate) held_write: AtomicUsize,
    pub(crate) held_checkpoint: AtomicUsize,
    pub opened_at: SystemTime,
    /// Asks a process that does not lead to try to take over now rather than at its next
    /// `lease::TAKEOVER_POLL`: one of its connections found no leader while it needed one.
    takeover: Arc<tokio::sync::Notify>,
    /// What the restore at open did (the cold-start engine's figures), if there was one.
    pub restored: Mutex<Option<serde_json::Value>>,
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

    /// Whether this process ships.
    pub fn is_leader(&self) -> bool {
        self.leader.get().is_some()
    }

    /// What the leader published: this process's own view when it leads, else the file.
    pub fn published(&self) -> Published {
        match self.leader.get() {
            Some(l) => l.published(),
            None => progress::read(&self.meta_dir)
                .ok()
                .flatten()
                .unwrap_or_default(),
        }
    }

    /// Runs `f` on the handle on the database, opening it if needed; None when the
    /// database does not exist (or the process is closing it).
    fn with_db<T>(&self, f: impl FnOnce(&mut dyn DbFile) -> T) -> Option<T> {
        let mut guard = self.db.lock();
        if guard.is_none() && !self.closing.load(Ordering::Acquire) {
            match (self.open_db)(&self.db_path) {
                Ok(h) => *guard = h,
                Err(e) => crate::log_warn!("litestream: {}: {e}", self.db_path.display()),
            }
        }
        guard.as_mut().map(|h| f(h.as_mut()))
    }

    /// The wal-index now (None: no connection has the WAL open).
    pub fn wal_index(&self) -> Option<shm::Index> {
        self.with_db(|d| shm::read(d)).flatten()
    }

    /// What is committed in the WAL now; None when that cannot be known here (the process
    /// is closing the database, or it is not in WAL mode).
    pub fn committed(&self) -> Option<shm::Committed> {
        self.with_db(|d| {
            local::is_wal_mode(d).then(|| match shm::read(d) {
                Some(i) => shm::Committed::Index(i),
                None => shm::Committed::Recovery,
            })
        })
        .flatten()
    }

    /// Whether the database file is in WAL mode.
    pub fn is_wal_mode(&self) -> bool {
        self.with_db(|d| local::is_wal_mode(d)).unwrap_or(false)
    }

    /// Where the newest committed transaction ends, as the wal-index says (None: no
    /// connection has the WAL open).
    pub fn committed_mark(&self) -> Option<Mark> {
        let i = self.wal_index()?;
        Some(Mark {
            salt1: i.salt1,
            salt2: i.salt2,
            offset: i.end_offset(),
        })
    }

    /// Whether everything committed is in the replica.
    pub fn all_shipped(&self) -> bool {
        let p = self.published();
        let queued = p.counters.pending_files > 0;
        let copied = p.copied.map(|(_, pos)| Mark::of(&pos));
        !queued
            && copied.is_none_or(|m| p.covers(&m))
            && self.committed_mark().is_none_or(|m| p.covers(&m))
    }

    /// Whether one connection of this process has it open.
    pub fn is_last_connection(&self) -> bool {
        self.connections.load(Ordering::SeqCst) == 1
    }

    /// The last connection of this process is closing: ship what is pending (if we lead)
    /// and let go of this process's own locks on the WAL, so that SQLite may checkpoint and
    /// delete the WAL if no other process has the database open.
    pub fn before_last_close(&self) {
        if let Some(l) = self.leader.get() {
            if let Err(e) = self.flush() {
                crate::log_warn!(
                    "litestream: {}: closing with transactions not yet shipped ({e})",
                    self.db_path.display()
                );
            }
            if let Err(e) = l.sync_state() {
                crate::log_warn!("litestream: {}: {e}", self.db_path.display());
            }
        }
        self.closing.store(true, Ordering::Release);
        *self.db.lock() = None;
        self.pinned.store(false, Ordering::Release);
    }

    fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection closed (or failed to open). The last one of the leader's process ships
    /// what is pending, for a bounded time (`shutdown_timeout`); the process then gives up
    /// leading, and another takes over.
    pub fn connection_closed(&self) {
        if self.connections.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        if !self.is_leader() {
            self.wake_to.send(wake::Wake::Copy);
            return;
        }
        if let Err(e) = self.flush() {
            crate::log_warn!(
                "litestream: {}: closed with transactions not yet shipped; they ship at the next open ({e})",
                self.db_path.display()
            );
        }
        if let Some(l) = self.leader.get() {
            if let Err(e) = l.sync_state() {
                crate::log_warn!("litestream: {}: {e}", self.db_path.display());
            }
        }
    }

    /// A write transaction ended in this process: wake the copier, if we lead.
    pub fn note_write_end(&self) {
        if let Some(l) = self.leader.get() {
            l.note_write_end();
        }
    }

    /// A connection of this process took SQLite's checkpointer lock. A WAL restart may
    /// follow the checkpoint, and it must wait for the leader to copy every committed frame:
    /// an idle copier woken now, while the checkpoint runs, lets the restart find it done.
    ///
    /// While writers keep the WAL past the checkpoint threshold, every commit starts one,
    /// and the copier is busy then: a hint per `CHECKPOINT_HINT_PACE` wakes it once it has
    /// gone idle between bursts (it polls every `IDLE_POLL` or slower then).
    pub fn checkpoint_started(&self) {
        {
            let mut asked = self.checkpoint_asked.lock();
            if asked.is_some_and(|t| t.elapsed() < CHECKPOINT_HINT_PACE) {
                return;
            }
            *asked = Some(Instant::now());
        }
        match self.leader.get() {
            Some(l) => l.checkpoint_hint(),
            None => self.wake_to.send(wake::Wake::Checkpoint),
        }
    }

    /// SQLite of this process is restarting the WAL (it will overwrite it from the
    /// beginning; it holds the write lock). True when nothing committed is lost by it.
    pub fn before_wal_restart(&self) -> bool {
        let started = Instant::now();
        let allowed = match self.leader.get() {
            Some(l) => l.before_wal_restart(&self.db_path, self.committed()),
            None => self.follower_restart(),
        };
        self.restarts.count(allowed, started.elapsed());
        allowed
    }

    /// This process's WAL restarts, for `litestream_stats`.
    pub fn restarts(&self) -> &Restarts {
        &self.restarts
    }

    /// A restart in a process that does not lead: allowed once the leader has copied every
    /// committed frame of the generation, and sealed here (the leader finds the seal when
    /// it sees the next generation).
    fn follower_restart(&self) -> bool {
        let Some(index) = self.wal_index() else {
            return true;
        };
        if index.mx_frame == 0 {
            return true;
        }
        if !lease::leader_alive(&self.meta_dir).unwrap_or(false) {
            // Until a process leads, every restart is refused and every commit past the
            // checkpoint threshold runs a checkpoint of its own: take over at once.
            self.takeover.notify_one();
            return false;
        }
        let target = Mark {
            salt1: index.salt1,
            salt2: index.salt2,
            offset: index.end_offset(),
        };
        // A refusal only postpones the restart (SQLite appends instead), so the wait
        // stays short: the leader copies within a few wake-ups when it is healthy. It holds
        // the write lock meanwhile, so it looks closely (the leader takes a fraction of a
        // millisecond), and asks again now and then in case a wake-up was lost.
        //
        // A leader that did not answer the last wait (stopped, swapped out, stuck on its
        // disk) is not waited for again before `RESTART_PATIENCE_AGAIN`: SQLite retries
        // the restart at nearly every commit, and each would hold the write lock for the
        // whole wait, slowing every process to a few commits a second.
        //
        // A leader whose copy has moved since that wait is running again: it is waited for
        // at once, so that restarts resume as soon as it has caught up.
        let started = Instant::now();
        let unanswered = *self.restart_unanswered.lock();
        let mut patient = Unanswered::may_wait(unanswered, None, started);
        let mut asked = None::<Instant>;
        let mut copied = None;
        loop {
            if let Ok(Some(p)) = progress::read(&self.meta_dir) {
                if let (Some(gen), Some((_, end))) = (p.copied_to(&target), p.copied) {
                    *self.restart_unanswered.lock() = None;
                    return mirror::seal_for_follower(&self.meta_dir, gen, &end).is_ok();
                }
                // The leader ships the whole database next: nothing a restart drops is
                // missed.
                if p.resync_pending {
                    return true;
                }
                patient |= Unanswered::may_wait(unanswered, Some(p.copied), started);
                copied = p.copied;
            }
            let now = Instant::now();
            if asked.is_none_or(|t| now - t >= Duration::from_millis(2)) {
                self.wake_to.send(wake::Wake::Copy);
                asked = Some(now);
            }
            let patience = match patient {
                true => RESTART_PATIENCE,
                false => Duration::ZERO,
            };
            if now >= started + patience {
                if patient {
                    self.restarts.unanswered.fetch_add(1, Ordering::Relaxed);
                    *self.restart_unanswered.lock() = Some(Unanswered { at: now, copied });
                }
                return false;
            }
            std::thread::sleep(if now - started < Duration::from_millis(5) {
                Duration::from_micros(50)
            } else {
                Duration::from_millis(1)
            });
        }
    }

    /// A transaction of this connection committed (`sync=remote`): waits until the replica
    /// holds it, or `sync_timeout` passes. An error leaves the transaction committed in the
    /// local database; it ships when the store answers again.
    pub fn wait_replicated(&self) -> Result<()> {
        let timeout = self.config.primary.sync_timeout;
        match self.committed_mark() {
            Some(target) => {
                self.wait_covered(target, timeout)
                    .map_err(|why| Error::NotReplicated {
                        db: self.db_path.display().to_string(),
                        why,
                    })
            }
            None => Ok(()),
        }
    }

    /// Waits until the replica holds the state at `target`. Err(why) after `timeout`.
    fn wait_covered(&self, target: Mark, timeout: Duration) -> std::result::Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last_wake = None::<Instant>;
        loop {
            if let Some(l) = self.leader.get() {
                return l.wait_covered(&target, deadline, timeout);
            }
            let p = self.published();
            if let Some(why) = &p.counters.stopped {
                return Err(format!("replication stopped: {why}"));
            }
            if p.covers(&target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(waited_too_long(&p, timeout));
            }
            if last_wake.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) {
                self.wake_to.send(wake::Wake::Ship);
                if !lease::leader_alive(&self.meta_dir).unwrap_or(true) {
                    self.takeover.notify_one();
                }
                last_wake = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ships what is committed, waiting up to `shutdown_timeout`.
    pub fn flush(&self) -> Result<()> {
        let timeout = self.config.primary.shutdown_timeout;
        match self.committed_mark() {
            Some(target) => self
                .wait_covered(target, timeout)
                .map_err(|why| Error::Timeout {
                    what: format!("shipping {} ({why})", self.db_path.display()),
                    after: timeout,
                }),
            None => Ok(()),
        }
    }

    /// SQLite is deleting the WAL after checkpointing all of it (the last connection of
    /// every process closed). Allowed when everything shipped; otherwise the WAL is kept,
    /// so the next open ships what is left.
    ///
    /// A process that does not lead keeps the WAL: what it holds may not have been copied
    /// yet, and the next leader takes it up from there.
    pub fn may_delete_wal(&self) -> bool {
        let Some(l) = self.leader.get() else {
            return false;
        };
        // SQLite holds the database's EXCLUSIVE lock: nobody else can write the WAL. Copy
        // what the last commits wrote (by the recovery rule: the wal-index is no longer ours
        // to read), then ship it.
        let copied = l.copy_new(Some(shm::Committed::Recovery));
        l.copied.notify_one();
        let target = l.published().copied.map(|(_, pos)| Mark::of(&pos));
        let timeout = self.config.primary.shutdown_timeout;
        let shipped = copied
            .map_err(|e| e.to_string())
            .and_then(|_| match target {
                Some(t) => self.wait_covered(t, timeout),
                None => Ok(()),
            });
        match shipped {
            Ok(()) => l.wal_deleted(&self.db_path).is_ok(),
            Err(why) => {
                crate::log_warn!(
                    "litestream: {}: keeping the WAL, it holds transactions not yet shipped ({why})",
                    self.db_path.display()
                );
                false
            }
        }
    }

    /// The database is in WAL mode (a connection of this process set it): the leader takes
    /// the pin now, or from its copier once SQLite has set up the wal-index.
    pub fn wal_mode_ready(&self) {
        if self.is_leader() {
            self.try_pin();
        }
    }

    /// Takes the pin if this process leads and does not hold it yet. Whether it holds it.
    pub(crate) fn try_pin(&self) -> bool {
        if self.pinned.load(Ordering::Acquire) {
            return true;
        }
        if !self.is_leader() {
            return false;
        }
        let pinned = self
            .with_db(|d| match d.pin() {
                Ok(p) => p,
                Err(e) => {
                    crate::log_warn!("litestream: {}: {e}", self.db_path.display());
                    false
                }
            })
            .unwrap_or(false);
        self.pinned.store(pinned, Ordering::Release);
        pinned
    }

    /// Lets go of the pin (a checkpoint of another process waits to restart the WAL, and
    /// every committed frame is copied).
    pub(crate) fn unpin(&self) {
        if self.pinned.swap(false, Ordering::AcqRel) {
            self.with_db(|d| d.unpin());
        }
    }

    /// Whether a checkpoint of another process is running (see `DbFile`).
    pub(crate) fn foreign_checkpoint_running(&self) -> bool {
        !self.holds_wal_locks() && self.with_db(|d| d.checkpoint_running()).unwrap_or(false)
    }

    /// Whether a connection of this process holds SQLite's write or checkpointer lock.
    fn holds_wal_locks(&self) -> bool {
        self.held_write.load(Ordering::Acquire) > 0
            || self.held_checkpoint.load(Ordering::Acquire) > 0
    }

    /// Whether this process holds the pin.
    pub fn holds_pin(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    /// Runs `f` on the handle on the database (None when the database does not exist). With
    /// `hold` it runs with SQLite's checkpointer lock held (waiting up to that long for it)
    /// when the database is in WAL mode: one state of the database can then be read whole.
    fn with_database<T>(
        &self,
        hold: Option<Duration>,
        f: impl FnOnce(Option<&mut dyn DbFile>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.db.lock();
        if guard.is_none() && !self.closing.load(Ordering::Acquire) {
            *guard = (self.open_db)(&self.db_path)
                .map_err(|e| Error::io(format!("opening {}", self.db_path.display()), e))?;
        }
        let Some(db) = guard.as_mut() else {
            return f(None);
        };
        let Some(timeout) = hold.filter(|_| local::is_wal_mode(db.as_mut())) else {
            return f(Some(db.as_mut()));
        };
        let ours_busy = || self.holds_wal_locks();
        if !hold_checkpoints(db.as_mut(), &self.pinned, ours_busy, timeout)
            .map_err(|e| Error::io("taking the checkpointer lock", e))?
        {
            return Err(Error::Timeout {
                what: format!(
                    "waiting for a checkpoint of {} to end",
                    self.db_path.display()
                ),
                after: timeout,
            });
        }
        let out = f(Some(db.as_mut()));
        db.unlock_checkpoints();
        out
    }
}

/// Takes SQLite's checkpointer lock through `db`, trying for up to `timeout`; Ok(false) when
/// it could not. A checkpoint of a program without the extension may hold that lock while
/// it waits for the pin to restart the WAL: the pin (`pinned`) is let go for it (whoever
/// holds checkpoints off reads the whole database next, so nothing the restart drops is
/// missed), and taken back once the lock is held, before anything is read. Such a
/// checkpoint holds the write lock too, and none of this process's (`ours_busy`): then no
/// connection of ours is in the middle of a WAL restart that leaves the pin's slot out.
/// Asking takes each lock for a moment, so not at every try.
fn hold_checkpoints(
    db: &mut dyn DbFile,
    pinned: &AtomicBool,
    ours_busy: impl Fn() -> bool,
    timeout: Duration,
) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let repin = pinned.load(Ordering::Acquire);
    let mut looked: Option<Instant> = None;
    while !db.lock_checkpoints()? {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if pinned.load(Ordering::Acquire)
            && looked.is_none_or(|t| t.elapsed() >= FOREIGN_CHECKPOINT_LOOK)
        {
            looked = Some(Instant::now());
            if !ours_busy() && db.checkpoint_running() && pinned.swap(false, Ordering::AcqRel) {
                db.unpin();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if repin && !pinned.load(Ordering::Acquire) {
        // No checkpoint can run now; only a writer's restart of a WAL that is all in the
        // database file (which drops nothing) can keep the pin from us a moment.
        let again = (0..PIN_TRIES).any(|_| {
            let p = matches!(db.pin(), Ok(true));
            if !p {
                std::thread::sleep(Duration::from_millis(1));
            }
            p
        });
        pinned.store(again, Ordering::Release);
    }
    Ok(true)
}

/// The WAL restarts SQLite started in this process: each holds the write lock while the
/// primary makes sure nothing committed is lost by it.
#[derive(Default)]
pub struct Restarts {
    pub allowed: AtomicU64,
    /// Refused (SQLite appends instead): the leader had not copied the generation.
    pub refused: AtomicU64,
    /// Waits for the leader's copy that ran out (`RESTART_PATIENCE`).
    pub unanswered: AtomicU64,
    /// Time the restarts held the write lock for the primary, in microseconds.
    pub held_us: AtomicU64,
}

impl Restarts {
    fn count(&self, allowed: bool, held: Duration) {
        let which = if allowed {
            &self.allowed
        } else {
            &self.refused
        };
        which.fetch_add(1, Ordering::Relaxed);
        self.held_us
            .fetch_add(held.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A follower's restart that waited for the leader's copy in vain: when, and where the
/// leader's copy stood then.
#[derive(Clone, Copy)]
struct Unanswered {
    at: Instant,
    copied: CopiedTo,
}

/// Where the leader's copy stands (`Published::copied`).
type CopiedTo = Option<(mirror::Generation, wal::WalPos)>;

impl Unanswered {
    /// Whether a restart at `now` may wait for the leader's copy: no wait went unanswered,
    /// or `RESTART_PATIENCE_AGAIN` has passed since, or the leader's copy (`copied_now`,
    /// when read) has moved since: it runs again.
    fn may_wait(last: Option<Unanswered>, copied_now: Option<CopiedTo>, now: Instant) -> bool {
        last.is_none_or(|u| {
            now.saturating_duration_since(u.at) >= RESTART_PATIENCE_AGAIN
                || copied_now.is_some_and(|c| c != u.copied)
        })
    }
}

/// How long a WAL restart in a follower waits for the leader's copy, holding the write lock.
const RESTART_PATIENCE: Duration = Duration::from_millis(250);
/// Least time between two checkpoint hints of one process (`checkpoint_started`): half the
/// copier's first idle poll.
const CHECKPOINT_HINT_PACE: Duration = Duration::from_millis(10);
/// After a wait in vain, restarts are refused at once for this long (or until the leader's
/// copy moves).
const RESTART_PATIENCE_AGAIN: Duration = Duration::from_secs(1);
/// Tries (1 ms apart) to take the pin back once checkpoints are held off.
const PIN_TRIES: usize = 20;
/// How often a wait for the checkpointer lock asks whether a checkpoint of another process
/// holds it (and may be waiting for the pin).
const FOREIGN_CHECKPOINT_LOOK: Duration = Duration::from_millis(10);

fn waited_too_long(p: &Published, timeout: Duration) -> String {
    let why = p.counters.last_error.as_deref().unwrap_or("no answer yet");
    format!(
        "not in the replica {} after {timeout:?} (replica at TXID {:016x}; last error: {why})",
        p.replica_url, p.shipped_txid
    )
}

/// A file beside the database, named as SQLite names them (`app.db-wal`, `app.db-shm`).
pub fn beside(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose checkpointer lock is held by a checkpoint of another program that
    /// waits for the pin (it holds the write lock too): it goes ahead, and lets go of the
    /// lock, only once the pin is let go. `calls` records what was asked, in order.
    #[derive(Default)]
    struct WaitingCheckpoint {
        pinned: bool,
        checkpoint_done: bool,
        calls: Vec<&'static str>,
    }

    impl DbFile for WaitingCheckpoint {
        fn read_db(&mut self, _: &mut [u8], _: u64) -> std::io::Result<usize> {
            Ok(0)
        }
        fn db_size(&mut self) -> std::io::Result<u64> {
            Ok(0)
        }
        fn wal_index(&mut self) -> Option<[u8; shm::READ_SIZE]> {
            None
        }
        fn pin(&mut self) -> std::io::Result<bool> {
            self.calls.push("pin");
            self.pinned = true;
            Ok(true)
        }
        fn unpin(&mut self) {
            self.calls.push("unpin");
            self.pinned = false;
            // The checkpoint restarts the WAL and ends.
            self.checkpoint_done = true;
        }
        fn checkpoint_running(&mut self) -> bool {
            !self.checkpoint_done
        }
        fn lock_checkpoints(&mut self) -> std::io::Result<bool> {
            if self.checkpoint_done {
                self.calls.push("locked");
            }
            Ok(self.checkpoint_done)
        }
        fn unlock_checkpoints(&mut self) {}
    }

    #[test]
    fn a_checkpoint_waiting_for_the_pin_gets_it_and_the_pin_comes_back_under_the_lock() {
        let mut db = WaitingCheckpoint {
            pinned: true,
            ..Default::default()
        };
        let pinned = AtomicBool::new(true);
        let got = hold_checkpoints(&mut db, &pinned, || false, Duration::from_secs(5)).unwrap();
        assert!(got);
        assert_eq!(db.calls, ["unpin", "locked", "pin"]);
        assert!(db.pinned && pinned.load(Ordering::Acquire));
        // While a connection of this process holds the write or checkpointer lock, the
        // checkpoint may be ours: the pin stays, and the wait runs out.
        let mut db = WaitingCheckpoint {
            pinned: true,
            ..Default::default()
        };
        let pinned = AtomicBool::new(true);
        let got = hold_checkpoints(&mut db, &pinned, || true, Duration::from_millis(30)).unwrap();
        assert!(!got);
        assert!(db.calls.is_empty(), "{:?}", db.calls);
        assert!(pinned.load(Ordering::Acquire));
    }

    #[test]
    fn a_restart_waits_again_after_a_second_or_once_the_leader_copies() {
        let pos = |offset| wal::WalPos {
            salt1: 1,
            salt2: 2,
            ckpt_seq: 0,
            offset,
            cksum1: 0,
            cksum2: 0,
        };
        let gen = mirror::Generation {
            seq: 1,
            salt1: 1,
            salt2: 2,
        };
        let t = Instant::now();
        let at = |copied| {
            Some(Unanswered {
                at: t,
                copied: Some((gen, pos(copied))),
            })
        };
        let now = Some(Some((gen, pos(100))));
        let later = t + RESTART_PATIENCE_AGAIN;
        // (last unanswered wait, the copy now, when) -> may wait
        let rows = [
            (None, None, t, true),
            (at(100), None, t, false),
            (at(100), now, t, false),
            (at(40), now, t, true),
            (at(100), Some(None), t, true),
            (at(100), now, later, true),
        ];
        for (i, (last, copied, when, want)) in rows.into_iter().enumerate() {
            assert_eq!(Unanswered::may_wait(last, copied, when), want, "row {i}");
        }
    }
}
