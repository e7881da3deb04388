//! One page frame: `pgno u32 | flags u16 | [size u32] | LZ4 data`.
//!
//! Two encodings exist in real replicas, told apart by page flag 0x1:
//! - flag 0x1 (Litestream 0.5.16+, ltx v0.5.x "block format"): a u32 byte count follows the
//!   header, then a raw LZ4 *block*.
//! - no flag (Litestream 0.5.0 to 0.5.15): an LZ4 *frame*, self-delimiting, no size prefix.
//!
//! A replica upgraded in place mixes both in one chain (even in one compacted file's history),
//! so every reader must accept both. Either way the data must decompress to exactly one page.

use std::io::{Read, Write};

use lz4_flex::block::DecompressError;

use super::be::{u16_at, u32_at};
use super::header::is_valid_page_size;
use super::lz4frame::lz4_frame_len;
use super::{LtxError, PAGE_HEADER_SIZE};

/// Page header flag: a u32 size follows and the data is an LZ4 block.
pub const PAGE_FLAG_SIZE: u16 = 0x1;

/// How a page's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageEncoding {
    /// Size-prefixed LZ4 block (flag 0x1): what Litestream 0.5.16 and later write.
    Lz4Block,
    /// LZ4 frame without a size prefix: what Litestream 0.5.0 to 0.5.15 wrote.
    Lz4Frame,
}

/// A page frame located but not yet decompressed.
pub(crate) struct RawFrame<'a> {
    pub pgno: u32,
    pub encoding: PageEncoding,
    /// The bytes before the compressed data, as stored: the 6-byte header, plus the 4-byte
    /// size for the block encoding. The file checksum covers exactly these.
    pub prefix: &'a [u8],
    pub compressed: &'a [u8],
}

impl RawFrame<'_> {
    pub fn len(&self) -> usize {
        self.prefix.len() + self.compressed.len()
    }
}

/// Locates the page frame at the start of `b`, which may continue past the frame.
/// A zero page header (the end-of-frames marker) is an error here: callers that walk a file
/// check for it first.
pub(crate) fn parse_frame(b: &[u8]) -> Result<RawFrame<'_>, LtxError> {
    let short = || LtxError::truncated(format!("page frame is {} bytes", b.len()));
    let pgno = u32_at(b, 0).ok_or_else(short)?;
    let flags = u16_at(b, 4).ok_or_else(short)?;
    if pgno == 0 {
        return Err(LtxError::BadFrame(
            "page number 0 (an end-of-frames marker where a page was expected)".into(),
        ));
    }
    if flags & !PAGE_FLAG_SIZE != 0 {
        return Err(LtxError::BadFrame(format!(
            "page {pgno} has unknown flags 0x{flags:04x}"
        )));
    }
    let (encoding, prefix_len, data_len) = if flags & PAGE_FLAG_SIZE != 0 {
        let size = u32_at(b, PAGE_HEADER_SIZE).ok_or_else(short)?;
        (PageEncoding::Lz4Block, PAGE_HEADER_SIZE + 4, size as usize)
    } else {
        let rest = b.get(PAGE_HEADER_SIZE..).unwrap_or_default();
        (
            PageEncoding::Lz4Frame,
            PAGE_HEADER_SIZE,
            lz4_frame_len(rest)?,
        )
    };
    let end = prefix_len.checked_add(data_len).ok_or_else(short)?;
    let compressed = b.get(prefix_len..end).ok_or_else(short)?;
    Ok(RawFrame {
        pgno,
        encoding,
        prefix: b.get(..prefix_len).ok_or_else(short)?,
        compressed,
    })
}

/// Length of the page frame at the start of `b` (which may continue past it): 10 + the size
/// prefix for block frames, or a walk of the LZ4 frame structure for old-style frames.
pub fn page_frame_len(b: &[u8]) -> Result<usize, LtxError> {
    Ok(parse_frame(b)?.len())
}

/// Decodes one page frame, exactly as fetched by a ranged read of the index's offset/size.
///
/// Checks the page number against what the index promised, that `frame` holds nothing past
/// the compressed data, and that the data decompresses to exactly `page_size` bytes: a short
/// or long page means corruption, and silently padding or cutting it would hand SQLite a
/// wrong page. Allocates one page (plus one byte to detect overlong output), never more.
pub fn decode_page_frame(
    frame: &[u8],
    page_size: u32,
    expected_pgno: u32,
) -> Result<Vec<u8>, LtxError> {
    if !is_valid_page_size(page_size) {
        return Err(LtxError::BadPageSize(page_size));
    }
    let raw = parse_frame(frame)?;
    if raw.pgno != expected_pgno {
        return Err(LtxError::WrongPage {
            expected: expected_pgno,
            got: raw.pgno,
        });
    }
    if raw.len() != frame.len() {
        return Err(LtxError::BadFrame(format!(
            "page {} frame is {} bytes but its data ends after {}",
            raw.pgno,
            frame.len(),
            raw.len()
        )));
    }
    decompress(&raw, page_size)
}

/// Decompresses a located frame into exactly one page.
pub(crate) fn decompress(raw: &RawFrame<'_>, page_size: u32) -> Result<Vec<u8>, LtxError> {
    let ps = page_size as usize;
    let pgno = raw.pgno;
    let got = match raw.encoding {
        PageEncoding::Lz4Block => {
            let mut out = vec![0u8; ps];
            match lz4_flex::block::decompress_into(raw.compressed, &mut out) {
                Ok(n) if n == ps => return Ok(out),
                Ok(n) => n,
                Err(DecompressError::OutputTooSmall { .. }) => {
                    return Err(LtxError::PageTooLarge { pgno, page_size })
                }
                Err(e) => return Err(LtxError::Lz4(format!("page {pgno}: {e}"))),
            }
        }
        PageEncoding::Lz4Frame => {
            let mut out = Vec::with_capacity(ps + 1);
            lz4_flex::frame::FrameDecoder::new(raw.compressed)
                .take(ps as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| LtxError::Lz4(format!("page {pgno}: {e}")))?;
            if out.len() == ps {
                return Ok(out);
            }
            if out.len() > ps {
                return Err(LtxError::PageTooLarge { pgno, page_size });
            }
            out.len()
        }
    };
    Err(LtxError::PageSizeMismatch {
        pgno,
        expected: page_size,
        got,
    })
}

