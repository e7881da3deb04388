//! Reading SQLite's wal-index (`<db>-shm`), the shared memory through which every process
//! of a WAL database agrees on what is committed. Pure file reading; no SQLite calls.
//!
//! The wal-index header says how many frames of the WAL are committed (`mxFrame`) and of
//! which generation (the salts): that, not the checksums of the frames, is what every
//! connection reads. Frames after it may be a transaction still being written, or one whose
//! commit failed and that the next writer will overwrite; the copier never takes them.
//!
//! Layout (wal.c): two copies of a 48-byte header, in the host's byte order except the salts
//! (copied bytes of the WAL header, big-endian); then the checkpoint information: nBackfill
//! and the five read marks at 96.. (the lock bytes at 120 are not data).

use super::wal::{self, HEADER_SIZE};
use super::DbFile;

const HDR_SIZE: usize = 48;
/// Both header copies and the checkpoint information up to the read marks.
pub const READ_SIZE: usize = 120;
const NBACKFILL_AT: usize = 96;
const READ_MARK_AT: usize = 100;
/// A read mark no reader can use (wal.c `READMARK_NOT_USED`).
pub const READMARK_NOT_USED: u32 = 0xffff_ffff;
/// The read-mark slot the primary keeps for itself (see `vfs/pin.rs`): WAL restarts by
/// other programs need it, and it never holds a reader.
pub const PIN_SLOT: usize = 4;

/// What the wal-index says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub salt1: u32,
    pub salt2: u32,
    pub page_size: u32,
    /// Committed frames of the generation.
    pub mx_frame: u32,
    /// Database size in pages after the last commit.
    pub n_page: u32,
    /// Frames already copied into the database file by checkpoints.
    pub n_backfill: u32,
    /// The running checksum after the last committed frame.
    pub frame_cksum: (u32, u32),
    /// Transactions committed since the wal-index was set up, across WAL restarts: a count
    /// that tells the copier whether it saw every one.
    pub i_change: u32,
    pub read_marks: [u32; 5],
}

impl Index {
    /// Where the committed frames end in the WAL.
    pub fn end_offset(&self) -> u64 {
        HEADER_SIZE
            + u64::from(self.mx_frame) * (wal::FRAME_HEADER_SIZE + u64::from(self.page_size))
    }

    pub fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }

    /// Every committed frame is in the database file: a checkpoint may restart the WAL
    /// (once nothing of it is left to copy).
    pub fn all_backfilled(&self) -> bool {
        self.mx_frame > 0 && self.n_backfill == self.mx_frame
    }
}

/// What is committed in the WAL, and who says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// A connection has the WAL open: what the wal-index says.
    Index(Index),
    /// No connection has it open (the wal-index is not set up): nobody can write the WAL
    /// until one recovers it, and SQLite's recovery rule over its frames says what is
    /// committed.
    Recovery,
}

impl Committed {
    pub fn index(&self) -> Option<Index> {
        match self {
            Committed::Index(i) => Some(*i),
            Committed::Recovery => None,
        }
    }
}

/// Reads the wal-index through the primary's handle on the database; None when it is not
/// set up (no connection has opened the WAL since the last one closed). Retries while a
/// writer is between updating the two copies.
pub fn read(db: &mut dyn DbFile) -> Option<Index> {
    for _ in 0..100 {
        match parse(&db.wal_index()?) {
            Parsed::Index(i) => return Some(i),
            Parsed::Uninitialised => return None,
            Parsed::Changing => std::thread::yield_now(),
        }
    }
    None
}

enum Parsed {
    Index(Index),
    Uninitialised,
    /// The two copies differ, or the checksum does not match: a writer is updating them.
    Changing,
}

