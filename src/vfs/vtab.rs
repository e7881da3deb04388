//! `litestream_history`: an eponymous table-valued function listing the states of a replica
//! that time travel can reach. FFI shims only; the rows come from
//! `Replica::history`.
//!
//! ```sql
//! SELECT * FROM litestream_history;            -- the main database's replica
//! SELECT * FROM litestream_history('past');    -- an ATTACHed replica
//! ```

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use libsqlite3_sys as ffi;

use super::api::{self, guard};
use super::replica_io::file_of;
use crate::clock;
use crate::error::Error;
use crate::replica::timetravel::HistoryEntry;

const SCHEMA: &str = "CREATE TABLE x(txid TEXT, timestamp TEXT, level INTEGER, file TEXT, \
                      min_txid TEXT, size INTEGER, schema HIDDEN)";
const SCHEMA_COLUMN: c_int = 6;

#[repr(C)]
struct Table {
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
}

#[repr(C)]
struct Cursor {
    base: ffi::sqlite3_vtab_cursor,
    rows: Vec<HistoryEntry>,
    at: usize,
    schema: String,
}

static MODULE: ffi::sqlite3_module = ffi::sqlite3_module {
    iVersion: 1,
    xCreate: None, // eponymous only: no CREATE VIRTUAL TABLE
    xConnect: Some(x_connect),
    xBestIndex: Some(x_best_index),
    xDisconnect: Some(x_disconnect),
    xDestroy: Some(x_disconnect),
    xOpen: Some(x_open),
    xClose: Some(x_close),
    xFilter: Some(x_filter),
    xNext: Some(x_next),
    xEof: Some(x_eof),
    xColumn: Some(x_column),
    xRowid: Some(x_rowid),
    xUpdate: None,
    xBegin: None,
    xSync: None,
    xCommit: None,
    xRollback: None,
    xFindFunction: None,
    xRename: None,
    xSavepoint: None,
    xRelease: None,
    xRollbackTo: None,
    xShadowName: None,
    xIntegrity: None,
};

pub(super) fn register(db: *mut ffi::sqlite3) -> Result<(), Error> {
    let api = api::get().ok_or_else(|| Error::Internal("no SQLite API table".into()))?;
    let create = api
        .create_module_v2
        .ok_or_else(|| Error::Internal("the host SQLite lacks sqlite3_create_module_v2".into()))?;
    let name = CString::new("litestream_history").map_err(|e| Error::Internal(e.to_string()))?;
    // SAFETY: db is a live connection; MODULE is static.
    let rc = unsafe { create(db, name.as_ptr(), &MODULE, ptr::null_mut(), None) };
    if rc != ffi::SQLITE_OK {
        return Err(Error::Internal(format!(
            "cannot create litestream_history ({rc})"
        )));
    }
    Ok(())
}

