//! age encryption of the replica's objects, readable a range at a time.
//!
//! Each object is a standard age file (X25519 recipients) whose plaintext is the object a
//! plaintext replica would hold, under the same name: anyone with an identity decrypts any
//! object with the stock `age` tool and gets a file the real Litestream reads.
//!
//! age seals its payload in chunks of 64 KiB, each with its own 16-byte tag and a nonce
//! that counts chunks, so a plaintext range maps to a range of whole chunks:
//!
//! ```text
//!   header ("age-encryption.org/v1" ... "--- mac") | 16-byte nonce | chunk 0 | chunk 1 | ...
//!   chunk i holds plaintext [i*65536, (i+1)*65536) in 65536+16 bytes (the last one less)
//! ```
//!
//! A reader fetches an object's header once (`Layout`), then for every plaintext range only
//! the chunks that hold it. Decryption itself is the `age` crate's: the fetched header and
//! chunks are handed to it as a sparse file (`Sparse`) through which its seekable reader
//! finds the chunks it needs; nothing here does cryptography.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::sync::Arc;

use ::age::x25519;
use bytes::Bytes;

use crate::error::{Error, Result};

/// The first line of every age file.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// Plaintext bytes per chunk, and the sealed size of a full chunk.
pub const CHUNK: u64 = 64 * 1024;
const SEALED_CHUNK: u64 = CHUNK + 16;
const NONCE: u64 = 16;
/// Enough of an object's beginning to hold its header for any sensible number of
/// recipients (each takes about 100 bytes).
pub const HEADER_READ: u64 = 8 * 1024;

/// The keys of one replica: recipients to encrypt what is written, identities to decrypt
/// what is read. Several identities may be given (files written before a key rotation).
pub struct Keys {
    recipients: Vec<x25519::Recipient>,
    identities: Vec<x25519::Identity>,
}

/// Secrets stay out of debug output (configurations are compared and logged).
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("recipients", &self.recipients.len())
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// Two configurations agree when they encrypt to the same recipients and hold identities
/// of the same public keys.
impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        let public = |k: &Keys| -> Vec<String> {
            k.identities
                .iter()
                .map(|i| i.to_public().to_string())
                .collect()
        };
        self.recipients == other.recipients && public(self) == public(other)
    }
}

impl Keys {
    /// Keys from a comma-separated list of recipients (`age1...`; `param` names where it
    /// came from) and the text of identity files (`AGE-SECRET-KEY-1...` lines; `#`
    /// comments and blank lines skipped). None when neither holds a key.
    pub fn parse(
        recipients: Option<(&str, &str)>,
        identities: &[(String, String)],
    ) -> Result<Option<Arc<Keys>>> {
        let mut keys = Keys {
            recipients: Vec::new(),
            identities: Vec::new(),
        };
        if let Some((param, text)) = recipients {
            for r in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let parsed = r.parse().map_err(|e| {
                    Error::config(param, format!("{r:?} is not an age X25519 recipient ({e})"))
                })?;
                keys.recipients.push(parsed);
            }
        }
        for (source, text) in identities {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // The line is a secret: the error names where it is, never what it says.
                let parsed = line.parse().map_err(|e| {
                    Error::config(
                        source,
                        format!("line {} is not an age X25519 identity ({e})", n + 1),
                    )
                })?;
                keys.identities.push(parsed);
            }
        }
        if keys.recipients.is_empty() && keys.identities.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(keys)))
    }

    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty()
    }

    pub fn decrypts(&self) -> bool {
        !self.identities.is_empty()
    }

    fn encryptor(&self) -> io::Result<::age::Encryptor> {
        ::age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn ::age::Recipient),
        )
        .map_err(|e| io::Error::other(e.to_string()))
    }

    /// `plain` as an age file to the recipients.
    pub fn seal(&self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 4096 + 512);
        let mut w = self.encryptor()?.wrap_output(&mut out)?;
        w.write_all(plain)?;
        w.finish()?;
        Ok(out)
    }

    /// Encrypts the file `src` into `dst`, streaming (constant memory).
    pub fn seal_file(&self, src: &std::path::Path, dst: &std::path::Path) -> io::Result<()> {
        let mut input = std::fs::File::open(src)?;
        let out = io::BufWriter::new(std::fs::File::create(dst)?);
        let mut w = self.encryptor()?.wrap_output(out)?;
        io::copy(&mut input, &mut w)?;
        w.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    }

    /// Decrypts a whole object (`name` for errors).
    pub fn open_whole(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let layout = Layout::parse(name, sealed, sealed.len() as u64)?;
        let all = Bytes::copy_from_slice(sealed);
        let chunks = all.slice(layout.payload_start as usize..);
        layout.open(
            self,
            name,
            0..layout.plain_size,
            layout.payload_start,
            chunks,
        )
    }
}

