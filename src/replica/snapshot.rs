//! One visible state of the replica: a TXID, its database size and page size, and the page
//! index that says where each page of that state lives. Snapshots are immutable; the poller
//! derives the next one from the last, and readers pin one for a whole read transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::index::{FileId, Loc, PageIndex};
use crate::ltx::{Header, PageIndexEntry, Txid};
use crate::storage::FileInfo;

/// What a snapshot keeps about one LTX file it reads from: where it is and its header.
#[derive(Debug)]
pub struct FileMeta {
    pub id: FileId,
    pub info: FileInfo,
    pub header: Header,
    /// The database checksum after applying this file (meaningful when the header says the
    /// file carries checksums).
    pub post_apply_checksum: u64,
}

/// A file with its page index, as loaded to apply it. The page list is not kept in the
/// snapshot: the page index already holds what a reader needs, at 16 bytes a page.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub meta: Arc<FileMeta>,
    pub pages: Arc<Vec<PageIndexEntry>>,
    /// The first bytes of the file, when more than its header was read: all of it when it
    /// was small enough to be read whole.
    pub bytes: Option<bytes::Bytes>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub txid: Txid,
    pub page_size: u32,
    /// Header timestamp (ms since the epoch) of the newest file applied.
    pub timestamp_ms: i64,
    /// The database checksum of this state, when the file that produced it carries one.
    pub checksum: Option<u64>,
    pub index: PageIndex,
    /// The files that `index` points into.
    pub files: Arc<BTreeMap<FileId, Arc<FileMeta>>>,
    /// The chain of files this state was built from, in TXID order.
    pub chain: Vec<FileInfo>,
}

/// A page location replaced by a new snapshot: the cache entry under it is no longer needed
/// (`to` = None) or now lives under another key (`to` = Some, same content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub pgno: u32,
    pub from: Loc,
    pub to: Option<Loc>,
    /// The newest TXID whose state still read the version at `from`: a compacted file
    /// that covers `from`'s file and ends by then holds that very version.
    pub until: Txid,
}

impl Snapshot {
    /// Database size in pages.
    pub fn commit(&self) -> u32 {
        self.index.pages()
    }

    pub fn file_size(&self) -> u64 {
        self.commit() as u64 * self.page_size as u64
    }

    pub fn file(&self, id: FileId) -> Option<&Arc<FileMeta>> {
        self.files.get(&id)
    }

    /// Builds the state at the end of `chain` (files in TXID order, contiguous).
    pub fn build(chain: &[LoadedFile]) -> Option<Snapshot> {
        let first = chain.first()?;
        let mut snap = Snapshot {
            txid: Txid::ZERO,
            page_size: first.meta.header.page_size,
            timestamp_ms: 0,
            checksum: None,
            index: PageIndex::default(),
            files: Arc::new(BTreeMap::new()),
            chain: Vec::new(),
        };
        for meta in chain {
            snap = snap.apply(meta).0;
        }
        snap.prune_files();
        Some(snap)
    }

    /// The state after `meta`, whose MinTXID is at most `self.txid + 1` and whose MaxTXID is
    /// above `self.txid` (a compacted file may overlap the state: see `plan`).
    pub fn apply(&self, file: &LoadedFile) -> (Snapshot, Vec<Moved>) {
        let meta = file.meta.clone();
        let mut next = self.clone();
        let mut moved = Vec::new();
        // The versions replaced were read by every state up to this one.
        let until = self.txid;
        for e in file.pages.iter() {
            let loc = Loc {
                file: meta.id,
                size: e.size,
                offset: e.offset,
            };
            let old = next.index.set(e.pgno, loc);
            if !old.is_none() {
                moved.push(Moved {
                    pgno: e.pgno,
                    from: old,
                    to: None,
                    until,
                });
            }
        }
        for (pgno, from) in next.index.truncate(meta.header.commit) {
            moved.push(Moved {
                pgno,
                from,
                to: None,
                until,
            });
        }
        next.txid = meta.header.max_txid;
        next.timestamp_ms = meta.header.timestamp;
        next.checksum = meta
            .header
            .has_checksums()
            .then_some(meta.post_apply_checksum);
        next.chain.push(meta.info.clone());
        Arc::make_mut(&mut next.files).insert(meta.id, meta);
        (next, moved)
    }

