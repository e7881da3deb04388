//! What reads cost, per connection and per statement: storage GETs, bytes and time spent
//! waiting for them, and an optional request budget per statement.
//!
//! The replica (and its store) is shared by every connection of a process, so its own
//! counters cannot say who spent what. A connection's file installs its [`Meters`] for the
//! duration of each read (`scope`); the replica's fetch paths `charge` what they spend to the
//! meters of the calling thread. A "statement" is one read transaction (in autocommit mode,
//! exactly one statement): its counters restart when the connection takes its SHARED lock.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Counters {
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
    pub nanos: AtomicU64,
}

impl Counters {
    fn add(&self, gets: u64, bytes: u64, time: Duration) {
        self.gets.fetch_add(gets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.nanos
            .fetch_add(time.as_nanos() as u64, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.gets.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.nanos.store(0, Ordering::Relaxed);
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "get_requests": self.gets.load(Ordering::Relaxed),
            "get_bytes": self.bytes.load(Ordering::Relaxed),
            "get_ms": self.nanos.load(Ordering::Relaxed) as f64 / 1e6,
        })
    }
}

/// The meters of one connection.
#[derive(Debug, Default)]
pub struct Meters {
    pub connection: Counters,
    pub statement: Counters,
    /// GETs one statement may issue; 0 = no limit.
    pub budget: AtomicU64,
}

impl Meters {
    pub fn new(budget: u64) -> Arc<Meters> {
        let m = Meters::default();
        m.budget.store(budget, Ordering::Relaxed);
        Arc::new(m)
    }

    /// A new statement (read transaction) starts.
    pub fn start_statement(&self) {
        self.statement.reset();
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Meters>>> = const { RefCell::new(None) };
}

/// Runs `f` with `meters` charged for the storage reads it makes on this thread.
pub fn scope<T>(meters: &Arc<Meters>, f: impl FnOnce() -> T) -> T {
    let prev = CURRENT.with(|c| c.replace(Some(meters.clone())));
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = prev);
    out
}

/// Whether the current statement may issue `gets` more requests: the budget error if not.
/// Reads outside any connection's scope (the poller, restore) are not limited.
pub fn allow(gets: u64) -> Result<()> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(m) = c.as_ref() else { return Ok(()) };
        let budget = m.budget.load(Ordering::Relaxed);
        let spent = m.statement.gets.load(Ordering::Relaxed);
        if budget > 0 && spent + gets > budget {
            return Err(Error::Budget { budget, spent });
        }
        Ok(())
    })
}

/// How many more GETs the current statement may issue (`u64::MAX` without a budget).
pub fn remaining() -> u64 {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(m) = c.as_ref() else {
            return u64::MAX;
        };
        match m.budget.load(Ordering::Relaxed) {
            0 => u64::MAX,
            b => b.saturating_sub(m.statement.gets.load(Ordering::Relaxed)),
        }
    })
}

/// Charges `gets` requests of `bytes` bytes that took `time` to the current meters.
pub fn charge(gets: u64, bytes: u64, time: Duration) {
    CURRENT.with(|c| {
        if let Some(m) = c.borrow().as_ref() {
            m.connection.add(gets, bytes, time);
            m.statement.add(gets, bytes, time);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_the_scope_and_enforces_the_statement_budget() {
        let m = Meters::new(3);
        charge(5, 5, Duration::ZERO); // outside any scope: nobody pays
        scope(&m, || {
            assert!(allow(3).is_ok());
            charge(2, 8192, Duration::from_millis(4));
            assert_eq!(remaining(), 1);
            let e = allow(2).unwrap_err();
            assert!(e.to_string().contains("request_budget"), "{e}");
        });
        assert_eq!(m.connection.gets.load(Ordering::Relaxed), 2);
        assert_eq!(m.statement.bytes.load(Ordering::Relaxed), 8192);
        m.start_statement();
        assert_eq!(m.statement.gets.load(Ordering::Relaxed), 0);
        assert_eq!(m.connection.gets.load(Ordering::Relaxed), 2);
        assert!(allow(100).is_ok(), "outside the scope: not limited");
    }
}