/// Where the parts of one sealed object are, learnt from its first bytes and its size.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The header and nonce, as fetched: each decryption starts from them.
    header: Bytes,
    payload_start: u64,
    sealed_size: u64,
    pub plain_size: u64,
}

impl Layout {
    /// Reads the layout of an object `sealed_size` bytes long from its first bytes (at
    /// least its header and nonce: [`HEADER_READ`] or the whole object).
    pub fn parse(name: &str, first: &[u8], sealed_size: u64) -> Result<Layout> {
        if !first.starts_with(MAGIC) {
            return Err(Error::Crypt {
                file: name.to_string(),
                reason: not_sealed(first),
            });
        }
        let end_line = first
            .windows(5)
            .position(|w| w == b"\n--- ")
            .and_then(|at| {
                let mac_line = at + 1;
                first[mac_line..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|n| mac_line + n + 1)
            });
        let tampered = |reason: &str| Error::Tampered {
            file: name.to_string(),
            reason: reason.to_string(),
        };
        let header_end = end_line.ok_or_else(|| tampered("its age header has no end"))? as u64;
        let payload_start = header_end + NONCE;
        let payload = sealed_size
            .checked_sub(payload_start)
            .filter(|p| *p >= 16)
            .ok_or_else(|| tampered("it is shorter than its age header and one chunk"))?;
        let (full, rest) = (payload / SEALED_CHUNK, payload % SEALED_CHUNK);
        let plain_size = match rest {
            0 => full * CHUNK,
            r if r >= 16 => full * CHUNK + (r - 16),
            _ => return Err(tampered("its last chunk is shorter than a tag")),
        };
        let header = Bytes::copy_from_slice(
            first
                .get(..payload_start as usize)
                .ok_or_else(|| tampered("it ends inside its nonce"))?,
        );
        Ok(Layout {
            header,
            payload_start,
            sealed_size,
            plain_size,
        })
    }

    /// The numbers of the chunks that hold `plain` (at least one, for an empty range too).
    pub fn chunk_numbers(&self, plain: &Range<u64>) -> Range<u64> {
        let first = plain.start / CHUNK;
        let last = plain.end.saturating_sub(1).max(plain.start) / CHUNK;
        first..last + 1
    }

    /// The plaintext of the whole chunks that hold `plain`.
    pub fn chunk_span(&self, plain: &Range<u64>) -> Range<u64> {
        let n = self.chunk_numbers(plain);
        n.start * CHUNK..(n.end * CHUNK).min(self.plain_size)
    }

    /// The sealed bytes that hold the plaintext `plain`: whole chunks.
    pub fn sealed_range(&self, plain: &Range<u64>) -> Range<u64> {
        let n = self.chunk_numbers(plain);
        let start = self.payload_start + n.start * SEALED_CHUNK;
        let end = (self.payload_start + n.end * SEALED_CHUNK).min(self.sealed_size);
        start..end
    }

