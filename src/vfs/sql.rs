//! The SQL surface in one place, as plain safe functions over a [`ReplicaFile`] (and a
//! primary's): `PRAGMA litestream_*` (through SQLITE_FCNTL_PRAGMA) and the table of scalar
//! functions (`FUNCTIONS`: `litestream_txid()`, `litestream_time()`, `litestream_lag()`,
//! ...), which `ffi` registers and calls. Names, formats and meanings follow the Go extension: TXID as 16 hex
//! digits, time as RFC 3339, lag as whole seconds since the last successful poll (-1 before
//! the first).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::clock;
use crate::config;
use crate::config::SyncMode;
use crate::error::{Error, Result};
use crate::ltx::Txid;
use crate::primary::Primary;
use crate::units::format_duration;
use crate::vfs::file::ReplicaFile;

/// A value returned to SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn into_text(self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Int(i) => Some(i.to_string()),
            Value::Text(s) => Some(s),
        }
    }
}

pub fn txid(file: &ReplicaFile) -> Result<Value> {
    let snap = file.snapshot()?;
    Ok(Value::Text(snap.txid.to_string()))
}

/// The instant shown: the one asked for while looking at the past, else the timestamp of
/// the newest state.
pub fn time(file: &ReplicaFile) -> Result<Value> {
    if let Some(past) = file.past() {
        return Ok(Value::Text(clock::rfc3339_ns(past.at_ns)));
    }
    let snap = file.snapshot()?;
    Ok(Value::Text(clock::rfc3339(snap.timestamp_ms)))
}

/// `litestream_set_time(instant)` and `PRAGMA litestream_time = instant`: see
/// `clock::parse_instant` for the forms; `LATEST` follows the replica again.
pub fn set_time(file: &mut ReplicaFile, value: &str) -> Result<Value> {
    file.set_time(config::instant("litestream_time", value)?)?;
    Ok(Value::Null)
}

/// `litestream_restore(path [, instant [, schema [, overwrite]]])`: writes the database file
/// exactly as of the state shown (or the given instant): every page, at its size, to a
/// temporary name then renamed. Returns the number of pages written. An existing file is
/// replaced only when `overwrite` is true, as the Litestream CLI refuses to restore over one
/// (it may be unrelated, or a live database); never one with a WAL beside it, which SQLite
/// would apply to the restored file.
pub fn restore(
    file: &ReplicaFile,
    path: &str,
    instant: Option<&str>,
    overwrite: bool,
    interrupted: &dyn Fn() -> bool,
) -> Result<Value> {
    let refuse = |why: String| Err(Error::config("litestream_restore", why));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !overwrite {
            return refuse(format!(
                "{path} already exists: restore to a new name, remove it first, or pass overwrite (litestream_restore(path, instant, 'main', 1))"
            ));
        }
        if !meta.is_file() {
            return refuse(format!("{path} is not a regular file"));
        }
        if std::fs::symlink_metadata(format!("{path}-wal")).is_ok() {
            return refuse(format!(
                "{path}-wal exists: the database may be open, and SQLite would apply that WAL to the restored file; close it and remove the WAL first"
            ));
        }
    }
    let replica = file.replica()?;
    let snap = match instant {
        None => file.snapshot()?,
        Some(v) => match config::instant("litestream_restore", v)? {
            clock::Instant::Latest => replica.current(),
            clock::Instant::At(ns) => replica.snapshot_at(ns)?,
        },
    };
    crate::replica::restore::write_database(replica, &snap, std::path::Path::new(path), interrupted)
        .map(|pages| Value::Int(pages as i64))
}

/// `litestream_last_error()`: the cause of the last error a read of this replica returned
/// to SQLite (which can only show its code, "disk I/O error"), else the poller's last
/// error, else NULL.
pub fn last_error(file: &ReplicaFile) -> Result<Value> {
    let replica = file.replica()?;
    let status = replica.status.lock();
    Ok(status
        .last_read_error
        .clone()
        .or_else(|| status.last_error.clone())
        .map_or(Value::Null, Value::Text))
}

