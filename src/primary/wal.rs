//! Reading SQLite's write-ahead log: its header, and the transactions committed in it after
//! a known position. Pure file reading; no SQLite calls.
//!
//! A WAL is a 32-byte header then frames of (24-byte header, one page). A frame belongs to
//! the current generation when its salts equal the header's, and is valid when the running
//! checksum (over every frame since the header) matches the one stored in it; a frame whose
//! commit field is non-zero ends a transaction and gives the database size in pages. This is
//! exactly how SQLite's own recovery decides what was committed, so frames of a transaction
//! that was rolled back, or whose commit frame was torn by a crash, are never taken.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const HEADER_SIZE: u64 = 32;
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// Where reading stopped: the end of the last committed frame taken, with the running
/// checksum there (the next frame's checksum continues from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalPos {
    pub salt1: u32,
    pub salt2: u32,
    pub ckpt_seq: u32,
    pub offset: u64,
    pub cksum1: u32,
    pub cksum2: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksums are computed over big-endian words (magic 0x377f0683).
    pub big_endian: bool,
    pub page_size: u32,
    pub ckpt_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub cksum1: u32,
    pub cksum2: u32,
}

impl WalHeader {
    /// The position right after the header: a generation with no frames yet.
    pub fn start(&self) -> WalPos {
        self.pos(HEADER_SIZE, (self.cksum1, self.cksum2))
    }

    /// The position `offset` of this generation, where the running checksum is `sums`.
    fn pos(&self, offset: u64, (cksum1, cksum2): (u32, u32)) -> WalPos {
        WalPos {
            salt1: self.salt1,
            salt2: self.salt2,
            ckpt_seq: self.ckpt_seq,
            offset,
            cksum1,
            cksum2,
        }
    }

    pub fn same_generation(&self, pos: &WalPos) -> bool {
        self.salt1 == pos.salt1 && self.salt2 == pos.salt2
    }

    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

/// SQLite's WAL checksum (`walChecksumBytes`): two running 32-bit sums over pairs of words.
pub fn checksum(big_endian: bool, data: &[u8], (mut s1, mut s2): (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |i: usize| {
            let w = [pair[i], pair[i + 1], pair[i + 2], pair[i + 3]];
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        s1 = s1.wrapping_add(word(0)).wrapping_add(s2);
        s2 = s2.wrapping_add(word(4)).wrapping_add(s1);
    }
    (s1, s2)
}

/// The header, or None when the file is shorter than a header or the header is not valid
/// (a WAL being created, or truncated by a checkpoint): there is nothing committed in it.
pub fn read_header(f: &File) -> io::Result<Option<WalHeader>> {
    let mut b = [0u8; HEADER_SIZE as usize];
    if read_full(f, &mut b, 0)? < b.len() {
        return Ok(None);
    }
    let big_endian = match be32(&b, 0) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return Ok(None),
    };
    let page_size = match be32(&b, 8) {
        1 => 65536,
        n => n,
    };
    if !crate::ltx::is_valid_page_size(page_size) {
        return Ok(None);
    }
    let (c1, c2) = checksum(big_endian, &b[..24], (0, 0));
    if (c1, c2) != (be32(&b, 24), be32(&b, 28)) {
        return Ok(None);
    }
    Ok(Some(WalHeader {
        big_endian,
        page_size,
        ckpt_seq: be32(&b, 12),
        salt1: be32(&b, 16),
        salt2: be32(&b, 20),
        cksum1: c1,
        cksum2: c2,
    }))
}

/// One committed transaction: the newest frame of each page it wrote, and the database size
/// in pages after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub commit: u32,
    /// Page number → offset of the frame (its 24-byte header) in the WAL.
    pub pages: BTreeMap<u32, u64>,
    /// The position after its commit frame.
    pub end: WalPos,
}

/// The transactions committed after `from` (a position in the generation of `hdr`), in order,
/// by SQLite's recovery rule: up to the first frame that is not valid. Only for a WAL that no
/// connection has open (a live one says in its wal-index where the committed frames end:
/// frames after that are not committed, valid or not).
pub fn committed_after(f: &File, hdr: &WalHeader, from: &WalPos) -> io::Result<Vec<Txn>> {
    read_txns(f, hdr, from, u64::MAX, true)
}

