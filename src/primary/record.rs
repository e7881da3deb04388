//! A small JSON record in a file, written in place: `magic, length, sequence, CRC-32 of
//! (sequence, JSON)`, then the JSON. A reader that finds a record that does not check out
//! (torn by a crash, or read while it was being written) can tell, and never takes it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crc::{Crc, CRC_32_ISO_HDLC};

pub const HEADER: usize = 20;
static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

pub fn encode(magic: &[u8; 4], seq: u64, json: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER + json.len());
    rec.extend_from_slice(magic);
    rec.extend_from_slice(&(json.len() as u32).to_be_bytes());
    rec.extend_from_slice(&seq.to_be_bytes());
    rec.extend_from_slice(&crc(seq, json).to_be_bytes());
    rec.extend_from_slice(json);
    rec
}

fn crc(seq: u64, json: &[u8]) -> u32 {
    let mut d = CRC32.digest();
    d.update(&seq.to_be_bytes());
    d.update(json);
    d.finalize()
}

/// What is at `at` in `f`.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Nothing was ever written there.
    Empty,
    /// A record: its sequence number and JSON.
    Record(u64, Vec<u8>),
    /// Something that is not a whole record (the reason).
    Damaged(String),
}

/// Reads the record at `at`, of at most `max` bytes.
pub fn read(f: &File, magic: &[u8; 4], at: u64, max: u64) -> std::io::Result<Read> {
    let mut head = [0u8; HEADER];
    match f.read_exact_at(&mut head, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Read::Empty),
        Err(e) => return Err(e),
    }
    if head == [0u8; HEADER] {
        return Ok(Read::Empty);
    }
    let word = |from: usize, n: usize| {
        head[from..from + n]
            .iter()
            .fold(0u64, |v, b| v << 8 | *b as u64)
    };
    let (len, seq, sum) = (word(4, 4) as usize, word(8, 8), word(16, 4) as u32);
    if &head[..4] != magic || (HEADER + len) as u64 > max {
        return Ok(Read::Damaged("not a record".into()));
    }
    let mut json = vec![0u8; len];
    match f.read_exact_at(&mut json, at + HEADER as u64) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Read::Damaged("cut short".into()))
        }
        Err(e) => return Err(e),
    }
    if crc(seq, &json) != sum {
        return Ok(Read::Damaged("checksum mismatch (a torn write)".into()));
    }
    Ok(Read::Record(seq, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        std::fs::write(&p, b"").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert_eq!(read(&f, b"TEST", 0, 4096).unwrap(), Read::Empty);
        f.write_all_at(&encode(b"TEST", 3, b"{\"a\":1}"), 0)
            .unwrap();
        assert_eq!(
            read(&f, b"TEST", 0, 4096).unwrap(),
            Read::Record(3, b"{\"a\":1}".to_vec())
        );
        assert!(matches!(
            read(&f, b"OTHR", 0, 4096).unwrap(),
            Read::Damaged(_)
        ));
        f.write_all_at(b"X", HEADER as u64 + 2).unwrap();
        assert!(matches!(
            read(&f, b"TEST", 0, 4096).unwrap(),
            Read::Damaged(_)
        ));
    }
}
