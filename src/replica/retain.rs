//! Page versions kept for read transactions pinned to older states.
//!
//! A read transaction pins the newest state for its whole life, while the poller publishes
//! newer ones and Litestream compacts and deletes the files the pinned state reads from
//! (an L0 file goes `l0-retention` after compaction: 5 minutes by default, 2 s in tests).
//! So a page location that leaves the newest state while an older state is pinned stays
//! readable here:
//! - re-pointed onto a compacted file with the same content: a redirect to that file;
//! - superseded by a newer version: the old version's bytes, taken from the page cache or
//!   fetched at once, while its file still exists.
//!
//! A superseded version missing from the page cache must be fetched while its file exists,
//! but Litestream deletes an L0 file `l0-retention` after *writing* it (once compacted),
//! possibly before the poller applies the file that supersedes a version in it. So the
//! bytes of the small files the newest state reads (read whole when applied) are held
//! while it reads them, within a bound: a version in one of them is decoded from memory.
//!
//! Page locations are content addresses (an LTX file never changes), so a kept entry can
//! never be wrong for any state that names it. States are numbered by an epoch that grows
//! at each publish; an entry is tagged with the epoch at which it left the newest state and
//! is needed only while a pin older than that epoch lives. Kept bytes are bounded by
//! `retain_size`; past it the entries of the oldest epochs go first, and a read that then
//! finds its file deleted fails with [`crate::error::Error::SnapshotTooOld`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::cache::PageKey;
use super::index::{FileId, Loc};
use super::snapshot::{FileMeta, Moved, Snapshot};
use crate::ltx::Txid;

/// What an entry charges against the budget besides page bytes (a redirect, the maps).
const ENTRY_OVERHEAD: u64 = 64;

/// Where a kept page location can still be read.
#[derive(Clone)]
pub enum Kept {
    /// The version itself.
    Page(Arc<[u8]>),
    /// The same content, in a file the newest state reads (a compaction of the original).
    Elsewhere { meta: Arc<FileMeta>, loc: Loc },
}

/// A superseded version to keep: the replica finds it in its caches, in a compacted file
/// that holds the same version, or fetches it.
pub struct Wanted {
    pub key: PageKey,
    pub meta: Arc<FileMeta>,
    pub loc: Loc,
    /// The newest TXID whose state read this version (see [`Moved::until`]).
    pub until: Txid,
    pub epoch: u64,
    /// Its file was found deleted: only a compacted file can still provide it.
    pub gone: bool,
}

/// Versions that could not be kept yet, retried at each publish: at most this many.
const MAX_DEFERRED: usize = 1 << 16;

/// Bytes of whole files of the newest state held (see the module comment), at most.
const HELD_FILE_BYTES: u64 = 32 << 20;

/// What [`Retention::publish`] found to keep.
#[derive(Default)]
pub struct Outcome {
    /// Superseded locations that pinned states may read: bytes to keep.
    pub superseded: Vec<Wanted>,
    /// Superseded locations no pin can read: their cache entries may go.
    pub unneeded: Vec<PageKey>,
}

pub struct Retention {
    inner: Mutex<Inner>,
    /// Entries in `kept`, readable without the lock: a page read (a cache miss, a prefetch
    /// candidate) asks only when something is kept, which is rare.
    kept_len: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    /// Epoch of the newest published state.
    epoch: u64,
    /// Live pins per epoch of the state they hold.
    pins: BTreeMap<u64, usize>,
    /// For each file the newest state reads: the first epoch at which a state read it.
    born: HashMap<FileId, u64>,
    kept: HashMap<PageKey, (Kept, u64)>,
    deferred: Vec<Wanted>,
    /// Whole small files the newest state reads, by id (ids grow: the smallest is oldest).
    held: BTreeMap<FileId, bytes::Bytes>,
    held_bytes: u64,
    /// Keys by the epoch at which they left the newest state.
    by_epoch: BTreeMap<u64, Vec<PageKey>>,
    bytes: u64,
    budget: u64,
    /// Entries dropped to stay within the budget (for stats).
    dropped: u64,
}

/// What retention holds now, for `PRAGMA litestream_stats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub entries: usize,
    pub bytes: u64,
    pub budget: u64,
    pub pins: usize,
    pub dropped: u64,
}

