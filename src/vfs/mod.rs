//! The SQLite side: the `litestream` VFS, its file handles and the SQL functions.
//! `file` is safe Rust over a replica; `ffi` is the only module with `unsafe`, a thin layer
//! of C-ABI shims that translate pointers and result codes and catch every panic.

mod api;
mod ffi;
pub mod file;
mod passthrough;
mod pin;
mod vtab;

/// The VFS name, as the Go extension registers it.
pub const VFS_NAME: &str = "litestream";
