//! C-ABI shims: the entry points, the `litestream` sqlite3_vfs (routing each open, see
//! `route`), and the SQL functions' registration and calls; a replica file's io_methods are
//! in `replica_io`. Each shim converts pointers, calls safe code, maps
//! `Error::sqlite_code`, and catches panics so that none crosses into SQLite.

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use super::api::{self, guard};
use super::file::ReplicaFile;
use super::passthrough;
use super::replica_io::{file_of, Handle, REPLICA_METHODS};
use super::route::{self, Route};
use super::sql::{self, Value};
use crate::config::{Params, SyncMode};
use crate::error::Error;

// ---------------------------------------------------------------------------------------
// Entry points

/// `.load liblitestream` / `load_extension('liblitestream')` finds this by its file name.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestream_init(
    db: *mut ffi::sqlite3,
    pz_err: *mut *mut c_char,
    api_table: *const ffi::sqlite3_api_routines,
) -> c_int {
    guard(ffi::SQLITE_INTERNAL, || {
        if !api::set(api_table) {
            if !pz_err.is_null() {
                let why = "litestream: the extension is loaded already, into another SQLite library of this process (Python's sqlite3 beside apsw, say); it serves one library per process: load it into that one";
                // SAFETY: SQLite passes a valid out-pointer for the message, and a routine
                // table that lives as long as the process; the message is allocated by that
                // library, which frees it.
                unsafe { *pz_err = api::sqlite_string_of(api_table.as_ref(), why) };
            }
            return ffi::SQLITE_ERROR;
        }
        match init(db) {
            Ok(()) => ffi::SQLITE_OK_LOAD_PERMANENTLY,
            Err(e) => {
                if !pz_err.is_null() {
                    // SAFETY: SQLite passes a valid out-pointer for the message.
                    unsafe { *pz_err = api::sqlite_string(&e.to_string()) };
                }
                e.sqlite_code()
            }
        }
    })
}

/// The Go extension's entry point name, so that loaders written for it keep working.
///
/// # Safety
/// As for [`sqlite3_litestream_init`].
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestreamvfs_init(
    db: *mut ffi::sqlite3,
    pz_err: *mut *mut c_char,
    api_table: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: same contract, same arguments.
    unsafe { sqlite3_litestream_init(db, pz_err, api_table) }
}

fn init(db: *mut ffi::sqlite3) -> Result<(), Error> {
    let api = api::get().ok_or_else(|| Error::Internal("no SQLite API table".into()))?;
    register_vfs()?;
    serve_from_env()?;
    // New connections get the SQL functions (and open errors reported) through an
    // auto-extension that, unlike the Go extension's, returns SQLITE_OK for every
    // connection that is not ours. SQLite ignores a second registration of one function.
    let auto = api.auto_extension.ok_or_else(missing("auto_extension"))?;
    let entry: EntryPoint = sqlite3_litestream_autoinit;
    // SAFETY: SQLite calls auto-extensions with exactly the entry-point signature; the
    // parameter type is a generic `void(*)(void)` by convention.
    let rc = unsafe {
        auto(Some(std::mem::transmute::<
            EntryPoint,
            unsafe extern "C" fn(),
        >(entry)))
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::Internal(format!(
            "sqlite3_auto_extension failed ({rc})"
        )));
    }
    if !db.is_null() {
        register_functions(db)?;
    }
    Ok(())
}

type EntryPoint = unsafe extern "C" fn(
    *mut ffi::sqlite3,
    *mut *mut c_char,
    *const ffi::sqlite3_api_routines,
) -> c_int;

fn missing(name: &'static str) -> impl Fn() -> Error {
    move || Error::Internal(format!("the host SQLite lacks sqlite3_{name}"))
}

/// The C API's progress callback of cold starts (`litestream_set_progress` in
/// `include/litestream.h`).
type ProgressFn = unsafe extern "C" fn(*mut c_void, *const c_char, u64, u64) -> c_int;

