//! The AMQP side as a pingora background service: one supervised pair of connections per
//! broker, one consumer per route that reads a queue, kept in step with the configuration.
//!
//! A reload sends the new runtime here. Consumers whose queue, broker, prefetch and
//! concurrency did not change keep consuming (their deliveries read the current runtime, so a
//! changed map applies at once); a removed route's consumer stops taking deliveries, finishes
//! those in progress and closes its channel, which hands the prefetched rest back to the
//! queue; a new route's consumer starts. A broker no route uses any more is closed once the
//! consumers on it have drained.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use qiao_connectors::amqp::{Broker, ConsumeSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Route, Source};
use crate::runtime::{Runtime, SharedRuntime};

/// On shutdown the consumers stop taking deliveries and finish (and ack) those in progress
/// before the connections close: closing first would return them to their queues and
/// deliver them twice.
pub struct AmqpService {
    /// The runtime deliveries run on.
    pub runtime: SharedRuntime,
    /// The runtime to run consumers for; a reload sends a new one.
    pub updates: watch::Receiver<Arc<Runtime>>,
}

#[async_trait]
impl BackgroundService for AmqpService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut updates = self.updates.clone();
        let mut supervisor = Supervisor {
            shared: self.runtime.clone(),
            brokers: HashMap::new(),
            consumers: HashMap::new(),
            draining: Vec::new(),
        };
        supervisor.apply(&updates.borrow_and_update().clone());
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let runtime = updates.borrow_and_update().clone();
                    supervisor.apply(&runtime);
                }
            }
        }
        supervisor.stop_all().await;
        tracing::info!("AMQP connections closed");
    }
}

/// A consumer's settings: when they are the same in a new config, it keeps running.
type Settings = (String, String, u16, usize);

struct Consumer {
    settings: Settings,
    progress: Arc<super::progress::Progress>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct RunningBroker {
    broker: Broker,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Supervisor {
    shared: SharedRuntime,
    brokers: HashMap<String, RunningBroker>,
    consumers: HashMap<String, Consumer>,
    /// Consumers told to stop, still draining, by broker URL.
    draining: Vec<(String, JoinHandle<()>)>,
}

impl Supervisor {
    fn apply(&mut self, runtime: &Arc<Runtime>) {
        for (url, broker) in &runtime.brokers {
            let running = self.brokers.get(url).is_some_and(|b| b.broker.same_broker(broker));
            if !running {
                let (stop, stopped) = watch::channel(false);
                let b = broker.clone();
                let task = tokio::spawn(async move { b.run(stopped).await });
                if let Some(old) =
                    self.brokers.insert(url.clone(), RunningBroker { broker: broker.clone(), stop, task })
                {
                    let _ = old.stop.send(true);
                }
            }
        }

        let drain = drain_time(
            runtime.config.server.graceful_shutdown_timeout_seconds,
            runtime.config.server.grace_period_seconds,
        );
        let mut wanted: HashMap<String, (&Arc<Route>, Settings)> = HashMap::new();
        for route in &runtime.config.routes {
            if let Source::Amqp(src) = &route.source {
                let (b, q, p, c) = src.consumer_settings();
                wanted.insert(route.name.to_string(), (route, (b.to_string(), q.to_string(), p, c)));
            }
        }
        let names: Vec<String> = self.consumers.keys().cloned().collect();
        for name in names {
            let keep = wanted.get(&name).is_some_and(|(_, s)| *s == self.consumers[&name].settings);
            if !keep {
                let c = self.consumers.remove(&name).expect("listed");
                super::progress::unregister(&name, &c.progress);
                tracing::info!(route = %name, queue = %c.settings.1, "stopping the consumer");
                let _ = c.stop.send(true);
                self.draining.push((c.settings.0.clone(), c.task));
            }
        }
        for (name, (route, settings)) in wanted {
            if self.consumers.contains_key(&name) {
                continue;
            }
            let Some(broker) = runtime.broker(&settings.0).cloned() else { continue };
            let spec = ConsumeSpec {
                queue: settings.1.clone(),
                prefetch: settings.2,
                concurrency: settings.3,
                tag: format!("qiao.{name}.{}", std::process::id()),
                drain,
            };
            let (stop, stopped) = watch::channel(false);
            // Each delivery runs on the runtime current when it arrives, so that a reload
            // that changes the route's map needs no new consumer; while the route's consumer
            // settings are not the ones this consumer started with (it is being stopped or
            // replaced), on the runtime it started with.
            let (shared, own, route, mine) = (self.shared.clone(), runtime.clone(), route.clone(), settings.clone());
            let progress = super::progress::register(&name, settings.3);
            let slots = progress.clone();
            let handler = move |d| {
                let busy = slots.begin();
                let now = shared.load_full();
                let (runtime, route) = match now.config.route(&route.name) {
                    Some(r) if same_settings(r, &mine) => (now.clone(), r.clone()),
                    _ => (own.clone(), route.clone()),
                };
                async move {
                    super::handle(runtime, route, d).await;
                    drop(busy);
                }
            };
            let task = tokio::spawn(async move { broker.consume(spec, handler, stopped).await });
            self.consumers.insert(name, Consumer { settings, progress, stop, task });
        }

        // Brokers no route or system uses any more close once their consumers drained.
        let gone: Vec<String> = self.brokers.keys().filter(|u| !runtime.brokers.contains_key(*u)).cloned().collect();
        for url in gone {
            let b = self.brokers.remove(&url).expect("listed");
            let (drained, rest): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.draining).into_iter().partition(|(u, _)| *u == url);
            self.draining = rest;
            tokio::spawn(async move {
                for (_, t) in drained {
                    let _ = t.await;
                }
                let _ = b.stop.send(true);
                let _ = b.task.await;
            });
        }
    }

    async fn stop_all(self) {
        for c in self.consumers.values() {
            let _ = c.stop.send(true);
        }
        for c in self.consumers.into_values() {
            let _ = c.task.await;
        }
        for (_, t) in self.draining {
            let _ = t.await;
        }
        for b in self.brokers.values() {
            let _ = b.stop.send(true);
        }
        for b in self.brokers.into_values() {
            let _ = b.task.await;
        }
    }
}

fn same_settings(route: &Route, settings: &Settings) -> bool {
    match &route.source {
        Source::Amqp(src) => {
            let (b, q, p, c) = src.consumer_settings();
            (b, q, p, c) == (settings.0.as_str(), settings.1.as_str(), settings.2, settings.3)
        }
        Source::Http { .. } => false,
    }
}

/// How long consumers wait for their deliveries in progress at shutdown: the configured
/// timeout (at least 1 s), but ending 250 ms before the process does.
fn drain_time(graceful_shutdown_timeout_seconds: u64, grace_period_seconds: u64) -> Duration {
    let wanted = Duration::from_secs(graceful_shutdown_timeout_seconds.max(1));
    let cut_off = Duration::from_secs(grace_period_seconds).saturating_sub(Duration::from_millis(250));
    wanted.min(cut_off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_ends_before_the_process_does() {
        assert_eq!(drain_time(5, 5), Duration::from_millis(4750));
        assert_eq!(drain_time(3, 10), Duration::from_secs(3));
        assert_eq!(drain_time(0, 10), Duration::from_secs(1));
        assert_eq!(drain_time(30, 2), Duration::from_millis(1750));
        assert_eq!(drain_time(5, 1), Duration::from_millis(750));
        assert_eq!(drain_time(5, 0), Duration::ZERO);
    }
}
