//! Assembling and running the pingora server: the HTTP edge and the admin listener.
//!
//! `main` stays synchronous: pingora creates a tokio runtime per service and panics inside
//! one. Connector clients are created with the config and used from the edge's runtime;
//! see docs/architecture.md ("Where connections live").

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use qiao_connectors::amqp::ConsumeSpec;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::config::{Config, Source};
use crate::edge::{Edge, SharedConfig};

/// Runs the AMQP side: one supervised pair of connections per broker, one consumer per route that
/// reads a queue. On shutdown the consumers stop taking deliveries and finish (and ack)
/// those in progress before the connections close: closing first would return them to
/// their queues and deliver them twice.
pub struct AmqpService {
    pub config: SharedConfig,
}

#[async_trait]
impl BackgroundService for AmqpService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let config = self.config.load_full();
        let (stop_brokers, brokers_stopped) = watch::channel(false);
        let mut brokers = JoinSet::new();
        for broker in config.brokers.values() {
            let (broker, stop) = (broker.clone(), brokers_stopped.clone());
            brokers.spawn(async move { broker.run(stop).await });
        }
        // Deliveries in progress get `graceful_shutdown_timeout_seconds` to finish and settle
        // (docs/amqp.md#shutdown). pingora ends the process `grace_period_seconds` after
        // SIGTERM whatever the rest says, so the drain also ends a little before that.
        let drain = drain_time(config.server.graceful_shutdown_timeout_seconds, config.server.grace_period_seconds);
        let mut consumers = JoinSet::new();
        for route in &config.routes {
            let Source::Amqp(src) = &route.source else { continue };
            let spec = ConsumeSpec {
                queue: src.queue.clone(),
                prefetch: src.prefetch,
                concurrency: src.concurrency,
                tag: format!("qiao.{}.{}", route.name, std::process::id()),
                drain,
            };
            let (broker, route, stop) = (src.broker.clone(), route.clone(), shutdown.clone());
            consumers.spawn(async move {
                broker
                    .consume(
                        spec,
                        move |d| {
                            let r = route.clone();
                            async move {
                                crate::consume::handle(r, d).await;
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

/// Fails early, with the address in the message, when a listener cannot bind (pingora
/// would panic later with a less helpful one).
fn check_bind(what: &str, addr: &str) -> Result<(), String> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// Runs until SIGTERM (graceful: serves `grace_period_seconds`, then lets in-flight requests
/// finish for `graceful_shutdown_timeout_seconds`) or SIGINT (fast).
pub fn serve(config: Config) -> Result<(), String> {
    let settings = config.server.clone();
    check_bind("ingress", &settings.listen)?;
    check_bind("admin", &settings.admin_listen)?;
    // Held until the server stops; dropping it flushes the spans still queued.
    let telemetry = crate::telemetry::init(&settings.telemetry.clone().with_env())?;
    match &telemetry.exporting_to {
        Some(endpoint) => tracing::info!(%endpoint, "exporting traces over OTLP"),
        None => tracing::info!("trace export is off (no OTLP endpoint): trace context is still propagated"),
    }

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let routes = config.routes.len();
    let systems = config.systems.len();
    let shared = Arc::new(ArcSwap::from_pointee(config));
    let mut edge = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge { config: shared.clone() },
        "qiao-edge",
    );
    edge.add_tcp(&settings.listen);
    let has_brokers = !shared.load().brokers.is_empty();
    let mut admin = Service::new("qiao-admin".to_string(), Admin { config: shared.clone(), started: Instant::now() });
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin_listen);
    server.add_service(edge);
    server.add_service(admin);
    if has_brokers {
        let mut amqp = background_service("qiao-amqp", AmqpService { config: shared });
        amqp.threads = Some(settings.threads);
        server.add_service(amqp);
    }

    tracing::info!(
        listen = %settings.listen,
        admin_listen = %settings.admin_listen,
        threads = settings.threads,
        routes,
        systems,
        "qiao is serving"
    );
    server.run(RunArgs::default());
    drop(telemetry);
    tracing::info!("qiao stopped");
    Ok(())
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
