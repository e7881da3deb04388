//! The files of a primary: the main database and its WAL, opened by the base (OS) VFS and
//! wrapped so that every call goes straight through, except the few moments the primary
//! must know about:
//!
//! - main database `xShmLock`: releasing the WAL write lock ends a write transaction (the
//!   copier looks for newly committed frames); taking the checkpointer lock starts a
//!   checkpoint, which a WAL restart may follow (the leader copies meanwhile); taking the
//!   read-mark locks 1..4 exclusively
//!   is how SQLite restarts the WAL from its start: once they are held, the primary makes
//!   sure every committed frame is copied, and if it cannot, the restart is refused with
//!   SQLITE_BUSY (SQLite then keeps appending, as it does for readers). While this process
//!   holds the pin (`pin.rs`), the pin's slot is left out of the locks taken: no reader can
//!   be using it;
//! - main database `xFileControl`: SQLITE_FCNTL_COMMIT_PHASETWO, sent once a transaction is
//!   committed and the write lock released: with `sync=remote`, the COMMIT waits there until
//!   the replica holds it (an error then leaves it committed locally, see `Error::
//!   NotReplicated`); the `litestream_*` pragmas; and pragmas that would stop capture
//!   (`journal_mode` other than WAL, `locking_mode=exclusive`) are refused.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::api::{self, guard};
use crate::config::SyncMode;
use crate::primary::Primary;

/// SQLite's shm lock slots (wal.c): the write lock, the checkpointer lock, then read marks
/// from 3.
const WAL_WRITE_LOCK: c_int = 0;
const WAL_CKPT_LOCK: c_int = 1;
const WAL_READ_LOCK_1: c_int = 4;
/// Read marks 1..=4: locking all of them exclusively is a WAL restart.
const WAL_RESTART_LOCKS: c_int = 4;
/// The same without the pin's slot (the last one).
const WAL_RESTART_LOCKS_UNPINNED: c_int = 3;
const _: () =
    assert!(WAL_READ_LOCK_1 + WAL_RESTART_LOCKS - 1 == 3 + crate::primary::shm::PIN_SLOT as c_int);

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
    /// This connection's own settings (`sync`, `write_enabled`).
    conn: super::sql::PrimaryConnection,
    /// The restart locks it holds leave out the pin's slot.
    restart_without_pin_slot: bool,
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
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn open(
    base: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
    primary: Arc<Primary>,
    kind: Kind,
    sync: SyncMode,
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
        (*h).conn = super::sql::PrimaryConnection { sync, writes: true };
        (*h).restart_without_pin_slot = false;
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
            // SAFETY: the base file's method, called on the base file with SQLite's arguments.
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

unsafe extern "C" fn p_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    forward!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, out)
}

