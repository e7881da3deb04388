//! One error type for everything the LTX module rejects.
//!
//! Messages say what is wrong with the bytes, never which file they came from: the caller
//! (which knows the object name) wraps this in its own error.

/// Why a piece of an LTX file could not be decoded, verified or encoded.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    #[error("bad magic: the file does not start with \"LTX1\"")]
    BadMagic,

    #[error("truncated: {what}")]
    Truncated { what: String },

    #[error("unsupported header flags 0x{0:08x} (only 0x2, no checksums, is known)")]
    UnsupportedFlags(u32),

    #[error("invalid page size {0} (must be a power of two from 512 to 65536)")]
    BadPageSize(u32),

    #[error("invalid TXID range {min}-{max}")]
    BadTxidRange { min: u64, max: u64 },

    #[error("invalid TXID {0:?} (expected 16 hexadecimal digits)")]
    BadTxid(String),

    #[error("page {pgno} decompresses to {got} bytes, expected the page size {expected}")]
    PageSizeMismatch {
        pgno: u32,
        expected: u32,
        got: usize,
    },

    #[error("page {pgno} decompresses to more than the page size {page_size}")]
    PageTooLarge { pgno: u32, page_size: u32 },

    #[error("page frame holds page {got}, expected page {expected}")]
    WrongPage { expected: u32, got: u32 },

    #[error("bad page frame: {0}")]
    BadFrame(String),

    #[error("LZ4: {0}")]
    Lz4(String),

    #[error("{what} checksum mismatch: stored {expected:016x}, computed {got:016x}")]
    ChecksumMismatch {
        what: &'static str,
        expected: u64,
        got: u64,
    },

    #[error("bad trailer: {0}")]
    BadTrailer(String),

    #[error("bad page index: {0}")]
    BadIndex(String),

    /// The parts of a file disagree with each other (index vs frames, header vs pages).
    #[error("{0}")]
    Mismatch(String),

    /// The encoder was asked to write something that is not a valid LTX file.
    #[error("cannot encode: {0}")]
    Encode(String),

    #[error("I/O error while writing: {0}")]
    Io(#[from] std::io::Error),
}

impl LtxError {
    pub(crate) fn truncated(what: impl Into<String>) -> Self {
        LtxError::Truncated { what: what.into() }
    }
}
