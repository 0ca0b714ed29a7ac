//! The journal: every message's journey, written as NDJSON off the hot path, read back by
//! `qiao journal` and `qiao replay`. docs/journal.md describes the files and their fields.
//!
//! One per process, started by `qiao run` ([`start`]) and read by both ingresses through
//! [`wants`] and [`submit`]: a record is built only for a message whose route journals and
//! that was sampled, or while someone taps, and goes to the writer's thread through a
//! bounded channel with `try_send`. A full channel drops the record (counted, logged once
//! in a while); traffic never waits for the journal.

pub mod build;
pub mod cli;
pub mod read;
pub mod record;
pub mod redact;
pub mod writer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{Notify, broadcast, mpsc};

pub use build::{End, Pending};
pub use record::Record;
use writer::{Reason, Segments};

use crate::config::{JournalSettings, Route};

/// A record on its way to the writer.
struct Entry {
    record: Record,
    /// Written to disk (else only tapped).
    disk: bool,
}

/// A record as taps receive it.
#[derive(Debug)]
pub struct Tapped {
    pub route: String,
    /// The record as one JSON line.
    pub line: String,
}

/// The process's journal: the channel to its writer, the token key, the tap.
pub struct Journal {
    tx: mpsc::Sender<Entry>,
    tokens: redact::Tokens,
    /// Whether records go to disk (a directory is set).
    writing: bool,
    /// Taps connected right now: while there is any, every message's record is built.
    taps: AtomicUsize,
    tap: broadcast::Sender<Arc<Tapped>>,
    stop: Arc<Notify>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    dropped: [prometheus::IntCounter; 4],
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("writing", &self.writing).finish()
    }
}

static JOURNAL: OnceLock<Journal> = OnceLock::new();

/// The journal, once started.
pub fn get() -> Option<&'static Journal> {
    JOURNAL.get()
}

/// Starts the writer's thread; with no directory, only the tap is served. Settings take
/// effect at the start of the process (a reload keeps the running journal).
pub fn start(settings: &JournalSettings) -> Result<&'static Journal, String> {
    if let Some(j) = JOURNAL.get() {
        return Ok(j);
    }
    let (tx, rx) = mpsc::channel(settings.channel.max(1));
    let (tap, _) = broadcast::channel(1024);
    let (tokens, keyed) = redact::Tokens::from_env();
    let stop = Arc::new(Notify::new());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let m = crate::telemetry::metrics::get();
    let journal = Journal {
        tx,
        tokens,
        writing: settings.dir.is_some(),
        taps: AtomicUsize::new(0),
        tap: tap.clone(),
        stop: stop.clone(),
        done: Mutex::new(Some(done_rx)),
        dropped: Reason::ALL.map(|r| m.journal_dropped.with_label_values(&[r.as_str()])),
    };
    let segments = settings.dir.as_ref().map(|root| {
        let name = writer::process_dir_name(SystemTime::now());
        Segments::new(root, settings, &name)
    });
    if let Some(s) = &segments {
        tracing::info!(dir = %s.dir().display(), "journal: writing");
        if !keyed {
            tracing::warn!(
                "journal: {} is not set; PII tokens use a random key of this process and will not match \
                 tokens of other processes or of a replay",
                redact::KEY_ENV
            );
        }
    }
    std::thread::Builder::new()
        .name("qiao-journal".into())
        .spawn(move || write_loop(rx, segments, tap, stop, done_tx))
        .map_err(|e| format!("cannot start the journal's writer: {e}"))?;
    Ok(JOURNAL.get_or_init(|| journal))
}

/// Writes what is left and closes the current segment; waits at most `within`.
pub fn shutdown(within: Duration) {
    let Some(j) = JOURNAL.get() else { return };
    let done = j.done.lock().ok().and_then(|mut d| d.take());
    j.stop.notify_one();
    if let Some(done) = done
        && done.recv_timeout(within).is_err()
    {
        tracing::warn!("journal: the writer did not finish in time; the last records may be lost");
    }
}

/// Whether `route`'s message is recorded: `Some(true)` to disk, `Some(false)` only for a
/// tap. The one check a message pays when the journal is off.
#[inline]
pub fn wants(route: &Route) -> Option<bool> {
    let j = JOURNAL.get()?;
    let disk = j.writing && route.journal.enabled && sampled(route.journal.sample);
    if disk || j.taps.load(Ordering::Relaxed) > 0 { Some(disk) } else { None }
}

fn sampled(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

/// Redaction for one message.
pub fn scrub() -> Option<redact::Scrub<'static>> {
    JOURNAL.get().map(|j| redact::Scrub::new(&j.tokens))
}