/// Sets (or with NULL removes) the program's progress callback of cold starts.
#[no_mangle]
pub unsafe extern "C" fn litestream_set_progress(cb: Option<ProgressFn>, ctx: *mut c_void) {
    let ctx = ctx as usize;
    let observer = cb.map(|cb| -> crate::replica::restore::Observer {
        std::sync::Arc::new(move |what: &str, done: u64, total: u64| {
            let what = CString::new(what).unwrap_or_default();
            // SAFETY: the program promised a callback valid until it is replaced, taking its
            // own context pointer and a string valid during the call.
            guard(0, || unsafe {
                cb(ctx as *mut c_void, what.as_ptr(), done, total)
            }) != 0
        })
    });
    crate::replica::restore::observe(observer);
}

/// The automatic extension: runs as every connection in the process opens. Registers the
/// SQL functions and reports a replica that failed to open (see `fail_open`). Returns
/// SQLITE_OK for every other connection: a non-zero return would fail the open and stop the
/// automatic extensions after it. Programs that link the library register this one (see
/// include/litestream.h), not the entry point, whose SQLITE_OK_LOAD_PERMANENTLY is an error
/// to an automatic-extension caller.
///
/// # Safety
/// Called by SQLite with a valid connection and routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestream_autoinit(
    db: *mut ffi::sqlite3,
    pz_err: *mut *mut c_char,
    api_table: *const ffi::sqlite3_api_routines,
) -> c_int {
    guard(ffi::SQLITE_OK, || {
        // Registered only by the library we serve; any other is none of our business.
        if !api::set(api_table) || db.is_null() {
            return ffi::SQLITE_OK;
        }
        let registered = register_vfs()
            .and_then(|()| serve_from_env())
            .and_then(|()| register_functions(db));
        if let Err(e) = registered {
            crate::log_warn!("litestream extension: {e}");
        }
        if let Err(e) = prepare_primary(db) {
            return fail_open(db, pz_err, &e);
        }
        if let Some(e) = file_of(db, "main").and_then(|file| file.open_error()) {
            return fail_open(db, pz_err, e);
        }
        ffi::SQLITE_OK
    })
}

thread_local! {
    /// The open error `litestream_open_failed()` raises: set and taken on one thread, within
    /// one call of `fail_open`.
    static OPEN_ERROR: std::cell::RefCell<Option<(String, c_int)>> = const { std::cell::RefCell::new(None) };
}

/// Fails the open of `db` with `e`. SQLite fails an open whose automatic extension returns
/// an error, but words it "automatic extension loading failed: …", which is not what went
/// wrong. It also fails the open when an automatic extension returns SQLITE_OK with an error
/// left on the connection; so the error is raised by a statement instead (a private function
/// run once), and sqlite3_errmsg reads our message alone, with our code. Failing that, the
/// prefixed form.
fn fail_open(db: *mut ffi::sqlite3, pz_err: *mut *mut c_char, e: &Error) -> c_int {
    let code = e.sqlite_code();
    let message = e.to_string();
    OPEN_ERROR.with(|slot| *slot.borrow_mut() = Some((message.clone(), code)));
    let raised = raise_open_error(db);
    OPEN_ERROR.with(|slot| slot.borrow_mut().take());
    if raised == Some(code) {
        return ffi::SQLITE_OK;
    }
    if !pz_err.is_null() {
        // SAFETY: SQLite passes a valid out-pointer for the message.
        unsafe { *pz_err = api::sqlite_string(&message) };
    }
    code
}

