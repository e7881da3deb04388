//! Loading one LTX file's header and page index with as few ranged reads as possible:
//! the header is the first 100 bytes, the page index sits just before the last 24. A small
//! file is read whole in one request; a large one with two in parallel (header, tail), and a
//! third only when its index is longer than the tail read.

use std::sync::Arc;

use super::index::FileId;
use super::snapshot::{FileMeta, LoadedFile};
use crate::error::{Error, Result};
use crate::ltx::{self, Header, LtxError};
use crate::storage::{FileInfo, Store};

/// How much of a file's end one request reads, hoping to catch the whole page index.
const TAIL_READ: u64 = 64 * 1024;

/// How much of a file's start the header read of an open takes: the first frames (page 1,
/// the schema, the roots of early tables) come with the header at no extra round trip.
pub const HEAD_READ: u64 = 64 * 1024;

/// Loads `info`'s header and page index, reading its first `head` bytes (at least the
/// header) in the same round trip as its tail; the whole file when that covers it. The bytes
/// read from the start are kept in `LoadedFile::bytes` when they hold more than the header.
pub async fn load(store: &Store, info: &FileInfo, id: FileId, head: u64) -> Result<LoadedFile> {
    let name = store.describe(info);
    let corrupt = |e: LtxError| Error::corrupt(name.clone(), e);
    let size = store.plain_size(info).await?;
    if size < (ltx::HEADER_SIZE + ltx::TAIL_SIZE) as u64 {
        return Err(corrupt(LtxError::Truncated {
            what: format!("file is {size} bytes"),
        }));
    }
    let tail_start = size.saturating_sub(TAIL_READ);
    let whole = tail_start < ltx::HEADER_SIZE as u64;
    let (head, tail) = if whole {
        let all = store.read_range(info, 0..size).await?;
        (all.slice(0..ltx::HEADER_SIZE), all)
    } else {
        let head = head.clamp(ltx::HEADER_SIZE as u64, tail_start);
        let (h, t) = futures::try_join!(
            store.read_range(info, 0..head),
            store.read_range(info, tail_start..size)
        )?;
        (h, t)
    };
    let tail_start = size - tail.len() as u64;
    let header = Header::decode(&head).map_err(corrupt)?;
    if header.min_txid != info.min || header.max_txid != info.max {
        return Err(corrupt(LtxError::Mismatch(format!(
            "header says TXIDs {}-{}, the file name {}-{}",
            header.min_txid, header.max_txid, info.min, info.max
        ))));
    }
    let (index_len, trailer) =
        ltx::decode_tail(&tail[tail.len() - ltx::TAIL_SIZE..]).map_err(corrupt)?;
    let index_end = size - ltx::TAIL_SIZE as u64;
    let index_start = index_end
        .checked_sub(index_len)
        .filter(|s| *s >= ltx::HEADER_SIZE as u64)
        .ok_or_else(|| {
            corrupt(LtxError::Truncated {
                what: format!("page index of {index_len} bytes does not fit in a {size}-byte file"),
            })
        })?;
    let index_bytes = if index_start >= tail_start {
        tail.slice((index_start - tail_start) as usize..(index_end - tail_start) as usize)
    } else {
        store.read_range(info, index_start..index_end).await?
    };
    let pages = ltx::decode_page_index(&index_bytes).map_err(corrupt)?;
    for e in &pages {
        let end = e.offset.checked_add(e.size as u64);
        if e.offset < ltx::HEADER_SIZE as u64 || end.is_none_or(|end| end > index_start) {
            return Err(corrupt(LtxError::Mismatch(format!(
                "page {} frame at {}+{} lies outside the frames",
                e.pgno, e.offset, e.size
            ))));
        }
        if e.offset >= super::index::MAX_OFFSET || e.size >= super::index::MAX_FRAME {
            return Err(corrupt(LtxError::Mismatch(format!(
                "page {} frame at {}+{} is beyond what the page index holds (1 TiB files, 16 MiB frames)",
                e.pgno, e.offset, e.size
            ))));
        }
        if e.pgno > header.commit {
            return Err(corrupt(LtxError::Mismatch(format!(
                "page {} is beyond the database size {}",
                e.pgno, header.commit
            ))));
        }
    }
    Ok(LoadedFile {
        meta: Arc::new(FileMeta {
            id,
            info: info.clone(),
            header,
            post_apply_checksum: trailer.post_apply_checksum,
        }),
        pages: Arc::new(pages),
        bytes: if whole {
            Some(tail)
        } else {
            (head.len() > ltx::HEADER_SIZE).then_some(head)
        },
    })
}

