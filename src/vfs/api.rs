//! SQLite's API, reached through the routine table a host passes to a loadable extension
//! (we never link libsqlite3: the host's SQLite, whatever its version, is the one we use).
//!
//! libsqlite3-sys's own initialiser refuses hosts older than its bindings (3.45), and
//! Debian's sqlite3 is 3.40, so we keep the table ourselves and check each routine we call.
//! Also the two things every C shim shares: the base VFS ours wraps, and the panic guard.

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

use libsqlite3_sys as ffi;

static API: AtomicPtr<ffi::sqlite3_api_routines> = AtomicPtr::new(std::ptr::null_mut());
/// The VFS ours was registered over (the process's default when we registered).
static BASE_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());

/// Runs `f`, turning a panic into `on_panic` instead of unwinding into C. Every C shim
/// runs its body through this.
pub fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Remembers the host's routine table: the first one passed. Called by every entry point
/// before anything else. A different table later belongs to another SQLite library in the
/// process (Python's sqlite3 beside apsw, two Node bindings): our VFS, functions and
/// background threads are bound to the first, so that one is kept and `false` says the
/// caller must be refused.
pub fn set(api: *const ffi::sqlite3_api_routines) -> bool {
    if api.is_null() {
        return true;
    }
    let new = api as *mut ffi::sqlite3_api_routines;
    match API.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => true,
        Err(first) => first == new,
    }
}

/// Remembers the VFS ours was registered over (called once, at registration).
pub fn set_base_vfs(base: *mut ffi::sqlite3_vfs) {
    BASE_VFS.store(base, Ordering::Release);
}

/// Our registered VFS, and whether it was made the process default.
static OUR_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());
static OUR_VFS_DEFAULT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_our_vfs(vfs: *mut ffi::sqlite3_vfs) {
    OUR_VFS.store(vfs, Ordering::Release);
}

/// Whether our VFS is the process's default (see `served`).
pub fn is_default_vfs() -> bool {
    OUR_VFS_DEFAULT.load(Ordering::Acquire)
}

/// Makes our VFS the process's default, for hosts that cannot name it (see `served`):
/// every open then comes to it, and it passes those it does not serve to the base VFS.
pub fn make_default_vfs() -> crate::error::Result<()> {
    let internal = |m: &str| crate::error::Error::Internal(m.to_string());
    let vfs = OUR_VFS.load(Ordering::Acquire);
    if vfs.is_null() {
        return Err(internal("the litestream VFS is not registered"));
    }
    let register = get()
        .and_then(|api| api.vfs_register)
        .ok_or_else(|| internal("sqlite3_vfs_register missing"))?;
    // SAFETY: `vfs` is ours, registered and leaked for the process; registering it again
    // with makeDflt=1 moves it to the head of SQLite's list.
    let rc = unsafe { register(vfs, 1) };
    if rc != ffi::SQLITE_OK {
        return Err(internal(&format!("sqlite3_vfs_register failed ({rc})")));
    }
    OUR_VFS_DEFAULT.store(true, Ordering::Release);
    Ok(())
}

/// The base VFS, once ours is registered.
pub fn base_vfs() -> Option<*mut ffi::sqlite3_vfs> {
    let p = BASE_VFS.load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

/// The routine table. `None` before the first load (cannot happen once an entry point ran).
pub fn get() -> Option<&'static ffi::sqlite3_api_routines> {
    let p = API.load(Ordering::Acquire);
    // SAFETY: the pointer came from SQLite's loader, which passes a pointer to its static
    // `sqlite3Apis` table; it lives as long as the process.
    unsafe { p.as_ref() }
}

/// The host's SQLite version number (3040001 for 3.40.1).
pub fn version() -> c_int {
    match get().and_then(|a| a.libversion_number) {
        // SAFETY: sqlite3_libversion_number takes no arguments and has no preconditions.
        Some(f) => unsafe { f() },
        None => 0,
    }
}

/// Whether `sqlite3_interrupt` was called on `db` during the running statement. Always
/// false on hosts before SQLite 3.41, whose routine table has no `is_interrupted` (reading
/// past the end of their shorter table would be undefined).
pub fn is_interrupted(db: *mut ffi::sqlite3) -> bool {
    if db.is_null() || version() < 3_041_000 {
        return false;
    }
    match get().and_then(|a| a.is_interrupted) {
        // SAFETY: db is the live connection of the running call; the host is 3.41 or later,
        // so its table has this routine.
        Some(f) => unsafe { f(db) != 0 },
        None => false,
    }
}

/// Copies `s` into memory from sqlite3_malloc, as SQLite requires of strings it will free
/// (pragma results, error messages). Interior NULs end the string early.
pub fn sqlite_string(s: &str) -> *mut c_char {
    sqlite_string_of(get(), s)
}

/// [`sqlite_string`] with the allocator of the library whose routine table is `api` (the
/// one that will free it).
pub fn sqlite_string_of(api: Option<&ffi::sqlite3_api_routines>, s: &str) -> *mut c_char {
    let Some(malloc) = api.and_then(|a| a.malloc) else {
        return std::ptr::null_mut();
    };
    let bytes = s.as_bytes();
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let Ok(n) = c_int::try_from(len + 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: sqlite3_malloc returns n bytes or NULL.
    let p = unsafe { malloc(n) } as *mut u8;
    if !p.is_null() {
        // SAFETY: p has room for len bytes and the terminator; the source is len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, len);
            *p.add(len) = 0;
        }
    }
    p as *mut c_char
}

/// Reads a C string SQLite handed us (a name, a parameter value) as UTF-8, lossily.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for the returned lifetime.
pub unsafe fn text<'a>(p: *const c_char) -> Option<std::borrow::Cow<'a, str>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

/// Sends a log line through the host's `sqlite3_log` (a no-op unless the host configured a
/// logger), with SQLite's codes for the level: SQLITE_NOTICE, SQLITE_WARNING, SQLITE_ERROR.
pub fn sqlite_log(level: crate::log::LogLevel, line: &str) {
    use crate::log::LogLevel;
    let Some(log) = get().and_then(|a| a.log) else {
        return;
    };
    let code = match level {
        LogLevel::Debug | LogLevel::Info => ffi::SQLITE_NOTICE,
        LogLevel::Warn => ffi::SQLITE_WARNING,
        LogLevel::Error => ffi::SQLITE_ERROR,
    };
    let Ok(text) = std::ffi::CString::new(line.replace('\0', " ")) else {
        return;
    };
    // SAFETY: sqlite3_log is safe to call from any thread at any time; the format is a
    // static "%s" and its one argument a NUL-terminated string that outlives the call.
    unsafe { log(code, c"%s".as_ptr(), text.as_ptr()) };
}