/// As `committed_after`, taking no frame that ends after `until` (the committed end the
/// wal-index gives).
pub fn committed_until(
    f: &File,
    hdr: &WalHeader,
    from: &WalPos,
    until: u64,
) -> io::Result<Vec<Txn>> {
    read_txns(f, hdr, from, until, true)
}

/// The transactions in a copy of committed frames (a mirror) after `from`, up to `until`:
/// the frames were validated when they were copied, so only their headers are read (the
/// running checksum after each frame is in its header).
pub fn copied_until(f: &File, hdr: &WalHeader, from: &WalPos, until: u64) -> io::Result<Vec<Txn>> {
    read_txns(f, hdr, from, until, false)
}

/// As `committed_until`, keeping the bytes read in `buf` (from `from` on: the transactions
/// found end at `last.end.offset - from.offset` in it) for the caller to write out. Reads at
/// most `max` bytes: Some((transactions, true)) when it stopped there and more may follow
/// their end, None when not even one whole transaction fits. `buf` only grows, so a caller
/// that keeps it pays for its memory once. Without `verify` the frames' checksums are not
/// computed (the wal-index vouches for frames up to `until`; their salts are still checked).
pub fn committed_kept(
    f: &File,
    hdr: &WalHeader,
    from: &WalPos,
    until: u64,
    verify: bool,
    buf: &mut Vec<u8>,
    max: u64,
) -> io::Result<Option<(Vec<Txn>, bool)>> {
    let frame_size = hdr.frame_size() as usize;
    let batch = (READ_BATCH as usize / frame_size).max(1) * frame_size;
    let mut walk = Walk::new(hdr, from, verify);
    let mut filled = 0;
    loop {
        if (filled + batch) as u64 > max {
            return Ok((!walk.txns.is_empty()).then_some((walk.txns, true)));
        }
        if buf.len() < filled + batch {
            buf.resize(filled + batch, 0);
        }
        let left = until.saturating_sub(walk.offset) as usize / frame_size * frame_size;
        let want = batch.min(left);
        if want == 0 {
            return Ok(Some((walk.txns, false)));
        }
        let n = read_full(f, &mut buf[filled..filled + want], walk.offset)?;
        for frame in buf[filled..filled + n].chunks_exact(frame_size) {
            if !walk.frame(frame) {
                return Ok(Some((walk.txns, false)));
            }
        }
        if n < want {
            return Ok(Some((walk.txns, false)));
        }
        filled += n;
    }
}

/// How much one read brings when every byte of the frames is needed (`verify`): whole frames,
/// up to this many bytes, so that walking a WAL costs a read per batch, not per frame.
const READ_BATCH: u64 = 128 * 1024;

/// Walks the frames after `from` that end by `until`, stopping at the first one that is not
/// of the generation (or, with `verify`, whose running checksum does not match).
fn read_txns(
    f: &File,
    hdr: &WalHeader,
    from: &WalPos,
    until: u64,
    verify: bool,
) -> io::Result<Vec<Txn>> {
    let frame_size = hdr.frame_size();
    // What of each frame is read, and how much one read brings.
    let (needed, batch) = if verify {
        (frame_size, (READ_BATCH / frame_size).max(1) * frame_size)
    } else {
        (FRAME_HEADER_SIZE, FRAME_HEADER_SIZE)
    };
    let mut buf = vec![0u8; batch as usize];
    let (mut buf_at, mut buf_len) = (0u64, 0u64);
    let mut walk = Walk::new(hdr, from, verify);
    while walk.offset.saturating_add(frame_size) <= until {
        let offset = walk.offset;
        if offset + needed > buf_at + buf_len {
            let frames_left = (until - offset) / frame_size;
            let want = batch
                .min(frames_left.saturating_mul(frame_size))
                .max(needed);
            buf_len = read_full(f, &mut buf[..want as usize], offset)? as u64;
            buf_at = offset;
            if buf_len < needed {
                break;
            }
        }
        let at = (offset - buf_at) as usize;
        if !walk.frame(&buf[at..at + needed as usize]) {
            break;
        }
    }
    Ok(walk.txns)
}

