//! The end of a file: the page index, its size, and the trailer.
//!
//! `... | 00 00 00 00 00 00 (end of frames) | index varints | 0 | index size u64 | PostApply u64 | FileChecksum u64`
//!
//! The index lists, for each page in ascending pgno, the absolute offset of its frame and the
//! frame's size including its 6-byte header. A reader fetches the last [`TAIL_SIZE`] bytes,
//! learns the index size, fetches the index, and from then on can fetch single page frames.

use std::ops::Range;

use super::be::u64_at;
use super::checksum::CHECKSUM_FLAG;
use super::varint::{read_uvarint, write_uvarint};
use super::{LtxError, HEADER_SIZE, MAX_PAGE_SIZE, PAGE_HEADER_SIZE, TAIL_SIZE, TRAILER_SIZE};

/// The last 16 bytes of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Database checksum after applying the file; 0 when the header says "no checksums".
    pub post_apply_checksum: u64,
    /// CRC-64 over the logical file content (see `decoder.rs` for exactly which bytes).
    pub file_checksum: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }
}

/// One page index element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageIndexEntry {
    pub pgno: u32,
    /// Absolute byte offset of the page frame (its 6-byte header) in the file.
    pub offset: u64,
    /// Frame size in bytes, header included.
    pub size: u32,
}

impl PageIndexEntry {
    /// Offset just past the frame. Cannot overflow: offset and size come from a slice.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.size))
    }
}

/// Decodes the fixed-size tail from the last [`TAIL_SIZE`] bytes of `b` (a caller may pass
/// a longer read of the file's end). Returns the byte size of the index's varint part
/// (terminator included, size field excluded) and the trailer.
pub fn decode_tail(b: &[u8]) -> Result<(u64, Trailer), LtxError> {
    let start = b.len().checked_sub(TAIL_SIZE).ok_or_else(|| {
        LtxError::truncated(format!("file tail is {} of {TAIL_SIZE} bytes", b.len()))
    })?;
    let short = || LtxError::truncated("file tail");
    let index_size = u64_at(b, start).ok_or_else(short)?;
    let trailer = Trailer {
        post_apply_checksum: u64_at(b, start + 8).ok_or_else(short)?,
        file_checksum: u64_at(b, start + 16).ok_or_else(short)?,
    };
    if index_size == 0 {
        // Even an empty index holds its one-byte terminator.
        return Err(LtxError::BadIndex("index size is 0".into()));
    }
    if trailer.file_checksum & CHECKSUM_FLAG == 0 {
        return Err(LtxError::BadTrailer(format!(
            "file checksum {:016x} lacks the flag bit 63",
            trailer.file_checksum
        )));
    }
    if trailer.post_apply_checksum != 0 && trailer.post_apply_checksum & CHECKSUM_FLAG == 0 {
        return Err(LtxError::BadTrailer(format!(
            "post-apply checksum {:016x} lacks the flag bit 63",
            trailer.post_apply_checksum
        )));
    }
    Ok((index_size, trailer))
}

/// Where the index's varint part lies in a file of `file_len` bytes, given the index size
/// from [`decode_tail`]. It must leave room for the header and the end-of-frames marker.
pub fn index_range(file_len: u64, index_size: u64) -> Result<Range<u64>, LtxError> {
    let end = file_len
        .checked_sub(TAIL_SIZE as u64)
        .ok_or_else(|| LtxError::truncated(format!("file is {file_len} bytes")))?;
    let start = end
        .checked_sub(index_size)
        .filter(|s| *s >= (HEADER_SIZE + PAGE_HEADER_SIZE) as u64)
        .ok_or_else(|| {
            LtxError::BadIndex(format!(
                "an index of {index_size} bytes does not fit in a {file_len}-byte file"
            ))
        })?;
    Ok(start..end)
}

/// The smallest plausible frame: header, size prefix, one byte of LZ4 block.
const MIN_FRAME_SIZE: u64 = (PAGE_HEADER_SIZE + 4 + 1) as u64;