    /// True when `f` (a compacted file or snapshot) can stand in for files of this chain: it
    /// ends at or before our TXID and wholly contains at least one file of the chain that is
    /// not itself. Any page whose current file lies inside `f`'s range has, in `f`, the very
    /// version we show (`f` holds the newest version within its range, and ours is the
    /// newest up to our TXID), so re-pointing it is exact even when `f` also overlaps part
    /// of another file of the chain (an L1 window that began before the snapshot ended).
    pub fn can_repoint(&self, f: &FileInfo) -> bool {
        f.max <= self.txid
            && self.chain.iter().any(|c| {
                c != f
                    && c.min >= f.min
                    && c.max <= f.max
                    && (c.level < f.level || c.max.get() - c.min.get() < f.max.get() - f.min.get())
            })
    }

    /// The same state, with pages that `meta` also holds read from `meta` instead of the
    /// files it replaces (so those may be deleted by compaction or retention under us).
    pub fn repoint(&self, file: &LoadedFile) -> (Snapshot, Vec<Moved>) {
        let meta = file.meta.clone();
        let (lo, hi) = (meta.info.min, meta.info.max);
        let replaced: Vec<FileId> = self
            .files
            .values()
            .filter(|m| m.info.min >= lo && m.info.max <= hi)
            .map(|m| m.id)
            .collect();
        let mut next = self.clone();
        let mut moved = Vec::new();
        for e in file.pages.iter() {
            let cur = next.index.get(e.pgno);
            if !cur.is_none() && replaced.contains(&cur.file) {
                let loc = Loc {
                    file: meta.id,
                    size: e.size,
                    offset: e.offset,
                };
                next.index.set(e.pgno, loc);
                moved.push(Moved {
                    pgno: e.pgno,
                    from: cur,
                    to: Some(loc),
                    until: self.txid,
                });
            }
        }
        next.chain.retain(|c| !(c.min >= lo && c.max <= hi));
        let at = next
            .chain
            .iter()
            .position(|c| c.min > hi)
            .unwrap_or(next.chain.len());
        next.chain.insert(at, meta.info.clone());
        Arc::make_mut(&mut next.files).insert(meta.id, meta);
        next.prune_files();
        (next, moved)
    }

    /// Drops files that no page points into any more.
    fn prune_files(&mut self) {
        let mut used = std::collections::BTreeSet::new();
        for (_, loc) in self.index.iter() {
            used.insert(loc.file);
        }
        if used.len() != self.files.len() {
            Arc::make_mut(&mut self.files).retain(|id, _| used.contains(id));
        }
    }
}

