//! A circuit breaker per system: after `failure_threshold` failed deliveries in a row it
//! opens, and deliveries fail at once for `open_for` instead of piling up on a system
//! that is down; then one trial request is let through (half-open), and its outcome
//! closes or reopens the circuit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Failed deliveries in a row that open the circuit; 0 turns the breaker off.
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial: bool },
}

#[derive(Debug)]
pub struct Circuit {
    config: CircuitConfig,
    inner: Mutex<Inner>,
}

impl Circuit {
    pub fn new(config: CircuitConfig) -> Self {
        Self { config, inner: Mutex::new(Inner::Closed { failures: 0 }) }
    }

    /// May a request go now? The ticket reports the outcome; dropped without one (the
    /// request could not be built, or the delivery was cancelled), it leaves the circuit as
    /// it was and frees the half-open trial for the next request. `Err` holds the time left
    /// until the next trial.
    pub fn admit(&self) -> Result<Ticket<'_>, Duration> {
        let ticket = Ticket { circuit: self, trial: false };
        if self.config.failure_threshold == 0 {
            return Ok(ticket);
        }
        let mut inner = self.inner.lock().expect("circuit lock");
        match &mut *inner {
            Inner::Closed { .. } => Ok(ticket),
            Inner::Open { until } => {
                let now = Instant::now();
                if now >= *until {
                    *inner = Inner::HalfOpen { trial: true };
                    Ok(Ticket { trial: true, ..ticket })
                } else {
                    Err(*until - now)
                }
            }
            // One trial at a time while half-open.
            Inner::HalfOpen { trial } if *trial => Err(Duration::from_millis(100)),
            Inner::HalfOpen { trial } => {
                *trial = true;
                Ok(Ticket { trial: true, ..ticket })
            }
        }
    }

    fn success(&self) {
        *self.inner.lock().expect("circuit lock") = Inner::Closed { failures: 0 };
    }

    fn failure(&self) {
        if self.config.failure_threshold == 0 {
            return;
        }
        let mut inner = self.inner.lock().expect("circuit lock");
        let open = Inner::Open { until: Instant::now() + self.config.open_for };
        match &mut *inner {
            Inner::Closed { failures } => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    tracing::warn!(
                        failures = *failures,
                        open_ms = self.config.open_for.as_millis() as u64,
                        "circuit opened"
                    );
                    *inner = open;
                }
            }
            Inner::HalfOpen { .. } => *inner = open,
            Inner::Open { .. } => {}
        }
    }

    pub fn state(&self) -> CircuitState {
        match &*self.inner.lock().expect("circuit lock") {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if Instant::now() >= *until => CircuitState::HalfOpen,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// Leave to send one request; says how it went.
#[must_use]
pub struct Ticket<'a> {
    circuit: &'a Circuit,
    /// This request is the half-open trial.
    trial: bool,
}

impl Ticket<'_> {
    pub fn success(mut self) {
        self.trial = false;
        self.circuit.success();
    }

    pub fn failure(mut self) {
        self.trial = false;
        self.circuit.failure();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.trial {
            let mut inner = self.circuit.inner.lock().expect("circuit lock");
            if let Inner::HalfOpen { trial } = &mut *inner {
                *trial = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_lets_one_trial_through() {
        let c = Circuit::new(CircuitConfig { failure_threshold: 2, open_for: Duration::from_millis(30) });
        c.admit().unwrap().failure();
        assert_eq!(c.state(), CircuitState::Closed);
        c.admit().unwrap().failure();
        assert_eq!(c.state(), CircuitState::Open);
        assert!(c.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        let trial = c.admit().expect("the trial");
        assert!(c.admit().is_err(), "only one trial at a time");
        trial.failure();
        assert_eq!(c.state(), CircuitState::Open, "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(40));
        c.admit().unwrap().success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(c.admit().is_ok());
    }

    #[test]
    fn a_trial_without_an_outcome_frees_the_next_one() {
        let c = Circuit::new(CircuitConfig { failure_threshold: 1, open_for: Duration::from_millis(10) });
        c.admit().unwrap().failure();
        std::thread::sleep(Duration::from_millis(20));
        // The request could not be built, or the delivery was cancelled.
        drop(c.admit().expect("the trial"));
        assert_eq!(c.state(), CircuitState::HalfOpen);
        let next = c.admit().expect("another trial, not a circuit stuck open");
        next.success();
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[test]
    fn a_success_resets_the_count_and_zero_disables() {
        let c = Circuit::new(CircuitConfig { failure_threshold: 2, open_for: Duration::from_secs(60) });
        c.admit().unwrap().failure();
        c.admit().unwrap().success();
        c.admit().unwrap().failure();
        assert_eq!(c.state(), CircuitState::Closed);
        let off = Circuit::new(CircuitConfig { failure_threshold: 0, open_for: Duration::from_secs(60) });
        for _ in 0..10 {
            off.admit().unwrap().failure();
        }
        assert!(off.admit().is_ok());
    }
}
