//! Configuration of a replica connection: URI parameters first, then the Go extension's
//! environment variables (`LITESTREAM_<NAME>`), then defaults.
//!
//! Parameter names are the Go extension's where it has one, so that switching extensions
//! changes nothing but the file loaded.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::LogLevel;
use crate::units::{parse_duration, parse_size};

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A replica nobody reads polls at most this rarely (a read after that polls first).
pub const DEFAULT_POLL_INTERVAL_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_CACHE_SIZE: u64 = 64 * 1024 * 1024;
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEDGE_AFTER: Duration = Duration::from_millis(300);
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 1 << 30;
/// Superseded page versions kept for read transactions pinned to older states.
pub const DEFAULT_RETAIN_SIZE: u64 = 64 * 1024 * 1024;

/// URI parameters that belong to SQLite itself (never ours to reject).
const SQLITE_PARAMS: &[&str] = &[
    "vfs",
    "mode",
    "cache",
    "immutable",
    "nolock",
    "psow",
    "modeof",
];

/// What `PRAGMA litestream_<name>` does with a parameter on a replica connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twin {
    /// No pragma twin.
    None,
    /// The pragma reads the value in use.
    Read,
    /// The pragma reads it and sets it (for the replica, or for this connection).
    ReadSet,
    /// A primary connection's pragma (`litestream_sync`).
    Primary,
}

/// One parameter this extension reads: its URI name (its environment variable is
/// `env_name(name)`), the default the README states, its pragma twin, and how a value given
/// for it is parsed. Each name is written once, here.
pub struct Param {
    pub name: &'static str,
    pub default: &'static str,
    pub twin: Twin,
    /// Parses a value (given under the name `src`: the parameter, or its environment
    /// variable) into the draft.
    set: fn(&mut Draft, src: &str, value: &str) -> Result<()>,
}

const fn param(
    name: &'static str,
    default: &'static str,
    twin: Twin,
    set: fn(&mut Draft, &str, &str) -> Result<()>,
) -> Param {
    Param {
        name,
        default,
        twin,
        set,
    }
}