#[cfg(test)]
impl LoadedFile {
    /// For unit tests: file `id` at `level` covering `min..=max`, commit `commit`, written
    /// at `max` seconds, holding `pages` as 10-byte frames at offsets unique to the file.
    pub(crate) fn for_test(
        id: FileId,
        level: u8,
        min: u64,
        max: u64,
        commit: u32,
        pages: &[u32],
    ) -> LoadedFile {
        let (min, max) = (Txid::new(min), Txid::new(max));
        let mut header = Header::new(4096, commit, min, max, (max.get() * 1000) as i64);
        header.flags = Header::FLAG_NO_CHECKSUM;
        let entry = |pgno: u32| PageIndexEntry {
            pgno,
            offset: 100 + pgno as u64 * 10 + id as u64 * 100_000,
            size: 10,
        };
        LoadedFile {
            meta: Arc::new(FileMeta {
                id,
                info: FileInfo {
                    level,
                    min,
                    max,
                    size: 1 << 20,
                },
                header,
                post_apply_checksum: 0,
            }),
            pages: Arc::new(pages.iter().map(|&p| entry(p)).collect()),
            bytes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: FileId, level: u8, min: u64, max: u64, commit: u32, pages: &[u32]) -> LoadedFile {
        LoadedFile::for_test(id, level, min, max, commit, pages)
    }

    fn files_of(s: &Snapshot) -> Vec<FileId> {
        (1..=s.commit()).map(|p| s.index.get(p).file).collect()
    }

    #[test]
    fn apply_moves_changed_pages_only() {
        let base = Snapshot::build(&[file(0, 9, 1, 1, 3, &[1, 2, 3])]).unwrap();
        let (next, moved) = base.apply(&file(1, 0, 2, 2, 4, &[2, 4]));
        assert_eq!(next.txid, Txid::new(2));
        assert_eq!(files_of(&next), vec![0, 1, 0, 1]);
        assert_eq!(moved.len(), 1, "only page 2 had an older version");
        assert_eq!(moved[0].pgno, 2);
        assert_eq!(
            files_of(&base),
            vec![0, 0, 0],
            "the old snapshot is untouched"
        );
    }

    #[test]
    fn shrink_drops_pages_above_commit() {
        let base = Snapshot::build(&[file(0, 9, 1, 1, 5, &[1, 2, 3, 4, 5])]).unwrap();
        let (next, moved) = base.apply(&file(1, 0, 2, 2, 2, &[1]));
        assert_eq!(next.commit(), 2);
        assert_eq!(next.file_size(), 2 * 4096);
        assert_eq!(moved.iter().filter(|m| m.pgno > 2).count(), 3);
    }

    #[test]
    fn compacted_file_replaces_the_l0_files_it_covers() {
        let s = Snapshot::build(&[
            file(0, 9, 1, 1, 4, &[1, 2, 3, 4]),
            file(1, 0, 2, 2, 4, &[2]),
            file(2, 0, 3, 3, 4, &[2, 3]),
            file(3, 0, 4, 4, 4, &[4]),
        ])
        .unwrap();
        let l1 = file(4, 1, 2, 3, 4, &[2, 3]);
        assert!(s.can_repoint(&l1.meta.info));
        let (r, moved) = s.repoint(&l1);
        assert_eq!(files_of(&r), vec![0, 4, 4, 3]);
        assert!(
            moved.iter().all(|m| m.to.is_some()),
            "same content: cache entries move"
        );
        assert!(!r.files.contains_key(&1) && !r.files.contains_key(&2));
        let chain: Vec<_> = r
            .chain
            .iter()
            .map(|c| (c.level, c.min.get(), c.max.get()))
            .collect();
        assert_eq!(chain, vec![(9, 1, 1), (1, 2, 3), (0, 4, 4)]);
        // A file beyond our TXID, or one that contains no whole file of the chain, cannot.
        assert!(!r.can_repoint(&file(6, 1, 4, 5, 4, &[]).meta.info));
        assert!(!r.can_repoint(&file(5, 1, 3, 3, 4, &[]).meta.info));
    }

    #[test]
    fn compacted_file_straddling_the_snapshot_still_replaces_l0() {
        // Snapshot at 2; L0 at 3 and 4; then an L1 window 2..4 that began before the
        // snapshot ended. The L0 files will be deleted: their pages must move to the L1 file.
        let s = Snapshot::build(&[
            file(0, 9, 1, 2, 3, &[1, 2, 3]),
            file(1, 0, 3, 3, 3, &[2]),
            file(2, 0, 4, 4, 3, &[3]),
        ])
        .unwrap();
        let l1 = file(3, 1, 2, 4, 3, &[1, 2, 3]);
        assert!(s.can_repoint(&l1.meta.info));
        let (r, _) = s.repoint(&l1);
        assert_eq!(
            files_of(&r),
            vec![0, 3, 3],
            "page 1 (last changed at 2, in the snapshot) stays"
        );
        assert!(!r.files.contains_key(&1) && !r.files.contains_key(&2));
    }

    #[test]
    fn new_snapshot_replaces_everything_it_covers() {
        let s = Snapshot::build(&[
            file(0, 9, 1, 1, 3, &[1, 2, 3]),
            file(1, 0, 2, 2, 3, &[3]),
            file(2, 0, 3, 3, 3, &[1]),
        ])
        .unwrap();
        let snap = file(3, 9, 1, 2, 3, &[1, 2, 3]);
        assert!(s.can_repoint(&snap.meta.info));
        let (r, _) = s.repoint(&snap);
        assert_eq!(
            files_of(&r),
            vec![2, 3, 3],
            "page 1 changed after the snapshot and stays"
        );
        assert_eq!(r.txid, Txid::new(3));
    }
}
