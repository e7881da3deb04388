//! The SQLite side: the `litestream` VFS, its file handles and the SQL functions.
//! `file` is safe Rust over a replica. `unsafe` is allowed only in the modules that touch
//! SQLite's C structures, each block with a `SAFETY:` note: `ffi` (the C-ABI shims, which
//! translate pointers and result codes and catch every panic), `api` (the routine table the
//! host passes), `passthrough` and `pin` (a primary's files on the base VFS) and `vtab`
//! (`litestream_history`). The crate denies it everywhere else.

#[allow(unsafe_code)]
mod api;
#[allow(unsafe_code)]
mod ffi;
pub mod file;
#[allow(unsafe_code)]
mod passthrough;
#[allow(unsafe_code)]
mod pin;
pub mod route;
pub mod sql;
#[allow(unsafe_code)]
mod vtab;

/// The VFS name, as the Go extension registers it.
pub const VFS_NAME: &str = "litestream";
