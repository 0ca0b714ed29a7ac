//! The `qiao` command line.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::SystemKind;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Diagnostic, EnvSource, Overlay, ProcessEnv};
use crate::logging::{self, LogFormat};

const EXAMPLES: &str = "\
Examples:
  qiao demo                              the shipped routes with built-in stub ERP, CRM, OA, WMS and MES
  qiao check routes/                     compile every route, schema and mapping; report every problem
  qiao test routes/                      run the route tests in routes/tests/ (offline)
  qiao map --route crm-order-to-erp --param order_id=801J000000k3QpRIAU routes/examples/crm-order.json
                                         what one route makes of one message (offline)
  qiao run --config routes/              serve the routes in routes/
  qiao replay journal/ --config routes/  yesterday's traffic through today's routes: what changes
  qiao run --listen 0.0.0.0:8080         listen on all interfaces
  qiao stub erp --listen 127.0.0.1:9101  run one stub system on its own
  qiao dlq ls                            each AMQP route's dead-letter queue and its count
  qiao dlq replay --route R --all --preview
                                         would the dead letters pass now? (moves nothing)
  qiao --log-format json run             one JSON object per log line

Docs: README.md, docs/configuration.md, docs/mapping.md, docs/errors.md";

#[derive(Debug, Parser)]
#[command(name = "qiao", version, about = "Qiao (桥): an integration gateway between ERP, CRM, OA, WMS and MES systems", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "QIAO_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `warn,qiao::access=off`). RUST_LOG wins.
    #[arg(long, global = true, env = "QIAO_LOG_LEVEL")]
    log_level: Option<String>,
}

