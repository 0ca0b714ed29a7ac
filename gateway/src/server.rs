//! Assembling and running the pingora server: the HTTP edge and the admin listener.
//!
//! `main` stays synchronous: pingora creates a tokio runtime per service and panics inside
//! one. The runtime layer builds the connector clients from the config before any service
//! starts; they are used from the edge's runtime; see docs/architecture.md ("Where
//! connections live").

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, AdminApp};
use crate::config::Config;
use crate::ingress::amqp::AmqpService;
use crate::runtime::Runtime;
use crate::runtime::reload::{ReloadService, Reloader};

/// Fails early, with the address in the message, when a listener cannot bind (pingora
/// would panic later with a less helpful one).
fn check_bind(what: &str, addr: &str) -> Result<(), String> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// pingora's signals, with a drain before a graceful stop or upgrade. SIGTERM first drains for
/// `drain_seconds`: every answer says `Connection: close` and `/readyz` answers 503, while the
/// listeners still accept (a load balancer may still send for a moment). Only then does pingora
/// close the listeners, and (a moment later, `EdgeApp::cleanup`) drop the keep-alive
/// connections that wait for a request — which clients told to close have closed by then:
/// pingora alone drops them at once, resetting a request a client had just written on one. SIGQUIT drains the same way, then hands the
/// listening sockets to a process started with `--upgrade` (pingora's upgrade) and stops
/// gracefully. SIGINT stops at once, also during a drain.
struct Signals {
    drain: Duration,
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot listen for signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                // The new process accepts once the sockets are handed over; until then this one
                // serves, telling keep-alive clients to reconnect (to the new one, then).
                crate::ingress::http::start_draining();
                tracing::info!(drain_seconds = self.drain.as_secs(), "SIGQUIT: draining, then handing the listening sockets over");
                tokio::select! {
                    _ = tokio::time::sleep(self.drain) => ShutdownSignal::GracefulUpgrade,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                crate::ingress::http::start_draining();
                tracing::info!(drain_seconds = self.drain.as_secs(), "SIGTERM: draining, then stopping");
                tokio::select! {
                    _ = tokio::time::sleep(self.drain) => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
        }
    }
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
    /// Take the listening sockets over from a running Qiao (pingora's upgrade hand-off).
    pub upgrade: bool,
    pub upgrade_sock: std::path::PathBuf,
}

/// Runs until SIGTERM (graceful: serves `grace_period_seconds`, then lets in-flight requests
/// finish for `graceful_shutdown_timeout_seconds`) or SIGINT (fast).
pub fn serve(config: Config, reload: Reload) -> Result<(), String> {
    let settings = config.server.clone();
    if !reload.upgrade {
        // An upgrading process takes these sockets over from the running one.
        check_bind("ingress", &settings.listen)?;
        check_bind("admin", &settings.admin_listen)?;
    }
    // Held until the server stops; dropping it flushes the spans still queued.
    let telemetry = crate::telemetry::init(&settings.telemetry.clone().with_env())?;
    match &telemetry.exporting_to {
        Some(endpoint) => tracing::info!(%endpoint, "exporting traces over OTLP"),
        None => tracing::info!("trace export is off (no OTLP endpoint): trace context is still propagated"),
    }

    let conf = ServerConf {
        threads: settings.threads,
        upgrade_sock: reload.upgrade_sock.display().to_string(),
        // The old process drains before it hands its sockets over: wait for it that long.
        upgrade_sock_connect_accept_max_retries: Some(settings.drain_seconds as usize + 30),
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt { upgrade: reload.upgrade, ..Default::default() };
    if reload.upgrade {
        tracing::info!(socket = %reload.upgrade_sock.display(), "waiting for the running Qiao's sockets (send it SIGQUIT)");
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    // Before any ingress: a message's record has somewhere to go from the first one.
    crate::journal::start(&settings.journal)?;
    let routes = config.routes.len();
    let systems = config.systems.len();
    let shared = Runtime::build(Arc::new(config), None)?.shared();
    let (reloader, updates) = Reloader::new(&reload.dir, reload.loader, shared.clone());
    let reloader = Arc::new(reloader);
    let mut edge = crate::ingress::http::service(&server.configuration, shared.clone());
    edge.add_tcp(&settings.listen);
    let admin_token = std::env::var("QIAO_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let loopback = settings.admin_listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    if admin_token.is_none() && !loopback {
        // Said once at start: whoever reaches the admin listener may reload the config.
        tracing::warn!(admin_listen = %settings.admin_listen,
            "the admin listener is not on loopback and QIAO_ADMIN_TOKEN is not set: POST /admin/reload is open to whoever reaches it");
    }
    let mut admin = Service::new(
        "qiao-admin".to_string(),
        AdminApp(Admin {
            runtime: shared.clone(),
            started: Instant::now(),
            reloader: reloader.clone(),
            token: admin_token,
        }),
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
    server.run(RunArgs { shutdown_signal: Box::new(Signals { drain: Duration::from_secs(settings.drain_seconds) }) });
    // Every ingress has stopped: what the journal still holds goes to disk, the last
    // segment is closed and compressed.
    crate::journal::shutdown(Duration::from_secs(10));
    drop(telemetry);
    tracing::info!("qiao stopped");
    Ok(())
}