/// The largest frame a page of `page_size` bytes can need: the LZ4 worst case for
/// incompressible input (n + n/255 + 16) plus the page header, the 4-byte size prefix of the
/// block encoding, and up to 40 bytes of LZ4 frame overhead (7..19-byte frame header, block
/// size, block checksum, end mark, content checksum) for the old frame encoding.
pub fn max_frame_size(page_size: u32) -> u64 {
    let n = u64::from(page_size);
    PAGE_HEADER_SIZE as u64 + 4 + 40 + n + n / 255 + 16
}

/// Decodes exactly the index's varint part (terminator included, size field excluded).
///
/// Beyond well-formed varints it enforces what every Litestream writer produces and a reader
/// relies on: strictly ascending page numbers, sizes that a page frame can have, and frames
/// laid end to end from the header onward in index order (Go's encoder writes frames in
/// ascending pgno and records each one's offset and size as written). That last rule
/// lets a reader trust offsets it is about to fetch without reading any frame first; the
/// caller checks that the last frame ends where the file's end-of-frames marker should be.
pub fn decode_page_index(b: &[u8]) -> Result<Vec<PageIndexEntry>, LtxError> {
    // Each entry needs at least 3 bytes, so this is bounded by the input's length.
    let mut entries: Vec<PageIndexEntry> = Vec::with_capacity(b.len() / 3);
    let mut pos = 0usize;
    let next = |what: &str, pos: &mut usize| -> Result<u64, LtxError> {
        let rest = b.get(*pos..).unwrap_or_default();
        let (v, n) = read_uvarint(rest).ok_or_else(|| {
            LtxError::BadIndex(format!(
                "truncated or overlong varint ({what}) at byte {pos}"
            ))
        })?;
        *pos += n;
        Ok(v)
    };
    let mut expect_offset = HEADER_SIZE as u64;
    loop {
        if pos >= b.len() {
            return Err(LtxError::BadIndex("no terminator".into()));
        }
        let pgno = next("pgno", &mut pos)?;
        if pgno == 0 {
            break;
        }
        let offset = next("offset", &mut pos)?;
        let size = next("size", &mut pos)?;
        let pgno = u32::try_from(pgno)
            .map_err(|_| LtxError::BadIndex(format!("page number {pgno} exceeds 32 bits")))?;
        if let Some(prev) = entries.last() {
            if pgno <= prev.pgno {
                return Err(LtxError::BadIndex(format!(
                    "page {pgno} follows page {}: not ascending",
                    prev.pgno
                )));
            }
        }
        if !(MIN_FRAME_SIZE..=max_frame_size(MAX_PAGE_SIZE)).contains(&size) {
            return Err(LtxError::BadIndex(format!(
                "page {pgno} has an implausible frame size {size}"
            )));
        }
        if offset != expect_offset {
            return Err(LtxError::BadIndex(format!(
                "page {pgno} frame at offset {offset}, expected {expect_offset} (frames are contiguous)"
            )));
        }
        // size fits u32 (checked against max_frame_size above); offset + size cannot overflow
        // because offset equals the running sum of earlier sizes, each below 2^17.
        let size = size as u32;
        expect_offset = offset.saturating_add(u64::from(size));
        entries.push(PageIndexEntry { pgno, offset, size });
    }
    if pos != b.len() {
        return Err(LtxError::BadIndex(format!(
            "{} bytes after the terminator",
            b.len() - pos
        )));
    }
    Ok(entries)
}