/// Finishes a record and hands it to the writer, without waiting.
pub fn submit(pending: Box<Pending>, disk: bool, end: End<'_>) {
    let Some(j) = JOURNAL.get() else { return };
    let mut scrub = redact::Scrub::new(&j.tokens);
    let record = pending.finish(end, &mut scrub);
    if let Err(mpsc::error::TrySendError::Full(e)) = j.tx.try_send(Entry { record, disk })
        && e.disk
    {
        j.drop_records(Reason::ChannelFull, 1);
    }
}

impl Journal {
    fn drop_records(&self, reason: Reason, n: u64) {
        self.dropped[Reason::ALL.iter().position(|r| *r == reason).unwrap_or(3)].inc_by(n);
        log_drop(reason);
    }

    /// Follows the records of every message from now on, while the guard lives.
    pub fn subscribe(&'static self) -> (broadcast::Receiver<Arc<Tapped>>, TapGuard) {
        let rx = self.tap.subscribe();
        self.taps.fetch_add(1, Ordering::Relaxed);
        (rx, TapGuard { journal: self })
    }
}

/// A tap's place: the journal builds every record while one is held.
#[derive(Debug)]
pub struct TapGuard {
    journal: &'static Journal,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.journal.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs dropped records at most once per [`LOG_EVERY`] (the counter has the numbers).
fn log_drop(reason: Reason) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + LOG_EVERY.as_secs()
        && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(
            reason = reason.as_str(),
            "journal: records dropped (traffic is not affected); see qiao_journal_dropped_total"
        );
    }
}

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Records taken from the channel at once, at most: one write for all of them.
const BATCH: usize = 512;
/// How long the writer lets records gather after the first of a batch arrives: a record is
/// on disk (and at a tap) this much later, at most, plus the write.
const GATHER: Duration = Duration::from_millis(10);

fn write_loop(
    mut rx: mpsc::Receiver<Entry>,
    mut segments: Option<Segments>,
    tap: broadcast::Sender<Arc<Tapped>>,
    stop: Arc<Notify>,
    done: std::sync::mpsc::Sender<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_time().build() else {
        tracing::error!("journal: cannot start the writer's runtime; nothing is written");
        return;
    };
    rt.block_on(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut entries = Vec::with_capacity(BATCH);
        let mut lines = Vec::with_capacity(64 * 1024);
        loop {
            tokio::select! {
                got = rx.recv_many(&mut entries, BATCH) => {
                    if got == 0 {
                        break;
                    }
                    // Let records gather for a moment: one write, and one wake-up of this
                    // thread, per batch instead of per message. At thousands of messages a
                    // second, waking the writer for each was most of what the journal cost.
                    tokio::time::sleep(GATHER).await;
                    loop {
                        let room = BATCH.saturating_sub(entries.len());
                        if room == 0 || rx.recv_many(&mut entries, room).now_or_never().unwrap_or(0) == 0 {
                            break;
                        }
                    }
                    write(&mut entries, &mut lines, segments.as_mut(), &tap);
                }
                _ = tick.tick() => {
                    if let Some(s) = segments.as_mut() {
                        s.tick(SystemTime::now());
                    }
                }
                _ = stop.notified() => {
                    while rx.recv_many(&mut entries, BATCH).now_or_never().unwrap_or(0) > 0 {
                        write(&mut entries, &mut lines, segments.as_mut(), &tap);
                    }
                    break;
                }
            }
        }
        if let Some(s) = segments.as_mut() {
            s.close();
        }
    });
    let _ = done.send(());
}

fn write(
    entries: &mut Vec<Entry>,
    lines: &mut Vec<u8>,
    segments: Option<&mut Segments>,
    tap: &broadcast::Sender<Arc<Tapped>>,
) {
    lines.clear();
    let mut count = 0u64;
    let tapping = tap.receiver_count() > 0;
    for e in entries.drain(..) {
        let Ok(line) = serde_json::to_string(&e.record) else { continue };
        if e.disk {
            lines.extend_from_slice(line.as_bytes());
            lines.push(b'\n');
            count += 1;
        }
        if tapping {
            let _ = tap.send(Arc::new(Tapped { route: e.record.route, line }));
        }
    }
    if count == 0 {
        return;
    }
    let Some(s) = segments else { return };
    let m = crate::telemetry::metrics::get();
    match s.append(lines, SystemTime::now()) {
        Ok(()) => m.journal_records.inc_by(count),
        Err(reason) => {
            m.journal_dropped.with_label_values(&[reason.as_str()]).inc_by(count);
            log_drop(reason);
        }
    }
}