impl Retention {
    pub fn new(budget: u64) -> Retention {
        Retention {
            inner: Mutex::new(Inner {
                budget,
                ..Inner::default()
            }),
            kept_len: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the state, then publishes how many entries are kept.
    fn with<T>(&self, f: impl FnOnce(&mut MutexGuard<'_, Inner>) -> T) -> T {
        let mut inner = self.inner.lock();
        let out = f(&mut inner);
        self.kept_len.store(inner.kept.len(), Ordering::Release);
        out
    }

    /// Pins the state `current` returns, and returns it with its epoch. `current` runs
    /// under the lock that [`Retention::publish`] swaps states under, so that no publish
    /// falls between reading the state and counting the pin.
    pub fn pin(&self, current: impl FnOnce() -> Arc<Snapshot>) -> (Arc<Snapshot>, u64) {
        let mut inner = self.inner.lock();
        let snap = current();
        let epoch = inner.epoch;
        *inner.pins.entry(epoch).or_default() += 1;
        (snap, epoch)
    }

    /// Whether some read transaction holds a state now.
    pub fn any_pinned(&self) -> bool {
        !self.inner.lock().pins.is_empty()
    }

    pub fn unpin(&self, epoch: u64) {
        self.with(|inner| {
            if let Some(n) = inner.pins.get_mut(&epoch) {
                *n -= 1;
                if *n == 0 {
                    inner.pins.remove(&epoch);
                }
            }
            inner.collect();
        })
    }

    /// Publishes `next` (through `swap`, under the pin lock) after `prev`, which it
    /// replaces by `moved`. Redirects are recorded at once; superseded versions that a pin
    /// may read are returned for the caller to keep (from its cache or by fetching).
    pub fn publish(
        &self,
        prev: &Snapshot,
        next: &Snapshot,
        moved: &[Moved],
        swap: impl FnOnce(),
    ) -> Outcome {
        self.with(|inner| inner.publish(prev, next, moved, swap))
    }

    /// Keeps a superseded version (its bytes, or where a compacted file holds it), unless
    /// no pin needs it any more.
    pub fn keep(&self, key: PageKey, kept: Kept, epoch: u64) {
        self.with(|inner| {
            if inner.pins.range(..epoch).next().is_some() {
                inner.insert(key, kept, epoch);
                inner.evict();
            }
        })
    }

    /// Holds the bytes of a small file the newest state now reads (read whole to apply it).
    pub fn hold_file(&self, id: FileId, bytes: bytes::Bytes) {
        let mut inner = self.inner.lock();
        inner.held_bytes += bytes.len() as u64;
        if let Some(old) = inner.held.insert(id, bytes) {
            inner.held_bytes -= old.len() as u64;
        }
        while inner.held_bytes > HELD_FILE_BYTES {
            match inner.held.pop_first() {
                Some((_, old)) => inner.held_bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// The frame at `loc` of a held file.
    pub fn held_frame(&self, loc: Loc) -> Option<bytes::Bytes> {
        let inner = self.inner.lock();
        let bytes = inner.held.get(&loc.file)?;
        let start = usize::try_from(loc.offset).ok()?;
        let end = start.checked_add(loc.size as usize)?;
        (end <= bytes.len()).then(|| bytes.slice(start..end))
    }

    /// Lets go of held files that `files` (the newest state's) no longer names.
    pub fn release_files<V>(&self, files: &BTreeMap<FileId, V>) {
        let mut inner = self.inner.lock();
        let gone: Vec<FileId> = inner
            .held
            .keys()
            .filter(|id| !files.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(old) = inner.held.remove(&id) {
                inner.held_bytes -= old.len() as u64;
            }
        }
    }

    /// A version that could not be kept now (its file is gone, or the store failed):
    /// tried again at the next publish, while a pin may need it.
    pub fn defer(&self, w: Wanted) {
        let mut inner = self.inner.lock();
        if inner.pins.range(..w.epoch).next().is_some() && inner.deferred.len() < MAX_DEFERRED {
            inner.deferred.push(w);
        }
    }

    /// The deferred versions that a pin may still need.
    pub fn take_deferred(&self) -> Vec<Wanted> {
        let mut inner = self.inner.lock();
        let oldest = inner.pins.keys().next().copied().unwrap_or(u64::MAX);
        let mut out = std::mem::take(&mut inner.deferred);
        out.retain(|w| w.epoch > oldest);
        out
    }

    pub fn has(&self, key: PageKey) -> bool {
        self.kept_len.load(Ordering::Acquire) > 0 && self.inner.lock().kept.contains_key(&key)
    }

    pub fn get(&self, key: PageKey) -> Option<Kept> {
        if self.kept_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.inner.lock().kept.get(&key).map(|(k, _)| k.clone())
    }

    pub fn set_budget(&self, bytes: u64) {
        self.with(|inner| {
            inner.budget = bytes;
            inner.evict();
        })
    }

    pub fn usage(&self) -> Usage {
        let inner = self.inner.lock();
        Usage {
            entries: inner.kept.len(),
            bytes: inner.bytes,
            budget: inner.budget,
            pins: inner.pins.values().sum(),
            dropped: inner.dropped,
        }
    }
}

impl Inner {
    /// See [`Retention::publish`].
    fn publish(
        &mut self,
        prev: &Snapshot,
        next: &Snapshot,
        moved: &[Moved],
        swap: impl FnOnce(),
    ) -> Outcome {
        swap();
        self.epoch += 1;
        let epoch = self.epoch;
        let mut out = Outcome::default();
        for m in moved {
            let key = (m.from.file, m.pgno);
            // A location of a file applied and replaced within this publish was never
            // visible: no pin reads it.
            let Some(from) = prev.file(m.from.file) else {
                if m.to.is_none() {
                    out.unneeded.push(key);
                }
                continue;
            };
            let born = self.born.get(&m.from.file).copied().unwrap_or(0);
            // A pin sees this location if it holds a state from `born` on (every pin holds
            // a state older than `epoch`).
            if self.pins.range(born..).next().is_none() {
                if m.to.is_none() {
                    out.unneeded.push(key);
                }
                continue;
            }
            match m.to {
                Some(to) => {
                    let Some(meta) = next.file(to.file) else {
                        continue;
                    };
                    // The redirect makes pins from `born` on read the target: it must be
                    // kept for them in turn when it leaves the newest state.
                    let b = self.born.entry(to.file).or_insert(epoch);
                    *b = (*b).min(born);
                    let kept = Kept::Elsewhere {
                        meta: meta.clone(),
                        loc: to,
                    };
                    self.insert(key, kept, epoch);
                }
                None => out.superseded.push(Wanted {
                    key,
                    meta: from.clone(),
                    loc: m.from,
                    until: m.until,
                    epoch,
                    gone: false,
                }),
            }
        }
        for id in next.files.keys() {
            self.born.entry(*id).or_insert(epoch);
        }
        self.born.retain(|id, _| next.files.contains_key(id));
        self.evict();
        out
    }

    fn insert(&mut self, key: PageKey, kept: Kept, epoch: u64) {
        let cost = cost_of(&kept);
        if let Some((old, _)) = self.kept.insert(key, (kept, epoch)) {
            // Already kept (a version is superseded once; a repeat is a re-plan): the
            // first tag stays listed, which only keeps the entry longer.
            self.bytes -= cost_of(&old);
        } else {
            self.by_epoch.entry(epoch).or_default().push(key);
        }
        self.bytes += cost;
    }

    /// Drops entries no live pin can read: those that left the newest state at or before
    /// the oldest pinned epoch.
    fn collect(&mut self) {
        let oldest = self.pins.keys().next().copied().unwrap_or(u64::MAX);
        while let Some(entry) = self.by_epoch.first_entry() {
            if *entry.key() > oldest {
                break;
            }
            let keys = entry.remove();
            self.forget(keys);
        }
        self.deferred.retain(|w| w.epoch > oldest);
    }

    /// Within the budget, dropping what only the oldest pins may read.
    fn evict(&mut self) {
        while self.bytes > self.budget {
            let Some((_, keys)) = self.by_epoch.pop_first() else {
                break;
            };
            self.dropped += keys.len() as u64;
            self.forget(keys);
        }
    }

    fn forget(&mut self, keys: Vec<PageKey>) {
        for key in keys {
            if let Some((kept, _)) = self.kept.remove(&key) {
                self.bytes -= cost_of(&kept);
            }
        }
    }
}

fn cost_of(kept: &Kept) -> u64 {
    ENTRY_OVERHEAD
        + match kept {
            Kept::Page(p) => p.len() as u64,
            Kept::Elsewhere { .. } => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_RETAIN_SIZE;
    use crate::replica::snapshot::LoadedFile;
    use crate::storage::FileInfo;

    /// A snapshot (L9) file when it starts at TXID 1, else an L0 file.
    fn file(id: FileId, min: u64, max: u64, commit: u32, pages: &[u32]) -> LoadedFile {
        let level = if min == 1 { 9 } else { 0 };
        LoadedFile::for_test(id, level, min, max, commit, pages)
    }

    fn page(b: u8) -> Arc<[u8]> {
        vec![b; 4096].into()
    }

    /// Publishes `file` on top of `*cur` and keeps every superseded version as a page
    /// filled with the file id (what the poller does, from its cache).
    fn advance(r: &Retention, cur: &mut Arc<Snapshot>, f: &LoadedFile) -> usize {
        let (next, moved) = cur.apply(f);
        let next = Arc::new(next);
        let out = r.publish(cur, &next, &moved, || {});
        let n = out.superseded.len();
        for w in out.superseded {
            r.keep(w.key, Kept::Page(page(w.key.0 as u8)), w.epoch);
        }
        *cur = next;
        n
    }

    #[test]
    fn versions_are_kept_while_a_pin_may_read_them() {
        let r = Retention::new(DEFAULT_RETAIN_SIZE);
        let mut cur = Arc::new(Snapshot::build(&[file(0, 1, 1, 3, &[1, 2, 3])]).unwrap());
        r.publish(&cur.clone(), &cur.clone(), &[], || {});
        // No pin: nothing kept.
        assert_eq!(advance(&r, &mut cur, &file(1, 2, 2, 3, &[2])), 0);
        let (pinned, epoch) = r.pin(|| cur.clone());
        assert_eq!(pinned.index.get(2).file, 1);
        // Page 2 superseded twice while pinned: the version the pin reads is kept, the
        // next one (published after the pin) no pin could see.
        assert_eq!(advance(&r, &mut cur, &file(2, 3, 3, 3, &[2])), 1);
        assert_eq!(
            advance(&r, &mut cur, &file(3, 4, 4, 3, &[2])),
            0,
            "the version of file 2 was never visible to a pinned state"
        );
        assert!(matches!(r.get((1, 2)), Some(Kept::Page(p)) if p[0] == 1));
        assert!(r.get((2, 2)).is_none());
        r.unpin(epoch);
        assert!(r.get((1, 2)).is_none(), "the last pin gone: dropped");
        assert_eq!(r.usage().bytes, 0);
    }

    #[test]
    fn a_compaction_redirects_and_the_target_is_kept_in_turn() {
        let r = Retention::new(DEFAULT_RETAIN_SIZE);
        let mut cur = Arc::new(
            Snapshot::build(&[file(0, 1, 1, 3, &[1, 2, 3]), file(1, 2, 2, 3, &[2])]).unwrap(),
        );
        r.publish(&cur.clone(), &cur.clone(), &[], || {});
        let (_pinned, epoch) = r.pin(|| cur.clone());
        // An L1 file over TXID 2 replaces file 1.
        let mut l1 = file(5, 2, 2, 3, &[2]);
        Arc::get_mut(&mut l1.meta).unwrap().info = FileInfo::for_test(1, 2, 2);
        let (next, moved) = cur.repoint(&l1);
        let next = Arc::new(next);
        let out = r.publish(&cur, &next, &moved, || {});
        assert!(out.superseded.is_empty());
        assert!(matches!(r.get((1, 2)), Some(Kept::Elsewhere { loc, .. }) if loc.file == 5));
        cur = next;
        // Then page 2 changes: the L1 location leaves the newest state, and the pin still
        // reads it through the redirect, so it is kept.
        assert_eq!(advance(&r, &mut cur, &file(6, 3, 3, 3, &[2])), 1);
        assert!(matches!(r.get((5, 2)), Some(Kept::Page(_))));
        r.unpin(epoch);
        assert_eq!(r.usage().entries, 0);
    }

    #[test]
    fn over_budget_the_oldest_epochs_go_first() {
        let r = Retention::new(2 * (4096 + ENTRY_OVERHEAD));
        let mut cur = Arc::new(Snapshot::build(&[file(0, 1, 1, 3, &[1, 2, 3])]).unwrap());
        r.publish(&cur.clone(), &cur.clone(), &[], || {});
        let (_p, _) = r.pin(|| cur.clone());
        advance(&r, &mut cur, &file(1, 2, 2, 3, &[1]));
        advance(&r, &mut cur, &file(2, 3, 3, 3, &[2]));
        advance(&r, &mut cur, &file(3, 4, 4, 3, &[3]));
        let u = r.usage();
        assert_eq!((u.entries, u.dropped), (2, 1));
        assert!(r.get((0, 1)).is_none(), "the oldest went first");
        assert!(r.get((0, 3)).is_some());
    }

    #[test]
    fn entries_go_once_no_older_pin_lives() {
        let r = Retention::new(DEFAULT_RETAIN_SIZE);
        let mut cur = Arc::new(Snapshot::build(&[file(0, 1, 1, 3, &[1, 2, 3])]).unwrap());
        r.publish(&cur.clone(), &cur.clone(), &[], || {});
        let (_old, old_epoch) = r.pin(|| cur.clone());
        advance(&r, &mut cur, &file(1, 2, 2, 3, &[1]));
        let (_young, young_epoch) = r.pin(|| cur.clone());
        advance(&r, &mut cur, &file(2, 3, 3, 3, &[1]));
        assert!(r.get((0, 1)).is_some() && r.get((1, 1)).is_some());
        r.unpin(old_epoch);
        assert!(r.get((0, 1)).is_none(), "only the old pin read it");
        assert!(r.get((1, 1)).is_some(), "the young pin reads it");
        r.unpin(young_epoch);
        assert_eq!(r.usage().entries, 0);
    }
}
