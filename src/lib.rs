//! A SQLite extension that reads and writes Litestream replicas.
//!
//! Reads flow one way: `storage` (object_store: list and ranged reads) → `ltx` (the file
//! format) → `replica` (restore plan, page index, snapshots, poller, page cache, retention,
//! hydration) → `vfs` (the SQLite VFS, and in `vfs::sql` the SQL functions and pragmas).
//! `unsafe` is denied in the crate and allowed only in the `vfs` modules that touch SQLite's
//! C structures. Leaves below everything: `config` (URI parameters, environment; parsing has
//! no effects), `units` (durations, sizes), `clock` (instants), `log`, `error` (the one
//! mapping of every failure to a SQLite result code), `registry` (one shared object per key),
//! `runtime` (the tokio runtime), `backoff`.
//!
//! Writes flow the other way: `vfs` passes a primary's files to the OS VFS and tells
//! `primary` when a write transaction ends, the WAL restarts or a `sync=remote` commit
//! needs the replica; of all the processes with the database open, the leader copies what
//! the wal-index says is committed into mirrors, encodes it as `ltx` files and uploads them
//! through `storage`, and the others follow its published progress.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backoff;
pub mod clock;
pub mod config;
pub mod error;
pub mod log;
pub mod ltx;
pub mod primary;
pub mod registry;
pub mod replica;
pub mod runtime;
pub mod storage;
pub mod units;
pub mod vfs;