/// Every parameter, in the README's order. The unknown-parameter check, the environment
/// names and the README's configuration tables come from here (a test holds the README to
/// it), and so do the pragma twins (a test in `vfs::sql` holds the pragmas to it).
pub const PARAMS: &[Param] = &[
    param("replica_url", "(required)", Twin::Read, |d, _, v| {
        // S3 server-side encryption rides on the URL's query; it leaves the URL here.
        (d.config.replica_url, d.config.sse) = crate::storage::url::take_sse(v.trim())?;
        Ok(())
    }),
    param("poll_interval", "1s", Twin::ReadSet, |d, src, v| {
        d.config.poll_interval = positive_duration(src, v)?;
        Ok(())
    }),
    param("poll_interval_max", "30s", Twin::None, |d, src, v| {
        d.config.poll_interval_max = duration(src, v)?;
        Ok(())
    }),
    param("manifest", "true", Twin::None, |d, src, v| {
        d.config.manifest = boolean(src, v)?;
        Ok(())
    }),
    param("list_interval", "1m", Twin::None, |d, src, v| {
        d.config.list_interval = duration(src, v)?;
        Ok(())
    }),
    param(
        "max_requests_per_second",
        "0 (none)",
        Twin::None,
        |d, src, v| {
            d.config.max_requests_per_second = Some(count(src, v, 1_000_000)? as u32);
            Ok(())
        },
    ),
    param("max_lag", "0 (none)", Twin::None, |d, src, v| {
        d.config.max_lag = duration(src, v)?;
        Ok(())
    }),
    param("cache_size", "64MB", Twin::ReadSet, |d, src, v| {
        d.config.cache_size = size(src, v)?;
        Ok(())
    }),
    param("open_timeout", "5s", Twin::Read, |d, src, v| {
        d.config.open_timeout = positive_duration(src, v)?;
        Ok(())
    }),
    param("log_level", "warn", Twin::None, |d, src, v| {
        let level = LogLevel::parse(v).ok_or_else(|| {
            Error::config(src, format!("{v:?} is not one of debug, info, warn, error"))
        })?;
        d.config.log_level = Some(level);
        Ok(())
    }),
    param("time", "(latest)", Twin::ReadSet, |d, src, v| {
        d.config.time = Some(instant(src, v)?);
        Ok(())
    }),
    param("role", "replica", Twin::Read, |d, src, v| {
        d.config.role = match v.trim().to_ascii_lowercase().as_str() {
            "replica" => Role::Replica,
            "primary" => Role::Primary,
            _ => {
                return Err(Error::config(
                    src,
                    format!("{v:?} is not replica or primary"),
                ))
            }
        };
        Ok(())
    }),
    // The Go extension's write mode, mapped onto role=primary.
    param("write_enabled", "false", Twin::ReadSet, |d, src, v| {
        if boolean(src, v)? {
            d.config.role = Role::Primary;
        }
        Ok(())
    }),
    param("sync", "local", Twin::Primary, |d, src, v| {
        d.config.primary.sync = match v.trim().to_ascii_lowercase().as_str() {
            "local" | "async" => SyncMode::Local,
            "remote" => SyncMode::Remote,
            _ => return Err(Error::config(src, format!("{v:?} is not local or remote"))),
        };
        Ok(())
    }),
    param("sync_timeout", "30s", Twin::None, |d, src, v| {
        d.config.primary.sync_timeout = positive_duration(src, v)?;
        Ok(())
    }),
    param("restore", "if-missing", Twin::None, |d, src, v| {
        d.config.primary.restore = match v.trim().to_ascii_lowercase().as_str() {
            "if-missing" | "if_missing" => RestoreMode::IfMissing,
            "never" => RestoreMode::Never,
            "always" => RestoreMode::Always,
            _ => {
                let why = format!("{v:?} is not if-missing, never or always");
                return Err(Error::config(src, why));
            }
        };
        Ok(())
    }),
    param("checksum", "off", Twin::None, |d, src, v| {
        d.config.primary.checksum = boolean(src, v)?;
        Ok(())
    }),
    param("sync_interval", "100ms", Twin::None, |d, src, v| {
        d.config.primary.sync_interval = duration(src, v)?;
        Ok(())
    }),
    param("shutdown_timeout", "10s", Twin::None, |d, src, v| {
        d.config.primary.shutdown_timeout = positive_duration(src, v)?;
        Ok(())
    }),
    param("levels", "30s,5m,1h", Twin::None, |d, src, v| {
        let levels: Result<Vec<_>> = v
            .split(',')
            .map(|d| positive_duration(src, d.trim()))
            .collect();
        d.config.primary.retention.levels = levels?;
        if d.config.primary.retention.levels.len() > 8 {
            return Err(Error::config(
                src,
                "at most 8 levels (level 9 holds snapshots)",
            ));
        }
        Ok(())
    }),
    param("snapshot_interval", "24h", Twin::None, |d, src, v| {
        d.config.primary.retention.snapshot_interval = positive_duration(src, v)?;
        Ok(())
    }),
    param("snapshot_retention", "24h", Twin::None, |d, src, v| {
        d.config.primary.retention.snapshot_retention = positive_duration(src, v)?;
        Ok(())
    }),
    param("l0_retention", "5m", Twin::None, |d, src, v| {
        d.config.primary.retention.l0_retention = positive_duration(src, v)?;
        Ok(())
    }),
    param(
        "check_conditional_writes",
        "true",
        Twin::None,
        |d, src, v| {
            d.config.primary.check_conditional_writes = boolean(src, v)?;
            Ok(())
        },
    ),
    param("buffer_path", "<db>-litestream", Twin::None, |d, _, v| {
        d.config.primary.meta_dir = Some(v.to_string());
        Ok(())
    }),
    // Reads on object storage: how many requests a miss may make and what they keep.
    param(
        "prefetch",
        "512 (0 for file://)",
        Twin::ReadSet,
        |d, src, v| {
            d.config.prefetch = Some(count(src, v, u32::MAX as u64)? as u32);
            Ok(())
        },
    ),
    param("request_budget", "0 (none)", Twin::ReadSet, |d, src, v| {
        d.config.request_budget = count(src, v, i64::MAX as u64)?;
        Ok(())
    }),
    param("hedge_after", "300ms", Twin::ReadSet, |d, src, v| {
        d.config.hedge_after = duration(src, v)?;
        Ok(())
    }),
    param("cache_path", "(none)", Twin::None, |d, _, v| {
        d.config.cache_path = Some(v.trim()).filter(|v| !v.is_empty()).map(Into::into);
        Ok(())
    }),
    param("disk_cache_size", "1GB", Twin::None, |d, src, v| {
        d.config.disk_cache_size = size(src, v)?;
        Ok(())
    }),
    param("hydration_enabled", "false", Twin::None, |d, src, v| {
        d.hydration_enabled = boolean(src, v)?;
        Ok(())
    }),
    param(
        "hydration_path",
        "a file in the temporary folder named by the replica URL",
        Twin::None,
        |d, src, v| {
            d.hydration_path = Some(v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (src.to_string(), v.into()));
            Ok(())
        },
    ),
    // Page versions kept for read transactions whose files Litestream deletes.
    param("retain_size", "64MB", Twin::ReadSet, |d, src, v| {
        d.config.retain_size = size(src, v)?;
        Ok(())
    }),
    // Cold starts (restore, restore at open, hydration): reads in flight, and their size.
    param("restore_concurrency", "16", Twin::None, |d, src, v| {
        d.config.restore_concurrency = count(src, v, 1024)?.max(1) as usize;
        Ok(())
    }),
    param("restore_part_size", "8MB", Twin::None, |d, src, v| {
        d.config.restore_part_size = size(src, v)?.clamp(64 * 1024, 1 << 30);
        Ok(())
    }),
    // age encryption of every object (public keys; the secret ones come from a file or
    // LITESTREAM_AGE_IDENTITY, never from the URI).
    param("age_recipients", "(none)", Twin::None, |d, src, v| {
        d.age_recipients = Some((src.to_string(), v.to_string()));
        Ok(())
    }),
    param("age_identity_file", "(none)", Twin::None, |d, src, v| {
        d.age_identity_file = Some((src.to_string(), v.to_string()));
        Ok(())
    }),
];

