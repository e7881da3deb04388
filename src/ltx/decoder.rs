//! Whole-file decoding and verification, for tests, tools and integrity checks (the VFS reads
//! single frames through the index instead).
//!
//! # The file checksum
//!
//! CRC-64/GO-ISO, bit 63 set, over, in file order:
//! 1. the 100-byte header;
//! 2. for each page frame: its 6-byte header and, for block frames, the 4-byte size prefix,
//!    exactly as stored, followed by the *decompressed* page (never the LZ4 bytes);
//! 3. the 6-byte zero end-of-frames marker;
//! 4. the page index varints with their terminator, and the u64 index size;
//! 5. the PostApplyChecksum field (the first 8 trailer bytes).
//!
//! Verified against the real files in `tests/fixtures/ltx/` from Litestream 0.5.17 (block
//! frames), 0.5.10 (LZ4-frame pages, which have no size prefix to hash) and a mixed chain,
//! with page sizes 1024, 4096 and 65536: every one matches this rule, which is also what
//! superfly/ltx's Go encoder does (`Encoder.write` hashes everything but the compressed data
//! and the FileChecksum itself).

use super::checksum::{Crc64, DatabaseChecksum};
use super::frame::{decompress, parse_frame, PageEncoding};
use super::tail::{decode_page_index, decode_tail, index_range, PageIndexEntry, Trailer};
use super::{Header, LtxError, HEADER_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE};

/// One page as stored in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedPage {
    pub pgno: u32,
    pub encoding: PageEncoding,
    pub data: Vec<u8>,
}

/// A fully decoded and verified file.
#[derive(Clone, Debug)]
pub struct DecodedFile {
    pub header: Header,
    /// In file order, which is ascending pgno.
    pub pages: Vec<DecodedPage>,
    pub index: Vec<PageIndexEntry>,
    pub trailer: Trailer,
}

/// A verified file, its pages decompressed and checked but not kept.
#[derive(Clone, Debug)]
pub struct VerifiedFile {
    pub header: Header,
    pub index: Vec<PageIndexEntry>,
    pub trailer: Trailer,
}

/// Decodes a whole file and verifies everything [`verify_file`] does, keeping the pages.
/// Memory is the decompressed size of the file; use [`verify_file`] when pages are not needed.
pub fn decode_file(b: &[u8]) -> Result<DecodedFile, LtxError> {
    let mut pages = Vec::new();
    let v = walk(b, |p| pages.push(p))?;
    Ok(DecodedFile {
        header: v.header,
        pages,
        index: v.index,
        trailer: v.trailer,
    })
}

/// Verifies a whole file while holding one page at a time: header, every frame (ascending
/// pages within the commit size, no lock page, each decompressing to exactly one page), that
/// the index lists exactly those frames at their offsets, the file checksum, that a snapshot
/// holds every page, and the post-apply checksum of a snapshot when checksums are present.
pub fn verify_file(b: &[u8]) -> Result<VerifiedFile, LtxError> {
    walk(b, |_| {})
}

fn walk(b: &[u8], mut on_page: impl FnMut(DecodedPage)) -> Result<VerifiedFile, LtxError> {
    let header = Header::decode(b)?;
    let (index_size, trailer) = decode_tail(b)?;
    let range = index_range(b.len() as u64, index_size)?;
    // Both ends lie within b (index_range subtracts from b.len()), so they fit in usize.
    let (index_start, index_end) = (range.start as usize, range.end as usize);
    let bad_range = || LtxError::truncated("page index");
    let index = decode_page_index(b.get(index_start..index_end).ok_or_else(bad_range)?)?;
    let frames = b.get(..index_start).ok_or_else(bad_range)?;

    let page_size = header.page_size;
    let lock = header.lock_pgno();
    let mut hash = Crc64::new();
    hash.update(b.get(..HEADER_SIZE).ok_or_else(bad_range)?);
    let mut db = DatabaseChecksum::new(page_size);
    let mut pos = HEADER_SIZE;
    let mut prev = 0u32;
    let mut count = 0usize;
    loop {
        let rest = frames.get(pos..).unwrap_or_default();
        let head = rest.get(..PAGE_HEADER_SIZE).ok_or_else(|| {
            LtxError::truncated(format!(
                "frames end at byte {pos} without the end-of-frames marker"
            ))
        })?;
        if head.iter().all(|&x| x == 0) {
            hash.update(head);
            pos += PAGE_HEADER_SIZE;
            break;
        }
        let raw = parse_frame(rest)?;
        let pgno = raw.pgno;
        check_order(&header, prev, pgno, lock)?;
        let entry = index.get(count).ok_or_else(|| {
            LtxError::Mismatch(format!(
                "page {pgno} at offset {pos} is missing from the index"
            ))
        })?;
        if entry.pgno != pgno || entry.offset != pos as u64 || entry.size as usize != raw.len() {
            return Err(LtxError::Mismatch(format!(
                "index says page {} at {}+{}, the frames have page {pgno} at {pos}+{}",
                entry.pgno,
                entry.offset,
                entry.size,
                raw.len()
            )));
        }
        let data = decompress(&raw, page_size)?;
        hash.update(raw.prefix);
        hash.update(&data);
        db.add(pgno, &data);
        pos += raw.len();
        prev = pgno;
        count += 1;
        on_page(DecodedPage {
            pgno,
            encoding: raw.encoding,
            data,
        });
    }
    if pos != index_start {
        return Err(LtxError::Mismatch(format!(
            "{} bytes between the end-of-frames marker and the page index",
            index_start.saturating_sub(pos)
        )));
    }
    if count != index.len() {
        return Err(LtxError::Mismatch(format!(
            "the index lists {} pages, the file holds {count}",
            index.len()
        )));
    }

    // Index varints, index size, PostApplyChecksum: everything up to the FileChecksum.
    let checksum_start = b.len().saturating_sub(TRAILER_SIZE / 2);
    hash.update(b.get(index_start..checksum_start).ok_or_else(bad_range)?);
    let got = hash.finish_flagged();
    if got != trailer.file_checksum {
        return Err(LtxError::ChecksumMismatch {
            what: "file",
            expected: trailer.file_checksum,
            got,
        });
    }

    if header.is_snapshot() {
        let complete =
            prev == header.commit || (header.commit == lock && prev.checked_add(1) == Some(lock));
        if !complete {
            return Err(LtxError::Mismatch(format!(
                "snapshot ends at page {prev} but the database has {} pages",
                header.commit
            )));
        }
    }
    if !header.has_checksums() {
        if header.pre_apply_checksum != 0 || trailer.post_apply_checksum != 0 {
            return Err(LtxError::Mismatch(
                "database checksums present although the header says there are none".into(),
            ));
        }
    } else if header.is_snapshot() && db.finish() != trailer.post_apply_checksum {
        // Only a snapshot holds the whole database, so only there can it be recomputed.
        return Err(LtxError::ChecksumMismatch {
            what: "post-apply database",
            expected: trailer.post_apply_checksum,
            got: db.finish(),
        });
    }

    Ok(VerifiedFile {
        header,
        index,
        trailer,
    })
}

