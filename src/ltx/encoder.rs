//! Writing LTX files, byte-compatible with what Litestream 0.5.17 writes (and, on request,
//! with the LZ4-frame page encoding of 0.5.0 to 0.5.15, to build mixed chains in tests).

use std::io::Write;

use super::checksum::{Crc64, CHECKSUM_FLAG};
use super::frame::{encode_page_frame, PageEncoding};
use super::tail::{encode_page_index, PageIndexEntry, Trailer};
use super::{Header, LtxError, HEADER_SIZE, PAGE_HEADER_SIZE};

/// Streams an LTX file to `W`: the header on creation, one frame per [`Encoder::add_page`],
/// and the end-of-frames marker, page index and trailer on [`Encoder::finish`].
///
/// The file checksum is accumulated on the way, over exactly the bytes `decoder.rs`
/// documents (with pages hashed uncompressed), so nothing needs to be re-read.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    encoding: PageEncoding,
    hash: Crc64,
    /// Bytes written so far: the offset of the next frame.
    n: u64,
    index: Vec<PageIndexEntry>,
    buf: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// Starts a file with the block page encoding Litestream 0.5.16+ writes.
    pub fn new(w: W, header: Header) -> Result<Self, LtxError> {
        Self::with_encoding(w, header, PageEncoding::Lz4Block)
    }

    /// Starts a file whose pages use `encoding` (`Lz4Frame` reproduces Litestream 0.5.0-0.5.15).
    pub fn with_encoding(
        mut w: W,
        header: Header,
        encoding: PageEncoding,
    ) -> Result<Self, LtxError> {
        header.validate()?;
        if !header.has_checksums() && header.pre_apply_checksum != 0 {
            return Err(LtxError::Encode(
                "pre-apply checksum must be 0 when the header says \"no checksums\"".into(),
            ));
        }
        let bytes = header.encode();
        w.write_all(&bytes)?;
        let mut hash = Crc64::new();
        hash.update(&bytes);
        Ok(Encoder {
            w,
            header,
            encoding,
            hash,
            n: HEADER_SIZE as u64,
            index: Vec::new(),
            buf: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends one page. Pages must come in ascending order, within the commit size, never
    /// the lock page, and exactly one page long; a snapshot (MinTXID 1) must list every page
    /// from 1 up (skipping only the lock page), because readers restore from it alone.
    pub fn add_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        let h = &self.header;
        if data.len() != h.page_size as usize {
            return Err(LtxError::Encode(format!(
                "page {pgno} is {} bytes, the page size is {}",
                data.len(),
                h.page_size
            )));
        }
        if pgno == 0 || pgno > h.commit {
            return Err(LtxError::Encode(format!(
                "page {pgno} is outside the database of {} pages",
                h.commit
            )));
        }
        if pgno == h.lock_pgno() {
            return Err(LtxError::Encode(format!("page {pgno} is the lock page")));
        }
        let prev = self.index.last().map_or(0, |e| e.pgno);
        if pgno <= prev {
            return Err(LtxError::Encode(format!(
                "page {pgno} after page {prev}: pages must be ascending"
            )));
        }
        if h.is_snapshot() && pgno != self.next_snapshot_pgno(prev) {
            return Err(LtxError::Encode(format!(
                "snapshot skips from page {prev} to page {pgno}"
            )));
        }

        self.buf.clear();
        let prefix = encode_page_frame(&mut self.buf, pgno, data, self.encoding)?;
        self.w.write_all(&self.buf)?;
        self.hash.update(self.buf.get(..prefix).unwrap_or_default());
        self.hash.update(data);
        let size = u32::try_from(self.buf.len())
            .map_err(|_| LtxError::Encode("page frame exceeds 4 GiB".into()))?;
        self.index.push(PageIndexEntry {
            pgno,
            offset: self.n,
            size,
        });
        self.n += u64::from(size);
        Ok(())
    }

    /// The page a snapshot must contain after `prev` (the lock page is never stored).
    fn next_snapshot_pgno(&self, prev: u32) -> u32 {
        let next = prev.saturating_add(1);
        if next == self.header.lock_pgno() {
            next.saturating_add(1)
        } else {
            next
        }
    }

    /// Ends the file: end-of-frames marker, page index, its size, and the trailer with
    /// `post_apply_checksum` (0 when the header says "no checksums", else a flagged checksum)
    /// and the file checksum. Returns the writer and the trailer written.
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, Trailer), LtxError> {
        if self.header.has_checksums() {
            if post_apply_checksum & CHECKSUM_FLAG == 0 {
                return Err(LtxError::Encode(
                    "post-apply checksum must have bit 63 set".into(),
                ));
            }
        } else if post_apply_checksum != 0 {
            return Err(LtxError::Encode(
                "post-apply checksum must be 0 when the header says \"no checksums\"".into(),
            ));
        }
        if self.header.is_snapshot() {
            let last = self.index.last().map_or(0, |e| e.pgno);
            let commit = self.header.commit;
            let complete = last == commit
                || (commit == self.header.lock_pgno() && last.checked_add(1) == Some(commit));
            if !complete {
                return Err(LtxError::Encode(format!(
                    "snapshot ends at page {last} but the database has {commit} pages"
                )));
            }
        }

        let mut tail = vec![0u8; PAGE_HEADER_SIZE];
        let index = encode_page_index(&self.index);
        tail.extend_from_slice(&index);
        tail.extend_from_slice(&(index.len() as u64).to_be_bytes());
        tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.hash.update(&tail);
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: self.hash.finish_flagged(),
        };
        tail.extend_from_slice(&trailer.file_checksum.to_be_bytes());
        self.w.write_all(&tail)?;
        self.w.flush()?;
        Ok((self.w, trailer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{decode_file, lock_pgno, Txid};

    fn header(min: u64, max: u64, commit: u32) -> Header {
        Header::new(
            512,
            commit,
            Txid::new(min),
            Txid::new(max),
            1_700_000_000_000,
        )
    }

    #[test]
    fn writes_a_decodable_file() {
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let mut e = Encoder::with_encoding(Vec::new(), header(5, 6, 10), enc).unwrap();
            e.add_page(3, &[3; 512]).unwrap();
            e.add_page(9, &[9; 512]).unwrap();
            let (bytes, trailer) = e.finish(0).unwrap();
            let d = decode_file(&bytes).unwrap();
            assert_eq!(d.trailer, trailer);
            assert_eq!(d.pages.len(), 2);
            assert_eq!((d.pages[1].pgno, d.pages[1].encoding), (9, enc));
            assert_eq!(d.pages[1].data, vec![9; 512]);
        }
    }

    #[test]
    fn an_empty_file_is_valid() {
        let (bytes, _) = Encoder::new(Vec::new(), header(2, 2, 0))
            .unwrap()
            .finish(0)
            .unwrap();
        assert_eq!(bytes.len(), 100 + 6 + 1 + 24);
        assert!(decode_file(&bytes).unwrap().pages.is_empty());
    }

    #[test]
    fn refuses_invalid_pages() {
        let mut e = Encoder::new(Vec::new(), header(2, 2, 10)).unwrap();
        assert!(e.add_page(1, &[0; 100]).is_err(), "wrong size");
        assert!(e.add_page(0, &[0; 512]).is_err(), "page 0");
        assert!(e.add_page(11, &[0; 512]).is_err(), "beyond commit");
        e.add_page(4, &[0; 512]).unwrap();
        assert!(e.add_page(4, &[0; 512]).is_err(), "repeat");
        assert!(e.add_page(2, &[0; 512]).is_err(), "descending");
        assert!(
            e.finish(5).is_err(),
            "post-apply checksum on a no-checksum file"
        );

        let lock = lock_pgno(512);
        let mut e = Encoder::new(Vec::new(), header(2, 2, lock + 1)).unwrap();
        assert!(e.add_page(lock, &[0; 512]).is_err(), "lock page");
        e.add_page(lock + 1, &[0; 512]).unwrap();
    }

    #[test]
    fn snapshots_must_be_complete() {
        let mut e = Encoder::new(Vec::new(), header(1, 3, 3)).unwrap();
        assert!(e.add_page(2, &[0; 512]).is_err(), "must start at 1");
        e.add_page(1, &[0; 512]).unwrap();
        assert!(e.add_page(3, &[0; 512]).is_err(), "gap");
        e.add_page(2, &[0; 512]).unwrap();
        assert!(e.finish(0).is_err(), "page 3 missing");
    }

    #[test]
    fn checksummed_files_need_flagged_checksums() {
        let mut h = header(1, 1, 1);
        h.flags = 0;
        let mut e = Encoder::new(Vec::new(), h.clone()).unwrap();
        e.add_page(1, &[1; 512]).unwrap();
        assert!(e.finish(0).is_err());
        let mut e = Encoder::new(Vec::new(), h).unwrap();
        e.add_page(1, &[1; 512]).unwrap();
        let post = crate::ltx::page_checksum(1, &[1; 512]);
        let (bytes, _) = e.finish(post).unwrap();
        assert!(decode_file(&bytes).is_ok());
    }
}
