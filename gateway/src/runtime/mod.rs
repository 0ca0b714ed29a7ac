//! The live parts built from a compiled config: one HTTP client per system (its connection
//! pool and circuit breaker), one supervised broker per AMQP URL, the publishers on them,
//! and the rate limiters of routes and systems (their budgets are state: a reload that
//! leaves a limit's settings alone keeps its budget as it is).
//!
//! A [`Runtime`] pairs a config snapshot with these parts. Each message reads the current
//! runtime once (it sits in an `ArcSwap`), so a reload never splits a message across two
//! configurations. Building from a previous runtime keeps every part whose settings did not
//! change: a system's pool and circuit state survive a reload that only touched a map.
//! [`diff`] says what a change of config rebuilds, starts and stops.

pub mod diff;
pub mod reload;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use qiao_connectors::amqp::{AmqpSink, Broker, BrokerConfig};
use qiao_connectors::http::HttpSink;

use crate::config::{Config, Route, System};
use crate::limits::{ConcurrencyLimit, OutboundLimiter, RouteLimiter};

/// The runtime every request and delivery reads; swapped whole on a reload.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// What one system is reached through.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub http: Option<HttpSink>,
    pub amqp: Option<AmqpSink>,
    /// The system's outbound rate limit, shared by every route that delivers to it.
    pub limit: Option<Arc<OutboundLimiter>>,
}

#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// By [`System::index`].
    links: Vec<Links>,
    /// One supervised pair of connections (consuming, publishing) per broker URL.
    pub brokers: IndexMap<String, Broker>,
    /// By [`Route::index`].
    route_limits: Vec<Option<Arc<RouteLimiter>>>,
    /// By [`Route::index`]: each route's requests in flight under its `concurrency_limit`.
    concurrency: Vec<Option<ConcurrencyLimit>>,
    /// Checks the credentials of callers of routes with `auth:`; built anew on every load,
    /// so a changed JWKS file or key takes effect with the reload.
    pub verifier: crate::auth::Verifier,
}

