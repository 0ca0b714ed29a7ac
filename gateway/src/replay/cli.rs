//! The command lines `qiao replay` and `qiao journal to-test`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Config};
use crate::journal::Record;

use super::diff::Ignore;
use super::{Options, Replayer, Summary, report, send};
use crate::journal::read::{self, Filter};

/// Where the journal is when `--dir` is not given.
pub const DIR_ENV: &str = "QIAO_JOURNAL_DIR";

/// The replay could not run (unreadable files, a broken config, a refused confirmation).
const CANNOT_RUN: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Journal files or directories (searched for *.ndjson and *.ndjson.gz); the journal
    /// directory (QIAO_JOURNAL_DIR) when none.
    paths: Vec<PathBuf>,
    /// The configuration to replay through.
    #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
    config: PathBuf,
    #[command(flatten)]
    window: read::Window,
    /// Only these messages (message ids or trace ids; repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Leave output fields matching this JSON Pointer glob out of the diff (`/data/Model/FDate`,
    /// `/items/*/ts`, `/**/timestamp`; repeatable). Added to each route's `replay.ignore`.
    #[arg(long = "ignore")]
    ignore: Vec<String>,
    /// Run every message twice and report the output fields that differ between the runs
    /// (a clock, a generated id) as noise, with the --ignore lines that silence them.
    #[arg(long)]
    detect_noise: bool,
    /// Exit with status 1 when any message changed, is now rejected or now accepted.
    #[arg(long)]
    fail_on_change: bool,
    /// Also write a JUnit XML report here: one test case per message, a change is a failure.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Print one JSON document (every message, the summary, the noise) instead of lines.
    #[arg(long)]
    json: bool,
    /// Shown for symmetry with `qiao dlq replay --preview`: the diff is what replay does.
    #[arg(long, hide = true)]
    diff: bool,
    /// Re-deliver the messages to the live systems instead: new ids, `x-qiao-replay-of`,
    /// a span link to the recorded trace. Asks first unless --yes.
    #[arg(long)]
    send: bool,
    /// With --send: at most this many messages a second (`50` or `50/s`).
    #[arg(long, value_parser = rate)]
    rate: Option<f64>,
    /// With --send: do not ask.
    #[arg(long)]
    yes: bool,
}

fn rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("`{s}` is not a rate: write messages per second, e.g. 50 or 50/s")),
    }
}

#[derive(Debug, clap::Args)]
pub struct ToTestArgs {
    /// The message id (or trace id).
    id: String,
    /// The journal directory or files (QIAO_JOURNAL_DIR when not given).
    #[arg(long = "dir", env = DIR_ENV)]
    dirs: Vec<PathBuf>,
    /// The configuration whose `tests/` gets the case.
    #[arg(long, short, env = "QIAO_CONFIG", default_value = "routes")]
    config: PathBuf,
}

fn journal_paths(given: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    match std::env::var(DIR_ENV) {
        Ok(d) if !d.trim().is_empty() => Ok(vec![PathBuf::from(d)]),
        _ => Err(format!("which journal? name files or directories (or set {DIR_ENV})")),
    }
}

fn load_config(dir: &Path, env: &dyn config::EnvSource) -> Result<Config, ExitCode> {
    config::load(dir, env).map_err(|diags| {
        for d in &diags {
            eprintln!("{d}");
        }
        eprintln!("qiao: the configuration in {} has errors; nothing was replayed", dir.display());
        ExitCode::from(CANNOT_RUN)
    })
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("qiao: {msg}");
    ExitCode::from(CANNOT_RUN)
}

fn filter(args: &ReplayArgs) -> Result<Filter, String> {
    args.window.filter(args.ids.clone())
}

fn note_unreadable(stats: &read::Stats) {
    if stats.unreadable > 0 {
        eprintln!(
            "qiao: {} line{} not a record, skipped (first: {})",
            stats.unreadable,
            if stats.unreadable == 1 { " is" } else { "s are" },
            stats.first_unreadable.as_deref().unwrap_or_default()
        );
    }
}