/// A walk over the frames of one generation, frame by frame, as SQLite's recovery does it.
struct Walk<'h> {
    hdr: &'h WalHeader,
    verify: bool,
    /// Where the next frame starts, and the running checksum there.
    offset: u64,
    sums: (u32, u32),
    /// The transaction in progress: page → frame offset.
    pages: BTreeMap<u32, u64>,
    txns: Vec<Txn>,
}

impl<'h> Walk<'h> {
    fn new(hdr: &'h WalHeader, from: &WalPos, verify: bool) -> Self {
        Walk {
            hdr,
            verify,
            offset: from.offset,
            sums: (from.cksum1, from.cksum2),
            pages: BTreeMap::new(),
            txns: Vec::new(),
        }
    }

    /// Takes the frame at `self.offset` (its header, and with `verify` its page too);
    /// false when it is not a valid frame of the generation: the walk ends there.
    fn frame(&mut self, frame: &[u8]) -> bool {
        let hdr = self.hdr;
        if be32(frame, 8) != hdr.salt1 || be32(frame, 12) != hdr.salt2 {
            return false;
        }
        let stored = (be32(frame, 16), be32(frame, 20));
        if self.verify {
            let s = checksum(hdr.big_endian, &frame[..8], self.sums);
            if checksum(hdr.big_endian, &frame[FRAME_HEADER_SIZE as usize..], s) != stored {
                return false;
            }
        }
        let (pgno, commit) = (be32(frame, 0), be32(frame, 4));
        if pgno == 0 {
            return false;
        }
        self.pages.insert(pgno, self.offset);
        self.sums = stored;
        self.offset += hdr.frame_size();
        if commit != 0 {
            self.txns.push(Txn {
                commit,
                pages: std::mem::take(&mut self.pages),
                end: hdr.pos(self.offset, self.sums),
            });
        }
        true
    }
}

