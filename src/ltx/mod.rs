//! The LTX file format as Litestream 0.5.x writes it: pure decoding and encoding, no I/O.
//!
//! An LTX file is `header | page frames | zero page header | page index | index size | trailer`
//! (see `/work/shared/COMPAT.md`, section "LTX"). Everything a random-access reader needs sits
//! at the two ends: the 100-byte header (page size, commit, TXIDs, timestamp) and the last
//! [`TAIL_SIZE`] bytes, which locate the page index, which in turn locates each page frame.
//! So the functions here work on byte slices the caller has fetched (ranged reads), and each
//! one validates exactly the bytes it is given.
//!
//! Every decoder treats its input as hostile: it never panics, never slices without a check,
//! and never allocates more than a page (or the input's own length) because a length field
//! says so. Errors carry no file names; the caller knows which file it read and adds that.

mod be;
pub mod checksum;
mod decoder;
mod encoder;
mod error;
mod frame;
mod header;
mod lz4frame;
mod tail;
mod txid;
mod varint;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod real_files_tests;

pub use checksum::{page_checksum, Crc64, DatabaseChecksum, CHECKSUM_FLAG};
pub use decoder::{decode_file, verify_file, DecodedFile, DecodedPage, VerifiedFile};
pub use encoder::Encoder;
pub use error::LtxError;
pub use frame::{decode_page_frame, page_frame_len, PageEncoding};
pub use header::{is_valid_page_size, lock_pgno, Header};
pub use tail::{decode_page_index, decode_tail, index_range, PageIndexEntry, Trailer};
pub use txid::Txid;

/// Size of the file header.
pub const HEADER_SIZE: usize = 100;
/// Size of the trailer: PostApplyChecksum u64, FileChecksum u64.
pub const TRAILER_SIZE: usize = 16;
/// The fixed-size end of every file: the page index's byte size (u64) plus the trailer.
pub const TAIL_SIZE: usize = 8 + TRAILER_SIZE;
/// A page frame starts with pgno u32 + flags u16; six zero bytes end the frames.
pub const PAGE_HEADER_SIZE: usize = 6;
/// The smallest and largest SQLite page sizes.
pub const MIN_PAGE_SIZE: u32 = 512;
pub const MAX_PAGE_SIZE: u32 = 65536;