/// A configuration being read: every parameter given so far, and the inputs of the
/// settings that combine several (checked together by `Draft::finish`).
pub struct Draft {
    config: Config,
    hydration_enabled: bool,
    hydration_path: Option<(String, std::path::PathBuf)>,
    age_recipients: Option<(String, String)>,
    age_identity_file: Option<(String, String)>,
}

/// The environment variable that holds age identities as text (no URI twin: a secret in a
/// database name would end up in logs and shell histories).
pub const AGE_IDENTITY_ENV: &str = "LITESTREAM_AGE_IDENTITY";

/// Where parameter values come from. The FFI layer implements it over
/// `sqlite3_uri_parameter`; tests implement it over a map.
pub trait Params {
    fn get(&self, name: &str) -> Option<String>;
    /// Every key given, so that unknown ones can be reported.
    fn keys(&self) -> Vec<String>;
}

/// Parameters given as (name, value) pairs, for programs (and tests) that open a replica
/// without a SQLite URI.
impl<const N: usize> Params for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    fn keys(&self) -> Vec<String> {
        self.iter().map(|(k, _)| k.to_string()).collect()
    }
}

/// Parameters as owned pairs (a served path's, see `vfs::served`).
impl Params for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
    fn keys(&self) -> Vec<String> {
        self.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// The environment-variable twin of a parameter: `poll_interval` → `LITESTREAM_POLL_INTERVAL`.
pub fn env_name(param: &str) -> String {
    format!("LITESTREAM_{}", param.to_ascii_uppercase())
}

/// `role`: read the replica, or write the local database and ship it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Replica,
    Primary,
}

/// `sync`: when COMMIT returns on a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Once the transaction is in the local WAL; it ships in the background.
    Local,
    /// Once the transaction is in the replica.
    Remote,
}

/// `restore`: what a primary does at open with the replica's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Restore when the local database does not exist (the default).
    IfMissing,
    /// Never restore: the local database wins over a replica that disagrees.
    Never,
    /// Always replace the local database with the replica's state.
    Always,
}