/// Runs `SELECT litestream_open_failed()` on `db`; returns the extended code left on it.
fn raise_open_error(db: *mut ffi::sqlite3) -> Option<c_int> {
    let api = api::get()?;
    let (create, exec, errcode) = (api.create_function_v2?, api.exec?, api.extended_errcode?);
    // SAFETY: db is the connection being opened, live for this call; the name and SQL are
    // NUL-terminated literals; the function takes no app pointer.
    unsafe {
        let rc = create(
            db,
            c"litestream_open_failed".as_ptr(),
            0,
            ffi::SQLITE_UTF8,
            ptr::null_mut(),
            Some(open_failed),
            None,
            None,
            None,
        );
        if rc != ffi::SQLITE_OK {
            return None;
        }
        exec(
            db,
            c"SELECT litestream_open_failed()".as_ptr(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        );
        Some(errcode(db))
    }
}

unsafe extern "C" fn open_failed(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) {
    let _ = guard(0, || {
        let Some(api) = api::get() else { return 0 };
        let Some((msg, code)) = OPEN_ERROR.with(|slot| slot.borrow_mut().take()) else {
            return 0;
        };
        // SAFETY: ctx is the live function context of this call.
        unsafe { result_error(api, ctx, &msg, code) };
        0
    });
}

/// Makes `msg` and `code` the result of a function call.
///
/// # Safety
/// `ctx` is the live context of the function call being answered.
unsafe fn result_error(
    api: &ffi::sqlite3_api_routines,
    ctx: *mut ffi::sqlite3_context,
    msg: &str,
    code: c_int,
) {
    // SAFETY: per the contract; SQLite copies the message before returning.
    unsafe {
        if let (Some(f), Ok(n)) = (api.result_error, c_int::try_from(msg.len())) {
            f(ctx, msg.as_ptr() as *const c_char, n);
        }
        if let Some(f) = api.result_error_code {
            f(ctx, code);
        }
    }
}

/// `LITESTREAM_PATH` at load: that path is served with the other `LITESTREAM_*` variables
/// as its parameters, through our VFS made the default (see `served`). Once per process.
fn serve_from_env() -> Result<(), Error> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(path) = std::env::var(super::served::path_variable()) else {
            return Ok(());
        };
        sql::serve(&path, "")
            .map(|_| ())
            .map_err(|e| format!("{}={path:?}: {e}", super::served::path_variable()))
    })
    .clone()
    .map_err(Error::Internal)
}

// ---------------------------------------------------------------------------------------
// The VFS

/// Registered once per process; the sqlite3_vfs itself is leaked (SQLite keeps a pointer).
static VFS: OnceLock<Result<(), String>> = OnceLock::new();
fn register_vfs() -> Result<(), Error> {
    let result = VFS.get_or_init(|| {
        let api = api::get().ok_or("no SQLite API table")?;
        // sqlite3_uri_key (3.31) is the newest routine we call; a shorter routine table
        // would be read past its end. Both entry paths register through here.
        if api::version() < 3_031_000 {
            return Err(format!(
                "SQLite {} is too old: the litestream extension needs 3.31 or newer",
                api::version()
            ));
        }
        let find = api.vfs_find.ok_or("sqlite3_vfs_find missing")?;
        let register = api.vfs_register.ok_or("sqlite3_vfs_register missing")?;
        let name = CString::new(super::VFS_NAME).map_err(|e| e.to_string())?;
        // SAFETY: a NULL name asks for the default VFS; the result lives for the process.
        let base = unsafe { find(ptr::null()) };
        if base.is_null() {
            return Err("no default VFS".into());
        }
        api::set_base_vfs(base);
        // SAFETY: `base` is a registered VFS, valid for the process.
        let base_ref = unsafe { &*base };
        // Non-replica files (temp files, journals) are opened by the base VFS in place, so
        // our file size must fit both.
        let size = (std::mem::size_of::<Handle>() as c_int)
            .max(std::mem::size_of::<super::passthrough::PassHandle>() as c_int)
            .max(base_ref.szOsFile);
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: size,
            mxPathname: base_ref.mxPathname,
            pNext: ptr::null_mut(),
            zName: name.into_raw(),
            pAppData: base as *mut c_void,
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: base_ref.xDlOpen,
            xDlError: base_ref.xDlError,
            xDlSym: base_ref.xDlSym,
            xDlClose: base_ref.xDlClose,
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        let vfs = Box::into_raw(vfs);
        // SAFETY: `vfs` is fully initialised and leaked, so it outlives its registration;
        // 0 = not the default VFS.
        let rc = unsafe { register(vfs, 0) };
        if rc != ffi::SQLITE_OK {
            return Err(format!("sqlite3_vfs_register failed ({rc})"));
        }
        api::set_our_vfs(vfs);
        // From now on the log goes through the host's sqlite3_log too.
        crate::log::set_sink(api::sqlite_log);
        Ok(())
    });
    result
        .as_ref()
        .map(|_| ())
        .map_err(|e| Error::Internal(e.clone()))
}

/// The base (default) VFS that our VFS was registered over.
///
/// # Safety
/// `vfs` must be our registered VFS.
unsafe fn base(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: pAppData was set to the base VFS at registration.
    unsafe { (*vfs).pAppData as *mut ffi::sqlite3_vfs }
}

