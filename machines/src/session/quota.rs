//! The core's relay quota for one edge: token buckets handed the time, answering how long
//! to wait.

use std::time::{Duration, Instant};

/// What the core relays from one edge to the other edges (`[link] relay_rate`,
/// `relay_entries`, `relay_burst`): per second, with a burst of `burst` worth of both.
/// Past it the core reads that edge's entries only as fast as the quota allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimit {
    /// Entry bytes per second (as the store counts them); 0: no limit on bytes.
    pub bytes_per_s: u64,
    /// Entries per second; 0: no limit on entries.
    pub entries_per_s: u64,
    /// How long a burst at full speed the quota allows after a quiet spell.
    pub burst: Duration,
}

/// One edge's relay quota: two token buckets (entries and bytes). Without IO: it is
/// handed the time and answers how long to wait.
#[derive(Debug)]
pub struct RelayQuota {
    limit: Option<RelayLimit>,
    /// Tokens in each bucket at `at` (may go below zero: a debt to wait out).
    entries: f64,
    bytes: f64,
    at: Instant,
}

impl RelayQuota {
    /// A full quota at `now`.
    pub fn new(limit: Option<RelayLimit>, now: Instant) -> Self {
        let burst = |rate: u64| rate as f64 * limit.map_or(0.0, |l| l.burst.as_secs_f64());
        RelayQuota {
            limit,
            entries: limit.map_or(0.0, |l| burst(l.entries_per_s)),
            bytes: limit.map_or(0.0, |l| burst(l.bytes_per_s)),
            at: now,
        }
    }

    /// Whether there is a limit at all (without one, nothing needs counting).
    pub fn limited(&self) -> bool {
        self.limit.is_some()
    }

    /// Takes `entries` and `bytes` from the quota at `now`; returns how long to wait
    /// before they may be relayed (zero if within the quota).
    pub fn take(&mut self, entries: u64, bytes: u64, now: Instant) -> Duration {
        let Some(limit) = self.limit else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let mut wait: f64 = 0.0;
        for (tokens, rate, taken) in [
            (&mut self.entries, limit.entries_per_s, entries),
            (&mut self.bytes, limit.bytes_per_s, bytes),
        ] {
            if rate == 0 {
                continue;
            }
            let (rate, full) = (rate as f64, rate as f64 * limit.burst.as_secs_f64());
            *tokens = (*tokens + elapsed * rate).min(full) - taken as f64;
            if *tokens < 0.0 {
                wait = wait.max(-*tokens / rate);
            }
        }
        Duration::from_secs_f64(wait.min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_quota_allows_a_burst_then_the_rate() {
        let limit = RelayLimit {
            bytes_per_s: 1000,
            entries_per_s: 10,
            burst: Duration::from_secs(2),
        };
        let start = Instant::now();
        let mut quota = RelayQuota::new(Some(limit), start);
        // A full burst (2 s worth of both) passes at once.
        assert_eq!(quota.take(20, 2000, start), Duration::ZERO);
        // Past it, the wait is what the debt takes to repay, at the slower of the two.
        assert_eq!(quota.take(5, 100, start), Duration::from_millis(500));
        assert_eq!(quota.take(0, 1000, start), Duration::from_millis(1100));
        // Time repays it; a quiet spell refills the burst, never beyond it.
        let later = start + Duration::from_secs(60);
        assert_eq!(quota.take(20, 2000, later), Duration::ZERO);
        assert!(quota.take(1, 0, later) > Duration::ZERO);
        // Without a limit, nothing ever waits; a rate of 0 is no limit on that count.
        let mut none = RelayQuota::new(None, start);
        assert_eq!(none.take(u64::MAX, u64::MAX, start), Duration::ZERO);
        let bytes_only = RelayLimit {
            entries_per_s: 0,
            ..limit
        };
        let mut quota = RelayQuota::new(Some(bytes_only), start);
        assert_eq!(quota.take(1_000_000, 2000, start), Duration::ZERO);
    }
}
