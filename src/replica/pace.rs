//! The process's bound on background requests (`max_requests_per_second`): every replica's
//! polls draw from one bucket, so that a thousand replicas in one process cannot make more
//! requests than the bound however they are configured. Page reads do not draw from it: a
//! reader waits for its page, not for other replicas' polls.
//!
//! A poll reserves its requests and sleeps until the bucket has refilled to cover them, so
//! reservations are served in order and the rate over any long window stays at the bound
//! (with a burst of at most one second's worth).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

struct Bucket {
    /// Requests a second; 0: no bound.
    rate: u32,
    /// Requests available now (negative: reserved ahead).
    tokens: f64,
    at: Instant,
}

static BUCKET: Mutex<Option<Bucket>> = Mutex::new(None);

/// Sets the bound (0: none). The last value given in the process wins.
pub fn set_rate(rate: u32) {
    let mut b = BUCKET.lock();
    *b = Some(Bucket {
        rate,
        tokens: f64::from(rate),
        at: Instant::now(),
    });
}

/// The current bound (0: none).
pub fn rate() -> u32 {
    BUCKET.lock().as_ref().map_or(0, |b| b.rate)
}

/// Waits until `n` requests may be made.
pub async fn take(n: u32) {
    let wait = reserve(&mut BUCKET.lock(), n, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Reserves `n` requests at `now`; returns how long to wait before making them.
fn reserve(bucket: &mut Option<Bucket>, n: u32, now: Instant) -> Duration {
    let Some(b) = bucket.as_mut().filter(|b| b.rate > 0) else {
        return Duration::ZERO;
    };
    let rate = f64::from(b.rate);
    let refill = now.duration_since(b.at).as_secs_f64() * rate;
    b.tokens = (b.tokens + refill).min(rate);
    b.at = now;
    b.tokens -= f64::from(n);
    if b.tokens >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(-b.tokens / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_keep_the_rate() {
        let start = Instant::now();
        let mut b = Some(Bucket {
            rate: 10,
            tokens: 10.0,
            at: start,
        });
        // A burst of one second's worth goes at once; then each waits its turn.
        let waits: Vec<_> = (0..30).map(|_| reserve(&mut b, 1, start)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero));
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[29], Duration::from_secs(2));
        // Three seconds later the debt is paid and one second's worth is back (not more).
        let later = start + Duration::from_secs(5);
        let waits: Vec<_> = (0..11).map(|_| reserve(&mut b, 1, later)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero));
        assert!(!waits[10].is_zero());
        // No bound.
        let mut none = Some(Bucket {
            rate: 0,
            tokens: 0.0,
            at: start,
        });
        assert!(reserve(&mut none, 1000, start).is_zero());
        assert!(reserve(&mut None, 1000, start).is_zero());
    }
}
