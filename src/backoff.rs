//! Waiting between retries: exponential backoff with jitter, so that many clients failing
//! together do not retry together.

use std::time::Duration;

/// A pause drawn uniformly from [bound/10, bound].
pub fn jitter(bound: Duration) -> Duration {
    use std::hash::BuildHasher;
    // RandomState's keys are random: hashing anything gives a random number.
    let r = (std::collections::hash_map::RandomState::new().hash_one(0u8) % 1000) as u32;
    bound / 10 + (bound * 9 / 10) * r / 1000
}

/// Pauses that double from `first` up to `last`, each drawn by `jitter`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    last: Duration,
    bound: Duration,
}

impl Backoff {
    pub fn new(first: Duration, last: Duration) -> Backoff {
        Backoff {
            first,
            last,
            bound: first,
        }
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        let wait = jitter(self.bound);
        self.bound = (self.bound * 2).min(self.last);
        wait
    }

    /// After a success: start again from the first pause.
    pub fn reset(&mut self) {
        self.bound = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_bound_and_vary() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let pauses: Vec<Duration> = (0..8).map(|_| b.next_pause()).collect();
        assert!(pauses[0] <= Duration::from_millis(100) && pauses[0] >= Duration::from_millis(10));
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(1)));
        let draws: std::collections::HashSet<Duration> =
            (0..20).map(|_| jitter(Duration::from_secs(10))).collect();
        assert!(draws.len() > 10, "jitter varies");
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(100));
    }
}