/// What only a primary reads.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryConfig {
    pub sync: SyncMode,
    pub restore: RestoreMode,
    /// Keep database checksums in the LTX files written (`checksum=on`). Off by default:
    /// Litestream 0.5.17's own restore rejects files that carry them ("validate trailer:
    /// post-apply checksum not allowed"), and its files never do.
    pub checksum: bool,
    /// Least time between the starts of two uploads (the Go extension's `sync_interval`):
    /// a commit after a quiet spell ships at once, commits that keep coming merge into one
    /// file per interval (0: every round of the shipper uploads what is new). Not 0 by
    /// default because each upload is a file and a claim: a busy database shipping "at
    /// once" makes hundreds of PUTs a second (dollars a day on S3) and spends CPU its
    /// writers need.
    pub sync_interval: Duration,
    /// How long closing the last connection waits for pending files to ship.
    pub shutdown_timeout: Duration,
    /// How long a `sync=remote` COMMIT waits for the replica before it fails (committed
    /// locally, to ship later).
    pub sync_timeout: Duration,
    /// Where the primary keeps its state and spooled files (`buffer_path`); by default
    /// `<database>-litestream` beside the database.
    pub meta_dir: Option<String>,
    pub retention: Retention,
    /// `check_conditional_writes`: a leader checks at start that the store refuses a
    /// second create-only write of one object, and refuses to ship to one that does not.
    pub check_conditional_writes: bool,
}

/// Compaction and retention of a primary's replica, with Litestream's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// `levels`: the compaction interval of levels 1, 2, 3, ...
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            levels: vec![
                Duration::from_secs(30),
                Duration::from_secs(300),
                Duration::from_secs(3600),
            ],
            snapshot_interval: Duration::from_secs(24 * 3600),
            snapshot_retention: Duration::from_secs(24 * 3600),
            l0_retention: Duration::from_secs(300),
        }
    }
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            sync: SyncMode::Local,
            restore: RestoreMode::IfMissing,
            checksum: false,
            sync_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
            meta_dir: None,
            retention: Retention::default(),
            check_conditional_writes: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub replica_url: String,
    pub poll_interval: Duration,
    /// `poll_interval_max`: how far the wait between polls of a replica nobody reads grows
    /// (not above `poll_interval`: it never backs off).
    pub poll_interval_max: Duration,
    /// `manifest`: a primary keeps the replica's manifest (`storage::manifest`) current,
    /// and a replica follows it instead of listing.
    pub manifest: bool,
    /// `list_interval`: how often a replica following a manifest also lists (0: never).
    pub list_interval: Duration,
    /// `max_requests_per_second`: the process's bound on the requests of every replica's
    /// polls (0: none); None when not given (an open without it leaves the bound as is).
    pub max_requests_per_second: Option<u32>,
    /// `max_lag`: a read transaction on the newest state fails when the last successful
    /// poll is older than this (0: never).
    pub max_lag: Duration,
    pub cache_size: u64,
    pub open_timeout: Duration,
    /// `time`: open looking at this instant (time travel) instead of the newest state.
    pub time: Option<crate::clock::Instant>,
    pub role: Role,
    pub primary: PrimaryConfig,
    /// `prefetch`: pages fetched ahead below a b-tree interior page per trigger; 0 = off.
    /// Unset: on for object storage, off for a local replica.
    pub prefetch: Option<u32>,
    /// `request_budget`: GET requests one statement may make; 0 = no limit.
    pub request_budget: u64,
    /// `hedge_after`: a GET not answered within this is sent again; zero = never.
    pub hedge_after: Duration,
    /// `cache_path`: folder of the disk cache (none: no disk cache).
    pub cache_path: Option<std::path::PathBuf>,
    /// `disk_cache_size`: bound of the disk cache in bytes.
    pub disk_cache_size: u64,
    /// `hydration_enabled` (with `hydration_path`, else a file in the temporary folder):
    /// restore a full local copy in the background and serve from it.
    pub hydration: Option<Option<std::path::PathBuf>>,
    /// `retain_size`: bytes of superseded page versions kept for read transactions pinned
    /// to older states.
    pub retain_size: u64,
    /// `log_level`: the process's log level, which the open applies (parsing has no effects).
    pub log_level: Option<LogLevel>,
    /// `age_recipients`, `age_identity_file`, LITESTREAM_AGE_IDENTITY: the replica's objects
    /// are age-encrypted with these keys.
    pub age: Option<std::sync::Arc<crate::storage::crypt::Keys>>,
    /// S3 server-side encryption, taken out of the replica URL (`storage::url::take_sse`).
    pub sse: crate::storage::url::Sse,
    /// `restore_concurrency`, `restore_part_size`: ranged reads a cold start keeps in
    /// flight, and the most bytes each covers (memory: about twice their product).
    pub restore_concurrency: usize,
    pub restore_part_size: u64,
    /// What the open says at INFO about the settings (parsing has no effects): settings
    /// given but ignored.
    pub notes: Vec<String>,
}

