//! Rate limits (GCRA) and concurrency limits: their settings, which the config carries as
//! plain data, and the live limiters, which the runtime builds from them and keeps across
//! a reload when their settings do not change (docs/limits.md).
//!
//! - Inbound, per route: one budget for the route, or one per client (the authenticated
//!   client's name, or the IP of an anonymous one), with per-client overrides. Over it, an
//!   HTTP request gets 429; an AMQP consumer waits, leaving messages in the queue.
//! - Outbound, per destination system, shared by every route that delivers to it: a
//!   delivery waits for its turn (an HTTP request in a bounded queue for a bounded time, an
//!   AMQP delivery as long as it takes) and is never dropped.
//! - Either may be cluster-wide ([`cluster`]): the budget lives in Redis, and when Redis
//!   does not answer in time the local budget divided by the replica count applies, or the
//!   request is refused, as configured.
//!
//! Time comes from tokio's clock ([`TokioClock`]) so that tests run the arithmetic on
//! paused time, without sleeping.

mod cluster;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use indexmap::IndexMap;

pub use cluster::valid_redis_url;

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    /// Units allowed at once, at least 1.
    pub burst: u32,
}

impl Rate {
    /// The quota of one of `replicas` processes sharing this rate.
    fn quota(self, replicas: u32) -> Quota {
        let replicas = replicas.max(1);
        let period = Duration::from_secs(u64::from(replicas)) / self.per_second.max(1);
        let burst = NonZeroU32::new((self.burst / replicas).max(1)).expect("at least 1");
        Quota::with_period(period.max(Duration::from_nanos(1))).expect("a period above zero").allow_burst(burst)
    }
}

/// What a limit does when its Redis does not answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnreachable {
    /// Applies the local budget, divided by the replica count.
    Local,
    /// Refuses (HTTP: 503 with `Retry-After`; an AMQP consumer waits).
    Refuse,
}

/// A limit shared by several replicas through Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    pub redis: String,
    /// Longest wait for Redis's answer before the fallback applies.
    pub timeout: Duration,
    /// Replicas sharing the limit: the local fallback is the rate divided by this.
    pub replicas: u32,
    pub on_unreachable: OnUnreachable,
}

/// A route's inbound limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundSettings {
    pub rate: Rate,
    /// One budget per client instead of one for the route.
    pub per_client: bool,
    /// Budgets of named clients (or client IPs) that differ from `rate`.
    pub clients: IndexMap<String, Rate>,
    pub cluster: Option<ClusterSettings>,
}

/// A destination system's outbound limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundSettings {
    pub rate: Rate,
    /// Longest time an HTTP request waits for its turn.
    pub max_wait: Duration,
    /// Most HTTP requests waiting at once.
    pub queue: usize,
    pub cluster: Option<ClusterSettings>,
}

/// tokio's clock for governor: real time in production, paused time in tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;
type Keyed = RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, TokioClock, StateInformationMiddleware>;

/// A client as the limits see it: its name when it authenticated (hashed, so that checking
/// allocates nothing), else its IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Name(u64),
    Ip(IpAddr),
    /// Neither known (a Unix socket).
    Unknown,
}

impl ClientKey {
    /// The key of a request: `client` is the authenticated client's name, `None` when
    /// anonymous.
    pub fn of(client: Option<&str>, ip: Option<IpAddr>) -> ClientKey {
        match (client, ip) {
            (Some(name), _) => ClientKey::Name(name_hash(name)),
            (None, Some(ip)) => ClientKey::Ip(ip),
            (None, None) => ClientKey::Unknown,
        }
    }

    /// The key an override in the config names: an IP address, or a client's name.
    fn named(name: &str) -> ClientKey {
        name.parse().map(ClientKey::Ip).unwrap_or_else(|_| ClientKey::Name(name_hash(name)))
    }
}

fn name_hash(name: &str) -> u64 {
    // Fixed keys: the same name is the same key in every process (no randomness needed,
    // names come from the config and from authentication, not from the client).
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The outcome of checking one unit against a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let through: `remaining` more would pass right now; the budget is whole again after
    /// `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Over the limit: the next unit passes after `wait`.
    Limited { wait: Duration },
    /// The limit's Redis did not answer and the limit refuses then.
    Unavailable,
}

fn local_verdict(r: Result<StateSnapshot, NotUntil<std::time::Instant>>) -> Verdict {
    match r {
        Ok(s) => {
            let quota = s.quota();
            let remaining = s.remaining_burst_capacity();
            let used = quota.burst_size().get().saturating_sub(remaining);
            Verdict::Allowed { remaining, reset: quota.replenish_interval() * used }
        }
        Err(n) => Verdict::Limited { wait: n.wait_time_from(TokioClock.now()) },
    }
}

/// How a limit is shared with other replicas.
#[derive(Debug)]
struct Shared {
    store: cluster::Store,
    on_unreachable: OnUnreachable,
}