/// Appends a page frame for `pgno` holding `data`; returns the length of the stored prefix
/// (header and size field) so the encoder can checksum exactly what the format says.
pub(crate) fn encode_page_frame(
    out: &mut Vec<u8>,
    pgno: u32,
    data: &[u8],
    encoding: PageEncoding,
) -> Result<usize, LtxError> {
    out.extend_from_slice(&pgno.to_be_bytes());
    match encoding {
        PageEncoding::Lz4Block => {
            let compressed = lz4_flex::block::compress(data);
            let size = u32::try_from(compressed.len())
                .map_err(|_| LtxError::Encode("compressed page exceeds 4 GiB".into()))?;
            out.extend_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&compressed);
            Ok(PAGE_HEADER_SIZE + 4)
        }
        PageEncoding::Lz4Frame => {
            out.extend_from_slice(&0u16.to_be_bytes());
            // The same frame parameters as Litestream 0.5.10's Go encoder (FLG 0x64, BD 0x40):
            // independent 64 KiB blocks and a content checksum.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .content_checksum(true);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut *out);
            enc.write_all(data)?;
            enc.finish().map_err(|e| LtxError::Lz4(e.to_string()))?;
            Ok(PAGE_HEADER_SIZE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ps: usize, seed: u8) -> Vec<u8> {
        (0..ps)
            .map(|i| if i % 64 < 8 { seed } else { (i / 64) as u8 })
            .collect()
    }

    #[test]
    fn both_encodings_round_trip() {
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            for ps in [512u32, 4096, 65536] {
                let p = page(ps as usize, 3);
                let mut f = Vec::new();
                let prefix = encode_page_frame(&mut f, 7, &p, enc).unwrap();
                assert_eq!(page_frame_len(&f).unwrap(), f.len());
                assert_eq!(decode_page_frame(&f, ps, 7).unwrap(), p);
                let raw = parse_frame(&f).unwrap();
                assert_eq!(raw.encoding, enc);
                assert_eq!(raw.prefix.len(), prefix);
            }
        }
    }

    #[test]
    fn incompressible_pages_round_trip() {
        let mut x: u32 = 1;
        let p: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let mut f = Vec::new();
            encode_page_frame(&mut f, 1, &p, enc).unwrap();
            assert_eq!(decode_page_frame(&f, 4096, 1).unwrap(), p);
        }
    }

    #[test]
    fn wrong_sizes_are_corruption() {
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let mut f = Vec::new();
            encode_page_frame(&mut f, 2, &page(1024, 1), enc).unwrap();
            assert!(matches!(
                decode_page_frame(&f, 2048, 2),
                Err(LtxError::PageSizeMismatch {
                    pgno: 2,
                    expected: 2048,
                    got: 1024
                })
            ));
            assert!(matches!(
                decode_page_frame(&f, 512, 2),
                Err(LtxError::PageTooLarge {
                    pgno: 2,
                    page_size: 512
                })
            ));
            assert!(matches!(
                decode_page_frame(&f, 1024, 3),
                Err(LtxError::WrongPage { .. })
            ));
            assert!(matches!(
                decode_page_frame(&f, 1000, 2),
                Err(LtxError::BadPageSize(1000))
            ));
            let mut longer = f.clone();
            longer.push(0);
            assert!(matches!(
                decode_page_frame(&longer, 1024, 2),
                Err(LtxError::BadFrame(_))
            ));
            for cut in 0..f.len() {
                assert!(decode_page_frame(&f[..cut], 1024, 2).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn rejects_unknown_flags_and_end_marker() {
        let mut f = Vec::new();
        encode_page_frame(&mut f, 2, &page(1024, 1), PageEncoding::Lz4Block).unwrap();
        f[5] |= 0x2;
        assert!(matches!(
            decode_page_frame(&f, 1024, 2),
            Err(LtxError::BadFrame(_))
        ));
        assert!(matches!(
            decode_page_frame(&[0; 6], 1024, 0),
            Err(LtxError::BadFrame(_))
        ));
    }

    #[test]
    fn decodes_a_real_block_frame() {
        // Page 2 of a 0000000000000002-0000000000000002.ltx written by Litestream 0.5.17 in an
        // early experiment (1024-byte pages; a table b-tree leaf with four one-letter rows).
        let f: &[u8] = &[
            0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x33, 0xff, 0x02, 0x0d, 0x00,
            0x00, 0x00, 0x04, 0x03, 0xe8, 0x00, 0x03, 0xfa, 0x03, 0xf4, 0x03, 0xee, 0x03, 0xe8,
            0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xc7, 0xf0, 0x09, 0x04, 0x04, 0x03, 0x00, 0x0f,
            0x64, 0x04, 0x03, 0x03, 0x00, 0x0f, 0x63, 0x04, 0x02, 0x03, 0x00, 0x0f, 0x62, 0x04,
            0x01, 0x03, 0x00, 0x0f, 0x61,
        ];
        let p = decode_page_frame(f, 1024, 2).unwrap();
        assert_eq!(p[0], 0x0d, "leaf table b-tree page");
        assert_eq!(&p[1020..], &[0x03, 0x00, 0x0f, 0x61]);
    }
}