pub fn lag(file: &ReplicaFile) -> Result<Value> {
    let replica = file.replica()?;
    let status = replica.status.lock();
    let secs = match status.last_success {
        Some(t) => SystemTime::now()
            .duration_since(t)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        None => -1,
    };
    Ok(Value::Int(secs))
}

/// A moment for JSON, in RFC 3339.
fn when(t: Option<SystemTime>) -> Option<String> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| clock::rfc3339(d.as_millis() as i64))
}

/// `PRAGMA litestream_stats`: what this replica costs and where it stands, as JSON.
pub fn stats(file: &ReplicaFile) -> Result<Value> {
    let replica = file.replica()?;
    let snap = file.snapshot()?;
    let (entries, bytes) = replica.cache.usage();
    let s = &replica.store.stats;
    let status = replica.status.lock().clone();
    let kept = replica.retention.usage();
    let v = serde_json::json!({
        "replica_url": replica.store.url(),
        "txid": snap.txid.to_string(),
        "timestamp": clock::rfc3339(snap.timestamp_ms),
        "page_size": snap.page_size,
        "pages": snap.commit(),
        "files": snap.files.len(),
        "index_bytes": snap.index.memory_bytes(),
        "cache": {
            "hits": replica.cache.hits.load(Ordering::Relaxed),
            "misses": replica.cache.misses.load(Ordering::Relaxed),
            "entries": entries,
            "bytes": bytes,
            "capacity": replica.cache.capacity(),
        },
        "storage": {
            "get_requests": s.get_requests.load(Ordering::Relaxed),
            "get_bytes": s.get_bytes.load(Ordering::Relaxed),
            "list_requests": s.list_requests.load(Ordering::Relaxed),
            "errors": s.errors.load(Ordering::Relaxed),
            "hedged": s.hedged.load(Ordering::Relaxed),
            "hedge_wins": s.hedge_wins.load(Ordering::Relaxed),
            "retries": s.retries.load(Ordering::Relaxed),
        },
        "poll": {
            "interval": format_duration(replica.settings().poll_interval),
            "polls": status.polls,
            "replans": status.replans,
            "last_poll": when(status.last_poll),
            "last_success": when(status.last_success),
            "last_error": status.last_error,
            "feed": {
                "mode": status.feed.mode,
                "manifest_gets": status.feed.manifest_gets,
                "not_modified": status.feed.not_modified,
                "listings": status.feed.listings,
                "refused": status.feed.refused,
            },
            "max_requests_per_second": crate::replica::pace::rate(),
        },
        "reads": {
            "last_error": status.last_read_error,
        },
        "retained": {
            "pinned": kept.pins,
            "entries": kept.entries,
            "bytes": kept.bytes,
            "budget": kept.budget,
            "dropped": kept.dropped,
        },
        // What reads cost on object storage: this connection, and its current or last
        // statement, so that a host can find the query that pays.
        "connection": file.meters.connection.json(),
        "statement": file.meters.statement.json(),
        "prefetch": replica.prefetcher.limit(),
        // The newest cold start of this replica (`litestream_restore`, hydration): pages
        // and bytes done of the total, rate and time left, pollable from any connection.
        "restore": replica.progress.to_json(),
        "hydration": replica.hydration.as_ref().map(|h| {
            let (state, txid, current) = h.status();
            serde_json::json!({
                "path": h.path().display().to_string(),
                "state": state,
                "txid": txid.map(|t| t.to_string()),
                "pages_served": h.served.load(Ordering::Relaxed),
                "pages_fetched": h.fetched.load(Ordering::Relaxed),
                "pages_current": current,
            })
        }),
        "disk_cache": replica.disk.as_ref().map(|d| serde_json::json!({
            "path": d.root().display().to_string(),
            "hits": d.hits.load(Ordering::Relaxed),
            "misses": d.misses.load(Ordering::Relaxed),
            "writes": d.writes.load(Ordering::Relaxed),
            "bytes": d.used(),
            "capacity": d.capacity(),
        })),
        "request_budget": file.meters.budget.load(Ordering::Relaxed),
    });
    Ok(Value::Text(v.to_string()))
}

