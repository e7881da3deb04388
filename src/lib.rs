//! A SQLite extension that reads and writes Litestream replicas.
//!
//! Reads flow one way: `storage` (object_store: list and ranged reads) → `ltx` (the file
//! format) → `replica` (restore plan, page index, snapshots, poller) → `vfs` (the SQLite VFS
//! and SQL functions, the only place with `unsafe`). `cache` holds decoded pages per
//! replica; `config` reads URI parameters, pragmas and environment; `error` maps every
//! failure to one SQLite result code.
//!
//! Writes flow the other way: `vfs` passes a primary's files to the OS VFS and tells
//! `primary` when a write transaction ends or the WAL restarts; `primary` copies committed
//! WAL frames into mirrors, encodes them as `ltx` files and uploads them through `storage`.

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
