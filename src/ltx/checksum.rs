//! CRC-64 checksums as LTX uses them: Go's `hash/crc64` with the ISO table, which the `crc`
//! crate calls `CRC_64_GO_ISO` (CRC-64/ECMA, e.g. `crc64fast`, is a different polynomial).
//!
//! Every stored checksum has bit 63 set ([`CHECKSUM_FLAG`]) so that a present checksum is
//! never zero; zero means "absent" (files with header flag 0x2 carry no database checksums).

use crc::{Crc, Digest, Table, CRC_64_GO_ISO};

use super::header::lock_pgno;

/// Set on every stored checksum.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// 16-lane tables: pages are 512 B to 64 KiB, where slicing-by-16 is several times faster
/// than the byte-at-a-time default, for a one-off 32 KiB static table.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);

/// A streaming CRC-64/GO-ISO, for checksums over data that arrives in pieces (file checksum).
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest<'static, u64, Table<16>>,
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 {
            digest: CRC64.digest(),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The plain CRC, without the flag bit: what Go's `hash.Sum64()` returns.
    pub fn finish(self) -> u64 {
        self.digest.finalize()
    }

    /// The CRC with bit 63 set: the form stored in LTX files.
    pub fn finish_flagged(self) -> u64 {
        self.finish() | CHECKSUM_FLAG
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

/// One page's checksum: CRC over the page number (u32 big-endian) then the page bytes, with
/// bit 63 set (Go: `ltx.ChecksumPage`).
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut c = Crc64::new();
    c.update(&pgno.to_be_bytes());
    c.update(data);
    c.finish_flagged()
}

/// The database checksum: XOR of the page checksums of every page except SQLite's lock page,
/// with bit 63 set. XOR makes it order-independent and lets a writer update it page by page.
#[derive(Clone, Debug)]
pub struct DatabaseChecksum {
    acc: u64,
    lock_pgno: u32,
}

impl DatabaseChecksum {
    pub fn new(page_size: u32) -> DatabaseChecksum {
        DatabaseChecksum {
            acc: 0,
            lock_pgno: lock_pgno(page_size),
        }
    }

    /// Adds one page; the lock page is ignored (it is never part of a database image).
    pub fn add(&mut self, pgno: u32, data: &[u8]) {
        if pgno != self.lock_pgno {
            self.acc ^= page_checksum(pgno, data);
        }
    }

    /// Removes a page added earlier (XOR is its own inverse), e.g. when a page is replaced.
    pub fn remove(&mut self, pgno: u32, data: &[u8]) {
        self.add(pgno, data);
    }

    pub fn finish(&self) -> u64 {
        self.acc | CHECKSUM_FLAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_crc64_iso_check_value() {
        // The catalogue check value for "123456789" under CRC-64/GO-ISO.
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn page_checksum_covers_pgno_and_data() {
        let data = vec![7u8; 1024];
        let a = page_checksum(1, &data);
        assert_ne!(a, page_checksum(2, &data));
        assert_eq!(a & CHECKSUM_FLAG, CHECKSUM_FLAG);
        let mut c = Crc64::new();
        c.update(&[0, 0, 0, 1]);
        c.update(&data);
        assert_eq!(a, c.finish_flagged());
    }

    #[test]
    fn database_checksum_skips_lock_page_and_is_order_free() {
        let ps = 512;
        let lock = lock_pgno(ps);
        let p = vec![1u8; ps as usize];
        let mut a = DatabaseChecksum::new(ps);
        a.add(1, &p);
        a.add(2, &p);
        let mut b = DatabaseChecksum::new(ps);
        b.add(2, &p);
        b.add(lock, &p);
        b.add(1, &p);
        assert_eq!(a.finish(), b.finish());
        b.remove(2, &p);
        let mut c = DatabaseChecksum::new(ps);
        c.add(1, &p);
        assert_eq!(b.finish(), c.finish());
        assert_eq!(DatabaseChecksum::new(ps).finish(), CHECKSUM_FLAG);
    }
}
