//! The SQLite side: the `litestream` VFS, its file handles and the SQL surface. Safe Rust:
//! `file` (a replica file), `route` (where an open goes), `sql` (functions and pragmas).
//! `unsafe` is allowed only in the modules that touch SQLite's C structures, each block
//! with a `SAFETY:` note: `ffi` (entry points, the VFS, SQL function calls; every shim
//! translates pointers and result codes and catches panics), `replica_io` (a replica
//! file's io_methods), `passthrough` and `pin` (a primary's files on the base VFS), `vtab`
//! (`litestream_history`) and `api` (the routine table the host passes, the base VFS and
//! the panic guard: the leaf the others share). The crate denies it everywhere else.
//! Imports go one way: `ffi` → the file modules → `api`.

#[allow(unsafe_code)]
mod api;
#[allow(unsafe_code)]
mod ffi;
pub mod file;
#[allow(unsafe_code)]
mod passthrough;
#[allow(unsafe_code)]
mod pin;
#[allow(unsafe_code)]
mod replica_io;
pub mod route;
pub mod served;
pub mod sql;
#[allow(unsafe_code)]
mod vtab;

/// The VFS name, as the Go extension registers it.
pub const VFS_NAME: &str = "litestream";