/// Reads the page of the frame at `frame_offset`, checking that the frame still belongs to
/// the generation `pos` names (a restarted WAL would hold other pages there).
pub fn read_page(
    f: &File,
    page_size: u32,
    frame_offset: u64,
    salts: (u32, u32),
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FRAME_HEADER_SIZE as usize + page_size as usize];
    if read_full(f, &mut buf, frame_offset)? < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "WAL frame is short",
        ));
    }
    if (be32(&buf, 8), be32(&buf, 12)) != salts {
        return Err(io::Error::other(
            "the WAL was restarted under an unshipped frame",
        ));
    }
    Ok(buf.split_off(FRAME_HEADER_SIZE as usize))
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at end of file).
pub fn read_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a WAL the way SQLite does (little-endian checksums): `txns` is a list of
    /// transactions, each a list of (pgno, fill byte), the last frame marked commit.
    pub fn write_wal(
        path: &std::path::Path,
        page_size: u32,
        salts: (u32, u32),
        txns: &[Vec<(u32, u8)>],
    ) {
        let mut out = Vec::new();
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC_LE.to_be_bytes());
        h.extend_from_slice(&3007000u32.to_be_bytes());
        h.extend_from_slice(&page_size.to_be_bytes());
        h.extend_from_slice(&7u32.to_be_bytes());
        h.extend_from_slice(&salts.0.to_be_bytes());
        h.extend_from_slice(&salts.1.to_be_bytes());
        let mut s = checksum(false, &h, (0, 0));
        h.extend_from_slice(&s.0.to_be_bytes());
        h.extend_from_slice(&s.1.to_be_bytes());
        out.extend_from_slice(&h);
        for txn in txns {
            for (i, &(pgno, fill)) in txn.iter().enumerate() {
                let commit = if i + 1 == txn.len() { pgno.max(3) } else { 0 };
                let page = vec![fill; page_size as usize];
                let mut fh = Vec::new();
                fh.extend_from_slice(&pgno.to_be_bytes());
                fh.extend_from_slice(&commit.to_be_bytes());
                s = checksum(false, &fh, s);
                s = checksum(false, &page, s);
                fh.extend_from_slice(&salts.0.to_be_bytes());
                fh.extend_from_slice(&salts.1.to_be_bytes());
                fh.extend_from_slice(&s.0.to_be_bytes());
                fh.extend_from_slice(&s.1.to_be_bytes());
                out.extend_from_slice(&fh);
                out.extend_from_slice(&page);
            }
        }
        std::fs::File::create(path)
            .unwrap()
            .write_all(&out)
            .unwrap();
    }

    #[test]
    fn reads_committed_transactions_and_stops_at_a_torn_frame() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db-wal");
        write_wal(
            &p,
            512,
            (11, 22),
            &[vec![(1, 1), (2, 2)], vec![(2, 3), (3, 4), (2, 5)]],
        );
        let f = File::open(&p).unwrap();
        let hdr = read_header(&f).unwrap().unwrap();
        assert_eq!((hdr.page_size, hdr.salt1, hdr.salt2), (512, 11, 22));
        let txns = committed_after(&f, &hdr, &hdr.start()).unwrap();
        assert_eq!(txns.len(), 2);
        assert_eq!(
            txns[0].pages.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        // The newest frame of page 2 in the second transaction is its third frame.
        let fs = hdr.frame_size();
        assert_eq!(txns[1].pages[&2], HEADER_SIZE + 4 * fs);
        assert_eq!(
            read_page(&f, 512, txns[1].pages[&2], (11, 22)).unwrap()[0],
            5
        );
        // Resuming from the first transaction's end finds only the second.
        let rest = committed_after(&f, &hdr, &txns[0].end).unwrap();
        assert_eq!(rest, txns[1..].to_vec());
        // A copy of validated frames reads the same from the frame headers alone, and
        // nothing past `until`.
        assert_eq!(
            copied_until(&f, &hdr, &hdr.start(), u64::MAX).unwrap(),
            txns
        );
        assert_eq!(
            copied_until(&f, &hdr, &hdr.start(), txns[1].end.offset - 1).unwrap(),
            txns[..1].to_vec()
        );

        // Flip one byte of the last frame: the second transaction is no longer committed.
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(committed_after(&f, &hdr, &hdr.start()).unwrap().len(), 1);
        // Keeping what it read (the copier's usual path): the same walk, and the bytes.
        let mut buf = Vec::new();
        let kept = |f: &File, buf: &mut Vec<u8>, max| {
            committed_kept(f, &hdr, &hdr.start(), u64::MAX, true, buf, max).unwrap()
        };
        assert_eq!(
            kept(&f, &mut buf, u64::MAX),
            Some((txns[..1].to_vec(), false))
        );
        bytes[last] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(kept(&f, &mut buf, u64::MAX), Some((txns.clone(), false)));
        let end = (txns[1].end.offset - HEADER_SIZE) as usize;
        assert_eq!(buf[..end], bytes[HEADER_SIZE as usize..]);
        assert_eq!(kept(&f, &mut buf, 100), None, "not one transaction fits");
        // The wal-index says only the first transaction is committed: the second, valid as
        // it is, is not taken (a commit that failed, about to be overwritten).
        let first_end = txns[0].end.offset;
        assert_eq!(
            committed_kept(&f, &hdr, &hdr.start(), first_end, false, &mut buf, u64::MAX).unwrap(),
            Some((txns[..1].to_vec(), false))
        );
        assert_eq!(
            committed_until(&f, &hdr, &hdr.start(), first_end).unwrap(),
            txns[..1].to_vec()
        );
        // A partial frame at the end (SQLite still writing it) is not taken.
        std::fs::write(&p, &bytes[..last]).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(
            kept(&f, &mut buf, u64::MAX),
            Some((txns[..1].to_vec(), false))
        );
    }

    #[test]
    fn frames_without_a_commit_are_not_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db-wal");
        write_wal(&p, 512, (1, 2), &[vec![(1, 1)]]);
        // Append the frames of a transaction that never committed: copy the file's first
        // frame with its commit field zeroed (and so an invalid checksum).
        let mut bytes = std::fs::read(&p).unwrap();
        let frame = bytes[32..32 + 24 + 512].to_vec();
        let mut torn = frame.clone();
        torn[4..8].copy_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&torn);
        std::fs::write(&p, &bytes).unwrap();
        let f = File::open(&p).unwrap();
        let hdr = read_header(&f).unwrap().unwrap();
        assert_eq!(committed_after(&f, &hdr, &hdr.start()).unwrap().len(), 1);
        // A wrong generation reads nothing, and a short file has no header.
        assert!(read_page(&f, 512, 32, (9, 9)).is_err());
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert_eq!(read_header(&File::open(&p).unwrap()).unwrap(), None);
    }
}
