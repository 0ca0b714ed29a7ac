//! Assembling and running the pingora server: the HTTP edge and the admin listener.
//!
//! `main` stays synchronous: pingora creates a tokio runtime per service and panics inside
//! one. Connector clients are created with the config and used from the edge's runtime;
//! see docs/architecture.md ("Where connections live").

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::edge::Edge;

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
    let mut admin = Service::new("qiao-admin".to_string(), Admin { config: shared, started: Instant::now() });
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin_listen);
    server.add_service(edge);
    server.add_service(admin);

    tracing::info!(
        listen = %settings.listen,
        admin_listen = %settings.admin_listen,
        threads = settings.threads,
        routes,
        systems,
        "qiao is serving"
    );
    server.run(RunArgs::default());
    tracing::info!("qiao stopped");
    Ok(())
}
