//! The page index: page number → where the newest version of that page lives
//! (file, byte offset, frame size).
//!
//! Each published TXID needs its own immutable index (readers pin one for a whole read
//! transaction) while the poller builds the next. The index is therefore a vector of
//! reference-counted chunks: a new version copies only the chunks whose pages changed.
//! An entry is stored in 12 bytes (file id, then a 40-bit offset and a 24-bit frame size
//! packed together); chunk overhead is 8 bytes per `CHUNK` pages: 12.008 bytes a page.

use std::sync::Arc;

/// Identifies one LTX file for the lifetime of a replica (never reused).
pub type FileId = u32;

const CHUNK: usize = 1024;

/// Frames at offsets from here on, or of this size or more, cannot be indexed (an LTX
/// file of a terabyte; a frame over 16 MiB when pages are at most 64 KiB). `files::load`
/// refuses such files with a clear error.
pub const MAX_OFFSET: u64 = 1 << 40;
pub const MAX_FRAME: u32 = 1 << 24;

/// Where a page's frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub size: u32,
    pub offset: u64,
}

impl Loc {
    /// No version of the page in any file: it reads as zeros.
    pub const NONE: Loc = Loc {
        file: FileId::MAX,
        size: 0,
        offset: 0,
    };

    pub fn is_none(&self) -> bool {
        self.file == FileId::MAX
    }
}

/// A `Loc` as stored: 12 bytes, alignment 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    file: FileId,
    /// Low 32 bits of the offset.
    lo: u32,
    /// High 8 bits of the offset, then the frame size in the upper 24 bits.
    hi: u32,
}

const _: () = assert!(std::mem::size_of::<Packed>() == 12);

impl Packed {
    const NONE: Packed = Packed {
        file: FileId::MAX,
        lo: 0,
        hi: 0,
    };

    fn pack(l: Loc) -> Packed {
        debug_assert!(l.offset < MAX_OFFSET && l.size < MAX_FRAME, "{l:?}");
        Packed {
            file: l.file,
            lo: l.offset as u32,
            hi: ((l.offset >> 32) as u32 & 0xff) | (l.size << 8),
        }
    }

