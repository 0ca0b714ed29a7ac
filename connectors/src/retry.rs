//! Retry with exponential backoff and "equal jitter": each wait is half its ceiling plus a
//! random share of the other half (not full jitter, which may wait almost nothing).

use std::time::Duration;

/// How often and how patiently a delivery is retried. Only failures that another attempt
/// could fix are retried: connection failures, timeouts and the statuses in
/// `retry_statuses` (by default 429, 502, 503, 504).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 disables retries.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            retry_statuses: vec![429, 502, 503, 504],
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    pub fn retries_status(&self, status: u16) -> bool {
        self.retry_statuses.contains(&status)
    }

    /// The ceiling of the wait before attempt `attempt + 1` (attempt counts from 1):
    /// `initial * 2^(attempt-1)`, capped at `max_backoff`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// The wait before the next attempt: uniformly random in `[ceiling/2, ceiling]`, so that
    /// many senders retrying at once spread out instead of hitting the receiver together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let half = ceiling / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            retry_statuses: vec![503],
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_millis(1000));
        assert_eq!(p.backoff_ceiling(64), Duration::from_millis(1000));
        for attempt in 1..8 {
            let b = p.backoff(attempt);
            let c = p.backoff_ceiling(attempt);
            assert!(b >= c / 2 && b <= c, "attempt {attempt}: {b:?} outside [{:?}, {c:?}]", c / 2);
        }
    }

    #[test]
    fn only_listed_statuses_are_retried() {
        let p = RetryPolicy::default();
        assert!(p.retries_status(503));
        assert!(p.retries_status(429));
        assert!(!p.retries_status(500));
        assert!(!p.retries_status(400));
    }
}
