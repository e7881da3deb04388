//! Minimal leveled logging to stderr. Off below WARN unless `LITESTREAM_LOG_LEVEL` (or the
//! `log_level` parameter) asks for more. Never writes to stdout: the host owns it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

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

pub fn write(level: LogLevel, msg: std::fmt::Arguments<'_>) {
    if enabled(level) {
        eprintln!("litestream {level:?}: {msg}");
    }
}

#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Debug, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Warn, format_args!($($t)*)) } }
