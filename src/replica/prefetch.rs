//! B-tree aware prefetch. When an interior b-tree page is decoded, its child page numbers
//! are remembered; when a second page below the same parent misses (a scan moving to the
//! next sibling, or lookups that keep landing under this parent), the parent's other
//! children are fetched with it: in parallel, grouped by LTX file into coalesced ranged reads
//! (see `Replica::prefetch`). A single point lookup misses once per parent and prefetches
//! nothing. `prefetch` (pages per trigger, 0 = off) bounds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::index::{FileId, Loc};
use super::{meter, Replica, Snapshot};
use crate::error::{Error, Result};

/// Frames closer than this to the previous one are read in the same request (the bytes
/// between are read and dropped: cheaper than a request).
const GAP: u64 = 16 * 1024;
/// One prefetch request reads at most this much.
const MAX_RANGE: u64 = 2 << 20;
/// Prefetch requests in flight at once.
const PARALLEL: usize = 16;

/// Default bound: pages fetched ahead per trigger.
pub const DEFAULT_PREFETCH: u32 = 512;

/// Child pages remembered at most (about 16 MiB of maps): beyond it the memory is cleared and
/// refills from new reads, so it stays small for any database size.
const MAX_CHILDREN: usize = 1 << 20;

pub struct Prefetcher {
    limit: AtomicU32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    parent_of: HashMap<u32, u32>,
    nodes: HashMap<u32, Node>,
}

struct Node {
    children: Arc<[u32]>,
    misses: u32,
}

