//! The one error type of the crate, and its one mapping onto SQLite result codes.
//!
//! Every layer returns `Error`; only the FFI layer turns it into an integer, through
//! [`Error::sqlite_code`], so the choice of code is made once, here.

use std::sync::Arc;

use crate::ltx::LtxError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URI parameter, pragma value or environment variable is missing or malformed.
    #[error("litestream: {param}: {reason}")]
    Config { param: String, reason: String },

    /// The store does not honour create-only writes, on which the single-writer claims
    /// depend.
    #[error("litestream: replica {url}: the store does not honour conditional writes (a create-only PUT of one object succeeded twice), so two primaries could both ship and overwrite each other's files; this happens with some S3-compatible servers and with proxies that drop the If-None-Match header. Use a store that enforces them, or open with check_conditional_writes=false if only one process of one machine ever writes this replica")]
    Unconditional { url: String },

    /// The replica URL cannot be turned into a store.
    #[error("litestream: replica_url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    /// The replica holds no files (yet). `note` says how long the open waited for some.
    #[error("litestream: replica {url}: the replica holds no LTX files{note}")]
    Empty { url: String, note: String },

    /// The replica holds no usable state (no chain from TXID 1).
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

    /// No credentials anywhere, so the client's last resort, the cloud's instance metadata
    /// service, was asked and did not answer.
    #[error("litestream: storage error on {file}: no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials named by AWS_PROFILE; for gs://, GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT; for abs://, AZURE_STORAGE_ACCOUNT_KEY); the instance metadata service, tried last, answered: {source}")]
    NoCredentials {
        file: String,
        #[source]
        source: Box<object_store::Error>,
    },

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

    /// A statement needed more storage requests than `request_budget` allows.
    #[error("litestream: request_budget exceeded: this statement has made {spent} GET requests and needs more, over the budget of {budget} (raise it with PRAGMA litestream_request_budget, or 0 for no limit)")]
    Budget { budget: u64, spent: u64 },

    /// A read transaction's state is older than the replica holds: retention deleted a
    /// file it reads and no copy of the page was kept. SQLITE_BUSY_SNAPSHOT, as for a WAL
    /// reader whose snapshot is stale: end the transaction and start another.
    #[error("litestream: snapshot too old: this read transaction's state (TXID {txid}) reads {file}, which retention deleted, and retain_size ({retain_size} bytes) kept no copy of the page; end the transaction and retry (the newest state is TXID {newest})")]
    SnapshotTooOld {
        txid: String,
        newest: String,
        file: String,
        retain_size: u64,
    },

    /// The replica has not been heard from for longer than `max_lag`: reads fail rather
    /// than show a state that old.
    #[error("litestream: {url} is stale: the last successful poll was {age_secs} s ago, more than max_lag={max_lag}{cause}")]
    Stale {
        url: String,
        age_secs: u64,
        max_lag: String,
        /// `: <the poller's last error>`, or empty.
        cause: String,
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

    /// A `sync=remote` COMMIT whose transaction the replica did not confirm in time. The
    /// transaction stays committed in the local database and ships when the store answers
    /// again; the COMMIT reports it with its own code, SQLITE_IOERR_VNODE (6922), which
    /// SQLite reserves for extensions and nothing else in a primary returns.
    #[error("litestream: {db}: committed locally but not confirmed in the replica: {why}")]
    NotReplicated { db: String, why: String },

    /// An encrypted object cannot be read with the keys given (none, the wrong ones), or an
    /// object is plaintext in a replica configured as encrypted. `reason` never holds a key.
    #[error("litestream: {file} {reason}")]
    Crypt { file: String, reason: String },

    /// An age-encrypted object fails authentication: it was changed or cut short.
    #[error("litestream: {file}: {reason}")]
    Tampered { file: String, reason: String },

    /// A long operation (a restore) was cancelled: `sqlite3_interrupt` on its connection,
    /// or the program's progress callback asked to stop.
    #[error("litestream: {what}: interrupted")]
    Interrupted { what: String },

    /// SQLite itself refused something the extension asked of it.
    #[error("litestream: {what}: {} (SQLite error {code})", sqlite_says(.code))]
    Sqlite { code: i32, what: String },

    /// One failure reported to several callers (errors are not `Clone`): the code and
    /// message are the original's.
    #[error("{0}")]
    Again(Arc<Error>),

    /// Something that cannot happen did: a panic caught at the FFI boundary, a closed runtime.
    #[error("litestream: internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The SQLite result code that reports this error.
    pub fn sqlite_code(&self) -> i32 {
        use libsqlite3_sys as code;
        match self {
            Error::Config { .. }
            | Error::BadUrl { .. }
            | Error::Empty { .. }
            | Error::Unconditional { .. }
            | Error::NoState { .. }
            | Error::Gap { .. }
            | Error::Crypt { .. } => code::SQLITE_CANTOPEN,
            Error::Corrupt { .. } | Error::Tampered { .. } => code::SQLITE_CORRUPT,
            Error::NotFound { .. }
            | Error::Storage { .. }
            | Error::NoCredentials { .. }
            | Error::Timeout { .. }
            | Error::Budget { .. } => code::SQLITE_IOERR_READ,
            Error::SnapshotTooOld { .. } => code::SQLITE_BUSY_SNAPSHOT,
            Error::Stale { .. } => code::SQLITE_IOERR_LOCK,
            Error::ReadOnly(_) => code::SQLITE_READONLY,
            Error::Io { .. } => code::SQLITE_IOERR,
            Error::NotReplicated { .. } => code::SQLITE_IOERR_VNODE,
            Error::Interrupted { .. } => code::SQLITE_INTERRUPT,
            Error::Sqlite { code, .. } => *code,
            Error::Internal(_) => code::SQLITE_INTERNAL,
            Error::Again(e) => e.sqlite_code(),
        }
    }

    /// The code for this error raised by a SQL function or table while a statement runs: a
    /// bad argument is a plain SQLITE_ERROR there (SQLITE_CANTOPEN would claim that the
    /// database failed to open).
    pub fn statement_code(&self) -> i32 {
        match self {
            Error::Config { .. } => libsqlite3_sys::SQLITE_ERROR,
            Error::Again(e) => e.statement_code(),
            other => other.sqlite_code(),
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
            // AWS's and Google's instance metadata address: where the clients go last.
            other if other.to_string().contains("169.254.169.254") => Error::NoCredentials {
                file: file.into(),
                source: Box::new(other),
            },
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
}

/// SQLite's own words for a result code (sqlite3ErrStr's, for the primary codes an
/// extension's own statements can meet).
fn sqlite_says(code: &i32) -> &'static str {
    use libsqlite3_sys as c;
    match *code & 0xff {
        c::SQLITE_BUSY => "database is locked",
        c::SQLITE_LOCKED => "database table is locked",
        c::SQLITE_NOMEM => "out of memory",
        c::SQLITE_READONLY => "attempt to write a readonly database",
        c::SQLITE_IOERR => "disk I/O error",
        c::SQLITE_CORRUPT => "database disk image is malformed",
        c::SQLITE_FULL => "database or disk is full",
        c::SQLITE_CANTOPEN => "unable to open database file",
        c::SQLITE_NOTADB => "file is not a database",
        _ => "SQLite refused it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use libsqlite3_sys as code;

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(
            Error::config("poll_interval", "bad").sqlite_code(),
            code::SQLITE_CANTOPEN
        );
        assert_eq!(
            Error::ReadOnly("x".into()).sqlite_code(),
            code::SQLITE_READONLY
        );
        assert_eq!(
            Error::NotFound { file: "a".into() }.sqlite_code(),
            code::SQLITE_IOERR_READ
        );
        assert!(Error::config("poll_interval", "bad")
            .to_string()
            .contains("poll_interval"));
        let busy = Error::Sqlite {
            code: code::SQLITE_BUSY,
            what: "putting app.db in WAL mode".into(),
        };
        assert_eq!(busy.sqlite_code(), code::SQLITE_BUSY);
        assert_eq!(
            busy.to_string(),
            "litestream: putting app.db in WAL mode: database is locked (SQLite error 5)"
        );
        assert_eq!(
            Error::config("litestream_time", "bad").statement_code(),
            code::SQLITE_ERROR
        );
        assert_eq!(
            Error::ReadOnly("x".into()).statement_code(),
            code::SQLITE_READONLY
        );
    }

    /// No credentials: the clients end at the instance metadata service; the error says
    /// what to set instead of only that the metadata service failed, and is not retried.
    #[test]
    fn no_credentials_is_named() {
        let imds = object_store::Error::Generic {
            store: "S3",
            source: "error sending request for url (http://169.254.169.254/latest/api/token)"
                .into(),
        };
        let e = Error::storage("listing s3://b/p", imds);
        assert!(matches!(e, Error::NoCredentials { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("no credentials found") && text.contains("AWS_ACCESS_KEY_ID"));
        assert_eq!(e.sqlite_code(), libsqlite3_sys::SQLITE_IOERR_READ);
    }
}
