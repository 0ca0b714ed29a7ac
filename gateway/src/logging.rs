//! Logs through `tracing`: readable lines in a terminal, one JSON object per line with
//! `--log-format json`. pingora logs through `log`; those records are bridged in.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// pingora is chatty at info (every service start); its warnings are what ops need. lapin
/// logs whole message bodies when the broker returns one (PII in logs) and an error at every
/// normal shutdown; Qiao logs what matters about the broker itself.
const DEFAULT_FILTER: &str = "info,pingora=warn,pingora_core=warn,pingora_proxy=warn,lapin=off";

/// `RUST_LOG` wins over `level`; both take tracing's filter syntax (`info`,
/// `warn,qiao::access=off`, ...).
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| {
            level.map(|l| {
                if l.contains('=') || l.contains(',') {
                    l.to_string()
                } else {
                    format!("{l},pingora=warn,pingora_core=warn,pingora_proxy=warn,lapin=off")
                }
            })
        })
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("qiao: bad log filter `{filter}` ({e}); using `{DEFAULT_FILTER}`");
        EnvFilter::new(DEFAULT_FILTER)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::telemetry::logjson::JsonWithTrace)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("qiao: logging was already set up: {e}");
    }
}
