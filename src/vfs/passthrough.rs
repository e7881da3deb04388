//! The files of a primary: the main database and its WAL, opened by the base (OS) VFS and
//! wrapped so that every call goes straight through, except the few moments the primary
//! must know about:
//!
//! - main database `xShmLock`: releasing the WAL write lock ends a write transaction (the
//!   copier looks for newly committed frames); taking the read-mark locks 1..4 exclusively
//!   is how SQLite restarts the WAL from its start: once they are held, the frames not yet
//!   copied are copied out of the WAL, and if that fails the restart is refused with
//!   SQLITE_BUSY (SQLite then keeps appending, as it does for readers);
//! - main database `xFileControl`: the `litestream_*` pragmas, and pragmas that would stop
//!   capture (`journal_mode` other than WAL, `locking_mode=exclusive`) are refused;
//! - WAL `xSync`: with `sync=remote`, the commit waits for its transaction to ship.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::api;
use super::ffi::guard;
use crate::primary::Primary;

/// SQLite's shm lock slots (wal.c): the write lock, then read marks from 3.
const WAL_WRITE_LOCK: c_int = 0;
const WAL_READ_LOCK_1: c_int = 4;
/// Read marks 1..=4: locking all of them exclusively is a WAL restart.
const WAL_RESTART_LOCKS: c_int = 4;

/// A private file-control opcode: asks a file for its `Primary`.
pub(super) const FCNTL_LITESTREAM_PRIMARY: c_int = 0x4c53_0002;

#[repr(C)]
pub(super) struct PassHandle {
    base: ffi::sqlite3_file,
    /// The base VFS's file, in memory of its own size (8-byte aligned).
    inner: *mut ffi::sqlite3_file,
    inner_mem: *mut Vec<u64>,
    primary: *const Primary,
    /// A main-database handle: one of the primary's connections.
    connection: bool,
}

pub(super) enum Kind {
    Db,
    Wal,
}

/// Opens `name` with the base VFS into its own allocation and wraps it in `file`.
///
/// # Safety
/// `base` is the base VFS; `file` has room for a `PassHandle`; the other arguments are
/// xOpen's.
pub(super) unsafe fn open(
    base: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
    primary: Arc<Primary>,
    kind: Kind,
) -> c_int {
    // SAFETY: base is a registered VFS.
    let (size, open) = unsafe { ((*base).szOsFile, (*base).xOpen) };
    let Some(open) = open else {
        return ffi::SQLITE_CANTOPEN;
    };
    let words = (size.max(0) as usize).div_ceil(8).max(1);
    let mem = Box::into_raw(Box::new(vec![0u64; words]));
    // SAFETY: mem is a live allocation of at least szOsFile bytes, 8-byte aligned.
    let inner = unsafe { (*mem).as_mut_ptr() } as *mut ffi::sqlite3_file;
    // SAFETY: forwarding xOpen with SQLite's own arguments into our allocation.
    let rc = unsafe { open(base, name, inner, flags, out_flags) };
    // SAFETY: `file` has room for a PassHandle (szOsFile covers it).
    let h = file as *mut PassHandle;
    if rc != ffi::SQLITE_OK {
        if matches!(kind, Kind::Db) {
            primary.connection_closed();
        }
        // SAFETY: on failure xOpen leaves pMethods NULL or closable; close if set, free.
        unsafe {
            if let Some(m) = (*inner).pMethods.as_ref() {
                if let Some(close) = m.xClose {
                    close(inner);
                }
            }
            drop(Box::from_raw(mem));
            (*h).base.pMethods = ptr::null();
        }
        return rc;
    }
    // SAFETY: as above; SQLite reads pMethods only after we return.
    unsafe {
        (*h).inner = inner;
        (*h).inner_mem = mem;
        (*h).primary = Arc::into_raw(primary);
        (*h).connection = matches!(kind, Kind::Db);
        (*h).base.pMethods = match kind {
            Kind::Db => &DB_METHODS,
            Kind::Wal => &WAL_METHODS,
        };
    }
    ffi::SQLITE_OK
}

/// The wrapped file and its primary.
///
/// # Safety
/// `file` must have been opened by `open` and not closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
    &'a Primary,
) {
    let h = file as *mut PassHandle;
    // SAFETY: per the contract, inner is an open base file and primary a live Arc.
    unsafe { ((*h).inner, &*(*(*h).inner).pMethods, &*(*h).primary) }
}

macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        // SAFETY: our file; forward to the base file's own method.
        let (inner, m, _) = unsafe { parts($file) };
        match m.$method {
            Some(f) => unsafe { f(inner $(, $arg)*) },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn p_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        let h = file as *mut PassHandle;
        let rc = forward!(file, xClose, ffi::SQLITE_OK);
        // SAFETY: made by `open`; the pointers are cleared so they are freed once.
        let primary = unsafe {
            drop(Box::from_raw(std::mem::replace(
                &mut (*h).inner_mem,
                ptr::null_mut(),
            )));
            Arc::from_raw(std::mem::replace(&mut (*h).primary, ptr::null()))
        };
        // SAFETY: made by `open`.
        if unsafe { (*h).connection } {
            primary.connection_closed();
        }
        rc
    })
}