/// Page indexes of immutable files, kept so that re-planning and moving between instants
/// reload little. Bounded by index entries (16 bytes each), not by files: one snapshot's
/// index can be as large as thousands of L0 files'.
pub struct IndexCache {
    lru: lru::LruCache<FileInfo, LoadedFile>,
    entries: usize,
    capacity: usize,
}

impl IndexCache {
    pub fn new(capacity_entries: usize) -> Self {
        IndexCache {
            lru: lru::LruCache::unbounded(),
            entries: 0,
            capacity: capacity_entries,
        }
    }

    pub fn get(&mut self, f: &FileInfo) -> Option<LoadedFile> {
        self.lru.get(f).cloned()
    }

    /// Keeps `file`'s index (not its bytes), evicting the least recently used.
    pub fn put(&mut self, file: &LoadedFile) {
        if file.pages.len() > self.capacity {
            return;
        }
        let kept = LoadedFile {
            bytes: None,
            ..file.clone()
        };
        self.entries += kept.pages.len();
        if let Some(old) = self.lru.put(file.meta.info.clone(), kept) {
            self.entries -= old.pages.len();
        }
        while self.entries > self.capacity {
            match self.lru.pop_lru() {
                Some((_, old)) => self.entries -= old.pages.len(),
                None => break,
            }
        }
    }
}

/// Every file of a chain must have the chain's page size.
pub fn check_page_size(store: &Store, file: &LoadedFile, page_size: u32) -> Result<()> {
    if file.meta.header.page_size == page_size {
        return Ok(());
    }
    Err(Error::corrupt(
        store.describe(&file.meta.info),
        LtxError::Mismatch(format!(
            "page size {} differs from the chain's {page_size}",
            file.meta.header.page_size
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{PageIndexEntry, Txid};

    fn file(id: FileId, max: u64, pages: usize) -> LoadedFile {
        LoadedFile {
            meta: Arc::new(crate::replica::snapshot::FileMeta {
                id,
                info: FileInfo::for_test(0, max, max),
                header: Header::new(4096, 1, Txid::new(max), Txid::new(max), 0),
                post_apply_checksum: 0,
            }),
            pages: Arc::new(
                (1..=pages as u32)
                    .map(|pgno| PageIndexEntry {
                        pgno,
                        offset: 100,
                        size: 10,
                    })
                    .collect(),
            ),
            bytes: Some(bytes::Bytes::from_static(b"whole file")),
        }
    }

    #[test]
    fn index_cache_is_bounded_by_entries_and_keeps_no_bytes() {
        let mut c = IndexCache::new(100);
        c.put(&file(1, 1, 60));
        c.put(&file(2, 2, 30));
        assert!(c.get(&FileInfo::for_test(0, 1, 1)).is_some());
        assert!(c.get(&FileInfo::for_test(0, 1, 1)).unwrap().bytes.is_none());
        c.put(&file(3, 3, 30)); // 120 > 100: the least recently used (file 2) goes
        assert!(c.get(&FileInfo::for_test(0, 2, 2)).is_none());
        assert!(c.get(&FileInfo::for_test(0, 3, 3)).is_some());
        c.put(&file(4, 4, 101)); // larger than the whole cache: not kept
        assert!(c.get(&FileInfo::for_test(0, 4, 4)).is_none());
        assert!(c.entries <= 100);
    }
}
