//! Rate limits: a route's inbound limit, a system's outbound limit, and the Redis part that
//! shares either between replicas.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde_saphyr::Spanned;

use super::super::Place;
use super::super::raw::{RawCluster, RawRateLimit, RawSystemRateLimit};
use super::Ctx;
use crate::limits::{ClusterSettings, InboundSettings, OnUnreachable, OutboundSettings, Rate};

fn compile_rate(cx: &mut Ctx<'_>, place: &Place, what: &str, per_second: u32, burst: Option<u32>) -> Option<Rate> {
    if per_second == 0 {
        cx.error(place.clone(), format!("`{what}per_second` must be at least 1"), None);
        return None;
    }
    // `burst: 0` has always counted as 1.
    Some(Rate { per_second, burst: burst.unwrap_or(per_second).max(1) })
}

fn cluster(cx: &mut Ctx<'_>, file: &Path, place: &Place, raw: &RawCluster) -> Option<ClusterSettings> {
    let redis = cx.env_value(file, &raw.redis)?;
    if let Err(e) = crate::limits::valid_redis_url(&redis) {
        cx.error(
            Place::at(file, &raw.redis.referenced),
            format!("`cluster.redis` is not a Redis URL: {e}"),
            Some("write `redis://host:6379` (or `redis://host:6379/db`)".into()),
        );
        return None;
    }
    let on_unreachable = match raw.on_unreachable.as_ref().map(|t| t.value.as_str()) {
        None | Some("local") => OnUnreachable::Local,
        Some("refuse") => OnUnreachable::Refuse,
        Some(other) => {
            let t = raw.on_unreachable.as_ref().expect("set");
            cx.error(
                Place::at(file, &t.referenced),
                format!("`on_unreachable: {other}`: it is `local` or `refuse`"),
                None,
            );
            return None;
        }
    };
    // Long enough that a busy box's Redis round trip (tens of ms at its worst under load) does
    // not fall back; short beside any request timeout.
    let timeout_ms = raw.timeout_ms.unwrap_or(150);
    if timeout_ms == 0 {
        cx.error(place.clone(), "`cluster.timeout_ms` must be at least 1", None);
        return None;
    }
    let replicas = raw.replicas.unwrap_or(1);
    if replicas == 0 {
        cx.error(place.clone(), "`cluster.replicas` must be at least 1", None);
        return None;
    }
    Some(ClusterSettings { redis, timeout: Duration::from_millis(timeout_ms), replicas, on_unreachable })
}

/// A route's `rate_limit`; `Err` when it is broken (already reported).
pub(super) fn inbound(
    cx: &mut Ctx<'_>,
    file: &Path,
    raw: &Spanned<RawRateLimit>,
    amqp: bool,
) -> Result<InboundSettings, ()> {
    let place = Place::at(file, &raw.referenced);
    let r = &raw.value;
    let rate = compile_rate(cx, &place, "rate_limit.", r.per_second, r.burst).ok_or(())?;
    let per_client = match r.per.as_ref().map(|p| p.value.as_str()) {
        None | Some("route") => false,
        Some("client") => true,
        Some(other) => {
            let p = Place::at(file, &r.per.as_ref().expect("set").referenced);
            cx.error(p, format!("`per: {other}`: a limit is per `route` or per `client`"), None);
            return Err(());
        }
    };
    if per_client && amqp {
        cx.error(
            place,
            "`per: client` is for HTTP routes",
            Some("messages from a queue have no client; the route's limit is per `route`".into()),
        );
        return Err(());
    }
    if !per_client && !r.clients.is_empty() {
        cx.error(place, "`rate_limit.clients` needs `per: client`", None);
        return Err(());
    }
    let mut clients = IndexMap::new();
    for (name, c) in &r.clients {
        let p = Place::at(file, &name.referenced);
        let what = format!("rate_limit.clients.{}.", name.value);
        clients.insert(name.value.clone(), compile_rate(cx, &p, &what, c.per_second, c.burst).ok_or(())?);
    }
    let cluster = match &r.cluster {
        Some(c) => Some(cluster(cx, file, &place, c).ok_or(())?),
        None => None,
    };
    Ok(InboundSettings { rate, per_client, clients, cluster })
}

/// A system's `rate_limit`.
pub(super) fn outbound(cx: &mut Ctx<'_>, file: &Path, raw: &Spanned<RawSystemRateLimit>) -> Option<OutboundSettings> {
    let place = Place::at(file, &raw.referenced);
    let r = &raw.value;
    let rate = compile_rate(cx, &place, "rate_limit.", r.per_second, r.burst)?;
    let cluster = match &r.cluster {
        Some(c) => Some(cluster(cx, file, &place, c)?),
        None => None,
    };
    Some(OutboundSettings {
        rate,
        max_wait: Duration::from_millis(r.max_wait_ms.unwrap_or(1000)),
        queue: r.queue.unwrap_or(100),
        cluster,
    })
}