/// A SQL function: its name, the argument counts it takes, which argument (if given) names
/// the schema whose replica it acts on, and its body over that replica's file.
pub struct SqlFunction {
    pub name: &'static str,
    pub arities: &'static [i32],
    pub schema_arg: usize,
    pub call: Callee,
}

/// What a function works on: a replica open on the connection (found by schema), or the
/// process.
pub enum Callee {
    File(fn(&mut ReplicaFile, &Call) -> Result<Value>),
    Process(fn(&Call) -> Result<Value>),
}

/// One call of a SQL function: its arguments as text, and whether the statement was
/// interrupted meanwhile (`sqlite3_interrupt`; never, on hosts before SQLite 3.41, which
/// cannot say).
pub struct Call<'a> {
    pub args: &'a [Option<String>],
    pub interrupted: &'a dyn Fn() -> bool,
}

/// Argument `i` of a call, if given and not NULL.
pub fn arg(args: &[Option<String>], i: usize) -> Option<&str> {
    args.get(i).and_then(|a| a.as_deref())
}

/// Every SQL function the extension registers on each connection.
pub const FUNCTIONS: &[SqlFunction] = &[
    SqlFunction {
        name: "litestream_txid",
        arities: &[0, 1],
        schema_arg: 0,
        call: Callee::File(|f, _| txid(f)),
    },
    SqlFunction {
        name: "litestream_time",
        arities: &[0, 1],
        schema_arg: 0,
        call: Callee::File(|f, _| time(f)),
    },
    SqlFunction {
        name: "litestream_lag",
        arities: &[0, 1],
        schema_arg: 0,
        call: Callee::File(|f, _| lag(f)),
    },
    SqlFunction {
        name: "litestream_last_error",
        arities: &[0, 1],
        schema_arg: 0,
        call: Callee::File(|f, _| last_error(f)),
    },
    SqlFunction {
        name: "litestream_stats",
        arities: &[0, 1],
        schema_arg: 0,
        call: Callee::File(|f, _| stats(f)),
    },
    SqlFunction {
        name: "litestream_set_time",
        arities: &[1, 2],
        schema_arg: 1,
        call: Callee::File(|f, c| match arg(c.args, 0) {
            Some(v) => set_time(f, v),
            None => Err(Error::config(
                "litestream_set_time",
                "an instant is required",
            )),
        }),
    },
    SqlFunction {
        name: "litestream_restore",
        arities: &[1, 2, 3, 4],
        schema_arg: 2,
        call: Callee::File(|f, c| match arg(c.args, 0) {
            Some(path) => {
                let overwrite = match arg(c.args, 3) {
                    None => false,
                    Some(v) => config::boolean("overwrite", v)?,
                };
                restore(f, path, arg(c.args, 1), overwrite, c.interrupted)
            }
            None => Err(Error::config(
                "litestream_restore",
                "a file path is required",
            )),
        }),
    },
    SqlFunction {
        name: "litestream_serve",
        arities: &[2],
        schema_arg: usize::MAX,
        call: Callee::Process(|c| match (arg(c.args, 0), arg(c.args, 1)) {
            (Some(path), params) => serve(path, params.unwrap_or("")),
            (None, _) => Err(Error::config("litestream_serve", "a file path is required")),
        }),
    },
];

/// `litestream_serve(path, parameters)`: from now on an open of `path` through the default
/// VFS, which `litestream` becomes, is a replica (or primary) with these parameters
/// (`replica_url=…&role=…`, as in a URI); see `served`. Returns the absolute path served.
pub fn serve(path: &str, params: &str) -> Result<Value> {
    let env = |k: &str| std::env::var(k).ok();
    let served = super::served::serve(path, params, &env)?;
    super::api::make_default_vfs()?;
    Ok(Value::Text(served.to_string_lossy().into_owned()))
}

