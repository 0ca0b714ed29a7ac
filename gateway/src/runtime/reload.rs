//! Reloading the configuration while traffic flows: on SIGHUP, on `POST /admin/reload`, and
//! (with `--watch`) when a file of the config directory changes.
//!
//! The new configuration is loaded and compiled completely, off the request threads, before
//! anything changes; a broken one is refused with every problem and the old one keeps
//! serving. Then the runtime is built from it, keeping every client and broker whose settings
//! did not change, new queues are declared on live brokers, and the runtime is swapped in one
//! step: a message reads the runtime once, so messages in flight finish on the config they
//! started with. Last, the AMQP service is told, and starts, stops or restarts only the
//! consumers whose queue settings changed ([`super::diff`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::diff::{Change, Changes};
use super::{Runtime, SharedRuntime};
use crate::config::{Config, hash_dir};
use crate::diag::Diagnostic;

/// Loads and compiles the configuration as the process was started (its directory, its
/// environment, its command-line overrides).
pub type Loader = Arc<dyn Fn() -> Result<Config, Vec<Diagnostic>> + Send + Sync>;

/// What the last reload left, for `/readyz` and the admin answer.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The hash of the configuration files now serving.
    pub hash: String,
    /// When the configuration now serving was loaded (RFC 3339).
    pub loaded_at: String,
    /// Reloads applied since the start.
    pub reloads: u64,
    /// The last refused reload, when it came after the last applied one: when, and every
    /// problem as `file:line:column: message`.
    pub last_error: Option<(String, Vec<String>)>,
}

/// The outcome of one reload.
#[derive(Debug)]
pub enum Outcome {
    Applied { changes: Changes, hash: String },
    Refused(Vec<String>),
}

pub struct Reloader {
    dir: PathBuf,
    loader: Loader,
    shared: SharedRuntime,
    /// The runtime the AMQP service runs consumers for.
    consumers: watch::Sender<Arc<Runtime>>,
    status: Mutex<Status>,
    /// One reload at a time.
    serial: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").field("dir", &self.dir).finish()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Reloader {
    pub fn new(dir: &Path, loader: Loader, shared: SharedRuntime) -> (Reloader, watch::Receiver<Arc<Runtime>>) {
        let (consumers, updates) = watch::channel(shared.load_full());
        let status = Status { hash: shared.load().config.hash.clone(), loaded_at: now(), ..Status::default() };
        let reloader = Reloader {
            dir: dir.to_path_buf(),
            loader,
            shared,
            consumers,
            status: Mutex::new(status),
            serial: tokio::sync::Mutex::new(()),
        };
        (reloader, updates)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Loads, compiles and applies the configuration; `trigger` says what asked, for the log.
    pub async fn reload(&self, trigger: &str) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        let m = crate::telemetry::metrics::get();
        let loader = self.loader.clone();
        // Compiling reads files and schemas: not on a thread that serves requests.
        let loaded = match tokio::task::spawn_blocking(move || loader()).await {
            Ok(l) => l,
            Err(e) => Err(vec![Diagnostic::error(
                crate::diag::Place::file(&self.dir),
                format!("loading the configuration failed: {e}"),
            )]),
        };
        let old = self.shared.load_full();
        let built = loaded.and_then(|config| {
            Runtime::build(Arc::new(config), Some(&old))
                .map_err(|e| vec![Diagnostic::error(crate::diag::Place::file(&self.dir), e)])
        });
        let new = match built {
            Ok(new) => new,
            Err(diags) => {
                let problems: Vec<String> = diags.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
                for p in &problems {
                    tracing::error!(trigger, problem = %p, "reload refused");
                }
                tracing::error!(
                    trigger,
                    problems = problems.len(),
                    "the new configuration has errors; the old one keeps serving"
                );
                m.config_reloads.with_label_values(&["error"]).inc();
                self.status.lock().expect("status lock").last_error = Some((now(), problems.clone()));
                return Outcome::Refused(problems);
            }
        };
        for d in new.config.warnings.iter() {
            tracing::warn!(trigger, "{d}");
        }
        let changes = Changes::between(&old.config, &new.config);
        if old.config.server != new.config.server {
            tracing::warn!(
                trigger,
                "the `server` section changed; listeners, threads, telemetry and the journal change at the next start \
                 (its timeouts and limits apply to the connections accepted from now on)"
            );
        }
        // Queues and bindings the new routes need exist before any of them is used.
        // (`changes.brokers` lists the new config's brokers first, in its order.)
        for ((shown, change), broker) in changes.brokers.iter().zip(new.brokers.values()) {
            if *change == Change::Redeclared
                && let Err(e) = broker.apply_topology().await
            {
                tracing::warn!(trigger, broker = %shown, error = %e, "declaring the new topology failed; it is declared again at the next connection");
            }
        }
        let new = Arc::new(new);
        let hash = new.config.hash.clone();
        self.shared.store(new.clone());
        self.consumers.send_replace(new);
        m.config_reloads.with_label_values(&["ok"]).inc();
        {
            let mut s = self.status.lock().expect("status lock");
            s.hash = hash.clone();
            s.loaded_at = now();
            s.reloads += 1;
            s.last_error = None;
        }
        tracing::info!(trigger, hash = %hash, changes = %changes, "configuration reloaded");
        Outcome::Applied { changes, hash }
    }

    /// The admin answer for a reload: 200 with what changed, or 422 with every problem.
    pub fn answer(outcome: &Outcome) -> (u16, serde_json::Value) {
        match outcome {
            Outcome::Applied { changes, hash } => {
                let list = |l: &[(String, Change)]| -> Vec<serde_json::Value> {
                    l.iter().map(|(n, c)| json!({"name": n, "change": c.as_str()})).collect()
                };
                (
                    200,
                    json!({
                        "status": "reloaded",
                        "hash": hash,
                        "summary": changes.to_string(),
                        "systems": list(&changes.systems),
                        "brokers": list(&changes.brokers),
                        "consumers": list(&changes.consumers),
                    }),
                )
            }
            Outcome::Refused(problems) => (
                422,
                json!({
                    "type": "urn:qiao:problem:config-invalid",
                    "title": "The new configuration has errors; the old one keeps serving",
                    "status": 422,
                    "detail": format!("{} problem{}, the first: {}", problems.len(), if problems.len() == 1 { "" } else { "s" },
                        problems.first().map(String::as_str).unwrap_or("-")),
                    "problems": problems,
                }),
            ),
        }
    }
}

/// Reloads on SIGHUP and, when asked, when the config directory changes: its hash is read
/// every 500 ms, and a change that stays for another 500 ms (an editor writes a file in
/// several steps) reloads once.
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
    pub watch: bool,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /admin/reload");
                None
            }
        };
        let dir = self.reloader.dir().to_path_buf();
        let mut seen = self.reloader.status().hash;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if self.watch {
            tracing::info!(dir = %dir.display(), "watching the config directory; a change reloads it");
        }
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reloader.reload("SIGHUP").await;
                    seen = hash_dir(&dir);
                }
                _ = tick.tick(), if self.watch => {
                    let now = hash_dir(&dir);
                    if now != seen {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if hash_dir(&dir) == now {
                            self.reloader.reload("watch").await;
                            seen = now;
                        }
                    }
                }
            }
        }
    }
}
