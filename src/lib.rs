//! A SQLite extension that reads Litestream replicas.
//!
//! Data flows one way: `storage` (object_store: list and ranged reads) → `ltx` (the file
//! format) → `replica` (restore plan, page index, snapshots, poller) → `vfs` (the SQLite VFS
//! and SQL functions, the only place with `unsafe`). `cache` holds decoded pages per
//! replica; `config` reads URI parameters, pragmas and environment; `error` maps every
//! failure to one SQLite result code.

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
