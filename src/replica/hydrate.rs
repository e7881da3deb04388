//! Hydration (`hydration_enabled`, `hydration_path`: the Go extension's names): a full local
//! copy of the database, restored in the background, then served instead of storage while
//! the replica keeps following the primary.
//!
//! The copy is the state at one TXID `h` (a plain SQLite file, exactly what
//! `litestream_restore` writes), brought by the cold-start engine (`restore.rs`) and written
//! in place; the file is synced and renamed to `hydration_path` when complete.
//!
//! Serving: one bit a page says "unchanged since `h` in every state published since". A read
//! of page p in a state at TXID t is served from the copy when t >= h and p's bit is set.
//! Every publish clears the bits of the pages the new state changes *before* the state
//! becomes visible (moves by compaction of unchanged content keep their bit), so a reader can
//! never get a copy's page older than its own state. Changed pages come from the caches and
//! storage as usual.
//!
//! Following: once fewer than half of the copy's pages are current, the newest state is
//! hydrated again into a new file (unchanged pages copied from the old copy, the others
//! fetched), which replaces the old one; readers holding the old copy keep its open file.
//!
//! Across sessions (see `copy_record`): a record beside the copy names its state. The next
//! open serves a complete copy at once, for the pages the newest state still reads from
//! the copy's files; a copy whose session ended before it was complete (the `sqlite3` shell
//! quits quickly) is finished where it stopped, since its record says after each batch which
//! pages are in. The copy being written is locked: another process waits, then adopts it.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::copy_record::{has_page, record_path, set_page, CopyRecord};
use super::{restore, Moved, Replica, Snapshot};
use crate::error::{Error, Result};
use crate::ltx::Txid;

pub struct Hydration {
    path: PathBuf,
    replica_url: String,
    /// Serialises installing the copy with publishing states (see the module comment).
    publishing: Mutex<()>,
    ready: RwLock<Option<Arc<Copy>>>,
    /// While the copy is being written: pages whose content the states published since its
    /// TXID changed (cleared in the copy's bits when it is installed).
    changed_meanwhile: Mutex<Option<std::collections::HashSet<u32>>>,
    status: Mutex<String>,
    pub served: AtomicU64,
    /// Pages the copies were given from storage (not from an earlier copy).
    pub fetched: AtomicU64,
}

struct Copy {
    file: std::fs::File,
    txid: Txid,
    page_size: u32,
    pages: u32,
    unchanged: Vec<AtomicU64>,
}

impl Copy {
    fn is_unchanged(&self, pgno: u32) -> bool {
        let i = (pgno - 1) as usize;
        self.unchanged
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    fn current_pages(&self) -> u64 {
        let ones: u64 = self
            .unchanged
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as u64)
            .sum();
        ones.min(self.pages as u64)
    }

    fn clear(&self, pgno: u32) {
        let i = (pgno.max(1) - 1) as usize;
        if let Some(w) = self.unchanged.get(i / 64) {
            w.fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
        }
    }
}

