//! Structure of an LZ4 *frame* (the page encoding of Litestream 0.5.0 to 0.5.15), walked
//! without decompressing.
//!
//! Those frames carry no length prefix in the LTX file: the only way to find where one ends
//! (and the next page frame starts) when reading a file front to back is to walk its block
//! headers. Walking first also lets us refuse, before `lz4_flex::frame::FrameDecoder` sees
//! the bytes, anything that would make it allocate more than a page needs: the decoder
//! reserves buffers from the declared maximum block size (up to 2 × 4 MiB + 64 KiB).
//!
//! Format (lz4 frame spec v1.6): magic 04 22 4D 18 | FLG | BD | [content size u64] |
//! [dict id u32] | HC | blocks: (size u32 LE, high bit = stored uncompressed; 0 = end mark)
//! each followed by its data and [block checksum u32] | [content checksum u32].

use super::LtxError;

const MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

// FLG bits.
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICT_ID: u8 = 0b0000_0001;

/// The largest declared block size accepted. Litestream's Go encoder (pierrec/lz4 with
/// `Block64Kb`) always declares 64 KiB; 256 KiB is allowed as harmless. The 1 and 4 MiB
/// sizes would only make the decoder allocate megabytes for a page of at most 64 KiB.
const MAX_DECLARED_BLOCK: usize = 256 * 1024;

/// Returns the length of the LZ4 frame at the start of `b` (which may continue past it).
pub fn lz4_frame_len(b: &[u8]) -> Result<usize, LtxError> {
    let bad = |msg: String| LtxError::Lz4(format!("bad LZ4 frame: {msg}"));
    let short = || LtxError::truncated("LZ4 frame");
    let byte = |at: usize| b.get(at).copied().ok_or_else(short);
    let u32le = |at: usize| -> Result<u32, LtxError> {
        let s = b
            .get(at..at.checked_add(4).ok_or_else(short)?)
            .ok_or_else(short)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };

    if b.get(..4).ok_or_else(short)? != MAGIC {
        return Err(bad("wrong magic (not an LZ4 frame)".into()));
    }
    let flg = byte(4)?;
    let bd = byte(5)?;
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(bad(format!("unsupported version in FLG 0x{flg:02x}")));
    }
    if flg & FLG_RESERVED != 0 || bd & 0b1000_1111 != 0 {
        return Err(bad(format!(
            "reserved bits set (FLG 0x{flg:02x}, BD 0x{bd:02x})"
        )));
    }
    if flg & FLG_DICT_ID != 0 {
        return Err(bad("frame needs a dictionary".into()));
    }
    let block_max = match (bd >> 4) & 0x7 {
        4 => 64 * 1024,
        5 => 256 * 1024,
        6 => 1024 * 1024,
        7 => 4 * 1024 * 1024,
        id => return Err(bad(format!("invalid block size id {id}"))),
    };
    if block_max > MAX_DECLARED_BLOCK {
        return Err(bad(format!(
            "declares {block_max}-byte blocks, more than a page ever needs"
        )));
    }

    let mut pos = 6usize;
    if flg & FLG_CONTENT_SIZE != 0 {
        pos += 8;
    }
    pos += 1; // header checksum byte (verified by the decoder)
    if pos > b.len() {
        return Err(short());
    }
    let block_checksum = if flg & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
    loop {
        let word = u32le(pos)?;
        pos += 4;
        if word == 0 {
            break;
        }
        let size = (word & 0x7fff_ffff) as usize;
        if size > block_max {
            return Err(bad(format!(
                "block of {size} bytes exceeds the declared maximum {block_max}"
            )));
        }
        // pos <= b.len() here and size, block_checksum are small, so no overflow.
        pos += size + block_checksum;
        if pos > b.len() {
            return Err(short());
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        pos += 4;
    }
    if pos > b.len() {
        return Err(short());
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;

    fn encode(info: FrameInfo, data: &[u8]) -> Vec<u8> {
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn measures_frames_with_every_optional_part() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        for block_checksums in [false, true] {
            for content_checksum in [false, true] {
                for content_size in [None, Some(data.len() as u64)] {
                    let info = FrameInfo::new()
                        .block_size(BlockSize::Max64KB)
                        .block_mode(BlockMode::Independent)
                        .block_checksums(block_checksums)
                        .content_checksum(content_checksum)
                        .content_size(content_size);
                    let f = encode(info, &data);
                    assert_eq!(lz4_frame_len(&f).unwrap(), f.len());
                    let mut longer = f.clone();
                    longer.extend_from_slice(&[1, 2, 3]);
                    assert_eq!(lz4_frame_len(&longer).unwrap(), f.len());
                    for cut in 0..f.len() {
                        assert!(lz4_frame_len(&f[..cut]).is_err(), "cut at {cut}");
                    }
                }
            }
        }
    }

    #[test]
    fn measures_a_real_frame_from_litestream_0_5_10() {
        // FLG 0x64 (independent blocks, content checksum), BD 0x40 (64 KiB blocks).
        let head = [0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7];
        let mut f = head.to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&[1, 2, 3]);
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&[9, 9, 9, 9]);
        assert_eq!(lz4_frame_len(&f).unwrap(), f.len());
    }

    #[test]
    fn refuses_large_blocks_dictionaries_and_garbage() {
        let data = vec![0u8; 1024];
        let big = encode(FrameInfo::new().block_size(BlockSize::Max4MB), &data);
        assert!(lz4_frame_len(&big).is_err());
        let mut dict = encode(FrameInfo::new(), &data);
        dict[4] |= FLG_DICT_ID;
        assert!(lz4_frame_len(&dict).is_err());
        assert!(lz4_frame_len(b"LTX1....").is_err());
        assert!(lz4_frame_len(&[]).is_err());
        // A block claiming more than the declared maximum.
        let mut f = vec![0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x00];
        f.extend_from_slice(&(0x1_0001u32).to_le_bytes());
        assert!(lz4_frame_len(&f).is_err());
    }
}
