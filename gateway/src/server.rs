//! Assembling and running the pingora server: the HTTP edge and the admin listener.
//!
//! `main` stays synchronous: pingora creates a tokio runtime per service and panics inside
//! one. The runtime layer builds the connector clients from the config before any service
//! starts; they are used from the edge's runtime; see docs/architecture.md ("Where
//! connections live").

use std::sync::Arc;
use std::time::Instant;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::ingress::amqp::AmqpService;
use crate::runtime::Runtime;
use crate::runtime::reload::{ReloadService, Reloader};

/// Fails early, with the address in the message, when a listener cannot bind (pingora
/// would panic later with a less helpful one).
fn check_bind(what: &str, addr: &str) -> Result<(), String> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// pingora builds each service's listeners in that service's thread and panics there when a
/// port is taken, leaving the rest of the process running: an admin listener that says
/// ready beside an ingress that does not exist. The port was free at `check_bind`, but
/// another process can take it before pingora binds; then Qiao exits, saying why.
fn exit_when_a_listener_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Failed to build listeners") {
            tracing::error!(detail = message, "cannot listen; stopping");
            eprintln!("qiao: cannot listen: {message}");
            std::process::exit(1);
        }
        default(info);
    }));
}

/// How the served configuration is reloaded: from which directory, how, and whether on
/// every change of a file there.
pub struct Reload {
    pub dir: std::path::PathBuf,
    pub loader: crate::runtime::reload::Loader,
    pub watch: bool,
}

/// Runs until SIGTERM (graceful: serves `grace_period_seconds`, then lets in-flight requests
/// finish for `graceful_shutdown_timeout_seconds`) or SIGINT (fast).
pub fn serve(config: Config, reload: Reload) -> Result<(), String> {
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
    let shared = Runtime::build(Arc::new(config), None)?.shared();
    let (reloader, updates) = Reloader::new(&reload.dir, reload.loader, shared.clone());
    let reloader = Arc::new(reloader);
    let mut edge = crate::ingress::http::service(&server.configuration, shared.clone());
    edge.add_tcp(&settings.listen);
    let admin_token = std::env::var("QIAO_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let mut admin = Service::new(
        "qiao-admin".to_string(),
        Admin { runtime: shared.clone(), started: Instant::now(), reloader: reloader.clone(), token: admin_token },
    );
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin_listen);
    server.add_service(edge);
    server.add_service(admin);
    // Always there: a reload may bring the first AMQP route.
    let mut amqp = background_service("qiao-amqp", AmqpService { runtime: shared, updates });
    amqp.threads = Some(settings.threads);
    server.add_service(amqp);
    let mut reloads = background_service("qiao-reload", ReloadService { reloader, watch: reload.watch });
    reloads.threads = Some(1);
    server.add_service(reloads);

    tracing::info!(
        listen = %settings.listen,
        admin_listen = %settings.admin_listen,
        threads = settings.threads,
        routes,
        systems,
        "qiao is serving"
    );
    exit_when_a_listener_fails();
    server.run(RunArgs::default());
    drop(telemetry);
    tracing::info!("qiao stopped");
    Ok(())
}