    /// Decrypts the plaintext `plain` out of `chunks`, the sealed bytes from `at` on (whole
    /// chunks covering it, as `sealed_range` says).
    pub fn open(
        &self,
        keys: &Keys,
        name: &str,
        plain: Range<u64>,
        at: u64,
        chunks: Bytes,
    ) -> Result<Vec<u8>> {
        let sparse = Sparse {
            header: self.header.clone(),
            at,
            chunks,
            size: self.sealed_size,
            pos: 0,
        };
        let crypt = |reason: String| Error::Crypt {
            file: name.to_string(),
            reason,
        };
        let tampered = |reason: String| Error::Tampered {
            file: name.to_string(),
            reason,
        };
        let decryptor = ::age::Decryptor::new(sparse).map_err(|e| match e {
            ::age::DecryptError::InvalidHeader | ::age::DecryptError::UnknownFormat => {
                tampered(format!("its age header does not parse ({e})"))
            }
            other => crypt(other.to_string()),
        })?;
        let identities = keys.identities.iter().map(|i| i as &dyn ::age::Identity);
        let mut reader = decryptor.decrypt(identities).map_err(|e| match e {
            ::age::DecryptError::NoMatchingKeys => crypt(format!(
                "none of the {} age identities given can decrypt it (a wrong or missing key)",
                keys.identities.len()
            )),
            ::age::DecryptError::InvalidMac | ::age::DecryptError::DecryptionFailed => {
                tampered(format!("its age header fails authentication ({e})"))
            }
            other => crypt(other.to_string()),
        })?;
        let len = (plain.end - plain.start) as usize;
        let mut out = vec![0u8; len];
        if len == 0 {
            return Ok(out);
        }
        // A seek to the very start of a chunk makes the reader check the object's length by
        // reading its last chunk, which was not fetched; a seek one byte in, then back within
        // the same (now decrypted) chunk, does not.
        let into = |r: &mut ::age::stream::StreamReader<Sparse>| {
            if plain.start.is_multiple_of(CHUNK) {
                r.seek(SeekFrom::Start(plain.start + 1))?;
            }
            r.seek(SeekFrom::Start(plain.start))
        };
        into(&mut reader)
            .and_then(|_| reader.read_exact(&mut out))
            .map_err(|e| {
                tampered(format!(
                    "bytes {}..{} fail authentication or are missing ({e})",
                    plain.start, plain.end
                ))
            })?;
        Ok(out)
    }
}

/// What an object that should be encrypted starts with instead.
fn not_sealed(first: &[u8]) -> String {
    if first.starts_with(b"LTX") {
        "is not age-encrypted, but this replica is configured with age keys (age_recipients, age_identity_file): plaintext and encrypted objects do not mix".into()
    } else {
        "is not an age file".into()
    }
}

/// The error for an age-encrypted object read without identities.
pub fn needs_identity(name: &str) -> Error {
    Error::Crypt {
        file: name.to_string(),
        reason: "is age-encrypted, and no identity was given: set age_identity_file (or LITESTREAM_AGE_IDENTITY_FILE, or LITESTREAM_AGE_IDENTITY)".into(),
    }
}