/// Why a URI parameter is refused: unknown, and when it looks like part of the replica URL's
/// own query (`replica_url=s3://b/app?endpoint=…&region=…` written unescaped), how to pass it.
fn unknown_param_reason(key: &str, params: &dyn Params) -> String {
    let url_has_query = params.get("replica_url").is_some_and(|u| u.contains('?'));
    if crate::storage::url::is_url_param(key) || url_has_query {
        "unknown URI parameter; if it belongs to replica_url's own query, escape that query's '&' \
         as %26 in the database URI (replica_url=s3://b/app?endpoint=…%26region=…), as the \
         packages' uri() builders and C's litestream_uri() do"
            .into()
    } else {
        "unknown URI parameter".into()
    }
}

impl Config {
    /// The open's effects of the configuration on the process: the log level when
    /// `log_level` was given (it is the process's), then the notes.
    pub fn apply_to_process(&self) {
        if let Some(level) = self.log_level {
            crate::log::set_level(level);
        }
        for note in &self.notes {
            crate::log_info!("litestream: {note}");
        }
    }

    /// Reads the configuration of one database open. `env` is the environment lookup
    /// (a parameter so tests do not depend on the process environment).
    pub fn from_params(
        params: &dyn Params,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        for key in params.keys() {
            let key = key.as_str();
            if !SQLITE_PARAMS.contains(&key) && !PARAMS.iter().any(|p| p.name == key) {
                return Err(Error::config(key, unknown_param_reason(key, params)));
            }
        }
        let mut draft = Draft::new();
        for p in PARAMS {
            let given = match params.get(p.name) {
                Some(v) => Some((p.name.to_string(), v)),
                None => {
                    let var = env_name(p.name);
                    env(&var).filter(|v| !v.is_empty()).map(|v| (var, v))
                }
            };
            if let Some((src, v)) = given {
                (p.set)(&mut draft, &src, &v)?;
            }
        }
        draft.finish(env)
    }
}

impl Draft {
    fn new() -> Draft {
        Draft {
            config: Config {
                replica_url: String::new(),
                poll_interval: DEFAULT_POLL_INTERVAL,
                poll_interval_max: DEFAULT_POLL_INTERVAL_MAX,
                manifest: true,
                list_interval: Duration::from_secs(60),
                max_requests_per_second: None,
                max_lag: Duration::ZERO,
                cache_size: DEFAULT_CACHE_SIZE,
                open_timeout: DEFAULT_OPEN_TIMEOUT,
                time: None,
                role: Role::Replica,
                primary: PrimaryConfig::default(),
                prefetch: None,
                request_budget: 0,
                hedge_after: DEFAULT_HEDGE_AFTER,
                cache_path: None,
                disk_cache_size: DEFAULT_DISK_CACHE_SIZE,
                hydration: None,
                retain_size: DEFAULT_RETAIN_SIZE,
                log_level: None,
                age: None,
                sse: Default::default(),
                restore_concurrency: 16,
                restore_part_size: 8 << 20,
                notes: Vec::new(),
            },
            hydration_enabled: false,
            hydration_path: None,
            age_recipients: None,
            age_identity_file: None,
        }
    }

    /// The rules between parameters, once all are read.
    fn finish(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut config = self.config;
        if config.replica_url.is_empty() {
            return Err(Error::config(
                "replica_url",
                "missing: give replica_url in the URI (file:app.db?vfs=litestream&replica_url=s3://bucket/app) or set LITESTREAM_REPLICA_URL",
            ));
        }
        if config.role == Role::Primary && config.time.is_some() {
            return Err(Error::config(
                "time",
                "a primary shows its newest state; open the replica (role=replica) to look at the past",
            ));
        }
        config.hydration = match (self.hydration_enabled, self.hydration_path) {
            (true, path) => Some(path.map(|(_, p)| p)),
            // The Go extension ignores a path without hydration: so do we, saying so.
            (false, Some((src, _))) => {
                config.notes.push(format!(
                    "{src} is set but hydration is not enabled (hydration_enabled=true): ignored"
                ));
                None
            }
            (false, None) => None,
        };
        config.age = age_keys(
            self.age_recipients,
            self.age_identity_file,
            env,
            config.role,
        )?;
        Ok(config)
    }
}

