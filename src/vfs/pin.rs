//! The primary's own handle on its database (`primary::DbFile`): a file of the base VFS,
//! opened beside the application's connections. Everything the primary reads of the
//! database file and of the wal-index goes through it, never through a file descriptor of
//! its own: POSIX locks belong to the process, and closing *any* descriptor of a file drops
//! every lock the process holds on it — SQLite's included. SQLite's unix VFS knows this and
//! never closes a descriptor of a locked file; going through it keeps that promise.
//!
//! Through the handle the primary also takes SQLite's WAL locks itself, in SQLite's own
//! bookkeeping of the locks of the process:
//!
//! - a SHARED lock on the database file once it is in WAL mode, as every connection in WAL
//!   mode holds one: no connection can then take the EXCLUSIVE lock that deleting the WAL
//!   at a close needs;
//! - the *pin*: a shared lock on the read-mark slot `shm::PIN_SLOT`, whose mark is set to
//!   "not used" first, so that no reader can ever read through that slot. Restarting the WAL
//!   takes every read-mark slot exclusively: with the pin held, a program without the
//!   extension cannot restart it, while our own connections leave the pin's slot out of the
//!   locks they take (`passthrough.rs`) — safe, since no reader uses it;
//! - the checkpointer lock, held while the primary reads the whole database.

use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::ptr;

use libsqlite3_sys as ffi;

use crate::primary::shm::{self, PIN_SLOT, READMARK_NOT_USED};
use crate::primary::DbFile;

/// SQLite's shm lock slots (wal.c): the write lock, the checkpointer lock, then the read
/// marks from 3.
const WRITE_LOCK: c_int = 0;
const CKPT_LOCK: c_int = 1;
const fn read_lock(slot: usize) -> c_int {
    3 + slot as c_int
}
/// Where read mark `i` lives in the first shm region (after two 48-byte headers and
/// nBackfill).
const fn read_mark_offset(slot: usize) -> usize {
    100 + 4 * slot
}
const REGION_SIZE: c_int = 32768;

pub(super) struct DbHandle {
    /// The base VFS's file, in memory of its own size (8-byte aligned).
    mem: Box<[u64]>,
    /// SQLite's unix VFS keeps a pointer to the name for the life of the file.
    name: CString,
    db_locked: bool,
    pinned: bool,
    ckpt: bool,
}

// SAFETY: the handle is used by one thread at a time (the primary keeps it behind a mutex);
// SQLite's unix VFS allows a file to be used from any thread.
unsafe impl Send for DbHandle {}