unsafe extern "C" fn p_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    forward!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amt, off)
}

unsafe extern "C" fn p_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off)
}

unsafe extern "C" fn p_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    forward!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn p_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    forward!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn p_wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_FSYNC, || {
        let rc = forward!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        // SAFETY: our file.
        let (_, _, primary) = unsafe { parts(file) };
        match primary.on_wal_sync() {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                crate::log_warn!("{e}");
                ffi::SQLITE_IOERR_FSYNC
            }
        }
    })
}

unsafe extern "C" fn p_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    forward!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, out)
}

unsafe extern "C" fn p_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn p_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn p_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(
        file,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn p_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize, 4096)
}

unsafe extern "C" fn p_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn p_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        // SAFETY: our file.
        let (_, _, primary) = unsafe { parts(file) };
        match op {
            FCNTL_LITESTREAM_PRIMARY => {
                // SAFETY: our own opcode: arg is a *mut *const Primary out-pointer.
                unsafe { *(arg as *mut *const Primary) = primary as *const Primary };
                return ffi::SQLITE_OK;
            }
            ffi::SQLITE_FCNTL_PRAGMA => {
                // SAFETY: for SQLITE_FCNTL_PRAGMA, arg is char*[3]: result, name, value.
                let args = arg as *mut *mut c_char;
                let (name, value) = unsafe { (api::text(*args.add(1)), api::text(*args.add(2))) };
                if let Some(name) = name {
                    if let Some(result) =
                        crate::sql::primary_pragma(primary, &name, value.as_deref())
                    {
                        let (rc, text) = match result {
                            Ok(v) => (ffi::SQLITE_OK, v.into_text()),
                            Err(e) => (ffi::SQLITE_ERROR, Some(e.to_string())),
                        };
                        if let Some(text) = text {
                            // SAFETY: SQLite frees args[0] with sqlite3_free.
                            unsafe { *args = api::sqlite_string(&text) };
                        }
                        return rc;
                    }
                }
            }
            _ => {}
        }
        forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
    })
}

unsafe extern "C" fn p_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        region,
        size,
        extend,
        out
    )
}

unsafe extern "C" fn p_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: our file.
        let (_, _, primary) = unsafe { parts(file) };
        let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        if exclusive && flags & ffi::SQLITE_SHM_UNLOCK != 0 && offset == WAL_WRITE_LOCK {
            primary.note_write_end();
        }
        let rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
        let restart = exclusive
            && flags & ffi::SQLITE_SHM_LOCK != 0
            && offset == WAL_READ_LOCK_1
            && n == WAL_RESTART_LOCKS;
        // Only once the locks are held can no reader stop the restart, so the copy comes
        // after anything SQLite could still append. (A RESTART checkpoint takes them and
        // leaves the restart to the next writer, who may still append if a reader comes
        // first: the copier then unseals the mirror.)
        if restart && rc == ffi::SQLITE_OK && !primary.before_wal_restart() {
            let unlock = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
            forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, unlock);
            return ffi::SQLITE_BUSY;
        }
        rc
    })
}

unsafe extern "C" fn p_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: our file; forward.
    let (inner, m, _) = unsafe { parts(file) };
    if let Some(f) = m.xShmBarrier {
        unsafe { f(inner) }
    }
}

unsafe extern "C" fn p_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn p_fetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: out is a valid out-pointer; NULL means "no mapping, read instead".
    let (inner, m, _) = unsafe { parts(file) };
    match m.xFetch {
        Some(f) => unsafe { f(inner, off, amt, out) },
        None => {
            unsafe { *out = ptr::null_mut() };
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn p_unfetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    forward!(file, xUnfetch, ffi::SQLITE_OK, off, p)
}

const fn methods(
    sync: unsafe extern "C" fn(*mut ffi::sqlite3_file, c_int) -> c_int,
) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: 3,
        xClose: Some(p_close),
        xRead: Some(p_read),
        xWrite: Some(p_write),
        xTruncate: Some(p_truncate),
        xSync: Some(sync),
        xFileSize: Some(p_file_size),
        xLock: Some(p_lock),
        xUnlock: Some(p_unlock),
        xCheckReservedLock: Some(p_check_reserved_lock),
        xFileControl: Some(p_file_control),
        xSectorSize: Some(p_sector_size),
        xDeviceCharacteristics: Some(p_device_characteristics),
        xShmMap: Some(p_shm_map),
        xShmLock: Some(p_shm_lock),
        xShmBarrier: Some(p_shm_barrier),
        xShmUnmap: Some(p_shm_unmap),
        xFetch: Some(p_fetch),
        xUnfetch: Some(p_unfetch),
    }
}

static DB_METHODS: ffi::sqlite3_io_methods = methods(p_sync);
static WAL_METHODS: ffi::sqlite3_io_methods = methods(p_wal_sync);
