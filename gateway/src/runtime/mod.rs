//! The live parts built from a compiled config: one HTTP client per system (its connection
//! pool and circuit breaker), one supervised broker per AMQP URL, the publishers on them.
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

use crate::config::{Config, System};

/// The runtime every request and delivery reads; swapped whole on a reload.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// What one system is reached through.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub http: Option<HttpSink>,
    pub amqp: Option<AmqpSink>,
}

#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// By [`System::index`].
    links: Vec<Links>,
    /// One supervised pair of connections (consuming, publishing) per broker URL.
    pub brokers: IndexMap<String, Broker>,
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
            links.push(Links { http, amqp });
        }
        let verifier = crate::auth::Verifier::new(config.auth.clone())?;
        Ok(Runtime { config, links, brokers, verifier })
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
}