fn ne32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse(buf: &[u8; READ_SIZE]) -> Parsed {
    let (h1, h2) = (&buf[..HDR_SIZE], &buf[HDR_SIZE..2 * HDR_SIZE]);
    if h1 != h2 {
        return Parsed::Changing;
    }
    if h1[12] == 0 {
        return Parsed::Uninitialised;
    }
    // The header checksum: SQLite's WAL checksum over the first 40 bytes, in native order.
    let native_big = cfg!(target_endian = "big");
    let sums = wal::checksum(native_big, &h1[..40], (0, 0));
    if sums != (ne32(h1, 40), ne32(h1, 44)) {
        return Parsed::Changing;
    }
    let page_size = match u16::from_ne_bytes([h1[14], h1[15]]) {
        1 => 65536,
        n => u32::from(n),
    };
    let mut read_marks = [0u32; 5];
    for (i, m) in read_marks.iter_mut().enumerate() {
        *m = ne32(buf, READ_MARK_AT + 4 * i);
    }
    Parsed::Index(Index {
        salt1: be32(h1, 32),
        salt2: be32(h1, 36),
        page_size,
        mx_frame: ne32(h1, 16),
        n_page: ne32(h1, 20),
        n_backfill: ne32(buf, NBACKFILL_AT),
        frame_cksum: (ne32(h1, 24), ne32(h1, 28)),
        i_change: ne32(h1, 8),
        read_marks,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A wal-index as SQLite writes it, for tests.
    pub fn index_bytes(salts: (u32, u32), page_size: u32, mx_frame: u32) -> Vec<u8> {
        index_bytes_changed(salts, page_size, mx_frame, 5)
    }

    /// The same, with `i_change` transactions counted.
    pub fn index_bytes_changed(
        salts: (u32, u32),
        page_size: u32,
        mx_frame: u32,
        i_change: u32,
    ) -> Vec<u8> {
        let mut h = vec![0u8; HDR_SIZE];
        h[0..4].copy_from_slice(&3007000u32.to_ne_bytes());
        h[8..12].copy_from_slice(&i_change.to_ne_bytes());
        h[12] = 1;
        let sz = if page_size == 65536 {
            1
        } else {
            page_size as u16
        };
        h[14..16].copy_from_slice(&sz.to_ne_bytes());
        h[16..20].copy_from_slice(&mx_frame.to_ne_bytes());
        h[20..24].copy_from_slice(&3u32.to_ne_bytes());
        h[32..36].copy_from_slice(&salts.0.to_be_bytes());
        h[36..40].copy_from_slice(&salts.1.to_be_bytes());
        let (a, b) = wal::checksum(cfg!(target_endian = "big"), &h[..40], (0, 0));
        h[40..44].copy_from_slice(&a.to_ne_bytes());
        h[44..48].copy_from_slice(&b.to_ne_bytes());
        let mut out = h.clone();
        out.extend_from_slice(&h);
        out.extend_from_slice(&[0u8; 4]);
        for i in 0..5u32 {
            let m = if i < 2 { 0 } else { READMARK_NOT_USED };
            out.extend_from_slice(&m.to_ne_bytes());
        }
        out.resize(READ_SIZE, 0);
        out
    }

    /// A parsed wal-index, for tests of its readers.
    pub fn index(salts: (u32, u32), page_size: u32, mx_frame: u32, i_change: u32) -> Index {
        parsed(&index_bytes_changed(salts, page_size, mx_frame, i_change)).unwrap()
    }

    fn parsed(b: &[u8]) -> Option<Index> {
        match parse(b.try_into().unwrap()) {
            Parsed::Index(i) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn reads_the_committed_end_and_refuses_a_torn_header() {
        let i = parsed(&index_bytes((7, 9), 4096, 3)).unwrap();
        assert_eq!(
            (i.salts(), i.page_size, i.mx_frame, i.i_change),
            ((7, 9), 4096, 3, 5)
        );
        assert_eq!(i.end_offset(), 32 + 3 * (24 + 4096));
        assert_eq!(i.read_marks[PIN_SLOT], READMARK_NOT_USED);

        // The two copies differ (a writer between them): not an index yet.
        let mut bytes = index_bytes((7, 9), 4096, 3);
        bytes[HDR_SIZE + 16] ^= 1;
        assert!(matches!(
            parse(bytes[..READ_SIZE].try_into().unwrap()),
            Parsed::Changing
        ));
        // Equal copies with a bad checksum.
        bytes[16] ^= 1;
        assert!(matches!(
            parse(bytes[..READ_SIZE].try_into().unwrap()),
            Parsed::Changing
        ));
        // Never initialised.
        assert!(matches!(parse(&[0u8; READ_SIZE]), Parsed::Uninitialised));
    }
}