/// The age keys of an open: recipients to encrypt with (a primary), identities to decrypt
/// with (from `age_identity_file` and LITESTREAM_AGE_IDENTITY, all of them kept, for files
/// written before a key rotation).
fn age_keys(
    recipients: Option<(String, String)>,
    identity_file: Option<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
    role: Role,
) -> Result<Option<std::sync::Arc<crate::storage::crypt::Keys>>> {
    let mut identities = Vec::new();
    if let Some((src, path)) = identity_file {
        let text = std::fs::read_to_string(path.trim()).map_err(|e| {
            Error::config(&src, format!("cannot read the identity file {path:?}: {e}"))
        })?;
        identities.push((src, text));
    }
    if let Some(text) = env(AGE_IDENTITY_ENV).filter(|t| !t.trim().is_empty()) {
        identities.push((AGE_IDENTITY_ENV.to_string(), text));
    }
    let keys = crate::storage::crypt::Keys::parse(
        recipients.as_ref().map(|(s, v)| (s.as_str(), v.as_str())),
        &identities,
    )?;
    if let Some(k) = &keys {
        if role == Role::Primary && !(k.encrypts() && k.decrypts()) {
            return Err(Error::config(
                "age_recipients",
                "an encrypted primary needs both its recipients (age_recipients) and an identity (age_identity_file or LITESTREAM_AGE_IDENTITY): it reads back what it compacts",
            ));
        }
    }
    Ok(keys)
}

/// Whether a main-database open through the VFS is a replica. `VACUUM INTO 'x.db'` and a
/// plain ATTACH from a replica connection open their file through the main database's VFS
/// (ours) with no URI parameters: those are ordinary local files. A replica open names its
/// `replica_url`, or at least `vfs=litestream` (the Go extension's form, with the URL in
/// LITESTREAM_REPLICA_URL), or relies on that environment variable alone.
pub fn names_a_replica(params: &dyn Params, env: &dyn Fn(&str) -> Option<String>) -> bool {
    params.get("replica_url").is_some()
        || params.get("vfs").is_some()
        || env(&env_name("replica_url")).is_some()
}

// Parameter values, shared by URI parameters, environment variables and pragmas, so that
// each is accepted, and refused, with the same words wherever it is given. `param` is the
// name the user wrote (`poll_interval`, `LITESTREAM_POLL_INTERVAL`, `litestream_time`).

/// A positive Go duration (`500ms`, `2s`, `1m30s`).
pub fn positive_duration(param: &str, v: &str) -> Result<Duration> {
    match parse_duration(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::config(
            param,
            format!("{v:?} is not a positive duration (Go syntax: 500ms, 2s, 1m30s)"),
        )),
    }
}

/// A boolean: true/false, 1/0, yes/no, on/off.
pub fn boolean(param: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::config(
            param,
            format!("{v:?} is not a boolean (true or false)"),
        )),
    }
}

/// A Go duration, zero allowed (`0` turns a feature off).
pub fn duration(param: &str, v: &str) -> Result<Duration> {
    parse_duration(v).ok_or_else(|| {
        Error::config(
            param,
            format!("{v:?} is not a duration (Go syntax: 0, 500ms, 2s)"),
        )
    })
}

/// A byte size (`1048576`, `64MB`, `1GiB`).
pub fn size(param: &str, v: &str) -> Result<u64> {
    parse_size(v).ok_or_else(|| {
        Error::config(
            param,
            format!("{v:?} is not a size (bytes, or e.g. 64MB, 1GiB)"),
        )
    })
}

/// A whole number from 0 to `max` (a page count, a request budget; 0 usually means off).
pub fn count(param: &str, v: &str, max: u64) -> Result<u64> {
    match v.trim().parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Error::config(
            param,
            format!("{v:?} is not a whole number from 0 to {max}"),
        )),
    }
}