impl Prefetcher {
    pub fn new(limit: u32) -> Self {
        Prefetcher {
            limit: AtomicU32::new(limit),
            state: Mutex::new(State::default()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Remembers the children of `pgno` if `page` is an interior b-tree page.
    pub fn observe(&self, pgno: u32, page: &[u8]) {
        if self.limit() == 0 {
            return;
        }
        let Some(children) = interior_children(page, pgno) else {
            return;
        };
        let mut st = self.state.lock();
        if st.parent_of.len() + children.len() > MAX_CHILDREN {
            *st = State::default();
        }
        for &c in &children {
            st.parent_of.insert(c, pgno);
        }
        st.nodes.insert(
            pgno,
            Node {
                children: children.into(),
                misses: 0,
            },
        );
    }

    /// Called on a cache miss of `pgno`: the pages to fetch along with it (never `pgno`
    /// itself), empty unless this is at least the second miss below the same parent. The
    /// children after `pgno` come first (a scan goes forward), then the ones before it.
    pub fn on_miss(&self, pgno: u32) -> Vec<u32> {
        let limit = self.limit() as usize;
        if limit == 0 {
            return Vec::new();
        }
        let mut st = self.state.lock();
        let Some(parent) = st.parent_of.get(&pgno).copied() else {
            return Vec::new();
        };
        let Some(node) = st.nodes.get_mut(&parent) else {
            return Vec::new();
        };
        node.misses += 1;
        if node.misses < 2 {
            return Vec::new();
        }
        let children = node.children.clone();
        drop(st);
        let at = children.iter().position(|&c| c == pgno).unwrap_or(0);
        children[at + 1..]
            .iter()
            .chain(&children[..at])
            .copied()
            .filter(|&c| c != pgno)
            .take(limit)
            .collect()
    }
}

/// One coalesced ranged read: frames of `run` in file `file`, bytes `start..end`.
pub(super) struct Range {
    pub file: FileId,
    pub start: u64,
    pub end: u64,
    pub run: Vec<(u32, Loc)>,
}

/// Groups frames by file into ranged reads: sorted by (file, offset), a frame joins the
/// previous range when it starts at most `GAP` bytes after its end and the range stays
/// under `max_range`.
pub(super) fn coalesce(mut pages: Vec<(u32, Loc)>, max_range: u64) -> Vec<Range> {
    pages.sort_by_key(|(p, l)| (l.file, l.offset, *p));
    // The same frame asked twice is read once (one page number may sit in several files).
    pages.dedup_by_key(|(p, l)| (l.file, *p));
    let mut ranges: Vec<Range> = Vec::new();
    for (p, l) in pages {
        let end = l.offset + l.size as u64;
        match ranges.last_mut() {
            Some(r)
                if r.file == l.file
                    && l.offset >= r.end
                    && l.offset - r.end <= GAP
                    && end - r.start <= max_range =>
            {
                r.end = end;
                r.run.push((p, l));
            }
            _ => ranges.push(Range {
                file: l.file,
                start: l.offset,
                end,
                run: vec![(p, l)],
            }),
        }
    }
    ranges
}

impl Replica {
    /// Fetches `pgno` (at `loc`) together with the pages `ahead` that are not cached yet:
    /// coalesced ranged reads, all in flight at once, every page decoded into the cache.
    /// Only the read holding `pgno` must succeed; a failed prefetch read is dropped. Under a
    /// request budget, prefetch reads are trimmed to what the budget leaves.
    pub(super) fn prefetch(
        &self,
        snap: &Snapshot,
        pgno: u32,
        loc: Loc,
        ahead: &[u32],
    ) -> Result<Arc<[u8]>> {
        use futures::StreamExt;
        let mut pages = vec![(pgno, loc)];
        for &p in ahead {
            let l = snap.index.get(p);
            // A location kept for pinned states is read from where it was kept (its file
            // may be gone).
            if l.is_none() || self.cache.contains((l.file, p)) || self.retention.has((l.file, p)) {
                continue;
            }
            let on_disk = self.disk.as_ref().zip(snap.file(l.file));
            if on_disk.is_some_and(|(disk, meta)| disk.contains(meta, p)) {
                continue;
            }
            pages.push((p, l));
        }
        let mut ranges = coalesce(pages, MAX_RANGE);
        meter::allow(1)?;
        let keep = meter::remaining().min(ranges.len() as u64) as usize;
        if keep < ranges.len() {
            let at = ranges
                .iter()
                .position(|r| r.run.iter().any(|(p, _)| *p == pgno))
                .unwrap_or(0);
            let wanted = ranges.swap_remove(at);
            ranges.truncate(keep - 1);
            ranges.push(wanted);
        }
        let mut jobs = Vec::with_capacity(ranges.len());
        for r in ranges {
            let meta = snap
                .file(r.file)
                .ok_or_else(|| Error::Internal(format!("page {pgno} points to an unknown file")))?;
            jobs.push((meta.clone(), r));
        }
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let results = crate::runtime::block_on(async move {
            let reads = jobs.into_iter().map(|(meta, r)| {
                let store = store.clone();
                async move {
                    let bytes = store.read_range(&meta.info, r.start..r.end).await;
                    (meta, r, bytes)
                }
            });
            Ok(futures::stream::iter(reads)
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>()
                .await)
        })?;
        let (mut gets, mut bytes_read, mut wanted) = (0, 0, None);
        for (meta, r, bytes) in results {
            gets += 1;
            let has_wanted = r.run.iter().any(|(p, _)| *p == pgno);
            match bytes {
                Ok(bytes) => {
                    bytes_read += bytes.len() as u64;
                    let run = self.frames_in(snap, r.file, &bytes, r.start, r.run);
                    let out = self.cache_frames(&meta, snap.page_size, &bytes, r.start, &run, pgno);
                    if let Some(out) = out {
                        let name = self.store.describe(&meta.info);
                        wanted = Some(out.map_err(|e| Error::corrupt(name, e)));
                    }
                }
                Err(e) if has_wanted => wanted = Some(Err(e)),
                Err(e) => crate::log_debug!("prefetch read of {} failed: {e}", meta.info),
            }
        }
        meter::charge(gets, bytes_read, started.elapsed());
        wanted.unwrap_or_else(|| {
            Err(Error::Internal(format!(
                "page {pgno} was not in its own read"
            )))
        })
    }
}

impl Replica {
    /// `run` plus every other frame that `bytes` (read from `file` at `start`, beginning at a
    /// frame) hold whole and `snap` reads from there, not cached yet: the gaps a coalesced
    /// read crossed (index pages between table leaves, overflow pages) are cached too, as
    /// they cost nothing more to fetch. Walking stops at the first frame it cannot parse.
    fn frames_in(
        &self,
        snap: &Snapshot,
        file: FileId,
        bytes: &[u8],
        start: u64,
        mut run: Vec<(u32, Loc)>,
    ) -> Vec<(u32, Loc)> {
        let mut pos = 0usize;
        while let Some(head) = bytes.get(pos..pos + 4) {
            let pgno = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let Ok(len) = crate::ltx::page_frame_len(&bytes[pos..]) else {
                break;
            };
            if pos + len > bytes.len() {
                break;
            }
            let here = Loc {
                file,
                size: len as u32,
                offset: start + pos as u64,
            };
            if snap.index.get(pgno) == here
                && !run.iter().any(|(p, _)| *p == pgno)
                && !self.cache.contains((file, pgno))
            {
                run.push((pgno, here));
            }
            pos += len;
        }
        run
    }
}

/// The child page numbers of an interior table (0x05) or index (0x02) b-tree page: the left
/// child of every cell, then the right-most pointer. `None` for any other page, or one whose
/// header does not fit (then there is nothing to prefetch; SQLite reports the corruption).
pub fn interior_children(page: &[u8], pgno: u32) -> Option<Vec<u32>> {
    let h = if pgno == 1 { 100 } else { 0 };
    let kind = *page.get(h)?;
    if kind != 0x05 && kind != 0x02 {
        return None;
    }
    let be16 = |at: usize| {
        page.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let be32 = |at: usize| {
        page.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let cells = be16(h + 3)? as usize;
    let right = be32(h + 8)?;
    let mut children = Vec::with_capacity(cells + 1);
    for i in 0..cells {
        let cell = be16(h + 12 + 2 * i)? as usize;
        children.push(be32(cell)?);
    }
    children.push(right);
    children.retain(|&c| c != 0);
    Some(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interior table page (at `h`) with cells pointing to `children` and right-most `right`.
    fn interior(h: usize, kind: u8, children: &[u32], right: u32) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[h] = kind;
        p[h + 3..h + 5].copy_from_slice(&(children.len() as u16).to_be_bytes());
        p[h + 8..h + 12].copy_from_slice(&right.to_be_bytes());
        let mut content = 4096;
        for (i, c) in children.iter().enumerate() {
            content -= 8;
            p[content..content + 4].copy_from_slice(&c.to_be_bytes());
            p[content + 4] = i as u8; // the key (a rowid varint)
            let at = h + 12 + 2 * i;
            p[at..at + 2].copy_from_slice(&(content as u16).to_be_bytes());
        }
        p
    }

    #[test]
    fn reads_children_of_interior_pages_only() {
        let p = interior(0, 0x05, &[7, 3, 9], 12);
        assert_eq!(interior_children(&p, 5), Some(vec![7, 3, 9, 12]));
        let p = interior(100, 0x02, &[4], 8);
        assert_eq!(interior_children(&p, 1), Some(vec![4, 8]));
        let mut leaf = interior(0, 0x05, &[7], 8);
        leaf[0] = 0x0d;
        assert_eq!(interior_children(&leaf, 5), None);
        // A cell pointer outside the page: nothing, not a panic.
        let mut bad = interior(0, 0x05, &[7], 8);
        bad[12..14].copy_from_slice(&4094u16.to_be_bytes());
        assert_eq!(interior_children(&bad, 5), None);
        assert_eq!(interior_children(&[0x05, 0, 0], 5), None);
    }

    #[test]
    fn coalesces_nearby_frames_of_a_file_once_each() {
        let l = |file, offset| Loc {
            file,
            size: 1000,
            offset,
        };
        let ranges = coalesce(
            vec![
                (5, l(1, 3000)),
                (3, l(1, 100)),
                (4, l(1, 1100)),
                (9, l(2, 1000)),
                (6, l(1, 100_000)),
                // The same page number in another file (another version): read too.
                (6, l(2, 0)),
                (4, l(1, 1100)),
            ],
            MAX_RANGE,
        );
        let got: Vec<_> = ranges
            .iter()
            .map(|r| {
                (
                    r.file,
                    r.start,
                    r.end,
                    r.run.iter().map(|x| x.0).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 100, 4000, vec![3, 4, 5]),
                (1, 100_000, 101_000, vec![6]),
                (2, 0, 2000, vec![6, 9]),
            ]
        );
    }

    #[test]
    fn second_miss_below_a_parent_prefetches_its_other_children() {
        let pf = Prefetcher::new(3);
        pf.observe(2, &interior(0, 0x05, &[10, 11, 12, 13, 14], 15));
        assert!(pf.on_miss(99).is_empty(), "not below a known parent");
        assert!(pf.on_miss(12).is_empty(), "a first miss: a point lookup");
        assert_eq!(
            pf.on_miss(13),
            vec![14, 15, 10],
            "forward first, bounded by 3"
        );
        pf.set_limit(0);
        assert!(pf.on_miss(11).is_empty(), "off");
    }
}