/// Our pragmas, `PRAGMA litestream_<name>[=value]`, by name (case-insensitive). The
/// twins of the parameters are held to `config::PARAMS` by a test below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pragma {
    Txid,
    Role,
    WriteEnabled,
    Lag,
    Stats,
    Time,
    ReplicaUrl,
    PollInterval,
    CacheSize,
    RetainSize,
    OpenTimeout,
    Prefetch,
    RequestBudget,
    HedgeAfter,
    Sync,
}

const PRAGMAS: &[(&str, Pragma)] = &[
    ("litestream_txid", Pragma::Txid),
    ("litestream_role", Pragma::Role),
    ("litestream_write_enabled", Pragma::WriteEnabled),
    ("litestream_lag", Pragma::Lag),
    ("litestream_stats", Pragma::Stats),
    ("litestream_time", Pragma::Time),
    ("litestream_replica_url", Pragma::ReplicaUrl),
    ("litestream_poll_interval", Pragma::PollInterval),
    ("litestream_cache_size", Pragma::CacheSize),
    ("litestream_retain_size", Pragma::RetainSize),
    ("litestream_open_timeout", Pragma::OpenTimeout),
    ("litestream_prefetch", Pragma::Prefetch),
    ("litestream_request_budget", Pragma::RequestBudget),
    ("litestream_hedge_after", Pragma::HedgeAfter),
    ("litestream_sync", Pragma::Sync),
];

impl TryFrom<&str> for Pragma {
    /// Not one of ours: SQLite goes on to its own pragmas.
    type Error = ();

    fn try_from(name: &str) -> std::result::Result<Pragma, ()> {
        PRAGMAS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
            .ok_or(())
    }
}

impl Pragma {
    pub fn name(self) -> &'static str {
        PRAGMAS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("litestream", |(n, _)| n)
    }
}

/// Handles `PRAGMA <name>[=value]` for our names. `None`: not one of ours (SQLite goes on
/// to its own pragmas).
pub fn pragma(file: &mut ReplicaFile, name: &str, value: Option<&str>) -> Option<Result<Value>> {
    let pragma = Pragma::try_from(name).ok()?;
    let name = pragma.name();
    file.note_reader();
    let read_only = |f: fn(&ReplicaFile) -> Result<Value>, file: &ReplicaFile| match value {
        None => f(file),
        Some(_) => Err(Error::config(name, "is read-only")),
    };
    let result = match pragma {
        Pragma::Txid => read_only(txid, file),
        Pragma::Role => read_only(|_| Ok(Value::Text("replica".into())), file),
        // The Go extension's switch of its write mode: 0 on a replica, which cannot write.
        Pragma::WriteEnabled => match value.map(parse_flag) {
            None | Some(Some(false)) => Ok(Value::Int(0)),
            Some(Some(true)) => Err(Error::config(
                "litestream_write_enabled",
                "a read replica cannot write: open the database with role=primary (or write_enabled=true)",
            )),
            Some(None) => Err(Error::config(
                "litestream_write_enabled",
                format!("{:?} is not 0 or 1", value.unwrap_or_default()),
            )),
        },
        Pragma::Lag => read_only(lag, file),
        Pragma::Stats => read_only(stats, file),
        // Setting answers with the instant now shown (a row, where the Go extension's
        // empty answer trips some hosts).
        Pragma::Time => match value {
            None => time(file),
            Some(v) => set_time(file, v).and_then(|_| time(file)),
        },
        Pragma::ReplicaUrl => read_only(
            |f| Ok(Value::Text(f.replica()?.store.url().to_string())),
            file,
        ),
        Pragma::PollInterval => (|| {
            let replica = file.replica()?;
            if let Some(v) = value {
                replica.set_poll_interval(config::positive_duration(name, v)?);
            }
            Ok(Value::Text(format_duration(
                replica.settings().poll_interval,
            )))
        })(),
        Pragma::CacheSize => (|| {
            let replica = file.replica()?;
            if let Some(v) = value {
                replica.cache.set_capacity(config::size(name, v)?);
            }
            Ok(Value::Int(replica.cache.capacity() as i64))
        })(),
        Pragma::RetainSize => (|| {
            let replica = file.replica()?;
            if let Some(v) = value {
                replica.retention.set_budget(config::size(name, v)?);
            }
            Ok(Value::Int(replica.retention.usage().budget as i64))
        })(),
        Pragma::OpenTimeout => read_only(
            |f| {
                Ok(Value::Text(format_duration(
                    f.replica()?.settings().open_timeout,
                )))
            },
            file,
        ),
        // Reads on object storage.
        Pragma::Prefetch => (|| {
            let replica = file.replica()?;
            if let Some(v) = value {
                replica
                    .prefetcher
                    .set_limit(config::count(name, v, u32::MAX as u64)? as u32);
            }
            Ok(Value::Int(replica.prefetcher.limit() as i64))
        })(),
        Pragma::RequestBudget => (|| {
            if let Some(v) = value {
                let budget = config::count(name, v, i64::MAX as u64)?;
                file.meters.budget.store(budget, Ordering::Relaxed);
            }
            Ok(Value::Int(file.meters.budget.load(Ordering::Relaxed) as i64))
        })(),
        Pragma::HedgeAfter => (|| {
            let replica = file.replica()?;
            if let Some(v) = value {
                replica.store.set_hedge_after(config::duration(name, v)?);
            }
            Ok(Value::Text(match replica.store.hedge_after() {
                d if d.is_zero() => "0".into(),
                d => format_duration(d),
            }))
        })(),
        // A primary's.
        Pragma::Sync => return None,
    };
    Some(result)
}

