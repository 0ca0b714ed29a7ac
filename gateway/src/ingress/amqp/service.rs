//! The AMQP side as a pingora background service: one supervised pair of connections per
//! broker, one consumer per route that reads a queue.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use qiao_connectors::amqp::{BasicNackOptions, ConsumeSpec};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Source;
use crate::runtime::SharedRuntime;

/// On shutdown the consumers stop taking deliveries and finish (and ack) those in progress
/// before the connections close: closing first would return them to their queues and
/// deliver them twice.
pub struct AmqpService {
    pub runtime: SharedRuntime,
}

#[async_trait]
impl BackgroundService for AmqpService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let runtime = self.runtime.load_full();
        let (stop_brokers, brokers_stopped) = watch::channel(false);
        let mut brokers = JoinSet::new();
        for broker in runtime.brokers.values() {
            let (broker, stop) = (broker.clone(), brokers_stopped.clone());
            brokers.spawn(async move { broker.run(stop).await });
        }
        let server = &runtime.config.server;
        // Deliveries in progress get `graceful_shutdown_timeout_seconds` to finish and settle
        // (docs/amqp.md#shutdown). pingora ends the process `grace_period_seconds` after
        // SIGTERM whatever the rest says, so the drain also ends a little before that.
        let drain = drain_time(server.graceful_shutdown_timeout_seconds, server.grace_period_seconds);
        let mut consumers = JoinSet::new();
        for route in &runtime.config.routes {
            let Source::Amqp(src) = &route.source else { continue };
            let Some(broker) = runtime.broker(&src.broker).cloned() else { continue };
            let spec = ConsumeSpec {
                queue: src.queue.clone(),
                prefetch: src.prefetch,
                concurrency: src.concurrency,
                tag: format!("qiao.{}.{}", route.name, std::process::id()),
                drain,
            };
            let (shared, name, stop) = (self.runtime.clone(), route.name.clone(), shutdown.clone());
            consumers.spawn(async move {
                broker
                    .consume(
                        spec,
                        move |d| {
                            // Each delivery runs on the runtime current when it arrives, so a
                            // reload that changes the route's map needs no new consumer.
                            let runtime = shared.load_full();
                            let route = runtime.config.route(&name).cloned();
                            async move {
                                match route {
                                    Some(route) => {
                                        super::handle(runtime, route, d).await;
                                    }
                                    // The route left the configuration; its consumer is being
                                    // stopped. The message goes back to the queue.
                                    None => {
                                        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                                    }
                                }
                            }
                        },
                        stop,
                    )
                    .await
            });
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        while consumers.join_next().await.is_some() {}
        let _ = stop_brokers.send(true);
        while brokers.join_next().await.is_some() {}
        tracing::info!("AMQP connections closed");
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