impl Hydration {
    pub fn new(path: PathBuf, replica_url: &str) -> Hydration {
        Hydration {
            path,
            replica_url: replica_url.to_string(),
            publishing: Mutex::new(()),
            ready: RwLock::new(None),
            changed_meanwhile: Mutex::new(None),
            status: Mutex::new("hydrating".into()),
            served: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }

    /// The default copy location for a replica: the temporary folder, named by its URL.
    pub fn default_path(replica_url: &str) -> PathBuf {
        let h = replica_url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        std::env::temp_dir().join(format!("litestream-hydrated-{h:016x}.db"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For `litestream_stats`: state ("hydrating", "ready", "failed: …"), the copy's TXID,
    /// and how many of its pages are still current.
    pub fn status(&self) -> (String, Option<Txid>, u64) {
        let ready = self.ready.read().clone();
        let txid = ready.as_ref().map(|c| c.txid);
        let current = ready.map_or(0, |c| c.current_pages());
        (self.status.lock().clone(), txid, current)
    }

    /// Page `pgno` of `snap` from the copy, when the copy holds that very version.
    pub fn read(&self, snap: &Snapshot, pgno: u32) -> Option<Arc<[u8]>> {
        let copy = self.ready.read().clone()?;
        if snap.txid < copy.txid
            || pgno == 0
            || pgno > copy.pages
            || snap.page_size != copy.page_size
            || !copy.is_unchanged(pgno)
        {
            return None;
        }
        let ps = copy.page_size as usize;
        let mut page = vec![0u8; ps];
        match copy
            .file
            .read_exact_at(&mut page, (pgno as u64 - 1) * ps as u64)
        {
            Ok(()) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(page.into())
            }
            Err(e) => {
                crate::log_warn!("hydrated copy {}: {e}", self.path.display());
                None
            }
        }
    }

    /// Runs `publish` (which makes `next` the newest state) after clearing the bits of the
    /// pages `next` changes relative to `current`. `moved` lists the pages compaction moved
    /// with their content unchanged (`to` set): those keep their bit.
    pub fn publishing(
        &self,
        current: &Snapshot,
        next: Snapshot,
        moved: &[Moved],
        publish: impl FnOnce(Snapshot),
    ) {
        let _one = self.publishing.lock();
        let ready = self.ready.read().clone();
        let mut meanwhile = self.changed_meanwhile.lock();
        if ready.is_some() || meanwhile.is_some() {
            let same_content: std::collections::HashSet<u32> = moved
                .iter()
                .filter(|m| m.to.is_some_and(|to| next.index.get(m.pgno) == to))
                .map(|m| m.pgno)
                .collect();
            for pgno in current.index.differing(&next.index) {
                if same_content.contains(&pgno) {
                    continue;
                }
                if let Some(copy) = &ready {
                    copy.clear(pgno);
                }
                if let Some(set) = meanwhile.as_mut() {
                    set.insert(pgno);
                }
            }
        }
        drop(meanwhile);
        publish(next);
    }

    /// Restores the newest state into the copy, then serves it; afterwards, once fewer than
    /// half of the copy's pages are still current, hydrates the newest state again (copying
    /// the unchanged pages from the old copy, fetching only the changed ones). A complete
    /// copy left by an earlier session is adopted at once; an unfinished one is finished.
    /// Runs on a thread of its own until the replica is closed or a hydration fails.
    pub fn run(&self, replica: Weak<Replica>) {
        loop {
            let Some(r) = replica.upgrade() else { return };
            if self.ready.read().is_none() {
                if let Some(txid) = self.adopt(&r) {
                    *self.status.lock() = "ready".into();
                    crate::log_info!("adopted the copy {} (TXID {txid})", self.path.display());
                }
            }
            if self.stale(&r) {
                let result = self.hydrate(&r);
                *self.status.lock() = match &result {
                    Ok(true) => "ready".into(),
                    Ok(false) => "waiting: another process is writing the copy".into(),
                    Err(e) => format!("failed: {e}"),
                };
                match result {
                    Ok(true) => crate::log_info!("hydrated {}", self.path.display()),
                    Ok(false) => {}
                    Err(e) => {
                        crate::log_warn!("hydration of {} failed: {e}", self.path.display());
                        return;
                    }
                }
            }
            let interval = r.settings().poll_interval.max(Duration::from_millis(100));
            drop(r);
            std::thread::sleep(interval);
        }
    }

    /// No copy yet, or a newer state in which fewer than half of the copy's pages are current.
    fn stale(&self, replica: &Replica) -> bool {
        let Some(copy) = self.ready.read().clone() else {
            return true;
        };
        replica.current().txid > copy.txid && copy.current_pages() * 2 < copy.pages as u64
    }

    /// Serves a complete copy an earlier session left at the path, for the pages that the
    /// newest state reads unchanged from the copy's files. Returns the copy's TXID.
    fn adopt(&self, replica: &Replica) -> Option<Txid> {
        let (file, record) = self.complete_copy()?;
        let _one = self.publishing.lock();
        let words = record.reusable(&self.replica_url, &replica.current())?;
        let copy = Copy {
            file,
            txid: Txid::new(record.txid),
            page_size: record.page_size,
            pages: record.pages,
            unchanged: words.into_iter().map(AtomicU64::new).collect(),
        };
        *self.ready.write() = Some(Arc::new(copy));
        Some(Txid::new(record.txid))
    }

    /// The complete copy at the path, with its record, when the record describes that very
    /// file (the same inode, the size of its pages).
    fn complete_copy(&self) -> Option<(std::fs::File, CopyRecord)> {
        let record = CopyRecord::load(&record_path(&self.path)).filter(|r| r.done.is_none())?;
        let file = std::fs::File::open(&self.path).ok()?;
        let meta = file.metadata().ok()?;
        let whole = meta.len() == record.pages as u64 * record.page_size as u64;
        (meta.ino() == record.ino && whole).then_some((file, record))
    }

    /// Hydrates the newest state and serves it. False when another process is writing the
    /// copy now (this one adopts it once complete).
    fn hydrate(&self, replica: &Arc<Replica>) -> Result<bool> {
        let snap = {
            let _one = self.publishing.lock();
            *self.changed_meanwhile.lock() = Some(Default::default());
            replica.current()
        };
        let result = self.write_copy(replica, &snap);
        let _one = self.publishing.lock();
        let changed = self.changed_meanwhile.lock().take().unwrap_or_default();
        let Some(file) = result? else {
            return Ok(false);
        };
        // Install: pages the states published meanwhile changed start cleared.
        let words = (snap.commit() as usize).div_ceil(64);
        let copy = Copy {
            file,
            txid: snap.txid,
            page_size: snap.page_size,
            pages: snap.commit(),
            unchanged: (0..words).map(|_| AtomicU64::new(u64::MAX)).collect(),
        };
        for pgno in changed {
            copy.clear(pgno);
        }
        *self.ready.write() = Some(Arc::new(copy));
        Ok(true)
    }

    /// Writes every page of `snap` to `<path>.hydrating`, then renames it to the path;
    /// returns the file, open. The file is locked while written (None: another process
    /// holds it), and its record says after each batch which pages are in, so that a
    /// session that ends early leaves a copy the next one finishes.
    fn write_copy(
        &self,
        replica: &Arc<Replica>,
        snap: &Arc<Snapshot>,
    ) -> Result<Option<std::fs::File>> {
        let ps = snap.page_size as u64;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".hydrating");
        let tmp = PathBuf::from(tmp);
        let tmp_record = record_path(&tmp);
        let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", tmp.display()), e);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        // Another process completed the copy of this very state after `run` looked (and
        // released the lock): adopt it at the next round instead of fetching it again.
        let done_elsewhere = self
            .complete_copy()
            .is_some_and(|(_, r)| r.txid == snap.txid.get() && r.replica_url == self.replica_url);
        if done_elsewhere {
            return Ok(None);
        }
        let ino = file.metadata().map_err(|e| io("reading", e))?.ino();
        // What an unfinished copy of an earlier session holds in this state's version stays.
        let resumed = CopyRecord::load(&tmp_record)
            .filter(|r| r.ino == ino && r.done.is_some())
            .and_then(|r| r.reusable(&self.replica_url, snap));
        let mut done = match resumed {
            Some(words) => {
                let n = words.iter().map(|w| w.count_ones() as u64).sum::<u64>();
                crate::log_info!("{}: {n} pages already in, going on", tmp.display());
                words
            }
            None => {
                file.set_len(0).map_err(|e| io("emptying", e))?;
                Vec::new()
            }
        };
        done.resize((snap.commit() as usize).div_ceil(64), 0);
        file.set_len(snap.commit() as u64 * ps)
            .map_err(|e| io("sizing", e))?;
        let mut record = CopyRecord::for_state(&self.replica_url, snap, ino);
        let save = |record: &mut CopyRecord, done: &[u64]| {
            file.sync_data().map_err(|e| io("syncing", e))?;
            record.set_done(Some(done));
            record.save(&tmp_record).map_err(|e| io("recording", e))
        };
        save(&mut record, &done)?;
        // Pages the previous copy holds unchanged are copied locally; the rest are fetched.
        let old = self.ready.read().clone();
        let mut fetch = Vec::new();
        let mut page = vec![0u8; ps as usize];
        for (pgno, loc) in snap.index.iter() {
            if has_page(&done, pgno) {
                continue;
            }
            let local = old.as_ref().filter(|c| {
                c.page_size == snap.page_size && pgno <= c.pages && c.is_unchanged(pgno)
            });
            let at = (pgno as u64 - 1) * ps;
            match local.map(|c| c.file.read_exact_at(&mut page, at)) {
                Some(Ok(())) => {
                    file.write_all_at(&page, at).map_err(|e| io("writing", e))?;
                    set_page(&mut done, pgno);
                }
                _ => fetch.push((pgno, loc)),
            }
        }
        // Fetched by the cold-start engine; the record is saved every so many ranges.
        let save_every = replica.settings().restore_concurrency.max(1);
        let mut ranges = 0;
        let fetched = &self.fetched;
        let done = std::cell::RefCell::new(done);
        restore::fetch_pages(
            replica,
            snap,
            "hydration".into(),
            &|| false,
            fetch,
            |pgno, page| {
                file.write_all_at(page, (pgno as u64 - 1) * ps)
                    .map_err(|e| io("writing", e))?;
                set_page(&mut done.borrow_mut(), pgno);
                fetched.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            || {
                ranges += 1;
                if ranges % save_every == 0 {
                    save(&mut record, &done.borrow())?;
                }
                Ok(())
            },
        )?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(format!("renaming to {}", self.path.display()), e))?;
        record.set_done(None);
        record
            .save(&record_path(&self.path))
            .map_err(|e| Error::io(format!("recording {}", self.path.display()), e))?;
        let _ = std::fs::remove_file(&tmp_record);
        Ok(Some(file))
    }
}
