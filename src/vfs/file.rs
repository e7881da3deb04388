//! The main database file of a replica, as SQLite sees it: read-only, in rollback-journal
//! format, its content the pinned snapshot. Safe Rust; `replica_io.rs` calls into it.
//!
//! Isolation comes from SQLite's own locking protocol: taking the SHARED lock starts a read
//! transaction, and that is when the file pins the newest snapshot; releasing the last lock
//! ends it. So every read transaction sees exactly one TXID, and new TXIDs appear between
//! transactions only.

use std::sync::Arc;

use crate::clock::Instant;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::replica::{Pinned, Replica, Snapshot};

/// SQLite lock levels (sqlite3.h).
pub const LOCK_NONE: i32 = 0;
pub const LOCK_SHARED: i32 = 1;

/// A past state a connection looks at instead of the newest (time travel).
pub struct Past {
    /// The instant asked for, ms since the epoch.
    pub at_ns: i64,
    pub snapshot: Arc<Snapshot>,
}

pub struct ReplicaFile {
    /// The replica, or why it could not be opened (reported at the first lock, and by the
    /// auto-extension when the connection opens, where a message can reach sqlite3_errmsg).
    pub replica: std::result::Result<Arc<Replica>, Arc<Error>>,
    pinned: Option<Pinned>,
    lock: i32,
    /// Set while the connection looks at the past: polled updates are not shown.
    past: Option<Past>,
    /// What this connection's reads cost on storage: per connection and per statement.
    pub meters: Arc<crate::replica::meter::Meters>,
}

impl ReplicaFile {
    /// Opens the replica `config` names, at the `time` it gives if any. Never fails: an
    /// error is kept and reported later (see `replica`).
    pub fn open_config(config: &Config) -> ReplicaFile {
        let mut file = ReplicaFile::open(crate::replica::registry::open(config));
        file.meters = crate::replica::meter::Meters::new(config.request_budget);
        if let (Some(instant), None) = (config.time, file.open_error()) {
            if let Err(e) = file.set_time(instant) {
                file.replica = Err(Arc::new(e));
            }
        }
        file
    }

    pub fn open(replica: Result<Arc<Replica>>) -> ReplicaFile {
        ReplicaFile {
            replica: replica.map_err(Arc::new),
            pinned: None,
            lock: LOCK_NONE,
            past: None,
            meters: crate::replica::meter::Meters::new(0),
        }
    }

    /// Looks at the state at `instant` from the next read transaction on (never inside the
    /// current one: that keeps the state it pinned). `Latest` follows the replica again.
    pub fn set_time(&mut self, instant: Instant) -> Result<()> {
        self.past = match instant {
            Instant::Latest => None,
            Instant::At(at_ns) => Some(Past {
                at_ns,
                snapshot: self.replica()?.snapshot_at(at_ns)?,
            }),
        };
        Ok(())
    }

    pub fn past(&self) -> Option<&Past> {
        self.past.as_ref()
    }

    /// The replica, or the error that kept it from opening, with that error's code.
    pub fn replica(&self) -> Result<&Arc<Replica>> {
        self.replica.as_ref().map_err(|e| Error::Again(e.clone()))
    }

    pub fn open_error(&self) -> Option<&Error> {
        self.replica.as_ref().err().map(|e| e.as_ref())
    }

    /// The state this connection sees now: the pinned one inside a read transaction, else
    /// the past one it looks at, else the newest.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let replica = self.replica()?;
        Ok(match (&self.pinned, &self.past) {
            (Some(p), _) => p.snapshot.clone(),
            (None, Some(p)) => p.snapshot.clone(),
            (None, None) => replica.current(),
        })
    }

    pub fn lock(&mut self, level: i32) -> Result<()> {
        let replica = self.replica()?.clone();
        if level > LOCK_SHARED {
            return Err(Error::ReadOnly(
                "a replica opened through the litestream VFS".into(),
            ));
        }
        if self.lock == LOCK_NONE && level >= LOCK_SHARED {
            if self.past.is_none() {
                replica.fresh_for_reading();
                replica.check_lag()?;
            }
            self.pinned = Some(replica.pin(self.past.as_ref().map(|p| &p.snapshot)));
            self.meters.start_statement();
        }
        self.lock = self.lock.max(level);
        Ok(())
    }

    /// A SQL function asks about the replica's state (`litestream_txid()` and the like run
    /// without a read transaction): it counts as reading, so the poller does not back off
    /// under it, and after an idle spell it polls first.
    pub fn note_reader(&self) {
        if let (Ok(replica), None) = (self.replica(), &self.past) {
            replica.fresh_for_reading();
            replica.note_read();
        }
    }

    pub fn unlock(&mut self, level: i32) {
        self.lock = self.lock.min(level);
        if self.lock == LOCK_NONE {
            self.pinned = None;
        }
    }

    /// The database size in bytes. A replica that failed to open looks like an empty file
    /// (SQLite reads the header at open, before the first lock can report the error).
    pub fn file_size(&self) -> u64 {
        self.snapshot().map(|s| s.file_size()).unwrap_or(0)
    }

    /// Fills `buf` with the bytes at `offset` and returns how many came from the file: bytes
    /// past the end of the database read as zeros, as SQLite expects of a short read.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        buf.fill(0);
        let (Ok(replica), Ok(snap)) = (&self.replica, self.snapshot()) else {
            return Ok(0); // not opened: empty, as file_size says
        };
        let page_size = snap.page_size as u64;
        let size = snap.file_size();
        let end = (offset + buf.len() as u64).min(size);
        let mut pos = offset;
        while pos < end {
            let pgno = pos / page_size + 1;
            let in_page = pos % page_size;
            let n = (page_size - in_page).min(end - pos) as usize;
            let at = (pos - offset) as usize;
            let dst = &mut buf[at..at + n];
            if let Ok(pgno) = u32::try_from(pgno) {
                let page = replica.read_page_metered(&snap, pgno, Some(&self.meters))?;
                if let Some(page) = page {
                    let src = &page[in_page as usize..in_page as usize + n];
                    dst.copy_from_slice(src);
                    if pgno == 1 {
                        present_header(dst, in_page as usize, &snap);
                    }
                }
            }
            pos += n as u64;
        }
        Ok(end.saturating_sub(offset) as usize)
    }
}

/// Rewrites the parts of the database header (page 1) that make SQLite read this file as
/// a rollback-journal database whose change counter follows the replica's TXID.
/// `dst` holds page-1 bytes starting at `from`.
fn present_header(dst: &mut [u8], from: usize, snap: &Snapshot) {
    let counter = change_counter(snap);
    let mut patch = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(d) = (at + i).checked_sub(from).and_then(|j| dst.get_mut(j)) {
                *d = *b;
            }
        }
    };
    // File format write/read versions: 1 = rollback journal (2 would mean WAL).
    patch(18, &[1, 1]);
    patch(24, &counter.to_be_bytes());
    patch(28, &snap.commit().to_be_bytes());
    // "version-valid-for": the in-header size is valid for this change counter.
    patch(92, &counter.to_be_bytes());
}

/// The file change counter shown for a state: changes exactly when the TXID changes, so
/// SQLite keeps its page cache across transactions while nothing new arrived.
pub fn change_counter(snap: &Snapshot) -> u32 {
    let t = snap.txid.get();
    ((t ^ (t >> 32)) as u32).max(1)
}