/// An instant (see `clock::parse_instant`), relative ones measured from now.
pub fn instant(param: &str, v: &str) -> Result<crate::clock::Instant> {
    crate::clock::parse_instant(v, crate::clock::now_ms()).ok_or_else(|| {
        Error::config(
            param,
            format!(
                "{v:?} is not an instant (RFC 3339, '5 minutes ago', '-1h', 'yesterday' or LATEST)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [(&str, &str); 0] = [];

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn uri_then_env_then_default() {
        let env = |k: &str| (k == "LITESTREAM_REPLICA_URL").then(|| "file:///env".to_string());
        let c = Config::from_params(&[("poll_interval", "250ms")], &env).unwrap();
        assert_eq!(c.replica_url, "file:///env");
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
        let c = Config::from_params(
            &[("replica_url", "file:///uri"), ("vfs", "litestream")],
            &env,
        )
        .unwrap();
        assert_eq!(c.replica_url, "file:///uri");
    }

    #[test]
    fn replica_opens_are_told_from_local_files() {
        assert!(names_a_replica(&[("replica_url", "s3://b/p")], &no_env));
        assert!(names_a_replica(&[("vfs", "litestream")], &no_env));
        let env = |k: &str| (k == "LITESTREAM_REPLICA_URL").then(|| "file:///r".to_string());
        assert!(names_a_replica(&NONE, &env));
        // VACUUM INTO 'out.db' through a replica connection: no parameters at all.
        assert!(!names_a_replica(&NONE, &no_env));
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = Config::from_params(&NONE, &no_env).unwrap_err();
        assert!(e.to_string().contains("replica_url"), "{e}");
        let e = Config::from_params(
            &[("replica_url", "file:///x"), ("poll_interval", "abc")],
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("poll_interval"), "{e}");
        let e = Config::from_params(
            &[("replica_url", "file:///x"), ("cache_size", "lots")],
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cache_size"), "{e}");
        let e = Config::from_params(
            &[("replica_url", "file:///x"), ("pol_interval", "1s")],
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("pol_interval"), "{e}");
        assert!(!e.to_string().contains("%26"), "{e}");
        // A replica URL's own query written unescaped: its second parameter arrives as the
        // database's, and the error says how to escape it.
        let e = Config::from_params(
            &[
                ("replica_url", "s3://b/app?endpoint=http://h:9"),
                ("region", "x"),
            ],
            &no_env,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("region") && e.to_string().contains("%26"),
            "{e}"
        );
        let e = Config::from_params(
            &[("replica_url", "s3://b/app"), ("force-path-style", "true")],
            &no_env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("%26"), "{e}");
        let env = |k: &str| (k == "LITESTREAM_POLL_INTERVAL").then(|| "soon".to_string());
        let e = Config::from_params(&[("replica_url", "file:///x")], &env).unwrap_err();
        assert!(e.to_string().contains("LITESTREAM_POLL_INTERVAL"), "{e}");
    }
    #[test]
    fn read_performance_parameters() {
        let url = ("replica_url", "file:///x");
        let c = Config::from_params(&[url], &no_env).unwrap();
        assert_eq!(c.prefetch, None);
        assert_eq!((c.request_budget, c.hydration.clone()), (0, None));
        assert_eq!(c.hedge_after, DEFAULT_HEDGE_AFTER);
        let c = Config::from_params(
            &[
                url,
                ("prefetch", "0"),
                ("request_budget", "40"),
                ("hedge_after", "0"),
                ("cache_path", "/tmp/c"),
                ("disk_cache_size", "10MB"),
                ("hydration_enabled", "true"),
                ("retain_size", "1MB"),
            ],
            &no_env,
        )
        .unwrap();
        assert_eq!(c.retain_size, 1 << 20);
        assert_eq!((c.prefetch, c.request_budget), (Some(0), 40));
        assert_eq!(c.hedge_after, Duration::ZERO);
        assert_eq!(c.cache_path, Some("/tmp/c".into()));
        assert_eq!(c.disk_cache_size, 10 << 20);
        assert_eq!(c.hydration, Some(None));
        for (k, v) in [
            ("prefetch", "-1"),
            ("request_budget", "lots"),
            ("hedge_after", "soon"),
            ("hydration_enabled", "maybe"),
            ("retain_size", "much"),
        ] {
            let e = Config::from_params(&[url, (k, v)], &no_env).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        // A path without hydration is ignored, as the Go extension ignores it.
        let c = Config::from_params(&[url, ("hydration_path", "/tmp/h.db")], &no_env).unwrap();
        assert_eq!(c.hydration, None);
        assert!(
            c.notes[0].contains("hydration_path is set but"),
            "{:?}",
            c.notes
        );
    }

    /// Every row of `PARAMS`: a bad value is refused naming the parameter, given in the
    /// URI or through its environment variable; a parameter given its stated default
    /// (where that is a value, not a description) changes nothing.
    #[test]
    fn every_parameter_row() {
        let url = ("replica_url", "file:///x");
        let free_form = ["replica_url", "buffer_path", "cache_path", "hydration_path"];
        for p in PARAMS.iter().filter(|p| !free_form.contains(&p.name)) {
            let e = Config::from_params(&[url, (p.name, "nonsense!")], &no_env).unwrap_err();
            assert!(e.to_string().contains(p.name), "{}: {e}", p.name);
            let var = env_name(p.name);
            let env = |k: &str| (k == var).then(|| "nonsense!".to_string());
            let e = Config::from_params(&[url], &env).unwrap_err();
            assert!(e.to_string().contains(&var), "{var}: {e}");
        }
        let base = Config::from_params(&[url], &no_env).unwrap();
        // log_level's default is the process's level, which an open leaves alone.
        let skip = [&free_form[..], &["log_level"]].concat();
        let mut compared = 0;
        for p in PARAMS.iter().filter(|p| !skip.contains(&p.name)) {
            if let Ok(c) = Config::from_params(&[url, (p.name, p.default)], &no_env) {
                assert_eq!(c, base, "{} = {}", p.name, p.default);
                compared += 1;
            }
        }
        assert!(compared >= 20, "only {compared} defaults are values");
    }

    /// The defaults `PARAMS` states are the ones an open without the parameter gets.
    #[test]
    fn stated_defaults_are_the_defaults() {
        let c = Config::from_params(&[("replica_url", "file:///x")], &no_env).unwrap();
        let stated = |name: &str| PARAMS.iter().find(|p| p.name == name).unwrap().default;
        let duration = |name| parse_duration(stated(name)).unwrap();
        let size = |name| parse_size(stated(name)).unwrap();
        assert_eq!(c.poll_interval, duration("poll_interval"));
        assert_eq!(c.open_timeout, duration("open_timeout"));
        assert_eq!(c.hedge_after, duration("hedge_after"));
        assert_eq!(c.cache_size, size("cache_size"));
        assert_eq!(c.disk_cache_size, size("disk_cache_size"));
        assert_eq!(c.retain_size, size("retain_size"));
        assert_eq!(c.role, Role::Replica);
        assert_eq!(stated("role"), "replica");
    }

    /// The README's configuration tables are this module's `PARAMS`: the same names in the
    /// same order, the environment variables `env_name` gives, the defaults, and the pragma
    /// twins (`(read)`, `(read, set…)`, or none).
    #[test]
    fn the_readme_tables_are_the_parameter_table() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("\n## Configuration")
            .expect("a Configuration section");
        let end = readme[start..].find("\n## SQL surface").expect("its end") + start;
        let mut rows = Vec::new();
        for line in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            let names: Vec<&str> = cells[0].trim_start_matches("| ").split(", ").collect();
            let defaults: Vec<&str> = cells[2].split("`, `").collect();
            for (i, name) in names.iter().enumerate() {
                let default = defaults.get(i).unwrap_or(&defaults[0]);
                rows.push((
                    name.trim_matches('`'),
                    cells[1],
                    default.replace('`', ""),
                    cells[4],
                ));
            }
        }
        let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let ours: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
        assert_eq!(names, ours, "README rows and PARAMS differ");
        for ((name, env, default, twin), p) in rows.iter().zip(PARAMS) {
            let env_var = env_name(name);
            assert!(
                env.contains(&env_var) || env.contains("…_"),
                "{name}: {env}"
            );
            assert_eq!(default, p.default, "{name}: default");
            let twin = twin.trim_end_matches('|').trim();
            if twin != "—" {
                assert!(
                    twin.contains(&format!("`litestream_{name}`")),
                    "{name}: {twin}"
                );
            }
            let shown = match twin {
                "—" => Twin::None,
                t if t.contains("(read)") => Twin::Read,
                t if t.contains("per connection") && p.twin == Twin::Primary => Twin::Primary,
                t if t.contains("(read, set") => Twin::ReadSet,
                t => panic!("{name}: pragma column {t:?}"),
            };
            assert_eq!(shown, p.twin, "{name}: pragma twin");
        }
    }
}
