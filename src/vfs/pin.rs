//! The primary's own handle on its database (`primary::WalLocks`): a file of the base VFS,
//! opened beside the application's connections, through which the primary takes SQLite's
//! WAL locks itself — so that SQLite's bookkeeping of the locks of the process stays right.
//!
//! - The handle holds a SHARED lock on the database file, as every connection in WAL mode
//!   does: no connection can then take the EXCLUSIVE lock that deleting the WAL at a close
//!   needs.
//! - The *pin*: a shared lock on the read-mark slot `shm::PIN_SLOT`, whose mark is set to
//!   "not used" first, so that no reader can ever read through that slot. Restarting the WAL
//!   takes every read-mark slot exclusively: with the pin held, a program without the
//!   extension cannot restart it, while our own connections leave the pin's slot out of the
//!   locks they take (`passthrough.rs`) — safe, since no reader uses it.
//! - The checkpointer lock, held while the primary reads the whole database.

use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::ptr;

use libsqlite3_sys as ffi;

use crate::primary::shm::{PIN_SLOT, READMARK_NOT_USED};
use crate::primary::WalLocks;

/// SQLite's shm lock slots (wal.c): the write lock, the checkpointer lock, then the read
/// marks from 3.
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

pub(super) struct Pin {
    /// The base VFS's file, in memory of its own size (8-byte aligned).
    mem: Box<[u64]>,
    /// SQLite's unix VFS keeps a pointer to the name for the life of the file.
    _name: CString,
    db_locked: bool,
    pinned: bool,
    ckpt: bool,
}

// SAFETY: the handle is used by one thread at a time (the primary keeps it behind a mutex);
// SQLite's unix VFS allows a file to be used from any thread.
unsafe impl Send for Pin {}

/// Opens the primary's handle on `db_path` (which must exist, in WAL mode).
pub(super) fn open(db_path: &Path) -> std::io::Result<Box<dyn WalLocks>> {
    let err = |what: &str, rc: c_int| std::io::Error::other(format!("{what} (SQLite error {rc})"));
    let base = super::ffi::base_vfs().ok_or_else(|| std::io::Error::other("no base VFS"))?;
    let name = CString::new(db_path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: base is the registered base VFS, valid for the process.
    let (size, open) = unsafe { ((*base).szOsFile, (*base).xOpen) };
    let open = open.ok_or_else(|| err("the base VFS cannot open files", 0))?;
    let words = (size.max(0) as usize).div_ceil(8).max(1);
    let mut pin = Pin {
        mem: vec![0u64; words].into_boxed_slice(),
        _name: name,
        db_locked: false,
        pinned: false,
        ckpt: false,
    };
    let flags = ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READWRITE;
    let mut out = 0;
    // SAFETY: our allocation of szOsFile bytes; the name lives as long as the file.
    let rc = unsafe { open(base, pin._name.as_ptr(), pin.file(), flags, &mut out) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: a failed xOpen leaves pMethods NULL; nothing to close then.
        unsafe { (*pin.file()).pMethods = ptr::null() };
        return Err(err("opening the database for the primary's locks", rc));
    }
    let rc = pin.call(|m| m.xLock, |f, x| unsafe { x(f, ffi::SQLITE_LOCK_SHARED) });
    if rc != ffi::SQLITE_OK {
        return Err(err("taking a shared lock on the database", rc));
    }
    pin.db_locked = true;
    Ok(Box::new(pin))
}

impl Pin {
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

    /// The first shm region, mapped (None until SQLite has created it).
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
}

impl WalLocks for Pin {
    fn pin(&mut self) -> std::io::Result<bool> {
        if self.pinned {
            return Ok(true);
        }
        let Some(region) = self.region() else {
            return Ok(false);
        };
        // SAFETY: the read marks are within the mapped region (32 KiB); SQLite accesses
        // them as aligned 32-bit words, as we do.
        let mark = region.wrapping_add(read_mark_offset(PIN_SLOT)) as *mut u32;
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

impl Drop for Pin {
    fn drop(&mut self) {
        if std::mem::take(&mut self.pinned) {
            self.shm_lock(
                read_lock(PIN_SLOT),
                ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_SHARED,
            );
        }
        self.unlock_checkpoints();
        // SAFETY: our open file; unmapping without deleting, then releasing the file lock
        // and closing, as SQLite closes a connection's file.
        self.call(|m| m.xShmUnmap, |f, x| unsafe { x(f, 0) });
        if std::mem::take(&mut self.db_locked) {
            self.call(|m| m.xUnlock, |f, x| unsafe { x(f, ffi::SQLITE_LOCK_NONE) });
        }
        self.call(|m| m.xClose, |f, x| unsafe { x(f) });
    }
}
