//! The io_methods of a replica file: C shims over [`ReplicaFile`]. Reads come from the
//! replica, locks delimit read transactions (a SHARED lock pins a state), pragmas arrive as
//! file controls, and every write is refused (SQLITE_READONLY).

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use libsqlite3_sys as ffi;

use super::api::{self, guard};
use super::file::ReplicaFile;
use super::sql;
use crate::error::Error;

/// A private file-control opcode: asks a file for its `ReplicaFile` (so SQL functions can
/// reach the replica of a connection's schema). SQLite's own opcodes are below 100.
const FCNTL_LITESTREAM_FILE: c_int = 0x4c53_0001;

/// Our sqlite3_file: the base struct SQLite knows, then a pointer to the safe state.
#[repr(C)]
pub(super) struct Handle {
    pub(super) base: ffi::sqlite3_file,
    pub(super) file: *mut ReplicaFile,
}

pub(super) static REPLICA_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(f_close),
    xRead: Some(f_read),
    xWrite: Some(f_write),
    xTruncate: Some(f_truncate),
    xSync: Some(f_sync),
    xFileSize: Some(f_file_size),
    xLock: Some(f_lock),
    xUnlock: Some(f_unlock),
    xCheckReservedLock: Some(f_check_reserved_lock),
    xFileControl: Some(f_file_control),
    xSectorSize: Some(f_sector_size),
    xDeviceCharacteristics: Some(f_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The safe state of one of our files.
///
/// # Safety
/// `file` must be a file opened by `x_open` with REPLICA_METHODS and not yet closed;
/// SQLite serialises calls on one file, so the exclusive borrow is unique.
unsafe fn state<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut ReplicaFile> {
    // SAFETY: per the contract above.
    unsafe { (*(file as *mut Handle)).file.as_mut() }
}

unsafe extern "C" fn f_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        let handle = file as *mut Handle;
        // SAFETY: the box was made by x_open; the pointer is cleared so it drops once.
        unsafe {
            let p = std::mem::replace(&mut (*handle).file, ptr::null_mut());
            if !p.is_null() {
                drop(Box::from_raw(p));
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn f_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: our file; SQLite gives a buffer of `amt` bytes.
        let (Some(f), Ok(len), Ok(offset)) = (
            unsafe { state(file) },
            usize::try_from(amt),
            u64::try_from(offset),
        ) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: buf points to amt writable bytes for the duration of the call.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) };
        match f.read(buf, offset) {
            Ok(filled) if filled == len => ffi::SQLITE_OK,
            Ok(_) => ffi::SQLITE_IOERR_SHORT_READ,
            Err(e) => report(e),
        }
    })
}

/// Logs an error that SQLite can only show as a code, and returns the code.
fn report(e: Error) -> c_int {
    crate::log_warn!("{e}");
    e.sqlite_code()
}

unsafe extern "C" fn f_write(
    _: *mut ffi::sqlite3_file,
    _: *const c_void,
    _: c_int,
    _: ffi::sqlite3_int64,
) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn f_truncate(_: *mut ffi::sqlite3_file, _: ffi::sqlite3_int64) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn f_sync(_: *mut ffi::sqlite3_file, _: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn f_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: our file; out is a valid out-pointer.
        match unsafe { state(file) } {
            Some(f) => {
                // SAFETY: SQLite passes a valid out-pointer.
                unsafe { *out = f.file_size() as ffi::sqlite3_int64 };
                ffi::SQLITE_OK
            }
            None => ffi::SQLITE_IOERR_FSTAT,
        }
    })
}

unsafe extern "C" fn f_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: our file.
        match unsafe { state(file) } {
            Some(f) => match f.lock(level) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(e),
            },
            None => ffi::SQLITE_IOERR_LOCK,
        }
    })
}

unsafe extern "C" fn f_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: our file.
        if let Some(f) = unsafe { state(file) } {
            f.unlock(level);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn f_check_reserved_lock(_: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: out is a valid out-pointer. Nobody writes through a replica.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn f_sector_size(_: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn f_device_characteristics(_: *mut ffi::sqlite3_file) -> c_int {
    // Not SQLITE_IOCAP_IMMUTABLE: SQLite must keep taking locks (they delimit read
    // transactions) and keep checking the change counter.
    0
}

unsafe extern "C" fn f_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        // SAFETY: our file.
        let Some(f) = (unsafe { state(file) }) else {
            return ffi::SQLITE_NOTFOUND;
        };
        match op {
            FCNTL_LITESTREAM_FILE => {
                // SAFETY: our own opcode: arg is a *mut *mut ReplicaFile out-pointer.
                unsafe { *(arg as *mut *mut ReplicaFile) = f as *mut ReplicaFile };
                ffi::SQLITE_OK
            }
            ffi::SQLITE_FCNTL_PRAGMA => {
                let args = arg as *mut *mut c_char;
                // SAFETY: for SQLITE_FCNTL_PRAGMA, arg is char*[3]: result, name, value.
                let (name, value) = unsafe { (api::text(*args.add(1)), api::text(*args.add(2))) };
                let Some(name) = name else {
                    return ffi::SQLITE_NOTFOUND;
                };
                match sql::pragma(f, &name, value.as_deref()) {
                    None => ffi::SQLITE_NOTFOUND,
                    Some(Ok(v)) => {
                        if let Some(text) = v.into_text() {
                            // SAFETY: SQLite frees args[0] with sqlite3_free.
                            unsafe { *args = api::sqlite_string(&text) };
                        }
                        ffi::SQLITE_OK
                    }
                    Some(Err(e)) => {
                        // SAFETY: as above; an error message goes in args[0] too.
                        unsafe { *args = api::sqlite_string(&e.to_string()) };
                        ffi::SQLITE_ERROR
                    }
                }
            }
            _ => ffi::SQLITE_NOTFOUND,
        }
    })
}

/// The replica file behind `schema` of connection `db`, when it is one of ours.
pub(super) fn file_of<'a>(db: *mut ffi::sqlite3, schema: &str) -> Option<&'a mut ReplicaFile> {
    let fc = api::get()?.file_control?;
    let schema = CString::new(schema).ok()?;
    let mut p: *mut ReplicaFile = ptr::null_mut();
    // SAFETY: our opcode writes a pointer to the file's state, which lives until the file
    // is closed; the caller holds the connection, so the schema cannot be detached while
    // the borrow is used within this call.
    let rc = unsafe {
        fc(
            db,
            schema.as_ptr(),
            FCNTL_LITESTREAM_FILE,
            &mut p as *mut _ as *mut c_void,
        )
    };
    if rc != ffi::SQLITE_OK {
        return None;
    }
    // SAFETY: set by f_file_control from a live file.
    unsafe { p.as_mut() }
}