/// Frames come in ascending pgno, within the database, never the lock page; a snapshot
/// lists every page from 1 (skipping only the lock page).
fn check_order(h: &Header, prev: u32, pgno: u32, lock: u32) -> Result<(), LtxError> {
    if pgno <= prev {
        return Err(LtxError::BadFrame(format!(
            "page {pgno} follows page {prev}: not ascending"
        )));
    }
    if pgno == lock {
        return Err(LtxError::BadFrame(format!("page {pgno} is the lock page")));
    }
    if pgno > h.commit {
        return Err(LtxError::BadFrame(format!(
            "page {pgno} is beyond the database size {}",
            h.commit
        )));
    }
    if h.is_snapshot() {
        let want = match prev.saturating_add(1) {
            n if n == lock => n.saturating_add(1),
            n => n,
        };
        if pgno != want {
            return Err(LtxError::BadFrame(format!(
                "snapshot jumps from page {prev} to page {pgno}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Encoder, Txid};

    fn file(enc: PageEncoding) -> Vec<u8> {
        let h = Header::new(1024, 3, Txid::new(1), Txid::new(1), 0);
        let mut e = Encoder::with_encoding(Vec::new(), h, enc).unwrap();
        for p in 1..=3u8 {
            e.add_page(u32::from(p), &[p; 1024]).unwrap();
        }
        e.finish(0).unwrap().0
    }

    #[test]
    fn no_single_bit_flip_goes_unnoticed() {
        // The checksum covers every byte except the compressed data (covered through the
        // decompressed page) and itself (compared). So any flip must either fail, or, where it
        // only touches LZ4 bytes a decoder ignores (the match-length nibble of a block's last
        // token, which has no match), still yield exactly the original pages.
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let good = file(enc);
            let want = decode_file(&good).unwrap().pages;
            let mut harmless = 0;
            for i in 0..good.len() {
                for bit in [0x01u8, 0x10, 0x80] {
                    let mut b = good.clone();
                    b[i] ^= bit;
                    if let Ok(d) = decode_file(&b) {
                        assert_eq!(d.pages, want, "{enc:?}: flip {bit:#x} at byte {i}");
                        assert!((110..good.len() - 40).contains(&i), "{enc:?}: byte {i}");
                        harmless += 1;
                    }
                }
            }
            assert!(harmless < 10, "{enc:?}: {harmless} harmless flips");
        }
    }

    #[test]
    fn reports_what_is_wrong() {
        let good = file(PageEncoding::Lz4Block);
        let mut b = good.clone();
        let n = b.len();
        b[n - 1] ^= 1;
        assert!(matches!(
            decode_file(&b),
            Err(LtxError::ChecksumMismatch { what: "file", .. })
        ));
        assert!(matches!(
            decode_file(&good[..50]),
            Err(LtxError::Truncated { .. })
        ));
    }

    #[test]
    fn checks_snapshot_post_apply_checksum() {
        let mut h = Header::new(1024, 1, Txid::new(1), Txid::new(1), 0);
        h.flags = 0;
        let page = [5u8; 1024];
        let right = crate::ltx::page_checksum(1, &page);
        for (post, ok) in [(right, true), (right ^ 1, false)] {
            let mut e = Encoder::new(Vec::new(), h.clone()).unwrap();
            e.add_page(1, &page).unwrap();
            let (bytes, _) = e.finish(post).unwrap();
            assert_eq!(verify_file(&bytes).is_ok(), ok);
        }
    }
}
