//! `qiao dlq`: list, inspect, preview and re-drive the dead letters of the AMQP routes.
//!
//! Reading never takes a message: [`QueueSession`]'s reader gets them one by one without
//! acknowledging, and closing its channel puts them back where they were (marked
//! redelivered). A re-drive takes a message out of the dead-letter queue (basic.ack) only
//! after the broker confirmed its copy in the route's queue, one message at a time: a
//! re-drive cut off at any point loses nothing, and duplicates at most the one message
//! whose copy was published and not yet taken out (docs/amqp.md#re-driving-dead-letters).

mod letter;

pub use letter::{Letter, redrive_properties};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use qiao_connectors::amqp::{Delivery, QueueSession, string_headers};
use serde_json::Value;

use crate::config::{AmqpSource, Config, Route, Source};

/// How long the broker gets to confirm a re-driven copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's name in the broker's tools (`rabbitmqctl list_connections`).
const CONNECTION_NAME: &str = "qiao-dlq";

/// Which dead letters a command acts on.
#[derive(Clone, Debug)]
pub enum Selection {
    All,
    /// Those whose `message_id` is one of these (every copy of a repeated id).
    Ids(Vec<String>),
}

impl Selection {
    fn takes(&self, id: Option<&str>) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => id.is_some_and(|id| ids.iter().any(|i| i == id)),
        }
    }
}

/// What `replay` was asked to do.
#[derive(Clone, Debug)]
pub struct Redrive {
    pub selection: Selection,
    /// Messages per second at most; `None`: as fast as the broker confirms.
    pub rate: Option<f64>,
    /// Copies published before their confirms are awaited. A re-drive cut off can deliver
    /// at most this many messages twice.
    pub in_flight: usize,
    /// Skip the confirmation prompt.
    pub yes: bool,
}

/// Runs an async command on a runtime of its own (`main` stays synchronous).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(f)
}

/// The AMQP source of route `name`, or why there is none.
fn source<'a>(config: &'a Config, name: &str) -> Result<(&'a Route, &'a AmqpSource), String> {
    let Some(route) = config.route(name) else {
        return Err(format!(
            "no route `{name}` ({})",
            crate::config::suggest(name, config.routes.iter().map(|r| &*r.name))
        ));
    };
    match &route.source {
        Source::Amqp(src) => Ok((route, src)),
        Source::Http { .. } => Err(format!("route `{name}` is served over HTTP: it has no dead-letter queue")),
    }
}

/// The dead letters of `src` (at most `limit`), browsed on a connection of their own and
/// left where they are.
async fn letters(src: &AmqpSource, limit: Option<usize>) -> Result<Vec<Delivery>, String> {
    let session = QueueSession::connect(&src.broker, CONNECTION_NAME).await?;
    let letters = browse(&session, &src.dead_letter_queue, limit).await;
    session.close().await;
    letters
}

/// Every message of `queue`, in order, read and put back (at most `limit`).
async fn browse(session: &QueueSession, queue: &str, limit: Option<usize>) -> Result<Vec<Delivery>, String> {
    let count = session.message_count(queue).await?.ok_or_else(|| format!("there is no queue `{queue}`"))?;
    let want = limit.unwrap_or(usize::MAX).min(count as usize);
    let reader = session.reader(queue).await?;
    let mut out = Vec::with_capacity(want);
    // Held unacked until the reader closes: the broker hands out each one once.
    while out.len() < want {
        match reader.next().await? {
            Some(d) => out.push(d),
            None => break,
        }
    }
    reader.close().await;
    Ok(out)
}

/// `qiao dlq ls`: each AMQP route's dead-letter queue and how many messages wait there; with
/// a route, one line per message.
pub fn ls(config: &Config, route: Option<&str>, limit: Option<usize>) -> Result<String, String> {
    block_on(async {
        match route {
            Some(name) => {
                let (_, src) = source(config, name)?;
                Ok(list_letters(&src.dead_letter_queue, &letters(src, limit).await?))
            }
            None => list_queues(config).await,
        }
    })
}

