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

pub async fn load(store: &Store, info: &FileInfo, id: FileId) -> Result<LoadedFile> {
    let name = store.describe(info);
    let corrupt = |e: LtxError| Error::corrupt(name.clone(), e);
    let size = info.size;
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
        let (h, t) = futures::try_join!(
            store.read_range(info, 0..ltx::HEADER_SIZE as u64),
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
        bytes: whole.then_some(tail),
    })
}
