//! Minimal leveled logging to stderr and, once the extension is loaded, through the host's
//! `sqlite3_log` (where a host's logger, SQLITE_CONFIG_LOG, can take it to Python logging,
//! Rails' logger or pino). Off below WARN unless `LITESTREAM_LOG_LEVEL` (or the `log_level`
//! parameter) asks for more. Never writes to stdout: the host owns it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" | "trace" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
static FROM_ENV: Once = Once::new();

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    FROM_ENV.call_once(|| {
        if let Some(l) = std::env::var("LITESTREAM_LOG_LEVEL")
            .ok()
            .and_then(|v| LogLevel::parse(&v))
        {
            set_level(l);
        }
    });
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// A second destination of every message (the host's `sqlite3_log`, set by the VFS layer).
static SINK: OnceLock<fn(LogLevel, &str)> = OnceLock::new();

pub fn set_sink(sink: fn(LogLevel, &str)) {
    let _ = SINK.set(sink);
}

impl LogLevel {
    fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `litestream <level>: <message>`, the message's own `litestream: ` prefix dropped (most
/// messages carry it, since they are also error texts).
pub fn line(level: LogLevel, msg: &str) -> String {
    let msg = msg.strip_prefix("litestream: ").unwrap_or(msg);
    format!("litestream {}: {msg}", level.name())
}

pub fn write(level: LogLevel, msg: std::fmt::Arguments<'_>) {
    if enabled(level) {
        let line = line(level, &msg.to_string());
        eprintln!("{line}");
        if let Some(sink) = SINK.get() {
            sink(level, &line);
        }
    }
}

#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Debug, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Warn, format_args!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prefix_per_line() {
        assert_eq!(
            line(LogLevel::Warn, "litestream: poll of x failed"),
            "litestream warn: poll of x failed"
        );
        assert_eq!(
            line(LogLevel::Info, "plan: a b"),
            "litestream info: plan: a b"
        );
    }
}
