//! The one error type of the crate, and its one mapping onto SQLite result codes.
//!
//! Every layer returns `Error`; only the FFI layer turns it into an integer, through
//! [`Error::sqlite_code`], so the choice of code is made once, here.

use crate::ltx::LtxError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URI parameter, pragma value or environment variable is missing or malformed.
    #[error("litestream: {param}: {reason}")]
    Config { param: String, reason: String },

    /// The replica URL cannot be turned into a store.
    #[error("litestream: replica_url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    /// The replica holds no usable state (empty, or no chain from TXID 1).
    #[error("litestream: replica {url}: {reason}")]
    NoState { url: String, reason: String },

    /// The chain of LTX files has a hole: states after it cannot be reached.
    #[error("litestream: replica {url}: TXID chain ends at {reached} but files continue from {next_min} (missing {missing}); the replica is incomplete")]
    Gap {
        url: String,
        reached: String,
        next_min: String,
        missing: String,
    },

    /// An LTX file failed to decode or verify.
    #[error("litestream: corrupt LTX file {file}: {source}")]
    Corrupt { file: String, source: LtxError },

    /// An object that the plan needs is gone (deleted by compaction or retention).
    #[error("litestream: {file} not found in the replica")]
    NotFound { file: String },

    /// The object store failed (after its retries).
    #[error("litestream: storage error on {file}: {source}")]
    Storage {
        file: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// An operation on storage did not finish in time.
    #[error("litestream: {what} timed out after {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },

    /// A write was attempted on a read-only view.
    #[error("litestream: {0} is read-only")]
    ReadOnly(String),

    /// Local I/O (temporary files, restore targets).
    #[error("litestream: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// An error already reported once, repeated with its code and message.
    #[error("{message}")]
    Reported { code: i32, message: String },

    /// Something that cannot happen did: a panic caught at the FFI boundary, a closed runtime.
    #[error("litestream: internal error: {0}")]
    Internal(String),
}

/// SQLite primary and extended result codes that this crate returns.
/// (Values from sqlite3.h; kept here so that the mapping reads as a table.)
pub mod code {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const INTERNAL: i32 = 2;
    pub const BUSY: i32 = 5;
    pub const READONLY: i32 = 8;
    pub const IOERR: i32 = 10;
    pub const CORRUPT: i32 = 11;
    pub const NOTFOUND: i32 = 12;
    pub const CANTOPEN: i32 = 14;
    pub const IOERR_READ: i32 = IOERR | (1 << 8);
    pub const IOERR_SHORT_READ: i32 = IOERR | (2 << 8);
    pub const IOERR_WRITE: i32 = IOERR | (3 << 8);
}

impl Error {
    /// The SQLite result code that reports this error.
    pub fn sqlite_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::BadUrl { .. }
            | Error::NoState { .. }
            | Error::Gap { .. } => code::CANTOPEN,
            Error::Corrupt { .. } => code::CORRUPT,
            Error::NotFound { .. } | Error::Storage { .. } | Error::Timeout { .. } => {
                code::IOERR_READ
            }
            Error::ReadOnly(_) => code::READONLY,
            Error::Io { .. } => code::IOERR,
            Error::Internal(_) => code::INTERNAL,
            Error::Reported { code, .. } => *code,
        }
    }

    pub fn config(param: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            param: param.to_string(),
            reason: reason.into(),
        }
    }

    pub fn storage(file: impl Into<String>, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { file: file.into() },
            other => Error::Storage {
                file: file.into(),
                source: Box::new(other),
            },
        }
    }

    pub fn corrupt(file: impl Into<String>, source: LtxError) -> Self {
        Error::Corrupt {
            file: file.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when retrying later may succeed (the poller keeps going on these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Storage { .. } | Error::Timeout { .. } | Error::NotFound { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(
            Error::config("poll_interval", "bad").sqlite_code(),
            code::CANTOPEN
        );
        assert_eq!(Error::ReadOnly("x".into()).sqlite_code(), code::READONLY);
        assert_eq!(
            Error::NotFound { file: "a".into() }.sqlite_code(),
            code::IOERR_READ
        );
        assert!(Error::config("poll_interval", "bad")
            .to_string()
            .contains("poll_interval"));
    }
}