unsafe extern "C" fn x_connect(
    db: *mut ffi::sqlite3,
    _aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    out: *mut *mut ffi::sqlite3_vtab,
    _err: *mut *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        let Some(declare) = api::get().and_then(|a| a.declare_vtab) else {
            return ffi::SQLITE_ERROR;
        };
        let Ok(schema) = CString::new(SCHEMA) else {
            return ffi::SQLITE_ERROR;
        };
        // SAFETY: called from xConnect on `db`, as SQLite requires.
        let rc = unsafe { declare(db, schema.as_ptr()) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let table = Box::new(Table {
            // SAFETY: an all-zero sqlite3_vtab is its documented initial state.
            base: unsafe { std::mem::zeroed() },
            db,
        });
        // SAFETY: out is SQLite's out-pointer; SQLite fills in base.pModule.
        unsafe { *out = Box::into_raw(table) as *mut ffi::sqlite3_vtab };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_disconnect(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    // SAFETY: made by x_connect with Box::into_raw; SQLite disconnects once.
    drop(unsafe { Box::from_raw(vtab as *mut Table) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_best_index(
    _vtab: *mut ffi::sqlite3_vtab,
    info: *mut ffi::sqlite3_index_info,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: info and its arrays are valid for the call (nConstraint entries each).
        unsafe {
            let info = &mut *info;
            for i in 0..info.nConstraint.max(0) as usize {
                let c = &*info.aConstraint.add(i);
                if c.iColumn == SCHEMA_COLUMN
                    && c.op as c_int == ffi::SQLITE_INDEX_CONSTRAINT_EQ
                    && c.usable != 0
                {
                    let usage = &mut *info.aConstraintUsage.add(i);
                    usage.argvIndex = 1;
                    usage.omit = 1;
                    info.idxNum = 1;
                }
            }
            info.estimatedCost = 1000.0;
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_open(
    _vtab: *mut ffi::sqlite3_vtab,
    out: *mut *mut ffi::sqlite3_vtab_cursor,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        let cursor = Box::new(Cursor {
            // SAFETY: an all-zero cursor base is its initial state; SQLite sets pVtab.
            base: unsafe { std::mem::zeroed() },
            rows: Vec::new(),
            at: 0,
            schema: "main".into(),
        });
        // SAFETY: out is SQLite's out-pointer.
        unsafe { *out = Box::into_raw(cursor) as *mut ffi::sqlite3_vtab_cursor };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_close(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: made by x_open with Box::into_raw; SQLite closes once.
    drop(unsafe { Box::from_raw(cursor as *mut Cursor) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_filter(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    idx_num: c_int,
    _idx_str: *const c_char,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: our cursor, whose pVtab is our Table; argv has argc values.
        let (cursor, table) = unsafe {
            let c = &mut *(cursor as *mut Cursor);
            let t = &mut *(c.base.pVtab as *mut Table);
            (c, t)
        };
        cursor.schema = "main".into();
        if idx_num == 1 && argc >= 1 {
            // SAFETY: argv[0] is a live value for the call.
            let schema = unsafe {
                api::get()
                    .and_then(|a| a.value_text)
                    .and_then(|f| api::text(f(*argv) as *const c_char))
            };
            if let Some(s) = schema {
                cursor.schema = s.into_owned();
            }
        }
        let rows = match file_of(table.db, &cursor.schema) {
            Some(file) => file.replica().and_then(|r| r.history()),
            None => Err(Error::config(
                "litestream_history",
                format!(
                    "schema {:?} is not a database opened with vfs=litestream",
                    cursor.schema
                ),
            )),
        };
        match rows {
            Ok(rows) => {
                cursor.rows = rows;
                cursor.at = 0;
                ffi::SQLITE_OK
            }
            Err(e) => {
                // zErrMsg belongs to the vtab; SQLite frees it with sqlite3_free.
                table.base.zErrMsg = api::sqlite_string(&e.to_string());
                e.statement_code()
            }
        }
    })
}

unsafe extern "C" fn x_next(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: our cursor.
    unsafe { (*(cursor as *mut Cursor)).at += 1 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_eof(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: our cursor.
    let c = unsafe { &*(cursor as *mut Cursor) };
    (c.at >= c.rows.len()) as c_int
}

unsafe extern "C" fn x_rowid(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: our cursor; out is SQLite's out-pointer.
    unsafe { *out = (*(cursor as *mut Cursor)).at as ffi::sqlite3_int64 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_column(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    ctx: *mut ffi::sqlite3_context,
    col: c_int,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: our cursor; x_eof was false, so `at` is in range.
        let c = unsafe { &*(cursor as *mut Cursor) };
        let Some(row) = c.rows.get(c.at) else {
            return ffi::SQLITE_ERROR;
        };
        let Some(api) = api::get() else {
            return ffi::SQLITE_ERROR;
        };
        let text = |s: String| {
            if let (Some(f), Ok(n)) = (api.result_text, c_int::try_from(s.len())) {
                // SAFETY: ctx is live; SQLITE_TRANSIENT makes SQLite copy the bytes.
                unsafe { f(ctx, s.as_ptr() as *const c_char, n, ffi::SQLITE_TRANSIENT()) };
            }
        };
        let int = |i: i64| {
            if let Some(f) = api.result_int64 {
                // SAFETY: ctx is live.
                unsafe { f(ctx, i) };
            }
        };
        match col {
            0 => text(row.txid.to_string()),
            1 => text(clock::rfc3339(row.timestamp_ms)),
            2 => int(row.level as i64),
            3 => text(row.file.clone()),
            4 => text(row.min_txid.to_string()),
            5 => int(row.size as i64),
            _ => text(c.schema.clone()),
        }
        ffi::SQLITE_OK
    })
}
