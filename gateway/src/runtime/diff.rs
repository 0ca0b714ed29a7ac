//! What a change of configuration does to the live parts: which systems' clients are
//! rebuilt, which brokers reconnect, which consumers start, stop or restart, and which are
//! left alone. A reload applies exactly this; `qiao check --against` style tools and the
//! reload log print it.

use std::fmt;

use crate::config::{Config, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the new config: built (or started).
    Added,
    /// Only in the old config: dropped (or stopped).
    Removed,
    /// In both, with different settings: built anew (or restarted).
    Rebuilt,
    /// A broker in both whose exchanges, queues or bindings changed: its connections are
    /// kept and the new topology is declared.
    Redeclared,
    /// In both, the same: kept as it is, with its state.
    Kept,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Rebuilt => "rebuilt",
            Change::Redeclared => "redeclared",
            Change::Kept => "kept",
        }
    }
}

/// The changes between two configs, each list in the order of the new config (removed
/// items last).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// HTTP clients, by system name.
    pub systems: Vec<(String, Change)>,
    /// Broker connections, by URL (passwords hidden).
    pub brokers: Vec<(String, Change)>,
    /// Consumers, by the name of the route that reads the queue.
    pub consumers: Vec<(String, Change)>,
}

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Changes {
        let mut changes = Changes::default();
        for (name, system) in &new.systems {
            let change = match old.systems.get(name) {
                None => Change::Added,
                Some(before) if before.http == system.http && before.proxy == system.proxy => Change::Kept,
                Some(_) => Change::Rebuilt,
            };
            changes.systems.push((name.clone(), change));
        }
        changes.systems.extend(removed(old.systems.keys(), |n| new.systems.contains_key(n)));

        let display = |url: &str| qiao_connectors::amqp::redact_url(url);
        for (url, topology) in &new.brokers {
            let change = match old.brokers.get(url) {
                None => Change::Added,
                Some(before) if before == topology => Change::Kept,
                Some(_) => Change::Redeclared,
            };
            changes.brokers.push((display(url), change));
        }
        changes
            .brokers
            .extend(removed(old.brokers.keys(), |u| new.brokers.contains_key(u)).map(|(u, c)| (display(&u), c)));

        let consumers = |config: &Config| -> Vec<(String, (String, String, u16, usize))> {
            config
                .routes
                .iter()
                .filter_map(|r| match &r.source {
                    Source::Amqp(src) => {
                        let (b, q, p, c) = src.consumer_settings();
                        Some((r.name.to_string(), (b.to_string(), q.to_string(), p, c)))
                    }
                    Source::Http { .. } => None,
                })
                .collect()
        };
        let (before, after) = (consumers(old), consumers(new));
        for (route, settings) in &after {
            let change = match before.iter().find(|(r, _)| r == route) {
                None => Change::Added,
                // A consumer's handler reads the route from the current snapshot for every
                // delivery, so a changed map or schema needs no restart; a changed queue,
                // broker, prefetch or concurrency does.
                Some((_, s)) if s == settings => Change::Kept,
                Some(_) => Change::Rebuilt,
            };
            changes.consumers.push((route.clone(), change));
        }
        changes.consumers.extend(removed(before.iter().map(|(r, _)| r), |r| after.iter().any(|(a, _)| a == r)));
        changes
    }

    /// Nothing but kept items.
    pub fn is_empty(&self) -> bool {
        [&self.systems, &self.brokers, &self.consumers].iter().all(|l| l.iter().all(|(_, c)| *c == Change::Kept))
    }
}

fn removed<'a>(
    old: impl Iterator<Item = &'a String> + 'a,
    still_there: impl Fn(&String) -> bool + 'a,
) -> impl Iterator<Item = (String, Change)> + 'a {
    old.filter(move |n| !still_there(n)).map(|n| (n.clone(), Change::Removed))
}

impl fmt::Display for Changes {
    /// `systems: erp rebuilt, wms kept; consumers: mes-completion added`, without kept items.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [("systems", &self.systems), ("brokers", &self.brokers), ("consumers", &self.consumers)] {
            let changed: Vec<String> =
                list.iter().filter(|(_, c)| *c != Change::Kept).map(|(n, c)| format!("{n} {}", c.as_str())).collect();
            if !changed.is_empty() {
                parts.push(format!("{what}: {}", changed.join(", ")));
            }
        }
        if parts.is_empty() { f.write_str("nothing to rebuild") } else { f.write_str(&parts.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OfflineEnv;

    const SYSTEMS: &str = "systems:\n  erp:\n    kind: erp\n    http: { base_url: http://127.0.0.1:9 }\n  \
        mes:\n    kind: mes\n    amqp: { url: amqp://guest:guest@127.0.0.1:5672/%2f, exchange: t.events }\n";

    fn route(name: &str, queue: &str, prefetch: u16, target: &str) -> String {
        format!(
            "routes:\n  {name}:\n    from: {{ amqp: {{ system: mes, queue: {queue}, prefetch: {prefetch} }} }}\n    \
             map: {{ {target}: id }}\n    to: [ {{ system: erp, path: /x }} ]\n"
        )
    }

    fn load(systems: &str, routes: &[String]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("systems.yaml"), systems).unwrap();
        for (i, r) in routes.iter().enumerate() {
            std::fs::write(dir.path().join(format!("r{i}.yaml")), r).unwrap();
        }
        crate::config::load(dir.path(), &OfflineEnv).unwrap()
    }

    #[test]
    fn a_changed_map_restarts_nothing() {
        let old = load(SYSTEMS, &[route("a", "q.a", 8, "FBillNo")]);
        let new = load(SYSTEMS, &[route("a", "q.a", 8, "FNumber")]);
        let changes = Changes::between(&old, &new);
        assert!(changes.is_empty(), "{changes}");
        assert_eq!(changes.to_string(), "nothing to rebuild");
    }

    #[test]
    fn consumers_start_stop_and_restart_by_their_settings() {
        let old = load(SYSTEMS, &[route("a", "q.a", 8, "x"), route("b", "q.b", 8, "x"), route("c", "q.c", 8, "x")]);
        let new = load(SYSTEMS, &[route("a", "q.a", 8, "x"), route("b", "q.b", 16, "x"), route("d", "q.d", 8, "x")]);
        let changes = Changes::between(&old, &new);
        let c: Vec<(&str, Change)> = changes.consumers.iter().map(|(r, c)| (r.as_str(), *c)).collect();
        assert_eq!(
            c,
            [("a", Change::Kept), ("b", Change::Rebuilt), ("d", Change::Added), ("c", Change::Removed)],
            "{changes}"
        );
        assert_eq!(changes.brokers, [("amqp://guest:***@127.0.0.1:5672/%2f".to_string(), Change::Redeclared)]);
        assert!(changes.systems.iter().all(|(_, c)| *c == Change::Kept));
    }

    #[test]
    fn a_system_whose_settings_changed_is_rebuilt() {
        let old = load(SYSTEMS, &[]);
        let new = load(&SYSTEMS.replace("http://127.0.0.1:9 }", "http://127.0.0.1:9, request_timeout_ms: 99 }"), &[]);
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.systems, [("erp".to_string(), Change::Rebuilt), ("mes".to_string(), Change::Kept)]);
        assert_eq!(changes.to_string(), "systems: erp rebuilt");
    }
}