async fn list_queues(config: &Config) -> Result<String, String> {
    let sources: Vec<(&Route, &AmqpSource)> = config
        .routes
        .iter()
        .filter_map(|r| match &r.source {
            Source::Amqp(src) => Some((&**r, src)),
            Source::Http { .. } => None,
        })
        .collect();
    if sources.is_empty() {
        return Ok(format!("no route in {} consumes a queue: there are no dead-letter queues\n", config.dir.display()));
    }
    let mut sessions: BTreeMap<&str, QueueSession> = BTreeMap::new();
    let mut rows = vec![["ROUTE".to_string(), "DEAD-LETTER QUEUE".into(), "MESSAGES".into()]];
    for (route, src) in sources {
        if !sessions.contains_key(src.broker.as_str()) {
            sessions.insert(&src.broker, QueueSession::connect(&src.broker, CONNECTION_NAME).await?);
        }
        let count = match sessions[src.broker.as_str()].message_count(&src.dead_letter_queue).await? {
            Some(n) => n.to_string(),
            None => "(no such queue)".into(),
        };
        rows.push([route.name.to_string(), src.dead_letter_queue.clone(), count]);
    }
    for (_, s) in sessions {
        s.close().await;
    }
    Ok(table(&rows))
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list_letters(queue: &str, deliveries: &[Delivery]) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut rows =
        vec![["MESSAGE ID", "DEAD-LETTERED AT", "ERROR KIND", "ATTEMPTS", "ROUTING KEY", "DETAIL"].map(String::from)];
    for d in deliveries {
        let l = Letter::of(d);
        rows.push([l.id, dash(&l.failed_at), dash(&l.kind), dash(&l.attempts), dash(&l.routing_key), dash(&l.detail)]);
    }
    let mut out = table(&rows);
    let _ = writeln!(
        out,
        "{} message{} in {queue}; read without taking them (each is now marked redelivered)",
        deliveries.len(),
        if deliveries.len() == 1 { "" } else { "s" }
    );
    out
}

/// `qiao dlq show`: every dead letter of the route with this message id, in full.
pub fn show(config: &Config, route: &str, id: &str) -> Result<String, String> {
    let (_, src) = source(config, route)?;
    block_on(async {
        let all = letters(src, None).await?;
        let mut out = String::new();
        for (i, d) in all.iter().enumerate().filter(|(_, d)| letter::message_id(d).as_deref() == Some(id)) {
            if !out.is_empty() {
                out.push('\n');
            }
            describe(&mut out, d, &src.dead_letter_queue, i + 1, all.len());
        }
        if out.is_empty() {
            return Err(format!("no message with id `{id}` in {} ({} messages)", src.dead_letter_queue, all.len()));
        }
        Ok(out)
    })
}

fn describe(out: &mut String, d: &Delivery, queue: &str, position: usize, of: usize) {
    let l = Letter::of(d);
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "message id      {}", l.id);
    let _ = writeln!(out, "queue           {queue} (message {position} of {of})");
    let _ = writeln!(out, "dead-lettered   {}", dash(&l.failed_at));
    let _ = writeln!(out, "error kind      {}", dash(&l.kind));
    let _ = writeln!(out, "detail          {}", dash(&l.detail));
    let _ = writeln!(out, "attempts        {}", dash(&l.attempts));
    let _ = writeln!(out, "routing key     {}", dash(&l.routing_key));
    let _ = writeln!(out, "trace id        {}", dash(&l.trace_id));
    let _ = writeln!(out, "redelivered     {}", if l.redelivered { "yes" } else { "no" });
    out.push_str("headers\n");
    for (k, v) in letter::header_lines(&d.properties) {
        let _ = writeln!(out, "  {k} = {v}");
    }
    out.push_str("body\n");
    let _ = writeln!(out, "{}", pretty_body(&d.data));
}

