//! A SQLite extension that reads and writes Litestream replicas.
//!
//! Reads flow one way: `storage` (object_store: list and ranged reads) → `ltx` (the file
//! format) → `replica` (restore plan, page index, snapshots, poller) → `vfs` (the SQLite VFS
//! and SQL functions, the only place with `unsafe`). `cache` holds decoded pages per
//! replica; `config` reads URI parameters, pragmas and environment; `error` maps every
//! failure to one SQLite result code.
//!
//! Writes flow the other way: `vfs` passes a primary's files to the OS VFS and tells
//! `primary` when a write transaction ends, the WAL restarts or a `sync=remote` commit
//! needs the replica; of all the processes with the database open, the leader copies what
//! the wal-index says is committed into mirrors, encodes it as `ltx` files and uploads them
//! through `storage`, and the others follow its published progress.

pub mod backoff;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
pub mod log;
pub mod ltx;
pub mod primary;
pub mod replica;
pub mod runtime;
pub mod sql;
pub mod storage;
pub mod vfs;