/// URI parameters of the database being opened, through sqlite3_uri_parameter/uri_key.
struct UriParams(*const c_char);

impl Params for UriParams {
    fn get(&self, name: &str) -> Option<String> {
        let f = api::get()?.uri_parameter?;
        let name = CString::new(name).ok()?;
        // SAFETY: self.0 is the filename SQLite passed to xOpen (valid during the call);
        // the returned value points into it.
        unsafe { api::text(f(self.0, name.as_ptr())).map(|s| s.into_owned()) }
    }

    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let Some(f) = api::get().and_then(|a| a.uri_key) else {
            return keys;
        };
        for i in 0..256 {
            // SAFETY: as above; uri_key returns NULL past the last key (SQLite >= 3.31,
            // checked at load).
            match unsafe { api::text(f(self.0, i)) } {
                Some(k) => keys.push(k.into_owned()),
                None => break,
            }
        }
        keys
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: vfs is ours.
        let base = unsafe { base(vfs) };
        // SAFETY: name is NULL or the file name SQLite passes, valid during the call.
        let path = unsafe { api::text(name) }.map(|p| std::path::PathBuf::from(p.as_ref()));
        let env = |k: &str| std::env::var(k).ok();
        // A primary's database and WAL: opened by the base VFS, wrapped by ours.
        let wrap = |primary, kind, sync| {
            // SAFETY: xOpen's own arguments; our szOsFile covers a PassHandle.
            unsafe { passthrough::open(base, name, file, flags, out_flags, primary, kind, sync) }
        };
        // Temp files, journals, sort files, plain local databases: the base VFS opens them
        // in place.
        // SAFETY: our szOsFile is at least the base's, so `file` has room for its file.
        let base_open = || unsafe {
            match (*base).xOpen {
                Some(open) => open(base, name, file, flags, out_flags),
                None => ffi::SQLITE_CANTOPEN,
            }
        };
        let kind = route::OpenKind {
            main_db: flags & ffi::SQLITE_OPEN_MAIN_DB != 0,
            wal: flags & ffi::SQLITE_OPEN_WAL != 0,
        };
        let is_primary_wal = |p: &std::path::Path| crate::primary::by_wal(p).is_some();
        let params = UriParams(name);
        let served = match (kind.main_db, &path) {
            (true, Some(p)) => super::served::lookup(p),
            _ => None,
        };
        let serving = route::Serving {
            served: served.as_ref().map(|s| s as &dyn crate::config::Params),
            default_vfs: api::is_default_vfs(),
        };
        let state = match route::route(
            path.as_deref(),
            kind,
            &params,
            &serving,
            &env,
            &is_primary_wal,
        ) {
            Route::Base => return base_open(),
            Route::PrimaryWal(p) => match crate::primary::by_wal(&p) {
                Some(primary) => return wrap(primary, passthrough::Kind::Wal, SyncMode::Local),
                None => return base_open(), // closed since: an ordinary WAL now
            },
            Route::PrimaryDb(p, config) => {
                match crate::primary::open(&p, &config, super::pin::open) {
                    Ok(primary) => {
                        return wrap(primary, passthrough::Kind::Db, config.primary.sync)
                    }
                    Err(e) => ReplicaFile::open(Err(e)),
                }
            }
            Route::Replica(config) => ReplicaFile::open_config(&config),
            Route::Failed(e) => ReplicaFile::open(Err(e)),
        };
        let state = Box::new(state);
        if let Some(e) = state.open_error() {
            // The message reaches sqlite3_errmsg through the auto-extension; log it for
            // hosts that open with ATTACH, where it cannot.
            crate::log_info!("{e}");
        }
        let handle = file as *mut Handle;
        // SAFETY: SQLite allocated szOsFile bytes (>= size_of::<Handle>()) for `file`.
        unsafe {
            (*handle).base.pMethods = &REPLICA_METHODS;
            (*handle).file = Box::into_raw(state);
            if !out_flags.is_null() {
                *out_flags = (flags & !(ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE))
                    | ffi::SQLITE_OPEN_READONLY;
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: name is a valid C string for the call.
        let path = unsafe { api::text(name) }.map(|p| std::path::PathBuf::from(p.as_ref()));
        if let Some(primary) = path.as_deref().and_then(crate::primary::by_wal) {
            if !primary.may_delete_wal() {
                return ffi::SQLITE_OK;
            }
        }
        // SAFETY: vfs is ours; the base VFS handles local files.
        unsafe {
            let base = base(vfs);
            match (*base).xDelete {
                Some(f) => f(base, name, sync),
                None => ffi::SQLITE_IOERR_DELETE,
            }
        }
    })
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: name is a valid C string for the call.
        let n = unsafe { api::text(name) }.unwrap_or_default();
        let side_file = n.ends_with("-journal") || n.ends_with("-wal") || n.ends_with("-shm");
        if side_file && !crate::primary::is_primary_side_file(std::path::Path::new(n.as_ref())) {
            // A replica has no hot journal and no WAL: never look for local ones.
            // SAFETY: out is a valid out-pointer.
            unsafe { *out = 0 };
            return ffi::SQLITE_OK;
        }
        // SAFETY: vfs is ours; forward to the base VFS.
        unsafe {
            let base = base(vfs);
            match (*base).xAccess {
                Some(f) => f(base, name, flags, out),
                None => ffi::SQLITE_IOERR_ACCESS,
            }
        }
    })
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: forward to the base VFS with SQLite's own arguments.
        unsafe {
            let base = base(vfs);
            match (*base).xFullPathname {
                Some(f) => f(base, name, n, out),
                None => ffi::SQLITE_CANTOPEN,
            }
        }
    })
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: forward to the base VFS.
    unsafe {
        let base = base(vfs);
        (*base).xRandomness.map(|f| f(base, n, out)).unwrap_or(0)
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, us: c_int) -> c_int {
    // SAFETY: forward to the base VFS.
    unsafe {
        let base = base(vfs);
        (*base).xSleep.map(|f| f(base, us)).unwrap_or(0)
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: forward to the base VFS.
    unsafe {
        let base = base(vfs);
        (*base)
            .xCurrentTime
            .map(|f| f(base, out))
            .unwrap_or(ffi::SQLITE_ERROR)
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forward to the base VFS (version >= 2 has this method).
    unsafe {
        let base = base(vfs);
        (*base)
            .xCurrentTimeInt64
            .map(|f| f(base, out))
            .unwrap_or(ffi::SQLITE_ERROR)
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forward to the base VFS.
    unsafe {
        let base = base(vfs);
        (*base).xGetLastError.map(|f| f(base, n, out)).unwrap_or(0)
    }
}

/// The primary behind `schema` of connection `db`, when it is one of ours.
fn primary_of<'a>(db: *mut ffi::sqlite3, schema: &str) -> Option<&'a crate::primary::Primary> {
    let fc = api::get()?.file_control?;
    let schema = CString::new(schema).ok()?;
    let mut p: *const crate::primary::Primary = ptr::null();
    // SAFETY: our opcode writes a pointer to the file's primary, which lives while the file
    // is open; the caller holds the connection.
    let rc = unsafe {
        fc(
            db,
            schema.as_ptr(),
            passthrough::FCNTL_LITESTREAM_PRIMARY,
            &mut p as *mut _ as *mut c_void,
        )
    };
    if rc != ffi::SQLITE_OK {
        return None;
    }
    // SAFETY: set by the primary file's xFileControl from a live Arc.
    unsafe { p.as_ref() }
}

/// A new connection to a primary: put it in WAL mode (its WAL is what ships); the primary
/// then takes its own locks on the WAL (`pin.rs`).
fn prepare_primary(db: *mut ffi::sqlite3) -> Result<(), Error> {
    let Some(primary) = primary_of(db, "main") else {
        return Ok(());
    };
    let exec = api::get()
        .and_then(|a| a.exec)
        .ok_or_else(missing("exec"))?;
    let sql =
        CString::new("PRAGMA journal_mode=WAL;").map_err(|e| Error::Internal(e.to_string()))?;
    // The connection has no busy handler yet (the host sets its own after the open), and
    // other processes may hold the locks for a moment (recovering the wal-index, closing
    // their last connection): retry a busy answer until the open's timeout.
    let deadline = std::time::Instant::now() + primary.config.open_timeout;
    let mut pause = std::time::Duration::from_millis(1);
    let rc = loop {
        // SAFETY: db is a live connection; no callback; the error message is not requested.
        let rc = unsafe { exec(db, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
        if rc & 0xff != ffi::SQLITE_BUSY || std::time::Instant::now() >= deadline {
            break rc;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::Sqlite {
            code: rc,
            what: format!("putting {} in WAL mode", primary.db_path.display()),
        });
    }
    primary.wal_mode_ready();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SQL functions: the table (`sql::FUNCTIONS`) registered, and calls dispatched to it.

fn register_functions(db: *mut ffi::sqlite3) -> Result<(), Error> {
    let api = api::get().ok_or_else(|| Error::Internal("no SQLite API table".into()))?;
    let create = api
        .create_function_v2
        .ok_or_else(missing("create_function_v2"))?;
    for (i, function) in sql::FUNCTIONS.iter().enumerate() {
        let cname = CString::new(function.name).map_err(|e| Error::Internal(e.to_string()))?;
        for &n_arg in function.arities {
            // SAFETY: db is a live connection; the app pointer is an index into sql::FUNCTIONS,
            // never dereferenced.
            let rc = unsafe {
                create(
                    db,
                    cname.as_ptr(),
                    n_arg,
                    ffi::SQLITE_UTF8,
                    i as *mut c_void,
                    Some(call_function),
                    None,
                    None,
                    None,
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(Error::Internal(format!(
                    "cannot create {}() ({rc})",
                    function.name
                )));
            }
        }
    }
    super::vtab::register(db)?;
    Ok(())
}

unsafe extern "C" fn call_function(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let _ = guard(0, || {
        let Some(api) = api::get() else { return 0 };
        // SAFETY: ctx is the live function context for this call; argv has argc values.
        unsafe {
            let index = api.user_data.map(|f| f(ctx) as usize).unwrap_or(usize::MAX);
            let db = api
                .context_db_handle
                .map(|f| f(ctx))
                .unwrap_or(ptr::null_mut());
            let args: Vec<Option<String>> = (0..argc.max(0) as usize)
                .map(|i| {
                    api.value_text
                        .and_then(|f| api::text(f(*argv.add(i)) as *const c_char))
                        .map(|s| s.into_owned())
                })
                .collect();
            let result = match sql::FUNCTIONS.get(index) {
                None => Err(Error::Internal("unknown function".into())),
                Some(sql::SqlFunction {
                    call: sql::Callee::Process(call),
                    ..
                }) => {
                    let interrupted = || api::is_interrupted(db);
                    call(&sql::Call {
                        args: &args,
                        interrupted: &interrupted,
                    })
                }
                Some(function) => {
                    let schema = sql::arg(&args, function.schema_arg)
                        .unwrap_or("main")
                        .to_string();
                    match (file_of(db, &schema), primary_of(db, &schema)) {
                        (Some(file), _) => {
                            file.note_reader();
                            let interrupted = || api::is_interrupted(db);
                            let call = sql::Call {
                                args: &args,
                                interrupted: &interrupted,
                            };
                            match function.call {
                                sql::Callee::File(call_file) => call_file(file, &call),
                                sql::Callee::Process(_) => unreachable!("dispatched above"),
                            }
                        }
                        (None, Some(primary)) => sql::primary_function(primary, function.name),
                        (None, None) => Err(Error::config(
                            function.name,
                            format!(
                                "schema {schema:?} is not a database opened with vfs=litestream"
                            ),
                        )),
                    }
                }
            };
            match result {
                Ok(Value::Null) => {
                    if let Some(f) = api.result_null {
                        f(ctx)
                    }
                }
                Ok(Value::Int(i)) => {
                    if let Some(f) = api.result_int64 {
                        f(ctx, i)
                    }
                }
                Ok(Value::Text(s)) => {
                    if let (Some(f), Ok(n)) = (api.result_text, c_int::try_from(s.len())) {
                        f(ctx, s.as_ptr() as *const c_char, n, ffi::SQLITE_TRANSIENT());
                    }
                }
                Err(e) => result_error(api, ctx, &e.to_string(), e.statement_code()),
            }
        }
        0
    });
}