/// A sealed object of which only the header and one run of chunks were fetched: reading
/// anywhere else fails (the decryptor never does, given whole chunks).
struct Sparse {
    header: Bytes,
    at: u64,
    chunks: Bytes,
    size: u64,
    pos: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (base, part) = if self.pos < self.header.len() as u64 {
            (0, &self.header)
        } else if self.pos >= self.at && self.pos <= self.at + self.chunks.len() as u64 {
            (self.at, &self.chunks)
        } else {
            return Err(io::Error::other(format!(
                "sealed byte {} was not fetched",
                self.pos
            )));
        };
        let from = &part[(self.pos - base) as usize..];
        let n = from.len().min(buf.len());
        buf[..n].copy_from_slice(&from[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let to = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = to.ok_or_else(|| io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Arc<Keys>, x25519::Identity) {
        let id = x25519::Identity::generate();
        let text = ::age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        let recipient = id.to_public().to_string();
        let k = Keys::parse(
            Some(("age_recipients", &recipient)),
            &[("test".into(), format!("# a comment\n\n{text}\n"))],
        )
        .unwrap()
        .unwrap();
        (k, id)
    }

    /// Reads `plain` out of `sealed` as the store does: the header, then only the chunks.
    fn read(k: &Keys, sealed: &[u8], plain: Range<u64>) -> Result<Vec<u8>> {
        let first = &sealed[..sealed.len().min(HEADER_READ as usize)];
        let layout = Layout::parse("f", first, sealed.len() as u64)?;
        let r = layout.sealed_range(&plain);
        let chunks = Bytes::copy_from_slice(&sealed[r.start as usize..r.end as usize]);
        layout.open(k, "f", plain, r.start, chunks)
    }

    #[test]
    fn any_range_reads_back_from_only_its_chunks() {
        let (k, _) = keys();
        for len in [0usize, 1, 65535, 65536, 65537, 3 * 65536, 200_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = k.seal(&plain).unwrap();
            let layout = Layout::parse("f", &sealed, sealed.len() as u64).unwrap();
            assert_eq!(layout.plain_size, len as u64, "size of {len}");
            for r in [
                0..len,
                0..len.min(100),
                len / 2..len,
                len.saturating_sub(10)..len,
            ] {
                let (a, b) = (r.start as u64, r.end as u64);
                if a > b || (a == b && len > 0) {
                    continue;
                }
                assert_eq!(
                    read(&k, &sealed, a..b).unwrap(),
                    plain[r.clone()],
                    "{len} {r:?}"
                );
                let span = layout.sealed_range(&(a..b));
                assert!(span.end - span.start <= ((b - a) / CHUNK + 2) * SEALED_CHUNK);
            }
            assert_eq!(k.open_whole("f", &sealed).unwrap(), plain);
        }
    }

    #[test]
    fn a_range_that_starts_a_chunk_reads_without_the_last_chunk() {
        let (k, _) = keys();
        let plain: Vec<u8> = (0..300_000).map(|i| (i % 241) as u8).collect();
        let sealed = k.seal(&plain).unwrap();
        for start in [65_536u64, 131_072, 196_608] {
            let r = start..start + 4096;
            assert_eq!(
                read(&k, &sealed, r.clone()).unwrap(),
                plain[start as usize..r.end as usize]
            );
        }
    }

    #[test]
    fn a_range_inside_a_large_object_fetches_one_or_two_chunks() {
        let (k, _) = keys();
        let plain = vec![9u8; 1 << 20];
        let sealed = k.seal(&plain).unwrap();
        let layout =
            Layout::parse("f", &sealed[..HEADER_READ as usize], sealed.len() as u64).unwrap();
        let one = layout.sealed_range(&(500_000..504_096));
        assert_eq!(one.end - one.start, SEALED_CHUNK);
        let two = layout.sealed_range(&(65_530..65_540));
        assert_eq!(two.end - two.start, 2 * SEALED_CHUNK);
    }

    #[test]
    fn wrong_keys_tampering_and_plaintext_are_told_apart() {
        let (k, _) = keys();
        let (other, _) = keys();
        let sealed = k.seal(&vec![1u8; 100_000]).unwrap();
        let e = read(&other, &sealed, 0..10).unwrap_err();
        assert!(
            matches!(e, Error::Crypt { .. }) && e.to_string().contains("none of the 1"),
            "{e}"
        );
        assert_eq!(e.sqlite_code(), libsqlite3_sys::SQLITE_CANTOPEN);

        let mut bad = sealed.clone();
        let at = bad.len() - 100; // inside the last chunk
        bad[at] ^= 1;
        let e = read(&k, &bad, 99_000..99_010).unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
        assert_eq!(e.sqlite_code(), libsqlite3_sys::SQLITE_CORRUPT);
        // The first chunk is untouched and still reads.
        assert_eq!(read(&k, &bad, 0..10).unwrap(), vec![1u8; 10]);

        let e = Layout::parse("f", b"LTX1 and so on", 100).unwrap_err();
        assert!(e.to_string().contains("is not age-encrypted"), "{e}");
        // Cut short: its (apparent) last chunk fails authentication; whole chunks before it
        // still read, as random access must allow.
        let cut = &sealed[..sealed.len() - 20];
        let size = Layout::parse("f", cut, cut.len() as u64)
            .unwrap()
            .plain_size;
        let e = read(&k, cut, size - 10..size).unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
        assert_eq!(read(&k, cut, 0..10).unwrap(), vec![1u8; 10]);
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug_output() {
        let (_, id) = keys();
        let text = ::age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        let damaged = format!("{}x", &text[..text.len() - 1]);
        let e =
            Keys::parse(None, &[("LITESTREAM_AGE_IDENTITY".into(), damaged.clone())]).unwrap_err();
        assert!(!e.to_string().contains(&damaged[20..]), "{e}");
        assert!(
            e.to_string().contains("LITESTREAM_AGE_IDENTITY") && e.to_string().contains("line 1")
        );
        let (k, _) = keys();
        assert_eq!(format!("{k:?}"), "Keys { recipients: 1, identities: 1 }");
        let e = Keys::parse(Some(("age_recipients", "age1nope")), &[]).unwrap_err();
        assert!(e.to_string().contains("age_recipients"), "{e}");
    }
}

/// Robustness of the decryption path, as `ltx::fuzz_tests` is the decoder's: on any input
/// (sealed objects with bytes flipped, cut or replaced, headers of any shape) reading never
/// panics, and whatever it returns is the original plaintext: a changed byte is an error
/// for every range whose chunks (or header) it touches, and invisible to the others.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Arc<Keys> {
        let id = x25519::Identity::generate();
        let text = ::age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        let recipient = id.to_public().to_string();
        Keys::parse(Some(("r", &recipient)), &[("i".into(), text)])
            .unwrap()
            .unwrap()
    }

    /// Reads `plain` from `sealed` as the store does; errors are fine, panics are not.
    fn read(k: &Keys, sealed: &[u8], plain: Range<u64>) -> Result<Vec<u8>> {
        let first = &sealed[..sealed.len().min(HEADER_READ as usize)];
        let layout = Layout::parse("f", first, sealed.len() as u64)?;
        if plain.end > layout.plain_size || plain.start > plain.end {
            return Err(Error::Internal("out of range".into()));
        }
        let r = layout.sealed_range(&plain);
        let chunks = Bytes::copy_from_slice(
            sealed
                .get(r.start as usize..r.end as usize)
                .ok_or_else(|| Error::Internal("short".into()))?,
        );
        layout.open(k, "f", plain, r.start, chunks)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn a_changed_byte_is_an_error_or_out_of_the_way(
            len in 0usize..300_000,
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
            from in any::<prop::sample::Index>(),
            span in 0u64..100_000,
        ) {
            let k = keys();
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut sealed = k.seal(&plain).unwrap();
            let at = at.index(sealed.len());
            sealed[at] ^= 1 << bit;
            let start = from.index(len.max(1)) as u64;
            let end = (start + span).min(len as u64);
            match read(&k, &sealed, start..end.max(start)) {
                Ok(got) => prop_assert_eq!(&got[..], &plain[start as usize..end.max(start) as usize]),
                Err(e) => prop_assert!(matches!(e, Error::Tampered { .. } | Error::Crypt { .. } | Error::Internal(_)), "{e}"),
            }
        }

        #[test]
        fn any_bytes_after_the_magic_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..2000),
            size_extra in 0u64..200_000,
        ) {
            let k = keys();
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&tail);
            if let Ok(layout) = Layout::parse("f", &b, b.len() as u64 + size_extra) {
                let end = layout.plain_size.min(100);
                let r = layout.sealed_range(&(0..end));
                let have = Bytes::copy_from_slice(b.get(r.start as usize..).unwrap_or_default());
                let _ = layout.open(&k, "f", 0..end, r.start, have);
            }
        }

        #[test]
        fn a_cut_object_never_reads_wrong_bytes(len in 1usize..200_000, cut in any::<prop::sample::Index>()) {
            let k = keys();
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = k.seal(&plain).unwrap();
            let cut = &sealed[..cut.index(sealed.len())];
            if let Ok(layout) = Layout::parse("f", cut, cut.len() as u64) {
                let size = layout.plain_size;
                for r in [0..size.min(10), size.saturating_sub(10)..size] {
                    if let Ok(got) = read(&k, cut, r.clone()) {
                        prop_assert_eq!(&got[..], &plain[r.start as usize..r.end as usize]);
                    }
                }
            }
        }
    }
}