#[derive(Clone, Debug, clap::Args)]
struct ServeArgs {
    /// Address of the HTTP ingress (overrides `server.listen`).
    #[arg(long, env = "QIAO_LISTEN")]
    listen: Option<String>,
    /// Address of the admin listener (overrides `server.admin_listen`).
    #[arg(long, env = "QIAO_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Worker threads of the HTTP ingress (overrides `server.threads`).
    #[arg(long, env = "QIAO_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Reload the configuration when a file of the config directory changes (debounced).
    /// SIGHUP and `POST /admin/reload` reload it either way.
    #[arg(long, env = "QIAO_WATCH")]
    watch: bool,
    /// Take over the listening sockets of a running Qiao instead of binding them: start this
    /// process with `--upgrade`, then send the old one SIGQUIT (docs/operations.md#upgrade).
    #[arg(long)]
    upgrade: bool,
    /// The Unix socket the listening sockets are handed over on during an upgrade; the old
    /// and the new process must name the same one.
    #[arg(long, env = "QIAO_UPGRADE_SOCK", default_value = "/tmp/qiao-upgrade.sock")]
    upgrade_sock: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the routes of a config directory.
    Run {
        /// The config directory: systems, routes, schemas/.
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
        /// Print the effective configuration (environment, defaults and flags applied,
        /// secrets masked) as JSON, and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Compile a config directory as `run` would and report every problem.
    Check {
        /// The config directory.
        #[arg(env = "QIAO_CONFIG", default_value = "routes")]
        dir: PathBuf,
        /// Treat warnings as errors (exit 1 when there is any).
        #[arg(long)]
        strict: bool,
    },
    /// Run the route tests in `<DIR>/tests/*.yaml`, offline: nothing is sent.
    Test {
        /// The config directory.
        #[arg(env = "QIAO_CONFIG", default_value = "routes")]
        dir: PathBuf,
        /// Also write the results as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Only cases whose name or route contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Show what one route makes of one message (validation, mapping, destinations), offline.
    Map {
        /// The route.
        #[arg(long, short)]
        route: String,
        /// The message body; standard input when absent or `-`.
        file: Option<PathBuf>,
        /// The config directory.
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        /// A path parameter, `name=value` (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// An inbound header, `name=value` (repeatable).
        #[arg(long = "header", value_parser = key_value)]
        headers: Vec<(String, String)>,
    },
    /// Serve the shipped routes with built-in stub systems, ready for curl.
    Demo {
        /// The config directory.
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
        /// First port of the five stubs (ERP, CRM, OA, WMS, MES on consecutive ports).
        #[arg(long, default_value_t = 9101)]
        stub_base_port: u16,
    },
    /// List, inspect, preview and re-drive the dead letters of the AMQP routes.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run stub systems on their own (for docker-compose and manual tests).
    Stub {
        /// Which system to stand in for; `all` starts five on consecutive ports.
        #[arg(value_enum)]
        kind: StubKind,
        /// Address of the (first) stub.
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        /// Also read this broker's queue with the WMS stub (`wms` or `all`).
        #[arg(long, env = "STUB_AMQP_URL")]
        amqp_url: Option<String>,
        /// The queue the WMS stub reads.
        #[arg(long, default_value = "qiao.wms.stockout")]
        amqp_queue: String,
    },
    /// Run recorded messages again through a configuration, offline, and show what changed
    /// field by field (docs/replay.md). Exit status: 0, or 1 with --fail-on-change when
    /// anything changed; 2 when the replay could not run.
    Replay(crate::replay::cli::ReplayArgs),
    /// Read the journal: every message's journey (docs/journal.md).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Follow live messages through a route, from a running Qiao's admin listener.
    Tap {
        /// The route.
        route: String,
        /// The admin listener of the running Qiao.
        #[arg(long, env = "QIAO_ADMIN_URL", default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Print each record as a JSON line (the journal's format); notes go to stderr.
        #[arg(long)]
        json: bool,
        /// Share of the route's messages to show, 0.0 to 1.0.
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
        /// The environment variable that holds the admin token.
        #[arg(long, default_value = "QIAO_ADMIN_TOKEN")]
        token_env: String,
    },
}

#[derive(Clone, Debug, clap::Args)]
struct JournalQuery {
    /// The journal directory (all processes' directories under it), or segment files.
    #[arg(long = "dir", env = "QIAO_JOURNAL_DIR")]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    window: crate::journal::read::Window,
    /// Print records as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutcomeArg {
    Delivered,
    Rejected,
    Failed,
    Partial,
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// List recorded messages, one line each: time, id, route, source, outcome, status, duration.
    Ls {
        #[command(flatten)]
        query: JournalQuery,
        /// Only messages that ended this way.
        #[arg(long, value_enum)]
        outcome: Option<OutcomeArg>,
    },
    /// Show one message's journey (every pass of it) as a timeline.
    Show {
        /// A message id or a trace id.
        id: String,
        #[command(flatten)]
        query: JournalQuery,
    },
    /// Write a `qiao test` case from one recorded message, beside its route
    /// (`<config>/tests/`): the input as recorded, the output today's config makes of it.
    ToTest(crate::replay::cli::ToTestArgs),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Each AMQP route's dead-letter queue and how many messages wait there; with
    /// `--route`, one line per message (read without taking it).
    Ls {
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        /// One route's messages.
        #[arg(long, short)]
        route: Option<String>,
        /// At most this many messages (with `--route`).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One dead letter in full: why it failed, its headers, its body.
    Show {
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        #[arg(long, short)]
        route: String,
        /// The message id.
        id: String,
    },
    /// Re-drive dead letters into the route's queue, or with `--preview` see what the
    /// current config would make of them.
    Replay {
        #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
        config: PathBuf,
        #[arg(long, short)]
        route: String,
        /// The messages with this id (repeatable); the others stay where they are.
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<String>,
        /// Every message of the dead-letter queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// At most this many messages per second.
        #[arg(long, value_parser = rate)]
        rate: Option<f64>,
        /// Copies published at once before their confirms are awaited: faster, but a
        /// re-drive cut off may then deliver up to this many messages twice.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        in_flight: u16,
        /// Run them through the current config offline and say whether each would pass;
        /// moves nothing.
        #[arg(long)]
        preview: bool,
        /// With --preview: also run them through this config directory (the one they failed
        /// with, say) and show, field by field, what changed in each destination's output.
        #[arg(long, requires = "preview", value_name = "DIR")]
        against: Option<PathBuf>,
        /// Do not ask before re-driving (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// `100`, `100/s` or `0.5/s`: messages per second, more than zero.
fn rate(s: &str) -> Result<f64, String> {
    let n: f64 = s.trim_end_matches("/s").parse().map_err(|_| format!("`{s}` is not a rate (write 100 or 100/s)"))?;
    if n.is_finite() && n > 0.0 { Ok(n) } else { Err(format!("`{s}`: the rate must be more than 0")) }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StubKind {
    Erp,
    Crm,
    Oa,
    Wms,
    Mes,
    All,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::Check { dir, strict } => check(&dir, strict),
        Command::Test { dir, junit, filter } => test(&dir, junit.as_deref(), filter.as_deref()),
        Command::Map { route, file, config, params, headers } => map(&config, &route, file.as_deref(), params, headers),
        Command::Run { config, serve, print_config: true } => print_config(&config, &serve),
        Command::Run { config, serve, print_config: false } => run(&config, &serve, &ProcessEnv),
        Command::Demo { config, serve, stub_base_port } => demo(&config, &serve, stub_base_port),
        Command::Stub { kind, listen, amqp_url, amqp_queue } => stub(kind, listen, amqp_url, amqp_queue),
        Command::Dlq { command } => dlq(command),
        Command::Replay(args) => crate::replay::cli::replay(&args),
        Command::Journal { command } => journal(command),
        Command::Tap { route, admin, json, sample, token_env } => {
            let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
            crate::journal::cli::tap(&admin, &route, token.as_deref(), json, sample)
        }
    }
}

fn journal(command: JournalCommand) -> ExitCode {
    use crate::journal::{cli, record::Verdict};
    let query = |q: JournalQuery, outcome: Option<OutcomeArg>| cli::Query {
        paths: q.dirs,
        window: q.window,
        outcome: outcome.map(|o| match o {
            OutcomeArg::Delivered => Verdict::Delivered,
            OutcomeArg::Rejected => Verdict::Rejected,
            OutcomeArg::Failed => Verdict::Failed,
            OutcomeArg::Partial => Verdict::Partial,
        }),
    };
    match command {
        JournalCommand::Ls { query: q, outcome } => {
            let json = q.json;
            cli::ls(&query(q, outcome), json)
        }
        JournalCommand::Show { id, query: q } => {
            let json = q.json;
            cli::show(&query(q, None), &id, json)
        }
        JournalCommand::ToTest(args) => crate::replay::cli::to_test(&args),
    }
}

fn dlq(command: DlqCommand) -> ExitCode {
    let dir = match &command {
        DlqCommand::Ls { config, .. } | DlqCommand::Show { config, .. } | DlqCommand::Replay { config, .. } => config,
    };
    let config = match config::load(dir, &ProcessEnv) {
        Ok(c) => c,
        Err(diags) => {
            print_diagnostics(&diags);
            eprintln!("qiao: the configuration in {} has errors (run `qiao check {}`)", dir.display(), dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let result = match command {
        DlqCommand::Ls { route, limit, .. } => crate::dlq::ls(&config, route.as_deref(), limit).map(|s| (s, true)),
        DlqCommand::Show { route, id, .. } => crate::dlq::show(&config, &route, &id).map(|s| (s, true)),
        DlqCommand::Replay { route, ids, all, rate, in_flight, preview, against, yes, .. } => {
            let selection = if all { crate::dlq::Selection::All } else { crate::dlq::Selection::Ids(ids) };
            if preview {
                let against = match against.as_deref().map(|d| (d, config::load(d, &ProcessEnv))) {
                    None => None,
                    Some((_, Ok(c))) => Some(c),
                    Some((d, Err(diags))) => {
                        print_diagnostics(&diags);
                        eprintln!(
                            "qiao: the configuration in {} (--against) has errors (run `qiao check {}`)",
                            d.display(),
                            d.display()
                        );
                        return ExitCode::FAILURE;
                    }
                };
                crate::dlq::preview(&config, &route, &selection, against.as_ref())
            } else {
                let ask = crate::dlq::Redrive { selection, rate, in_flight: usize::from(in_flight), yes };
                crate::dlq::redrive(&config, &route, &ask, &mut out).map(|done| {
                    let mut s = format!("{} re-driven; {} not selected left in place\n", done.moved, done.kept);
                    if !done.missing.is_empty() {
                        s.push_str(&format!("not found: {}\n", done.missing.join(", ")));
                    }
                    (s, done.missing.is_empty())
                })
            }
        }
    };
    match result {
        Ok((text, ok)) => {
            let _ = write!(out, "{text}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("`{s}` is not name=value"))
}

fn test(dir: &Path, junit: Option<&Path>, filter: Option<&str>) -> ExitCode {
    let results = match crate::testing::run_dir(dir, filter) {
        Ok(r) => r,
        Err(diags) => {
            print_diagnostics(&diags);
            eprintln!("qiao: the routes or route tests in {} have the errors above; no test was run", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let _ = write!(std::io::stdout(), "{}", crate::testing::report(&results, dir));
    if let Some(path) = junit
        && let Err(e) = std::fs::write(path, crate::testing::junit(&results))
    {
        eprintln!("qiao: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if results.iter().all(crate::testing::CaseResult::passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn map(
    dir: &Path,
    route: &str,
    file: Option<&Path>,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
) -> ExitCode {
    let config = match config::load(dir, &config::OfflineEnv) {
        Ok(c) => c,
        Err(diags) => {
            print_diagnostics(&diags);
            return ExitCode::FAILURE;
        }
    };
    let Some(r) = config.routes.iter().find(|r| &*r.name == route) else {
        eprintln!("qiao: no route `{route}` ({})", config::suggest(route, config.routes.iter().map(|r| &*r.name)));
        return ExitCode::FAILURE;
    };
    // Path parameters come from the URL on a real request; offline they must be given.
    if let Some(pattern) = r.http_path().filter(|_| r.uses.params) {
        let missing: Vec<String> = crate::routing::Router::param_names(pattern)
            .into_iter()
            .filter(|n| !params.iter().any(|(k, _)| k == n))
            .map(|n| format!("--param {n}=..."))
            .collect();
        if !missing.is_empty() {
            eprintln!("qiao: route `{route}` ({pattern}) reads its path parameters: add {}", missing.join(" "));
            return ExitCode::FAILURE;
        }
    }
    let body = match file {
        Some(p) if p != Path::new("-") => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf).map_err(|e| e.to_string())
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            eprintln!("qiao: cannot read the message: {e}");
            return ExitCode::FAILURE;
        }
    };
    let input = crate::simulate::Input {
        body: body.into(),
        method: None,
        path: None,
        params: params.into_iter().collect(),
        headers: headers.into_iter().collect(),
        message_id: None,
    };
    match crate::simulate::run(r, &input) {
        Ok(captured) => {
            let docs: Vec<serde_json::Value> = captured.iter().map(crate::simulate::Captured::to_json).collect();
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&docs).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(f) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&f.problem(Some(route), None, None)).unwrap_or_default()
            );
            ExitCode::FAILURE
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

fn summary(config: &Config) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("{}, {} OK", plural(config.systems.len(), "system"), plural(config.routes.len(), "route"))
}

fn check(dir: &Path, strict: bool) -> ExitCode {
    match config::load(dir, &ProcessEnv) {
        Ok(config) => {
            print_diagnostics(&config.warnings);
            let warnings = config.warnings.len();
            if strict && warnings > 0 {
                eprintln!("{warnings} warning{} in {} (--strict)", if warnings == 1 { "" } else { "s" }, dir.display());
                return ExitCode::FAILURE;
            }
            let note = if warnings > 0 {
                format!(" ({warnings} warning{})", if warnings == 1 { "" } else { "s" })
            } else {
                String::new()
            };
            println!("{}{note}", summary(&config));
            ExitCode::SUCCESS
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let errors = diags.iter().filter(|d| d.is_error()).count();
            let warnings = diags.len() - errors;
            eprintln!(
                "{errors} error{} and {warnings} warning{} in {}",
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" },
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The config directory with the command line's overrides: what `run` and `demo` serve,
/// at the start and at every reload.
fn load_with_flags(dir: &Path, serve: &ServeArgs, env: &dyn EnvSource) -> Result<Config, Vec<config::Diagnostic>> {
    let mut config = config::load(dir, env)?;
    for (flag, value, slot) in [
        ("--listen", &serve.listen, &mut config.server.listen),
        ("--admin-listen", &serve.admin_listen, &mut config.server.admin_listen),
    ] {
        if let Some(addr) = value {
            if addr.parse::<SocketAddr>().is_err() {
                return Err(vec![config::Diagnostic::error(
                    config::Place::file(Path::new(flag)),
                    format!("`{addr}` is not an address to listen on (write host:port, e.g. 127.0.0.1:8080)"),
                )]);
            }
            *slot = addr.clone();
        }
    }
    if let Some(t) = serve.threads {
        config.server.threads = usize::from(t);
    }
    if let Some(dir) = env.var(crate::journal::cli::DIR_ENV) {
        config.server.journal.dir = Some(dir.trim()).filter(|d| !d.is_empty()).map(PathBuf::from);
    }
    Ok(config)
}

/// How a serving command loads its configuration again on a reload.
fn loader(
    dir: &Path,
    serve: &ServeArgs,
    env: impl EnvSource + Send + Sync + 'static,
) -> crate::runtime::reload::Loader {
    let (dir, serve) = (dir.to_path_buf(), serve.clone());
    std::sync::Arc::new(move || load_with_flags(&dir, &serve, &env))
}

fn load(dir: &Path, serve: &ServeArgs, env: &dyn EnvSource) -> Result<Config, ExitCode> {
    match load_with_flags(dir, serve, env) {
        Ok(config) => {
            print_diagnostics(&config.warnings);
            Ok(config)
        }
        Err(diags) => {
            print_diagnostics(&diags);
            eprintln!(
                "qiao: the configuration in {} has errors; nothing was started (run `qiao check {}`)",
                dir.display(),
                dir.display()
            );
            Err(ExitCode::FAILURE)
        }
    }
}

fn print_config(dir: &Path, serve: &ServeArgs) -> ExitCode {
    let config = match load(dir, serve, &ProcessEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match serde_json::to_string_pretty(&config::effective(&config)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path, serve: &ServeArgs, env: &dyn EnvSource) -> ExitCode {
    let config = match load(dir, serve, env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    tracing::info!(config = %dir.display(), "{}", summary(&config));
    let reload = crate::server::Reload {
        dir: dir.to_path_buf(),
        loader: loader(dir, serve, ProcessEnv),
        watch: serve.watch,
        upgrade: serve.upgrade,
        upgrade_sock: serve.upgrade_sock.clone(),
    };
    match crate::server::serve(config, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts stubs on a runtime of their own, on a thread of their own: pingora owns the
/// runtimes of the gateway. `amqp` makes the WMS stub also read its queue (url, queue).
fn spawn_stubs(
    host: IpAddr,
    base_port: u16,
    kinds: Vec<SystemKind>,
    amqp: Option<(String, String)>,
) -> Result<Vec<(SystemKind, SocketAddr)>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("qiao-stubs".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut handles = Vec::new();
                for (i, kind) in kinds.into_iter().enumerate() {
                    let port = if base_port == 0 { 0 } else { base_port + i as u16 };
                    match crate::stub::start(kind, SocketAddr::new(host, port)).await {
                        Ok(h) => handles.push((kind, h)),
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot start the {kind} stub on {host}:{port}: {e}")));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(handles.iter().map(|(k, h)| (*k, h.addr)).collect()));
                if let (Some((url, queue)), Some((_, wms))) =
                    (amqp, handles.iter().find(|(k, _)| *k == SystemKind::Wms))
                {
                    let (_keep, stop) = tokio::sync::watch::channel(false);
                    tracing::info!(%queue, "the WMS stub reads its AMQP queue");
                    crate::stub::consume_queue(wms.state.clone(), url, queue, stop).await;
                }
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

fn stub(kind: StubKind, listen: SocketAddr, amqp: Option<String>, amqp_queue: String) -> ExitCode {
    let kinds = match kind {
        StubKind::Erp => vec![SystemKind::Erp],
        StubKind::Crm => vec![SystemKind::Crm],
        StubKind::Oa => vec![SystemKind::Oa],
        StubKind::Wms => vec![SystemKind::Wms],
        StubKind::Mes => vec![SystemKind::Mes],
        StubKind::All => SystemKind::ALL.to_vec(),
    };
    // The handlers come first: a signal sent as soon as the stub listens must stop it, not
    // kill it with 143 (seen in `a_stub_stops_on_sigterm_and_sigint`).
    let stop = match StopSignals::install() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("qiao: cannot wait for a signal: {e}");
            return ExitCode::FAILURE;
        }
    };
    match spawn_stubs(listen.ip(), listen.port(), kinds, amqp.map(|url| (url, amqp_queue))) {
        Ok(stubs) => {
            for (kind, addr) in stubs {
                tracing::info!(%kind, %addr, "stub listening; read what it received at http://{addr}/_stub/requests");
            }
            // Not inside `info!`: a disabled level does not evaluate its arguments, and the
            // stub would not wait at all under `--log-level warn`.
            let signal = stop.wait();
            tracing::info!("{signal}: the stub stops");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, handled. Without handlers of its own a stub would ignore both where
/// it matters: as a container's PID 1 (`podman stop` then waits out its timeout and kills)
/// and as a script's background job, which starts with SIGINT ignored.
struct StopSignals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers now; [`StopSignals::wait`] waits for either signal.
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (term, int) = {
            let _in_runtime = runtime.enter();
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
        };
        Ok(StopSignals { runtime, term, int })
    }

    /// The name of the signal that came.
    fn wait(mut self) -> &'static str {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        })
    }
}

fn demo(dir: &Path, serve: &ServeArgs, stub_base_port: u16) -> ExitCode {
    // The WMS reads its outbound orders from RabbitMQ (routes/erp-delivery-to-wms.yaml).
    let env = |name: &str, default: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.into())
    };
    let amqp = (
        env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        format!("{}.wms.stockout", env("AMQP_PREFIX", "qiao")),
    );
    let stubs = match spawn_stubs(IpAddr::from([127, 0, 0, 1]), stub_base_port, SystemKind::ALL.to_vec(), Some(amqp)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qiao: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Point the shipped systems at the stubs, except those the environment sends elsewhere
    // (`ERP_URL=http://127.0.0.1:9000 qiao demo` tries a receiver of one's own).
    let overlay = Overlay(
        stubs
            .iter()
            .map(|(kind, addr)| (format!("{}_URL", kind.as_str().to_uppercase()), format!("http://{addr}")))
            .filter(|(var, _)| std::env::var(var).map_or(true, |v| v.trim().is_empty()))
            .collect(),
    );
    for (kind, _) in &stubs {
        let var = format!("{}_URL", kind.as_str().to_uppercase());
        if let Ok(url) = std::env::var(&var).map(|v| v.trim().to_string())
            && !url.is_empty()
        {
            tracing::info!(system = %kind, %url, "{var} is set: the demo sends to it, not to the {kind} stub");
        }
    }
    let config = match load(dir, serve, &overlay) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let reload = crate::server::Reload {
        dir: dir.to_path_buf(),
        loader: loader(dir, serve, overlay),
        watch: serve.watch,
        upgrade: serve.upgrade,
        upgrade_sock: serve.upgrade_sock.clone(),
    };
    let listen = config.server.listen.clone();
    let erp = stubs.iter().find(|(k, _)| *k == SystemKind::Erp).map(|(_, a)| *a).expect("erp stub");
    println!("{}", demo_banner(&listen, &config.server.admin_listen, &stubs, erp, dir));
    match crate::server::serve(config, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo_banner(listen: &str, admin: &str, stubs: &[(SystemKind, SocketAddr)], erp: SocketAddr, dir: &Path) -> String {
    let mut s = String::from("\nQiao demo: the shipped routes, with stub systems standing in for the real ones.\n\n");
    for (kind, addr) in stubs {
        s.push_str(&format!(
            "  {:<4} stub  http://{addr}   (what it received: http://{addr}/_stub/requests)\n",
            kind.as_str().to_uppercase()
        ));
    }
    s.push_str(&format!("  gateway    http://{listen}   admin: http://{admin}/readyz\n\n"));
    s.push_str("Try it (from the repository root):\n\n");
    s.push_str(&format!(
        "  curl -i http://{listen}/crm/orders/801J000000k3QpRIAU -H 'content-type: application/json' --data @{}/examples/crm-order.json\n",
        dir.display()
    ));
    s.push_str(&format!("  curl 'http://{erp}/_stub/requests?last=1'\n"));
    s.push_str(&format!(
        "  curl -i http://{listen}/crm/orders/801J000000k3QpRIAU -H 'content-type: application/json' --data '{{\"totalSize\":1,\"records\":[{{}}]}}'\n"
    ));
    s.push_str("\nStop with Ctrl-C.\n");
    s
}
