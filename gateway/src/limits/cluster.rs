//! Cluster-wide budgets: GCRA in Redis, so that several replicas together allow the
//! configured rate. One key per budget holds its theoretical arrival time (TAT), in
//! microseconds of Redis's own clock (`TIME`), so that the replicas' clocks do not matter.
//! The script runs atomically (EVALSHA, loaded on first use); a check that Redis does not
//! answer within the limit's timeout fails, and the caller falls back as configured. After a
//! failure Redis is left alone for a second, so that an outage costs one timeout a second
//! rather than one per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ClusterSettings, Rate, Verdict};

/// GCRA over one key. KEYS[1]: the budget; ARGV: emission interval (µs), burst.
/// Returns `{1, remaining, reset_us}` when allowed, `{0, wait_us, 0}` when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now, 0}
end
-- As an integer: Redis would write a Lua number with 14 digits, losing microseconds.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((tolerance - (new_tat - now)) / interval), new_tat - now}
";

/// Whether `url` is a Redis URL the client can use (checked at load; nothing connects).
pub fn valid_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| e.to_string())
}

const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub struct Store {
    url: String,
    timeout: Duration,
    /// Made on first use, inside the runtime that serves it; reconnects by itself.
    conn: OnceLock<Option<ConnectionManager>>,
    /// Milliseconds (since the process's first check) before which Redis is not asked.
    pause_until: AtomicU64,
    script: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("timeout", &self.timeout).finish()
    }
}

impl Store {
    pub fn new(settings: &ClusterSettings) -> Store {
        Store {
            url: settings.redis.clone(),
            timeout: settings.timeout,
            conn: OnceLock::new(),
            pause_until: AtomicU64::new(0),
            script: redis::Script::new(GCRA),
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.conn
            .get_or_init(|| {
                let client = redis::Client::open(self.url.as_str()).ok()?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                match ConnectionManager::new_lazy_with_config(client, config) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use Redis for a cluster-wide limit; the fallback applies");
                        None
                    }
                }
            })
            .clone()
    }

    /// The shared budget's verdict for one unit; `Err` when Redis did not answer in time.
    pub async fn check(&self, key: &str, rate: Rate) -> Result<Verdict, ()> {
        if since_start() < self.pause_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let mut conn = self.connection().ok_or(())?;
        let interval_us = 1_000_000u64.div_ceil(u64::from(rate.per_second.max(1)));
        let mut call = self.script.key(key);
        call.arg(interval_us).arg(rate.burst.max(1));
        let answer: Result<redis::RedisResult<(i64, i64, i64)>, _> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((1, remaining, reset_us))) => Ok(Verdict::Allowed {
                remaining: remaining.max(0) as u32,
                reset: Duration::from_micros(reset_us.max(0) as u64),
            }),
            Ok(Ok((_, wait_us, _))) => Ok(Verdict::Limited { wait: Duration::from_micros(wait_us.max(0) as u64) }),
            Ok(Err(e)) => {
                self.pause(&e.to_string());
                Err(())
            }
            Err(_) => {
                self.pause(&format!("no answer within {} ms", self.timeout.as_millis()));
                Err(())
            }
        }
    }

    fn pause(&self, why: &str) {
        let until = since_start() + PAUSE_AFTER_FAILURE.as_millis() as u64;
        let before = self.pause_until.swap(until, Ordering::Relaxed);
        // At most one line a second, not one per request.
        if before <= since_start() {
            tracing::warn!(error = why, "Redis did not answer a rate limit check; the fallback applies");
        }
    }
}