/// Encodes the index's varint part, terminator included (the encoder appends the size).
pub fn encode_page_index(entries: &[PageIndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 8 + 1);
    for e in entries {
        write_uvarint(&mut out, u64::from(e.pgno));
        write_uvarint(&mut out, e.offset);
        write_uvarint(&mut out, u64::from(e.size));
    }
    write_uvarint(&mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<PageIndexEntry> {
        vec![
            PageIndexEntry {
                pgno: 1,
                offset: 100,
                size: 61,
            },
            PageIndexEntry {
                pgno: 2,
                offset: 161,
                size: 300,
            },
            PageIndexEntry {
                pgno: 300,
                offset: 461,
                size: 20,
            },
        ]
    }

    #[test]
    fn index_round_trips() {
        let b = encode_page_index(&entries());
        assert_eq!(decode_page_index(&b).unwrap(), entries());
        assert_eq!(decode_page_index(&[0]).unwrap(), vec![]);
    }

    #[test]
    fn matches_a_real_single_page_index() {
        // From Litestream 0.5.17's 0000000000000002-0000000000000002.ltx (page size 1024):
        // page 2, frame at 100, 61 bytes; then the terminator.
        let e = decode_page_index(&[0x02, 0x64, 0x3d, 0x00]).unwrap();
        assert_eq!(
            e,
            vec![PageIndexEntry {
                pgno: 2,
                offset: 100,
                size: 61
            }]
        );
    }

    #[test]
    fn index_rejects_malformed() {
        let good = encode_page_index(&entries());
        assert!(decode_page_index(&[]).is_err());
        assert!(
            decode_page_index(&good[..good.len() - 1]).is_err(),
            "no terminator"
        );
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode_page_index(&extra).is_err(), "trailing garbage");
        let mut e = entries();
        e[1].pgno = 1;
        assert!(
            decode_page_index(&encode_page_index(&e)).is_err(),
            "not ascending"
        );
        let mut e = entries();
        e[1].offset += 1;
        assert!(
            decode_page_index(&encode_page_index(&e)).is_err(),
            "gap between frames"
        );
        let mut e = entries();
        e[0].offset = 0;
        assert!(
            decode_page_index(&encode_page_index(&e)).is_err(),
            "frame over header"
        );
        let mut e = entries();
        e[2].size = 3;
        assert!(
            decode_page_index(&encode_page_index(&e)).is_err(),
            "tiny frame"
        );
        let mut big = Vec::new();
        write_uvarint(&mut big, 1 << 32);
        big.extend_from_slice(&[100, 20, 0]);
        assert!(decode_page_index(&big).is_err(), "pgno beyond u32");
        let mut huge = vec![1, 100];
        write_uvarint(&mut huge, 1 << 40);
        huge.push(0);
        assert!(
            decode_page_index(&huge).is_err(),
            "frame size beyond any page"
        );
    }

    #[test]
    fn tail_round_trips_and_validates() {
        let t = Trailer {
            post_apply_checksum: 0,
            file_checksum: CHECKSUM_FLAG | 5,
        };
        let mut b = vec![9u8; 3];
        b.extend_from_slice(&4u64.to_be_bytes());
        b.extend_from_slice(&t.encode());
        assert_eq!(decode_tail(&b).unwrap(), (4, t));
        assert!(decode_tail(&b[4..]).is_err(), "23 bytes");

        let mut no_flag = b.clone();
        let n = no_flag.len();
        no_flag[n - 8] = 0;
        assert!(matches!(
            decode_tail(&no_flag),
            Err(LtxError::BadTrailer(_))
        ));
        let mut zero_index = b.clone();
        zero_index[3..11].fill(0);
        assert!(decode_tail(&zero_index).is_err());
        let mut bad_post = b.clone();
        bad_post[11..19].copy_from_slice(&7u64.to_be_bytes());
        assert!(matches!(
            decode_tail(&bad_post),
            Err(LtxError::BadTrailer(_))
        ));
    }

    #[test]
    fn index_range_stays_inside_the_file() {
        assert_eq!(index_range(200, 4).unwrap(), 172..176);
        assert_eq!(index_range(131, 1).unwrap(), 106..107);
        assert!(index_range(130, 1).is_err());
        assert!(index_range(10, 1).is_err());
        assert!(index_range(200, u64::MAX).is_err());
    }
}