/// One budget: local (governor), or in Redis with a local fallback.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    /// The Redis key and metric label.
    name: String,
    local: Direct,
    shared: Option<Shared>,
}

impl Limiter {
    pub fn new(name: String, rate: Rate, cluster: Option<&ClusterSettings>) -> Limiter {
        let replicas = cluster.map_or(1, |c| c.replicas);
        Limiter {
            rate,
            name,
            local: RateLimiter::direct_with_clock(rate.quota(replicas), TokioClock)
                .with_middleware::<StateInformationMiddleware>(),
            shared: cluster.map(|c| Shared { store: cluster::Store::new(c), on_unreachable: c.on_unreachable }),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub async fn check(&self) -> Verdict {
        if let Some(v) = shared_check(self.shared.as_ref(), &self.name, None, self.rate).await {
            return v;
        }
        local_verdict(self.local.check())
    }

    /// Waits until a unit passes, however long that takes.
    pub async fn wait(&self) {
        loop {
            match self.check().await {
                Verdict::Allowed { .. } => return,
                Verdict::Limited { wait } => tokio::time::sleep(wait).await,
                Verdict::Unavailable => tokio::time::sleep(UNAVAILABLE_PAUSE).await,
            }
        }
    }
}

/// How long a refusing limit whose Redis is unreachable tells callers to wait.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(1);

/// The shared budget's verdict, or `None` when the local budget decides (no cluster, or
/// Redis unreachable with the local fallback).
async fn shared_check(shared: Option<&Shared>, name: &str, client: Option<&str>, rate: Rate) -> Option<Verdict> {
    let shared = shared?;
    let key = match client {
        Some(c) => format!("qiao:rl:{name}:{c}"),
        None => format!("qiao:rl:{name}"),
    };
    match shared.store.check(&key, rate).await {
        Ok(v) => Some(v),
        Err(()) => {
            let fallback = match shared.on_unreachable {
                OnUnreachable::Local => "local",
                OnUnreachable::Refuse => "refused",
            };
            crate::telemetry::metrics::get().rate_limit_fallback.with_label_values(&[name, fallback]).inc();
            (shared.on_unreachable == OnUnreachable::Refuse).then_some(Verdict::Unavailable)
        }
    }
}

/// A keyed limiter keeps state per client; this many checks between clean-ups keeps the
/// table from growing without bound (no background task needed).
const CLEAN_EVERY: u64 = 4096;

/// The policy a request was counted under, for the `RateLimit` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `route`, `client`, or the name of a client's own budget.
    pub name: Arc<str>,
    pub per_second: u32,
}

#[derive(Debug)]
enum Budget {
    Route(Limiter),
    Client {
        /// Every client without a budget of its own, keyed.
        default: Keyed,
        shared: Option<Shared>,
        /// Clients with a budget of their own.
        own: HashMap<ClientKey, (Policy, Limiter)>,
        checks: AtomicU64,
    },
}

/// A route's inbound limit, live.
#[derive(Debug)]
pub struct RouteLimiter {
    pub settings: InboundSettings,
    route: String,
    policy: Policy,
    budget: Budget,
}

impl RouteLimiter {
    pub fn new(route: &str, settings: &InboundSettings) -> RouteLimiter {
        let cluster = settings.cluster.as_ref();
        let name = format!("route:{route}");
        let budget = if settings.per_client {
            let replicas = cluster.map_or(1, |c| c.replicas);
            let own = settings
                .clients
                .iter()
                .map(|(client, rate)| {
                    let policy = Policy { name: Arc::from(client.as_str()), per_second: rate.per_second };
                    (ClientKey::named(client), (policy, Limiter::new(format!("{name}:own:{client}"), *rate, cluster)))
                })
                .collect();
            Budget::Client {
                default: RateLimiter::<ClientKey, _, _, NoOpMiddleware<std::time::Instant>>::new(
                    settings.rate.quota(replicas),
                    DefaultKeyedStateStore::default(),
                    TokioClock,
                )
                .with_middleware::<StateInformationMiddleware>(),
                shared: cluster.map(|c| Shared { store: cluster::Store::new(c), on_unreachable: c.on_unreachable }),
                own,
                checks: AtomicU64::new(0),
            }
        } else {
            Budget::Route(Limiter::new(name, settings.rate, cluster))
        };
        let policy_name = if settings.per_client { "client" } else { "route" };
        RouteLimiter {
            settings: settings.clone(),
            route: route.to_string(),
            policy: Policy { name: Arc::from(policy_name), per_second: settings.rate.per_second },
            budget,
        }
    }