    fn unpack(self) -> Loc {
        if self.file == FileId::MAX {
            return Loc::NONE;
        }
        Loc {
            file: self.file,
            size: self.hi >> 8,
            offset: self.lo as u64 | ((self.hi & 0xff) as u64) << 32,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PageIndex {
    chunks: Vec<Arc<[Packed; CHUNK]>>,
    /// Database size in pages: entries above it are not part of the database.
    pages: u32,
}

impl PageIndex {
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The location of `pgno` (1-based), `Loc::NONE` when absent or beyond the end.
    pub fn get(&self, pgno: u32) -> Loc {
        if pgno == 0 || pgno > self.pages {
            return Loc::NONE;
        }
        let i = (pgno - 1) as usize;
        match self.chunks.get(i / CHUNK) {
            Some(c) => c[i % CHUNK].unpack(),
            None => Loc::NONE,
        }
    }

    /// Sets `pgno` and returns the location it replaces.
    pub fn set(&mut self, pgno: u32, loc: Loc) -> Loc {
        debug_assert!(pgno >= 1);
        let i = (pgno.max(1) - 1) as usize;
        let c = i / CHUNK;
        while self.chunks.len() <= c {
            self.chunks.push(Arc::new([Packed::NONE; CHUNK]));
        }
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        std::mem::replace(&mut chunk[i % CHUNK], Packed::pack(loc)).unpack()
    }

    /// Sets the database size. Pages above it are dropped now, so that a database that
    /// shrank and grew again never shows a page from before the shrink.
    pub fn truncate(&mut self, pages: u32) -> Vec<(u32, Loc)> {
        let mut dropped = Vec::new();
        let keep_chunks = (pages as usize).div_ceil(CHUNK);
        for pgno in pages + 1..=self.capacity() {
            let old = self.get_raw(pgno);
            if !old.is_none() {
                dropped.push((pgno, old));
                if ((pgno - 1) as usize) / CHUNK < keep_chunks {
                    self.set(pgno, Loc::NONE);
                }
            }
        }
        self.chunks.truncate(keep_chunks);
        self.pages = pages;
        dropped
    }

    fn capacity(&self) -> u32 {
        (self.chunks.len() * CHUNK).min(u32::MAX as usize) as u32
    }

    fn get_raw(&self, pgno: u32) -> Loc {
        let i = (pgno - 1) as usize;
        self.chunks
            .get(i / CHUNK)
            .map(|c| c[i % CHUNK].unpack())
            .unwrap_or(Loc::NONE)
    }

    /// Bytes of memory held by the entries (for stats and the memory benchmark).
    pub fn memory_bytes(&self) -> usize {
        self.chunks.len() * (std::mem::size_of::<[Packed; CHUNK]>() + std::mem::size_of::<usize>())
    }

    /// Pages whose location differs between `self` and `other` (including pages only one of
    /// them has). Chunks the two versions share are skipped without a look.
    pub fn differing(&self, other: &PageIndex) -> Vec<u32> {
        let mut out = Vec::new();
        let pages = self.pages.max(other.pages);
        for c in 0..self.chunks.len().max(other.chunks.len()) {
            if let (Some(a), Some(b)) = (self.chunks.get(c), other.chunks.get(c)) {
                if Arc::ptr_eq(a, b) && self.pages == other.pages {
                    continue;
                }
            }
            let first = (c * CHUNK) as u32 + 1;
            for pgno in first
                ..first
                    .saturating_add(CHUNK as u32)
                    .min(pages.saturating_add(1))
            {
                if self.get(pgno) != other.get(pgno) {
                    out.push(pgno);
                }
            }
        }
        out
    }

    /// Every (pgno, loc) present, in page order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Loc)> + '_ {
        (1..=self.pages)
            .map(|p| (p, self.get(p)))
            .filter(|(_, l)| !l.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(file: FileId, offset: u64) -> Loc {
        Loc {
            file,
            size: 10,
            offset,
        }
    }

    /// Pages 1..=pages, page p at offset p of file 1.
    fn filled(pages: u32) -> PageIndex {
        let mut ix = PageIndex::default();
        for p in 1..=pages {
            ix.set(p, loc(1, p as u64));
        }
        ix.truncate(pages);
        ix
    }

    #[test]
    fn versions_share_unchanged_chunks() {
        let a = filled(3000);
        let mut b = a.clone();
        assert_eq!(b.set(5, loc(2, 0)), loc(1, 5));
        assert_eq!(a.get(5), loc(1, 5), "the old version is untouched");
        assert_eq!(b.get(5), loc(2, 0));
        assert!(Arc::ptr_eq(&a.chunks[1], &b.chunks[1]));
        assert!(!Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
    }

    #[test]
    fn differing_pages_between_versions() {
        let a = filled(3000);
        let mut b = a.clone();
        b.set(5, loc(2, 0));
        b.set(2500, loc(2, 1));
        assert_eq!(a.differing(&b), vec![5, 2500]);
        b.truncate(3100);
        b.set(3050, loc(2, 2));
        assert_eq!(b.differing(&a), vec![5, 2500, 3050]);
        assert!(a.differing(&a.clone()).is_empty());
    }

    #[test]
    fn shrink_then_grow_forgets_old_pages() {
        let mut ix = PageIndex::default();
        for p in 1..=10 {
            ix.set(p, loc(1, p as u64));
        }
        ix.truncate(10);
        let dropped = ix.truncate(4);
        assert_eq!(dropped.len(), 6);
        assert!(ix.get(7).is_none());
        ix.truncate(8);
        assert!(
            ix.get(7).is_none(),
            "page 7 must not come back from before the shrink"
        );
        assert_eq!(ix.get(4), loc(1, 4));
    }

    /// The page index's memory measured: a 10 GB database of 4 KiB pages (2,621,440 pages),
    /// synthetic, every page in a file at a large offset. Target: at most 16 bytes a page.
    #[test]
    fn twelve_bytes_a_page_at_10_gb() {
        let mut ix = PageIndex::default();
        let pages = (10u64 << 30) / 4096;
        for p in 1..=pages as u32 {
            ix.set(p, loc(p % 7, p as u64 * 1100));
        }
        ix.truncate(pages as u32);
        let per_page = ix.memory_bytes() as f64 / pages as f64;
        eprintln!("page index: {per_page:.3} bytes a page for {pages} pages (10 GB)");
        assert!(per_page <= 12.01, "{per_page} bytes a page");
        assert_eq!(ix.get(pages as u32), loc((pages % 7) as u32, pages * 1100));
    }

    #[test]
    fn packing_keeps_the_largest_offsets_and_sizes() {
        let mut ix = PageIndex::default();
        let big = Loc {
            file: 3,
            size: MAX_FRAME - 1,
            offset: MAX_OFFSET - 1,
        };
        ix.set(1, big);
        ix.set(2, loc(0, 0));
        ix.truncate(3);
        assert_eq!(ix.get(1), big);
        assert_eq!(ix.get(2), loc(0, 0));
        assert!(ix.get(3).is_none());
        assert_eq!(ix.set(1, Loc::NONE), big);
        assert!(ix.get(1).is_none());
    }
}