unsafe extern "C" fn p_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: our file.
        let (_, _, primary) = unsafe { parts(file) };
        // In WAL mode a connection asks for an EXCLUSIVE lock on the database file only as
        // it closes, to checkpoint and delete the WAL when it is the last anywhere. The
        // last connection of this process ships what is pending and lets go of the
        // primary's own locks first, so that SQLite can do it when no other process uses
        // the database.
        // SAFETY: our file.
        let connection = unsafe { (*(file as *const PassHandle)).connection };
        // (A database not in WAL mode yet asks for it to switch to WAL: not a close.)
        if level == ffi::SQLITE_LOCK_EXCLUSIVE
            && connection
            && primary.is_last_connection()
            && primary.is_wal_mode()
        {
            primary.before_last_close();
        }
        forward!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
    })
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
        // SAFETY: our file; the fields are read here and written back below, never borrowed
        // across a call that reaches the file through another pointer.
        let (connection, mut conn) = unsafe {
            let h = file as *const PassHandle;
            ((*h).connection, (*h).conn)
        };
        match op {
            FCNTL_LITESTREAM_PRIMARY => {
                // SAFETY: our own opcode: arg is a *mut *const Primary out-pointer.
                unsafe { *(arg as *mut *const Primary) = primary as *const Primary };
                return ffi::SQLITE_OK;
            }
            ffi::SQLITE_FCNTL_COMMIT_PHASETWO if connection && conn.sync == SyncMode::Remote => {
                // The transaction is committed and the write lock released: other writers
                // go on while this COMMIT waits for the replica.
                return match primary.wait_replicated() {
                    Ok(()) => ffi::SQLITE_OK,
                    Err(e) => {
                        crate::log_warn!("{e}");
                        e.sqlite_code()
                    }
                };
            }
            ffi::SQLITE_FCNTL_PRAGMA => {
                let args = arg as *mut *mut c_char;
                // SAFETY: for SQLITE_FCNTL_PRAGMA, arg is char*[3]: result, name, value.
                let (name, value) = unsafe { (api::text(*args.add(1)), api::text(*args.add(2))) };
                if let Some(name) = name {
                    let answer =
                        super::sql::primary_pragma(primary, &mut conn, &name, value.as_deref());
                    // SAFETY: our file; see above.
                    unsafe { (*(file as *mut PassHandle)).conn = conn };
                    if let Some(result) = answer {
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
        let h = file as *mut PassHandle;
        let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        let restart_locks = exclusive && offset == WAL_READ_LOCK_1 && n == WAL_RESTART_LOCKS;
        let count = |which: &std::sync::atomic::AtomicUsize, up: bool| {
            use std::sync::atomic::Ordering::AcqRel;
            if up {
                which.fetch_add(1, AcqRel);
            } else {
                which.fetch_sub(1, AcqRel);
            }
        };
        if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
            if exclusive && offset == WAL_WRITE_LOCK {
                count(&primary.held_write, false);
                primary.note_write_end();
            }
            if exclusive && offset == WAL_CKPT_LOCK {
                count(&primary.held_checkpoint, false);
            }
            // SAFETY: our file; the flag is only touched by this connection's own calls.
            let without_pin_slot =
                restart_locks && unsafe { std::mem::take(&mut (*h).restart_without_pin_slot) };
            let n = if without_pin_slot {
                WAL_RESTART_LOCKS_UNPINNED
            } else {
                n
            };
            return forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
        }
        // `PRAGMA litestream_write_enabled = 0`: this connection writes nothing.
        // SAFETY: our file; read only.
        if exclusive && offset == WAL_WRITE_LOCK && unsafe { !(*h).conn.writes } {
            return ffi::SQLITE_READONLY;
        }
        if !restart_locks {
            let rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
            if rc == ffi::SQLITE_OK && exclusive && offset == WAL_WRITE_LOCK {
                count(&primary.held_write, true);
            }
            if rc == ffi::SQLITE_OK && exclusive && offset == WAL_CKPT_LOCK {
                count(&primary.held_checkpoint, true);
                primary.checkpoint_started();
            }
            return rc;
        }
        // A WAL restart (or a RESTART/TRUNCATE checkpoint making sure of one).
        match restart_locks_taken(file) {
            Ok(without_pin_slot) => {
                // Only once the locks are held can no reader stop the restart, so the copy
                // comes after anything SQLite could still append. (A RESTART checkpoint
                // takes them and leaves the restart to the next writer, who may still
                // append if a reader comes first: the copier then unseals the mirror.)
                if !primary.before_wal_restart() {
                    let held = if without_pin_slot {
                        WAL_RESTART_LOCKS_UNPINNED
                    } else {
                        WAL_RESTART_LOCKS
                    };
                    let unlock = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
                    forward!(
                        file,
                        xShmLock,
                        ffi::SQLITE_IOERR_SHMLOCK,
                        offset,
                        held,
                        unlock
                    );
                    return ffi::SQLITE_BUSY;
                }
                // SAFETY: as above.
                unsafe { (*h).restart_without_pin_slot = without_pin_slot };
                ffi::SQLITE_OK
            }
            Err(rc) => rc,
        }
    })
}

/// Takes the locks of a WAL restart: read marks 1..=4 exclusively. The pin's slot (the
/// last) is left out when the pin holds it: its mark is "not used", so no reader can be on
/// it, and the pin must stop programs without the extension only. Ok(whether the pin's
/// slot was left out); Err(code) when the locks cannot be had (SQLITE_BUSY: a reader).
fn restart_locks_taken(file: *mut ffi::sqlite3_file) -> Result<bool, c_int> {
    let lock = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
    let unlock = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
    let rc = forward!(
        file,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        WAL_READ_LOCK_1,
        WAL_RESTART_LOCKS_UNPINNED,
        lock
    );
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    let pin_slot = WAL_READ_LOCK_1 + WAL_RESTART_LOCKS_UNPINNED;
    let rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, pin_slot, 1, lock);
    if rc == ffi::SQLITE_OK {
        return Ok(false);
    }
    // Someone holds the pin's slot: the pin, if its mark says no reader may use it (read
    // with the other slots held, so no reader can be choosing one meanwhile).
    if rc == ffi::SQLITE_BUSY && pin_slot_unused(file) {
        return Ok(true);
    }
    forward!(
        file,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        WAL_READ_LOCK_1,
        WAL_RESTART_LOCKS_UNPINNED,
        unlock
    );
    Err(rc)
}

/// Whether the read mark of the pin's slot says "not used", read from this connection's
/// own mapping of the wal-index.
fn pin_slot_unused(file: *mut ffi::sqlite3_file) -> bool {
    let mut p: *mut c_void = ptr::null_mut();
    let rc = forward!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        0,
        32768,
        0,
        &mut p as *mut *mut c_void as _
    );
    if rc != ffi::SQLITE_OK || p.is_null() {
        return false;
    }
    let at = 100 + 4 * crate::primary::shm::PIN_SLOT;
    // SAFETY: region 0 is mapped (32 KiB) and the read marks are aligned 32-bit words
    // within its first 120 bytes; other processes write them, hence volatile.
    let mark = unsafe { ptr::read_volatile((p as *const u8).add(at) as *const u32) };
    mark == crate::primary::shm::READMARK_NOT_USED
}

unsafe extern "C" fn p_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: our file; forward.
    let (inner, m, _) = unsafe { parts(file) };
    if let Some(f) = m.xShmBarrier {
        // SAFETY: the base file's method on the base file.
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
        // SAFETY: the base file's method on the base file, with SQLite's out-pointer.
        Some(f) => unsafe { f(inner, off, amt, out) },
        None => {
            // SAFETY: SQLite passes a valid out-pointer.
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
static WAL_METHODS: ffi::sqlite3_io_methods = methods(p_sync);