impl Runtime {
    /// Builds the live parts of `config`, reusing those of `previous` whose settings are
    /// unchanged. Opens no connection: brokers connect when their supervisor runs, HTTP
    /// clients on their first request.
    pub fn build(config: Arc<Config>, previous: Option<&Runtime>) -> Result<Runtime, String> {
        let mut brokers = IndexMap::new();
        for (url, topology) in &config.brokers {
            // A broker is kept whatever its topology: its consumers go on. What the new
            // config adds is declared with the rest on the next connection.
            let broker = match previous.and_then(|p| p.brokers.get(url)) {
                Some(b) => {
                    if b.topology() != *topology {
                        b.extend_topology(topology.clone());
                    }
                    b.clone()
                }
                None => Broker::new(BrokerConfig {
                    url: url.clone(),
                    topology: topology.clone(),
                    reconnect_initial: Duration::from_millis(200),
                    reconnect_max: Duration::from_secs(5),
                }),
            };
            brokers.insert(url.clone(), broker);
        }
        let mut links = Vec::with_capacity(config.systems.len());
        for system in config.systems.values() {
            let before = previous.and_then(|p| p.config.systems.get(&system.name).map(|s| p.links(s)));
            let http = match &system.http {
                None => None,
                Some(settings) => match before.and_then(|b| b.http.as_ref()).filter(|s| s.config() == settings) {
                    Some(kept) => Some(kept.clone()),
                    None => {
                        Some(HttpSink::new(settings.clone()).map_err(|e| format!("system `{}`: {e}", system.name))?)
                    }
                },
            };
            let amqp = system.amqp.as_ref().map(|a| AmqpSink {
                system: system.name.clone(),
                broker: brokers.get(&a.url).cloned().expect("every AMQP system's broker is in the config"),
                exchange: a.exchange.clone(),
                confirm_timeout: a.confirm_timeout,
                declare: a.declare,
            });
            let limit = system.rate_limit.as_ref().map(|settings| {
                match before.and_then(|b| b.limit.as_ref()).filter(|l| l.settings == *settings) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(OutboundLimiter::new(&system.name, settings)),
                }
            });
            links.push(Links { http, amqp, limit });
        }
        let route_limits = config
            .routes
            .iter()
            .map(|route| {
                let settings = route.rate_limit.as_ref()?;
                let before = previous.and_then(|p| {
                    let r = p.config.route(&route.name)?;
                    p.route_limit(r).filter(|l| l.settings == *settings).cloned()
                });
                Some(before.unwrap_or_else(|| Arc::new(RouteLimiter::new(&route.name, settings))))
            })
            .collect();
        // A route's count goes on across a reload whatever its cap: the requests it counts
        // are still running.
        let concurrency = config
            .routes
            .iter()
            .map(|route| {
                let max = route.concurrency?;
                let before = previous.and_then(|p| p.concurrency(p.config.route(&route.name)?));
                Some(match before {
                    Some(kept) => kept.with_max(max),
                    None => ConcurrencyLimit::new(max).expect("the config refuses a cap of 0"),
                })
            })
            .collect();
        let verifier = crate::auth::Verifier::new(config.auth.clone())?;
        Ok(Runtime { config, links, brokers, route_limits, concurrency, verifier })
    }

    /// The inbound rate limit of a route of this runtime's config.
    pub fn route_limit(&self, route: &Route) -> Option<&Arc<RouteLimiter>> {
        self.route_limits.get(route.index).and_then(Option::as_ref)
    }

    /// The concurrency cap of a route of this runtime's config, with its count.
    pub fn concurrency(&self, route: &Route) -> Option<&ConcurrencyLimit> {
        self.concurrency.get(route.index).and_then(Option::as_ref)
    }

    /// The live parts of a system of this runtime's config.
    pub fn links(&self, system: &System) -> &Links {
        &self.links[system.index]
    }

    /// The broker behind an AMQP source or system, by URL.
    pub fn broker(&self, url: &str) -> Option<&Broker> {
        self.brokers.get(url)
    }

    /// Wraps a runtime for sharing between the ingresses.
    pub fn shared(self) -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OfflineEnv;

    fn config(erp_timeout_ms: u64) -> Arc<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("systems.yaml"),
            format!(
                "systems:\n  erp:\n    kind: erp\n    http: {{ base_url: http://127.0.0.1:9, request_timeout_ms: {erp_timeout_ms} }}\n  \
                 wms:\n    kind: wms\n    http: {{ base_url: http://127.0.0.1:9 }}\n    \
                 amqp: {{ url: amqp://guest:guest@127.0.0.1:5672/%2f, exchange: t.events }}\n"
            ),
        )
        .unwrap();
        Arc::new(crate::config::load(dir.path(), &OfflineEnv).unwrap())
    }

    #[test]
    fn unchanged_systems_keep_their_clients_and_changed_ones_get_new() {
        let first = Runtime::build(config(1000), None).unwrap();
        let second = Runtime::build(config(2000), Some(&first)).unwrap();
        let erp = |r: &Runtime| r.links(&r.config.systems["erp"]).http.clone().unwrap();
        let wms = |r: &Runtime| r.links(&r.config.systems["wms"]).http.clone().unwrap();
        assert!(!erp(&first).same_client(&erp(&second)), "the ERP's timeout changed: a new client");
        assert!(wms(&first).same_client(&wms(&second)), "the WMS did not change: same pool and circuit");
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert!(first.brokers[url].same_broker(&second.brokers[url]), "a broker in both configs is kept");
    }

    fn limited(route_rate: u32, erp_rate: u32, path: &str) -> Arc<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("systems.yaml"),
            format!(
                "systems:\n  erp:\n    kind: erp\n    http: {{ base_url: http://127.0.0.1:9 }}\n    \
                 rate_limit: {{ per_second: {erp_rate}, burst: 1 }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("routes.yaml"),
            format!(
                "routes:\n  r:\n    from: {{ http: {{ path: /r }} }}\n    map: {{ a: b }}\n    \
                 rate_limit: {{ per_second: {route_rate}, burst: 1 }}\n    to: {{ system: erp, path: {path} }}\n"
            ),
        )
        .unwrap();
        Arc::new(crate::config::load(dir.path(), &OfflineEnv).unwrap())
    }

    /// Limiters are state: a reload that changes something else keeps a drained budget
    /// drained; one that changes the limit starts it anew.
    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_the_budgets_of_unchanged_limits() {
        use crate::limits::Verdict;
        let route = |r: &Runtime| r.route_limit(&r.config.routes[0]).unwrap().clone();
        let erp = |r: &Runtime| r.links(&r.config.systems["erp"]).limit.clone().unwrap();
        let first = Runtime::build(limited(1, 1, "/a"), None).unwrap();
        assert!(matches!(route(&first).check(None, None).await.0, Verdict::Allowed { .. }));
        assert!(matches!(route(&first).check(None, None).await.0, Verdict::Limited { .. }));
        assert_eq!(erp(&first).admit().await, Ok(()));

        let second = Runtime::build(limited(1, 1, "/b"), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&route(&first), &route(&second)));
        assert!(matches!(route(&second).check(None, None).await.0, Verdict::Limited { .. }), "still drained");
        assert!(Arc::ptr_eq(&erp(&first), &erp(&second)), "the ERP's outbound budget is kept too");

        let third = Runtime::build(limited(2, 3, "/b"), Some(&second)).unwrap();
        assert!(
            matches!(route(&third).check(None, None).await.0, Verdict::Allowed { .. }),
            "a new limit, a new budget"
        );
        assert!(!Arc::ptr_eq(&erp(&second), &erp(&third)));
    }

    fn capped(max: usize, path: &str) -> Arc<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("routes.yaml"),
            format!(
                "systems:\n  erp:\n    kind: erp\n    http: {{ base_url: http://127.0.0.1:9 }}\n\
                 routes:\n  r:\n    from: {{ http: {{ path: /r }} }}\n    map: {{ a: b }}\n    \
                 concurrency_limit: {max}\n    to: {{ system: erp, path: {path} }}\n"
            ),
        )
        .unwrap();
        Arc::new(crate::config::load(dir.path(), &OfflineEnv).unwrap())
    }

    /// Requests that started before a reload still hold their places after it, whether the
    /// reload changed the cap or something else: a reload must not let a route take on
    /// twice its cap.
    #[test]
    fn a_reload_keeps_the_requests_in_flight_under_the_concurrency_cap() {
        fn cap(r: &Runtime) -> &ConcurrencyLimit {
            r.concurrency(&r.config.routes[0]).unwrap()
        }
        let first = Runtime::build(capped(2, "/a"), None).unwrap();
        let one = cap(&first).try_acquire().unwrap();
        let _two = cap(&first).try_acquire().unwrap();
        assert!(cap(&first).try_acquire().is_none());

        let second = Runtime::build(capped(2, "/b"), Some(&first)).unwrap();
        assert_eq!(cap(&second).in_flight(), 2);
        assert!(cap(&second).try_acquire().is_none(), "still full");

        let third = Runtime::build(capped(3, "/b"), Some(&second)).unwrap();
        let limit = cap(&third);
        let three = limit.try_acquire().expect("a raised cap has one more place");
        assert!(limit.try_acquire().is_none());
        drop((one, three));
        assert_eq!(limit.in_flight(), 1, "places are given back to the one count");
        assert!(limit.try_acquire().is_some());
    }
}