pub fn replay(args: &ReplayArgs) -> ExitCode {
    let paths = match journal_paths(&args.paths) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let filter = match filter(args) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if args.send {
        return send_live(args, &paths, &filter);
    }
    let ignore = match Ignore::new(&args.ignore) {
        Ok(i) => i,
        Err(e) => return fail(format!("--ignore {e}")),
    };
    // Offline: no `${ENV}` needs to be set, nothing is connected.
    let config = match load_config(&args.config, &config::OfflineEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut replayer = Replayer::new(&config, Options { ignore, detect_noise: args.detect_noise });
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let keep = args.json || args.junit.is_some();
    let mut messages = Vec::new();
    let mut summary = Summary::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let stats = read::read(&paths, &filter, |record| {
        let Some(r) = replayer.replay(&record) else { return };
        summary.add(&r);
        if !args.json {
            let _ = out.write_all(report::text(&r, colour).as_bytes());
        }
        if keep {
            messages.push(r);
        }
    });
    let stats = match stats {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    note_unreadable(&stats);
    let noise = args.detect_noise.then_some(&replayer.noise);
    if args.json {
        let doc = report::json(&messages, &summary, noise);
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        if let Some(n) = noise {
            let _ = write!(out, "{}", report::noise(n));
        }
        if summary.skipped > 0 {
            let _ = writeln!(out, "{} skipped (not replayable: see above)", summary.skipped);
        }
        let _ = writeln!(out, "{}", summary.line());
    }
    let _ = out.flush();
    if let Some(path) = &args.junit {
        let xml = match report::junit(&messages, &summary) {
            Ok(x) => x,
            Err(e) => return fail(format!("JUnit report: {e}")),
        };
        if let Err(e) = std::fs::write(path, xml) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    if args.fail_on_change && summary.any_change() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn send_live(args: &ReplayArgs, paths: &[PathBuf], filter: &Filter) -> ExitCode {
    // Live: `${ENV}` references resolve as `qiao run` resolves them.
    let config = match load_config(&args.config, &config::ProcessEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut seen = std::collections::HashSet::new();
    let mut records: Vec<Record> = Vec::new();
    let stats = read::read(paths, filter, |r| {
        if seen.insert(r.id.clone()) {
            records.push(r);
        }
    });
    match stats {
        Ok(s) => note_unreadable(&s),
        Err(e) => return fail(e),
    }
    if records.is_empty() {
        println!("nothing to send: no recorded message matches");
        return ExitCode::SUCCESS;
    }
    if !args.yes {
        let question = format!(
            "re-deliver {} message{} to the live systems of {} (new ids, x-qiao-replay-of)?",
            records.len(),
            if records.len() == 1 { "" } else { "s" },
            args.config.display()
        );
        if !std::io::stdin().is_terminal() {
            return fail(format!(
                "{question} Standard input is not a terminal, so nobody can be asked: add --yes to send"
            ));
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("qiao: nothing sent");
            return ExitCode::from(CANNOT_RUN);
        }
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    let result = send::send(config, records, args.rate, |s| match &s.failure {
        None => {
            ok += 1;
            println!("sent {} as {} ({})", s.original, s.id, s.route);
        }
        Some(f) => {
            failed += 1;
            println!("FAILED {} as {} ({}): {f}", s.original, s.id, s.route);
        }
    });
    if let Err(e) = result {
        return fail(e);
    }
    println!("{ok} sent, {failed} failed");
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

pub fn to_test(args: &ToTestArgs) -> ExitCode {
    let paths = match journal_paths(&args.dirs) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let filter = Filter { ids: vec![args.id.clone()], ..Filter::default() };
    let mut found: Option<Record> = None;
    // The first pass of the message: its input as it first arrived.
    if let Err(e) = read::read(&paths, &filter, |r| {
        found.get_or_insert(r);
    }) {
        return fail(e);
    }
    let Some(record) = found else {
        return fail(format!("no message `{}` in {}", args.id, display(&paths)));
    };
    let config = match load_config(&args.config, &config::OfflineEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (file, text) = match super::to_test::case(&config, &args.config, &record) {
        Ok(c) => c,
        Err(e) => return fail(format!("message {}: {e}", record.id)),
    };
    if let Some(dir) = file.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return fail(format!("{}: {e}", dir.display()));
    }
    if let Err(e) = std::fs::write(&file, text) {
        return fail(format!("cannot write {}: {e}", file.display()));
    }
    println!("wrote {}", file.display());
    println!("run it: qiao test {} --filter {}", args.config.display(), record.id);
    ExitCode::SUCCESS
}

fn display(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