/// Opens the primary's handle on `db_path`; Ok(None) when the database does not exist.
pub(super) fn open(db_path: &Path) -> std::io::Result<Option<Box<dyn DbFile>>> {
    let err = |what: &str, rc: c_int| std::io::Error::other(format!("{what} (SQLite error {rc})"));
    if !db_path.exists() {
        return Ok(None);
    }
    let base = super::api::base_vfs().ok_or_else(|| std::io::Error::other("no base VFS"))?;
    let name = CString::new(db_path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: base is the registered base VFS, valid for the process.
    let (size, open) = unsafe { ((*base).szOsFile, (*base).xOpen) };
    let open = open.ok_or_else(|| err("the base VFS cannot open files", 0))?;
    let words = (size.max(0) as usize).div_ceil(8).max(1);
    let mut h = DbHandle {
        mem: vec![0u64; words].into_boxed_slice(),
        name,
        db_locked: false,
        pinned: false,
        ckpt: false,
    };
    let flags = ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READWRITE;
    let mut out = 0;
    let file = h.file();
    // SAFETY: our allocation of szOsFile bytes; the name lives as long as the file.
    let rc = unsafe { open(base, h.name.as_ptr(), file, flags, &mut out) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: a failed xOpen leaves pMethods NULL or closable; make sure Drop skips it.
        unsafe { (*file).pMethods = ptr::null() };
        return Err(err("opening the database for the primary", rc));
    }
    Ok(Some(Box::new(h)))
}

impl DbHandle {
    fn file(&mut self) -> *mut ffi::sqlite3_file {
        self.mem.as_mut_ptr() as *mut ffi::sqlite3_file
    }

    /// Calls a method of the open file, if the base VFS has it.
    fn call<M: Copy>(
        &mut self,
        pick: impl FnOnce(&ffi::sqlite3_io_methods) -> Option<M>,
        f: impl FnOnce(*mut ffi::sqlite3_file, M) -> c_int,
    ) -> c_int {
        let file = self.file();
        // SAFETY: the file was opened by the base VFS (pMethods set) and is not closed.
        let method = unsafe { (*file).pMethods.as_ref() }.and_then(pick);
        match method {
            Some(m) => f(file, m),
            None => ffi::SQLITE_MISUSE,
        }
    }

    fn shm_lock(&mut self, ofst: c_int, flags: c_int) -> c_int {
        // SAFETY: xShmLock with SQLite's own arguments on our open file.
        self.call(|m| m.xShmLock, |f, x| unsafe { x(f, ofst, 1, flags) })
    }

    /// The first shm region, mapped (None until SQLite has created it). The first call
    /// attaches the handle to the database's shared memory.
    fn region(&mut self) -> Option<*mut u8> {
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: maps (or returns the existing mapping of) region 0 without extending the
        // file; `p` receives its address or NULL.
        let rc = self.call(
            |m| m.xShmMap,
            |f, x| unsafe { x(f, 0, REGION_SIZE, 0, &mut p as *mut *mut c_void as _) },
        );
        (rc == ffi::SQLITE_OK && !p.is_null()).then_some(p as *mut u8)
    }

    /// Holds a SHARED lock on the database file (it is in WAL mode). Ok(false) while a
    /// connection holds it exclusively (the last one closing checkpoints and deletes the
    /// WAL): nothing to pin then, and the copier tries again.
    fn lock_db(&mut self) -> std::io::Result<bool> {
        if self.db_locked {
            return Ok(true);
        }
        // SAFETY: xLock with SQLite's own argument on our open file.
        match self.call(|m| m.xLock, |f, x| unsafe { x(f, ffi::SQLITE_LOCK_SHARED) }) {
            ffi::SQLITE_OK => {
                self.db_locked = true;
                Ok(true)
            }
            ffi::SQLITE_BUSY => Ok(false),
            rc => Err(std::io::Error::other(format!(
                "taking a shared lock on the database (SQLite error {rc})"
            ))),
        }
    }
}

impl DbFile for DbHandle {
    fn read_db(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let (Ok(_), Ok(off)) = (c_int::try_from(buf.len()), i64::try_from(offset)) else {
            return Err(std::io::Error::other("read too large"));
        };
        let size = self.db_size()?;
        let want = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let p = buf.as_mut_ptr() as *mut c_void;
        // SAFETY: xRead into `buf`, of which `want` bytes are writable.
        match self.call(|m| m.xRead, |f, x| unsafe { x(f, p, want as c_int, off) }) {
            ffi::SQLITE_OK => Ok(want),
            // A short read fills the rest with zeros: the file shrank meanwhile.
            ffi::SQLITE_IOERR_SHORT_READ => Ok(want),
            rc => Err(std::io::Error::other(format!(
                "reading the database (SQLite error {rc})"
            ))),
        }
    }

    fn db_size(&mut self) -> std::io::Result<u64> {
        let mut size: ffi::sqlite3_int64 = 0;
        // SAFETY: xFileSize with a valid out-pointer.
        match self.call(|m| m.xFileSize, |f, x| unsafe { x(f, &mut size) }) {
            ffi::SQLITE_OK => Ok(size.max(0) as u64),
            rc => Err(std::io::Error::other(format!(
                "sizing the database (SQLite error {rc})"
            ))),
        }
    }

    fn wal_index(&mut self) -> Option<[u8; shm::READ_SIZE]> {
        let region = self.region()?;
        let mut out = [0u8; shm::READ_SIZE];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: the first READ_SIZE bytes of a mapped 32 KiB region; volatile, as other
            // processes write it (the caller checks the two header copies agree).
            *b = unsafe { ptr::read_volatile(region.add(i)) };
        }
        Some(out)
    }

    fn pin(&mut self) -> std::io::Result<bool> {
        if self.pinned {
            return Ok(true);
        }
        // Not before the database is in WAL mode: a lock held on a database in rollback mode
        // would stop its writers (and its switch to WAL).
        if !crate::primary::local::is_wal_mode(self) {
            return Ok(false);
        }
        if !self.lock_db()? {
            return Ok(false);
        }
        let Some(region) = self.region() else {
            return Ok(false);
        };
        // SAFETY: the read marks are within the mapped region (32 KiB); SQLite accesses
        // them as aligned 32-bit words, as we do.
        let mark = unsafe { region.add(read_mark_offset(PIN_SLOT)) } as *mut u32;
        let slot = read_lock(PIN_SLOT);
        for _ in 0..3 {
            if self.shm_lock(slot, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_SHARED) != ffi::SQLITE_OK
            {
                return Ok(false);
            }
            // SAFETY: see above; read while holding the slot shared, so nobody changes it.
            if unsafe { ptr::read_volatile(mark) } == READMARK_NOT_USED {
                self.pinned = true;
                return Ok(true);
            }
            // A reader's mark is there: clear it, as a checkpointer would, once no reader
            // holds the slot.
            self.shm_lock(slot, ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_SHARED);
            if self.shm_lock(slot, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE)
                != ffi::SQLITE_OK
            {
                return Ok(false);
            }
            // SAFETY: see above; written while holding the slot exclusively.
            unsafe { ptr::write_volatile(mark, READMARK_NOT_USED) };
            self.shm_lock(slot, ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE);
        }
        Ok(false)
    }

    fn unpin(&mut self) {
        if std::mem::take(&mut self.pinned) {
            self.shm_lock(
                read_lock(PIN_SLOT),
                ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_SHARED,
            );
        }
    }

    fn checkpoint_running(&mut self) -> bool {
        let mut held = |slot| {
            if self.shm_lock(slot, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE)
                == ffi::SQLITE_OK
            {
                self.shm_lock(slot, ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE);
                false
            } else {
                true
            }
        };
        held(WRITE_LOCK) && held(CKPT_LOCK)
    }

    fn lock_checkpoints(&mut self) -> std::io::Result<bool> {
        // Attaches the handle to the shared memory if it is not yet.
        let _ = self.region();
        match self.shm_lock(CKPT_LOCK, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE) {
            ffi::SQLITE_OK => {
                self.ckpt = true;
                Ok(true)
            }
            ffi::SQLITE_BUSY => Ok(false),
            rc => Err(std::io::Error::other(format!(
                "taking the checkpointer lock (SQLite error {rc})"
            ))),
        }
    }

    fn unlock_checkpoints(&mut self) {
        if std::mem::take(&mut self.ckpt) {
            self.shm_lock(
                CKPT_LOCK,
                ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE,
            );
        }
    }
}

impl Drop for DbHandle {
    fn drop(&mut self) {
        self.unpin();
        self.unlock_checkpoints();
        // SAFETY: our open file (or pMethods NULL, and `call` does nothing): unmapping
        // without deleting, releasing the file lock and closing, as SQLite closes a
        // connection's file.
        self.call(|m| m.xShmUnmap, |f, x| unsafe { x(f, 0) });
        if std::mem::take(&mut self.db_locked) {
            // SAFETY: as above; the lock taken at open is released.
            self.call(|m| m.xUnlock, |f, x| unsafe { x(f, ffi::SQLITE_LOCK_NONE) });
        }
        // SAFETY: as above; the file is not used after this.
        self.call(|m| m.xClose, |f, x| unsafe { x(f) });
    }
}