// ---------------------------------------------------------------------------------------
// A primary

/// The TXID a primary's replica holds (the newest shipped), 16 hex digits.
pub fn primary_txid(p: &Primary) -> Result<Value> {
    Ok(Value::Text(
        Txid::new(p.published().shipped_txid).to_string(),
    ))
}

/// Seconds the replica is behind: 0 when everything committed has shipped, else the time
/// since the last upload (or since open, before the first).
pub fn primary_lag(p: &Primary) -> Result<Value> {
    if p.all_shipped() {
        return Ok(Value::Int(0));
    }
    let since = p
        .published()
        .counters
        .last_upload_ms
        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
        .unwrap_or(p.opened_at)
        .max(p.opened_at);
    Ok(Value::Int(
        since.elapsed().map_or(0, |d| d.as_secs() as i64),
    ))
}

pub fn primary_stats(p: &Primary, sync: SyncMode) -> Result<Value> {
    let pb = p.published();
    let c = &pb.counters;
    let s = &p.store().stats;
    let restarts = p.restarts();
    let ms = |v: Option<i64>| v.map(crate::clock::rfc3339);
    Ok(Value::Text(
        serde_json::json!({
            "role": "primary",
            "leader": p.is_leader(),
            "leader_pid": (pb.pid != 0).then_some(pb.pid),
            "replica_url": p.replica_url(),
            "database": p.db_path.display().to_string(),
            "shipped_txid": Txid::new(pb.shipped_txid).to_string(),
            "encoded_txid": Txid::new(c.encoded_txid).to_string(),
            "pending": !p.all_shipped(),
            "pending_files": c.pending_files,
            "uploads": c.uploads,
            "upload_bytes": c.upload_bytes,
            "last_upload": ms(c.last_upload_ms),
            "last_error": c.last_error,
            "retries": c.retries,
            "stalled_since": ms(c.stalled_since_ms),
            "stalled_seconds": c.stalled_since_ms.map(|t| (crate::clock::now_ms() - t).max(0) / 1000),
            "resyncs": c.resyncs,
            "stopped": c.stopped,
            "restore": p.restored.lock().clone(),
            "sync": sync_name(sync),
            "pinned": p.holds_pin(),
            "restarts": {
                "allowed": restarts.allowed.load(Ordering::Relaxed),
                "refused": restarts.refused.load(Ordering::Relaxed),
                "unanswered": restarts.unanswered.load(Ordering::Relaxed),
                "held_ms": restarts.held_us.load(Ordering::Relaxed) / 1000,
            },
            "wal": {
                "committed": p.committed_mark().map(|m| format!("{:08x}-{:08x}@{}", m.salt1, m.salt2, m.offset)),
                "copied": pb.copied.map(|(g, w)| format!("{:08x}-{:08x}@{} #{}", w.salt1, w.salt2, w.offset, g.seq)),
                "shipped": pb.shipped.map(|(seq, w)| format!("{:08x}-{:08x}@{} #{}", w.salt1, w.salt2, w.offset, seq)),
                "generations": pb.generations.iter().map(|g| format!("#{} {:08x}-{:08x}", g.seq, g.salt1, g.salt2)).collect::<Vec<_>>(),
            },
            "storage": {
                "put_requests": s.put_requests.load(Ordering::Relaxed),
                "put_bytes": s.put_bytes.load(Ordering::Relaxed),
                "get_requests": s.get_requests.load(Ordering::Relaxed),
                "list_requests": s.list_requests.load(Ordering::Relaxed),
                "errors": s.errors.load(Ordering::Relaxed),
                "retries": s.retries.load(Ordering::Relaxed),
            },
        })
        .to_string(),
    ))
}