/// The body as indented JSON, or as text when it is not JSON.
fn pretty_body(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(crate::json::strip_bom(bytes::Bytes::copy_from_slice(bytes)).as_ref()) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `qiao dlq replay --preview`: runs the selected dead letters through the route of the
/// current config, offline (deliveries captured), and says whether each would pass now.
/// Moves nothing. A destination the dead letter says took it already (`x-qiao-delivered`,
/// read as the AMQP ingress reads it from the re-driven copy) is shown as skipped: a
/// re-drive does not send it again. With `against` (another config, the one the messages
/// failed with, say), each message shows how it fared there, and for each destination it
/// would be sent to, the field changes of its output from that config to this one.
/// `Ok((report, all_pass))`.
pub fn preview(
    config: &Config,
    route: &str,
    selection: &Selection,
    against: Option<&Config>,
) -> Result<(String, bool), String> {
    let (route, src) = source(config, route)?;
    let old_route = match against {
        None => None,
        Some(other) => Some((
            other.route(&route.name).map(|r| &**r).ok_or_else(|| {
                format!("--against {}: it has no route `{}` to compare with", other.dir.display(), route.name)
            })?,
            other.dir.display().to_string(),
        )),
    };
    block_on(async {
        let all = letters(src, None).await?;
        let mut out = String::new();
        let (mut pass, mut fail) = (0, 0);
        let now = now();
        for d in all.iter().filter(|d| selection.takes(letter::message_id(d).as_deref())) {
            let l = Letter::of(d);
            let was = match (&l.kind, &l.detail) {
                (Some(k), Some(detail)) => format!("{k}: {detail}"),
                (Some(k), None) => k.clone(),
                _ => "no reason recorded".into(),
            };
            let _ = writeln!(out, "{}  dead-lettered as {was}", l.id);
            // What the route would see after a re-drive: the copy's headers, not the dead letter's.
            let props = redrive_properties(&d.properties, &src.dead_letter_queue, &now);
            let done = crate::ingress::amqp::already_delivered(route, props.headers().as_ref());
            let input = crate::simulate::Input {
                body: bytes::Bytes::copy_from_slice(&d.data),
                headers: string_headers(props.headers().as_ref()).into_iter().collect(),
                message_id: letter::message_id(d),
                ..Default::default()
            };
            let old = old_route.as_ref().map(|(r, dir)| (*r, dir.as_str(), crate::simulate::run(r, &input)));
            match crate::simulate::run(route, &input) {
                Ok(captured) => {
                    pass += 1;
                    let _ =
                        writeln!(out, "  now: would pass (parse, validate, map); a preview does not ask the receivers");
                    match &old {
                        Some((_, dir, Err(f))) => {
                            let _ = writeln!(out, "  against {dir}: fails with {}: {}", f.kind.slug(), f.detail);
                        }
                        Some((_, dir, Ok(_))) => {
                            let _ = writeln!(out, "  against {dir}: passes too; what changed per destination below");
                        }
                        None => {}
                    }
                    for c in captured {
                        if done.contains(&c.index) {
                            let _ = writeln!(
                                out,
                                "  to {}: skipped: it took the message before (x-qiao-delivered); a re-drive does not send it again",
                                c.system
                            );
                            continue;
                        }
                        let target = match &c.routing_key {
                            Some(key) => format!("publish to `{}` with routing key `{key}`", c.path),
                            None => format!("{} {}", c.method, c.path),
                        };
                        let _ = writeln!(out, "  to {}: {target}", c.system);
                        for line in serde_json::to_string_pretty(&c.body).unwrap_or_default().lines() {
                            let _ = writeln!(out, "    {line}");
                        }
                        if let Some((old_route, dir, Ok(before))) = &old {
                            compare(&mut out, dir, route, old_route, before, &c);
                        }
                    }
                }
                Err(f) => {
                    fail += 1;
                    let _ = writeln!(out, "  now: would fail with {}: {}", f.kind.slug(), f.detail);
                    match &old {
                        Some((_, dir, Ok(_))) => {
                            let _ = writeln!(out, "  against {dir}: passes there");
                        }
                        Some((_, dir, Err(f))) => {
                            let _ = writeln!(out, "  against {dir}: fails there too, with {}", f.kind.slug());
                        }
                        None => {}
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "{} selected: {pass} would pass, {fail} would fail; nothing was moved ({} messages in {} read and put back)",
            pass + fail,
            all.len(),
            src.dead_letter_queue
        );
        Ok((out, fail == 0))
    })
}

/// What changed in one destination's output since the `--against` config: its output
/// there is the one to the same destination (by its `x-qiao-delivered` key: the system,
/// `#n` for its n-th destination in the route), wherever it stands in that route's `to`.
fn compare(
    out: &mut String,
    dir: &str,
    route: &Route,
    old_route: &Route,
    before: &[crate::simulate::Captured],
    new: &crate::simulate::Captured,
) {
    use crate::ingress::amqp::destination_key;
    use crate::replay::diff;
    let key = destination_key(route, new.index);
    match before.iter().find(|c| destination_key(old_route, c.index) == key) {
        None => {
            let _ = writeln!(out, "    against {dir}: not sent to {key} there");
        }
        Some(c) => {
            let changes = diff::diff(&c.body, &new.body, &diff::Ignore::default());
            if changes.is_empty() {
                let _ = writeln!(out, "    against {dir}: no field changed");
            } else {
                let _ = writeln!(out, "    against {dir}:");
                out.push_str(&diff::render(&changes, "      ", false));
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What a re-drive did.
#[derive(Debug, Default)]
pub struct Redriven {
    pub moved: usize,
    /// Read and left in place (not selected).
    pub kept: usize,
    /// Ids asked for and not found.
    pub missing: Vec<String>,
}

/// `qiao dlq replay`: re-drives the selected dead letters into the route's queue, one at a
/// time, each taken out of the dead-letter queue only once the broker confirmed its copy.
/// Progress lines go to `progress` as they happen. Stops at the first message that cannot
/// be re-driven (it stays in the dead-letter queue).
pub fn redrive(
    config: &Config,
    route: &str,
    ask: &Redrive,
    progress: &mut dyn std::io::Write,
) -> Result<Redriven, String> {
    let (_, src) = source(config, route)?;
    block_on(async {
        let session = QueueSession::connect(&src.broker, CONNECTION_NAME).await?;
        let result = redrive_on(&session, src, ask, progress).await;
        session.close().await;
        result
    })
}

async fn redrive_on(
    session: &QueueSession,
    src: &AmqpSource,
    ask: &Redrive,
    progress: &mut dyn std::io::Write,
) -> Result<Redriven, String> {
    let dlq = &src.dead_letter_queue;
    let count = session.message_count(dlq).await?.ok_or_else(|| format!("there is no queue `{dlq}`"))?;
    if session.message_count(&src.queue).await?.is_none() {
        return Err(format!("there is no queue `{}` to re-drive into (start Qiao once: it declares it)", src.queue));
    }
    if !ask.yes {
        let what = match &ask.selection {
            Selection::All => format!("all {count} messages of {dlq}"),
            Selection::Ids(ids) => format!("the messages of {dlq} with id {}", ids.join(", ")),
        };
        confirm(&format!("Re-drive {what} into {}?", src.queue))?;
    }
    let reader = session.reader(dlq).await?;
    let mut pace = ask.rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let in_flight = ask.in_flight.max(1);
    let mut done = Redriven::default();
    let mut found: Vec<String> = Vec::new();
    let mut failure = None;
    let mut seen = 0;
    let mut batch: Vec<Delivery> = Vec::with_capacity(in_flight);
    // Only the messages there at the start: one that fails again while the re-drive runs
    // comes back behind them and waits for the next run instead of going round.
    while seen < count && failure.is_none() {
        batch.clear();
        while batch.len() < in_flight && seen < count {
            let Some(d) = reader.next().await? else {
                seen = count;
                break;
            };
            seen += 1;
            let id = letter::message_id(&d);
            if !ask.selection.takes(id.as_deref()) {
                // Left unacked: back at its place when the reader closes.
                done.kept += 1;
                continue;
            }
            if let Some(id) = id {
                found.push(id);
            }
            batch.push(d);
        }
        if batch.is_empty() {
            break;
        }
        if let Some(p) = pace.as_mut() {
            for _ in 0..batch.len() {
                p.tick().await;
            }
        }
        let at = now();
        let copies = batch.iter().map(|d| (d.data.as_slice(), redrive_properties(&d.properties, dlq, &at))).collect();
        let shown = |d: &Delivery| letter::message_id(d).unwrap_or_else(|| "(no message id)".into());
        if let Err(e) = session.publish_confirmed("", &src.queue, copies, CONFIRM_TIMEOUT).await {
            let ids: Vec<String> = batch.iter().map(shown).collect();
            failure = Some(format!("{}: not re-driven, they stay in {dlq}: {e}", ids.join(", ")));
            break;
        }
        // The window: the copies are in the route's queue and the dead letters not yet
        // taken out. Cut off here, a message would be in both.
        for d in &batch {
            if let Err(e) = reader.take(d).await {
                failure = Some(format!(
                    "{}: re-driven into {}, but could not be taken out of {dlq} ({e}): it is in both now",
                    shown(d),
                    src.queue
                ));
                break;
            }
            done.moved += 1;
            let _ = writeln!(progress, "re-driven {}", shown(d));
        }
    }
    reader.close().await;
    if let Some(f) = failure {
        return Err(f);
    }
    if let Selection::Ids(ids) = &ask.selection {
        done.missing = ids.iter().filter(|i| !found.contains(i)).cloned().collect();
    }
    Ok(done)
}

/// Asks on the terminal; refuses when standard input is not one.
fn confirm(question: &str) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err("standard input is not a terminal: add --yes to re-drive without the question".into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| e.to_string())?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err("nothing was re-driven".into())
    }
}