    /// Checks one request of `client` (the authenticated client's name, `None` when
    /// anonymous) from `ip`.
    pub async fn check(&self, client: Option<&str>, ip: Option<IpAddr>) -> (Verdict, &Policy) {
        match &self.budget {
            Budget::Route(l) => (l.check().await, &self.policy),
            Budget::Client { default, shared, own, checks } => {
                let key = ClientKey::of(client, ip);
                if let Some((policy, l)) = own.get(&key) {
                    return (l.check().await, policy);
                }
                if checks.fetch_add(1, Ordering::Relaxed) % CLEAN_EVERY == CLEAN_EVERY - 1 {
                    default.retain_recent();
                    default.shrink_to_fit();
                }
                if shared.is_some() {
                    let who = match (client, ip) {
                        (Some(c), _) => format!("client:{c}"),
                        (None, Some(ip)) => format!("ip:{ip}"),
                        (None, None) => "unknown".to_string(),
                    };
                    let name = format!("route:{}", self.route);
                    if let Some(v) = shared_check(shared.as_ref(), &name, Some(&who), self.settings.rate).await {
                        return (v, &self.policy);
                    }
                }
                (local_verdict(default.check_key(&key)), &self.policy)
            }
        }
    }

    /// Waits until one more message may go (a route that consumes from AMQP: the messages
    /// wait in the queue).
    pub async fn wait(&self) {
        loop {
            match self.check(None, None).await.0 {
                Verdict::Allowed { .. } => return,
                Verdict::Limited { wait } => tokio::time::sleep(wait).await,
                Verdict::Unavailable => tokio::time::sleep(UNAVAILABLE_PAUSE).await,
            }
        }
    }
}

/// Why a delivery did not get its turn in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// As many requests as `queue` already wait.
    QueueFull { retry_after: Duration },
    /// Its turn would come after `max_wait`.
    TooLong { retry_after: Duration },
    /// The shared limit's Redis is unreachable and the limit refuses then.
    Unavailable { retry_after: Duration },
}

impl Busy {
    pub fn retry_after(self) -> Duration {
        match self {
            Busy::QueueFull { retry_after } | Busy::TooLong { retry_after } | Busy::Unavailable { retry_after } => {
                retry_after
            }
        }
    }
}

/// A destination system's outbound limit, live: shared by every route delivering to it.
#[derive(Debug)]
pub struct OutboundLimiter {
    pub settings: OutboundSettings,
    limiter: Limiter,
    waiting: AtomicUsize,
}

/// A place in the queue; dropping it frees the place.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OutboundLimiter {
    pub fn new(system: &str, settings: &OutboundSettings) -> OutboundLimiter {
        OutboundLimiter {
            settings: settings.clone(),
            limiter: Limiter::new(format!("system:{system}"), settings.rate, settings.cluster.as_ref()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for the delivery's turn, at most `max_wait` and behind at most `queue` others
    /// (a synchronous HTTP request: its sender is waiting).
    pub async fn admit(&self) -> Result<(), Busy> {
        let wait = match self.limiter.check().await {
            Verdict::Allowed { .. } => return Ok(()),
            Verdict::Limited { wait } => wait,
            Verdict::Unavailable => return Err(Busy::Unavailable { retry_after: UNAVAILABLE_PAUSE }),
        };
        let max_wait = self.settings.max_wait;
        if wait > max_wait {
            return Err(Busy::TooLong { retry_after: wait });
        }
        let queue = self.settings.queue;
        if self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < queue).then_some(n + 1)).is_err() {
            return Err(Busy::QueueFull { retry_after: wait.max(self.limiter.rate().quota(1).replenish_interval()) });
        }
        let _place = Place(&self.waiting);
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut wait = wait;
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.limiter.check().await {
                Verdict::Allowed { .. } => return Ok(()),
                Verdict::Limited { wait } => wait,
                Verdict::Unavailable => return Err(Busy::Unavailable { retry_after: UNAVAILABLE_PAUSE }),
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(Busy::TooLong { retry_after: wait });
            }
        }
    }

    /// Waits for the delivery's turn however long it takes (an AMQP delivery: the messages
    /// behind it wait in the broker).
    pub async fn wait(&self) {
        self.limiter.wait().await;
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-11): the quota per second.
pub fn policy_field(policy: &Policy) -> String {
    format!("{};q={};w=1", sf_string(&policy.name), policy.per_second)
}

/// `RateLimit`: units left (`r`) and seconds until the budget is whole again or, when none
/// is left, until the next unit (`t`).
pub fn limit_field(policy: &Policy, remaining: u32, reset: Duration) -> String {
    format!("{};r={remaining};t={}", sf_string(&policy.name), reset.as_millis().div_ceil(1000))
}

/// An RFC 8941 string: quoted, `"` and `\` escaped, nothing outside printable ASCII.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A route's cap on requests in flight. A runtime part: the count is of requests, not of
/// configs, so a reload hands it on (see [`ConcurrencyLimit::with_max`]).
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

    /// The same count under a new cap: requests that started before a reload still hold
    /// their places, and a lowered cap admits no more until enough of them have ended.
    pub fn with_max(&self, max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit { max, in_flight: self.in_flight.clone() }
    }

    /// Requests holding a place now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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
mod tests;