fn sync_name(s: SyncMode) -> &'static str {
    match s {
        SyncMode::Local => "local",
        SyncMode::Remote => "remote",
    }
}

/// A SQL function called on a primary's schema.
pub fn primary_function(p: &Primary, name: &str) -> Result<Value> {
    match name {
        "litestream_txid" => primary_txid(p),
        "litestream_lag" => primary_lag(p),
        "litestream_stats" => primary_stats(p, p.config.primary.sync),
        _ => Err(Error::config(
            name,
            "not available on a primary (open the replica with role=replica)",
        )),
    }
}

/// A pragma's boolean value: `1`/`true`/`on`/`yes` or `0`/`false`/`off`/`no`.
fn parse_flag(v: &str) -> Option<bool> {
    match v
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase()
        .as_str()
    {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// The settings of one connection to a primary, which its pragmas read and set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryConnection {
    /// `litestream_sync`: when its COMMITs return.
    pub sync: SyncMode,
    /// `litestream_write_enabled`: 0 stops this connection's writes (SQLITE_READONLY), 1
    /// resumes them — the Go extension's switch.
    pub writes: bool,
}

/// The pragmas of a primary's main database: ours, and the ones that would stop capture.
/// `conn` holds the connection's own settings. None: not ours to answer (SQLite handles
/// it).
pub fn primary_pragma(
    p: &Primary,
    conn: &mut PrimaryConnection,
    name: &str,
    value: Option<&str>,
) -> Option<Result<Value>> {
    let sync = &mut conn.sync;
    let v = value.map(|v| {
        v.trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_ascii_lowercase()
    });
    let Ok(pragma) = Pragma::try_from(name) else {
        return sqlite_pragma_guard(name, v.as_deref()).map(Err);
    };
    let name = pragma.name();
    let read_only = |f: &dyn Fn(&Primary) -> Result<Value>| match value {
        None => f(p),
        Some(_) => Err(Error::config(name, "is read-only")),
    };
    let current = *sync;
    Some(match pragma {
        Pragma::Txid => read_only(&primary_txid),
        Pragma::Lag => read_only(&primary_lag),
        Pragma::Stats => read_only(&|p| primary_stats(p, current)),
        Pragma::Role => read_only(&|_| Ok(Value::Text("primary".into()))),
        Pragma::ReplicaUrl => read_only(&|p| Ok(Value::Text(p.replica_url().into()))),
        Pragma::WriteEnabled => match value.map(parse_flag) {
            None => Ok(Value::Int(conn.writes as i64)),
            Some(Some(on)) => {
                conn.writes = on;
                Ok(Value::Int(on as i64))
            }
            Some(None) => Err(Error::config(
                "litestream_write_enabled",
                format!("{:?} is not 0 or 1", value.unwrap_or_default()),
            )),
        },
        Pragma::Sync => match v.as_deref() {
            None => Ok(Value::Text(sync_name(current).into())),
            Some("local") => {
                *sync = SyncMode::Local;
                Ok(Value::Text("local".into()))
            }
            Some("remote") => {
                *sync = SyncMode::Remote;
                Ok(Value::Text("remote".into()))
            }
            Some(other) => Err(Error::config(
                "litestream_sync",
                format!("{other:?} is not local or remote"),
            )),
        },
        Pragma::PollInterval
        | Pragma::CacheSize
        | Pragma::RetainSize
        | Pragma::OpenTimeout
        | Pragma::Time
        | Pragma::Prefetch
        | Pragma::RequestBudget
        // A replica's settings: not a primary's (SQLite answers nothing, as for a pragma
        // it does not know).
        | Pragma::HedgeAfter => return None,
    })
}

/// SQLite's own pragmas that would stop a primary's capture, refused on its connections.
fn sqlite_pragma_guard(name: &str, value: Option<&str>) -> Option<Error> {
    match (name.to_ascii_lowercase().as_str(), value) {
        ("journal_mode", Some(v)) if v != "wal" => Some(Error::config(
            "journal_mode",
            "role=primary keeps the database in WAL mode (its WAL is what ships)",
        )),
        ("locking_mode", Some("exclusive")) => Some(Error::config(
            "locking_mode",
            "role=primary needs the shared WAL index; exclusive locking mode is not supported",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Twin, PARAMS};

    /// Every parameter's `PRAGMA litestream_<name>` twin on a replica is what `PARAMS` says:
    /// answered or not, and refused as read-only or not. (A file whose replica failed to
    /// open answers every pragma that needs the replica with that failure.)
    #[test]
    fn pragma_twins_are_the_parameter_table() {
        let mut file = ReplicaFile::open(Err(Error::Internal("no replica here".into())));
        for p in PARAMS {
            let name = format!("litestream_{}", p.name);
            let read = pragma(&mut file, &name, None);
            let set = pragma(&mut file, &name, Some("1"));
            match p.twin {
                Twin::None | Twin::Primary => {
                    assert!(
                        read.is_none() && set.is_none(),
                        "{name} answers on a replica"
                    )
                }
                Twin::Read | Twin::ReadSet => {
                    assert!(read.is_some(), "{name} is not answered");
                    let refused = match set {
                        Some(Err(e)) => e.to_string().contains("read-only"),
                        _ => false,
                    };
                    assert_eq!(refused, p.twin == Twin::Read, "{name}: read-only or not");
                }
            }
        }
    }

    /// Every pragma is found by its name, in any case; the twins `PARAMS` names are pragmas;
    /// other names are not ours.
    #[test]
    fn pragmas_parse_from_their_names() {
        for (name, p) in PRAGMAS {
            assert_eq!(Pragma::try_from(*name), Ok(*p));
            assert_eq!(Pragma::try_from(name.to_ascii_uppercase().as_str()), Ok(*p));
            assert_eq!(p.name(), *name);
        }
        for param in PARAMS.iter().filter(|p| p.twin != Twin::None) {
            let name = format!("litestream_{}", param.name);
            assert!(Pragma::try_from(name.as_str()).is_ok(), "{name}");
        }
        for other in ["journal_mode", "litestream_nonsense", "litestream"] {
            assert_eq!(Pragma::try_from(other), Err(()));
        }
    }
}
