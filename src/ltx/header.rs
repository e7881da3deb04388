//! The 100-byte file header.
//!
//! Layout (big-endian): magic `LTX1` | flags u32 | page size u32 | commit u32 | MinTXID u64 |
//! MaxTXID u64 | timestamp i64 (ms) | PreApplyChecksum u64 | WALOffset i64 | WALSize i64 |
//! WALSalt1 u32 | WALSalt2 u32 | NodeID u64 | 20 reserved bytes.

use super::be::{u32_at, u64_at};
use super::{LtxError, Txid, HEADER_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE};

const MAGIC: &[u8; 4] = b"LTX1";

/// SQLite's "pending byte" sits at offset 1 GiB; the page holding it (the lock page) is never
/// written to a database file, so it never appears in an LTX file either.
const PENDING_BYTE: u32 = 0x4000_0000;

/// The SQLite lock page for a page size: the page containing byte offset 1 GiB.
/// Meaningful for valid page sizes; a zero page size is treated as 1 rather than dividing by 0.
pub fn lock_pgno(page_size: u32) -> u32 {
    PENDING_BYTE / page_size.max(1) + 1
}

/// SQLite page sizes: powers of two from 512 to 65536.
pub fn is_valid_page_size(page_size: u32) -> bool {
    (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) && page_size.is_power_of_two()
}

/// The decoded header. Field names follow Go's `ltx.Header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied (0 would mean "deleted").
    pub commit: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Database checksum before applying; 0 when the file carries no checksums.
    pub pre_apply_checksum: u64,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// Flag 0x2: the file carries no database checksums (pre/post-apply are zero).
    /// Litestream 0.5.x (both 0.5.10 and 0.5.17, checked) sets it on every file it writes.
    pub const FLAG_NO_CHECKSUM: u32 = 0x2;
    /// Every flag this module understands. Others (like the 0x1 "whole file is LZ4" of the
    /// older LiteFS-era format) change how the bytes must be read, so they are refused.
    const KNOWN_FLAGS: u32 = Self::FLAG_NO_CHECKSUM;

    /// A header as Litestream 0.5.x writes one: no database checksums, no WAL position.
    pub fn new(
        page_size: u32,
        commit: u32,
        min_txid: Txid,
        max_txid: Txid,
        timestamp: i64,
    ) -> Header {
        Header {
            flags: Self::FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp,
            pre_apply_checksum: 0,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// Decodes and validates the first [`HEADER_SIZE`] bytes of `b` (more may follow).
    ///
    /// Only what changes how the rest of the file must be read is enforced: magic, flags,
    /// page size, and a TXID range with 1 <= min <= max. Go's `Header.Validate` also checks
    /// WAL offset/salt consistency and pre-apply checksum formats; those fields do not affect
    /// reading, so they are left to whoever cares about them. The 20 reserved bytes are not
    /// checked either (Go does not check them).
    pub fn decode(b: &[u8]) -> Result<Header, LtxError> {
        if b.len() < HEADER_SIZE {
            return Err(LtxError::truncated(format!(
                "header is {} of {HEADER_SIZE} bytes",
                b.len()
            )));
        }
        if b.get(0..4) != Some(&MAGIC[..]) {
            return Err(LtxError::BadMagic);
        }
        // `b` holds at least HEADER_SIZE bytes, so none of these reads can miss; the `?`s
        // turn an impossible miss into an error instead of a panic.
        let short = || LtxError::truncated("header");
        let u32f = |at| u32_at(b, at).ok_or_else(short);
        let u64f = |at| u64_at(b, at).ok_or_else(short);
        let h = Header {
            flags: u32f(4)?,
            page_size: u32f(8)?,
            commit: u32f(12)?,
            min_txid: Txid::new(u64f(16)?),
            max_txid: Txid::new(u64f(24)?),
            timestamp: u64f(32)? as i64,
            pre_apply_checksum: u64f(40)?,
            wal_offset: u64f(48)? as i64,
            wal_size: u64f(56)? as i64,
            wal_salt1: u32f(64)?,
            wal_salt2: u32f(68)?,
            node_id: u64f(72)?,
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks the same rules as [`Header::decode`]; the encoder calls it before writing.
    pub fn validate(&self) -> Result<(), LtxError> {
        if self.flags & !Self::KNOWN_FLAGS != 0 {
            return Err(LtxError::UnsupportedFlags(self.flags));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(LtxError::BadPageSize(self.page_size));
        }
        if self.min_txid.get() == 0 || self.min_txid > self.max_txid {
            return Err(LtxError::BadTxidRange {
                min: self.min_txid.get(),
                max: self.max_txid.get(),
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let mut put = |at: usize, bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes);
        };
        put(0, MAGIC);
        put(4, &self.flags.to_be_bytes());
        put(8, &self.page_size.to_be_bytes());
        put(12, &self.commit.to_be_bytes());
        put(16, &self.min_txid.get().to_be_bytes());
        put(24, &self.max_txid.get().to_be_bytes());
        put(32, &self.timestamp.to_be_bytes());
        put(40, &self.pre_apply_checksum.to_be_bytes());
        put(48, &self.wal_offset.to_be_bytes());
        put(56, &self.wal_size.to_be_bytes());
        put(64, &self.wal_salt1.to_be_bytes());
        put(68, &self.wal_salt2.to_be_bytes());
        put(72, &self.node_id.to_be_bytes());
        b
    }

    /// A snapshot starts at TXID 1 and therefore holds every page of the database.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid.get() == 1
    }

    /// False when flag 0x2 says the pre/post-apply database checksums are absent (zero).
    pub fn has_checksums(&self) -> bool {
        self.flags & Self::FLAG_NO_CHECKSUM == 0
    }

    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: 2,
            page_size: 4096,
            commit: 7,
            min_txid: Txid::new(3),
            max_txid: Txid::new(9),
            timestamp: 1_700_000_000_123,
            pre_apply_checksum: 0,
            wal_offset: 4152,
            wal_size: 8240,
            wal_salt1: 0xdead_beef,
            wal_salt2: 0x0102_0304,
            node_id: 42,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..4], b"LTX1");
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert!(!h.is_snapshot());
        assert!(!h.has_checksums());
    }

    #[test]
    fn rejects_bad_headers() {
        let good = sample().encode();
        assert!(matches!(
            Header::decode(&good[..99]),
            Err(LtxError::Truncated { .. })
        ));
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(Header::decode(&b), Err(LtxError::BadMagic)));
        for ps in [0u32, 256, 1000, 131072, 4097] {
            let mut h = sample();
            h.page_size = ps;
            assert!(
                matches!(Header::decode(&h.encode()), Err(LtxError::BadPageSize(_))),
                "{ps}"
            );
        }
        let mut h = sample();
        h.flags = 3;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(LtxError::UnsupportedFlags(3))
        ));
        let mut h = sample();
        h.min_txid = Txid::ZERO;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(LtxError::BadTxidRange { .. })
        ));
        let mut h = sample();
        h.min_txid = Txid::new(10);
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(LtxError::BadTxidRange { .. })
        ));
    }

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(65536), 16_385);
        assert_eq!(lock_pgno(0), PENDING_BYTE + 1);
        assert!(is_valid_page_size(512) && is_valid_page_size(65536));
        assert!(!is_valid_page_size(0) && !is_valid_page_size(768));
    }
}
