//! Rate limits (governor, GCRA): per route at the ingress, per client IP when asked. An
//! HTTP request over the limit gets 429 with `Retry-After`; a route that consumes from
//! AMQP waits instead, leaving messages in the queue (the receiver is protected, nothing
//! is refused). Per-process: several replicas each allow the full rate.
//!
//! Concurrency limits: at most so many requests of an HTTP route in flight at once; one
//! more gets 503 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

#[derive(Debug)]
pub enum RouteLimit {
    Route(DefaultDirectRateLimiter),
    Client { limiter: DefaultKeyedRateLimiter<IpAddr>, checks: AtomicU64 },
}

/// A keyed limiter keeps state per client; this many checks between clean-ups keeps the
/// table from growing without bound (no background task needed).
const CLEAN_EVERY: u64 = 4096;

impl RouteLimit {
    pub fn new(per_second: u32, burst: u32, per_client: bool) -> Option<RouteLimit> {
        let quota = Quota::per_second(NonZeroU32::new(per_second)?).allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(if per_client {
            RouteLimit::Client { limiter: RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
        } else {
            RouteLimit::Route(RateLimiter::direct(quota))
        })
    }

    /// `Err(wait)` when the request is over the limit.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let clock = DefaultClock::default();
        match self {
            RouteLimit::Route(l) => l.check().map_err(|n| n.wait_time_from(clock.now())),
            RouteLimit::Client { limiter, checks } => {
                if checks.fetch_add(1, Ordering::Relaxed) % CLEAN_EVERY == CLEAN_EVERY - 1 {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                let key = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                limiter.check_key(&key).map_err(|n| n.wait_time_from(clock.now()))
            }
        }
    }

    /// Waits until a message may go (AMQP consumption).
    pub async fn wait(&self) {
        match self {
            RouteLimit::Route(l) => l.until_ready().await,
            RouteLimit::Client { limiter, .. } => limiter.until_key_ready(&IpAddr::from([0, 0, 0, 0])).await,
        }
    }
}

/// A route's cap on requests in flight.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

/// One request in flight; dropping it frees its place.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    /// `None` for 0: a route that takes nothing is a mistake, refused at load.
    pub fn new(max: usize) -> Option<ConcurrencyLimit> {
        (max > 0).then(|| ConcurrencyLimit { max, in_flight: Arc::new(AtomicUsize::new(0)) })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place, when one is free.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Permit(self.in_flight.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concurrency_limit_frees_a_place_when_a_request_ends() {
        let l = ConcurrencyLimit::new(2).unwrap();
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(a);
        assert!(l.try_acquire().is_some());
        assert!(ConcurrencyLimit::new(0).is_none());
    }

    #[test]
    fn the_burst_passes_then_requests_wait() {
        let l = RouteLimit::new(1, 3, false).unwrap();
        for _ in 0..3 {
            assert!(l.check(None).is_ok());
        }
        let wait = l.check(None).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn per_client_limits_do_not_share() {
        let l = RouteLimit::new(1, 1, true).unwrap();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(l.check(Some(a)).is_ok());
        assert!(l.check(Some(a)).is_err());
        assert!(l.check(Some(b)).is_ok());
        assert!(RouteLimit::new(0, 1, false).is_none(), "a zero rate is refused at load");
    }
}
