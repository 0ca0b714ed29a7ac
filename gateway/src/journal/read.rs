//! Reading the journal back: every segment (plain `.ndjson` and closed `.ndjson.gz`) under
//! the given files and directories, recursively (one directory per process), as records,
//! filtered by route, outcome, time and id. `qiao journal`, `qiao replay` and `qiao dlq` read
//! through here.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::record::{Record, Verdict};

/// Which records to keep. The default keeps every one.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub route: Option<String>,
    pub outcome: Option<Verdict>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Message ids or trace ids; empty: any.
    pub ids: Vec<String>,
}

/// Which messages a command reads, as given on its command line (`qiao journal`,
/// `qiao replay`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Window {
    /// Only this route's messages.
    #[arg(long)]
    pub route: Option<String>,
    /// Only messages received at or after this time: RFC 3339, YYYY-MM-DD, or back from now
    /// (30m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only messages received before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
}

impl Window {
    /// The filter of these bounds and `ids`; `Err` names a time that does not read.
    pub fn filter(&self, ids: Vec<String>) -> Result<Filter, String> {
        let now = chrono::Utc::now();
        Ok(Filter {
            route: self.route.clone(),
            since: self.since.as_deref().map(|s| parse_time(s, now)).transpose()?,
            until: self.until.as_deref().map(|s| parse_time(s, now)).transpose()?,
            ids,
            ..Filter::default()
        })
    }
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        if self.route.as_deref().is_some_and(|route| route != r.route) {
            return false;
        }
        if self.outcome.is_some_and(|o| o != r.outcome.result) {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = received_at(r) else { return false };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u) {
                return false;
            }
        }
        self.ids.is_empty() || self.ids.iter().any(|id| *id == r.id || (!r.trace_id.is_empty() && *id == r.trace_id))
    }
}

/// When the record's message was received.
pub fn received_at(r: &Record) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&r.received_at).ok().map(|t| t.with_timezone(&Utc))
}

/// A time as `--since` and `--until` take it: RFC 3339 (`2026-12-07T08:00:00Z`), a date
/// (`2026-12-07`, midnight UTC), or a span back from `now` (`90s`, `30m`, `2h`, `7d`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| format!("`{s}` is not a time (RFC 3339, YYYY-MM-DD, or 30m / 2h / 7d ago)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: the unit of a span back is s, m, h or d")),
    };
    Ok(now - chrono::Duration::seconds(n.saturating_mul(secs)))
}

/// Whether a file is a journal segment, by its name.
pub fn is_segment(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".ndjson") || name.ends_with(".ndjson.gz")
}

/// Every segment under `paths` (files are taken as they are, directories searched
/// recursively), each process's in the order they were written.
pub fn segments(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            collect(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: no such file", p.display())));
        }
    }
    // Segment names start with their sequence number, zero-padded: the path order is the
    // order of writing within a process directory.
    out.sort();
    out.dedup();
    // A segment being compressed is there twice for a moment: read the `.gz` alone.
    let gz: std::collections::HashSet<PathBuf> =
        out.iter().filter(|p| p.extension().is_some_and(|e| e == "gz")).cloned().collect();
    out.retain(|p| {
        let mut twin = p.as_os_str().to_owned();
        twin.push(".gz");
        !gz.contains(&PathBuf::from(twin))
    });
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if is_segment(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// What [`read`] found besides records.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines that are not a record (a torn last line of a segment still being written, or
    /// another program's output), with the first one's place.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
}

/// Calls `each` with every record under `paths` that `filter` keeps, in segment order; lines
/// that are not records are counted, not fatal (`qiao replay` reports them and goes on).
pub fn read(paths: &[PathBuf], filter: &Filter, mut each: impl FnMut(Record)) -> Result<Stats, String> {
    let mut stats = Stats::default();
    for item in records(paths, filter.clone()).map_err(|e| e.to_string())? {
        match item {
            Ok(r) => each(r),
            Err(bad) => {
                stats.unreadable += 1;
                stats.first_unreadable.get_or_insert_with(|| bad.to_string());
            }
        }
    }
    Ok(stats)
}

/// A line that is not a record, where it is.
#[derive(Debug)]
pub struct BadLine {
    pub file: PathBuf,
    pub line: usize,
    pub error: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.error)
    }
}

/// The records of a list of segments, in order, that pass a filter. A line that is not a
/// record (a segment cut short by a crash) is an `Err` the caller may skip.
pub struct Records {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, Box<dyn BufRead>, usize)>,
    filter: Filter,
    buf: String,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("filter", &self.filter).finish()
    }
}

/// Reads every record under `paths` (see [`segments`]) that passes `filter`.
pub fn records(paths: &[PathBuf], filter: Filter) -> std::io::Result<Records> {
    Ok(Records::new(segments(paths)?, filter))
}

impl Records {
    pub fn new(files: Vec<PathBuf>, filter: Filter) -> Records {
        Records { files: files.into_iter(), current: None, filter, buf: String::new() }
    }
}

fn open(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(BufReader::new(file))))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

impl Iterator for Records {
    type Item = Result<Record, BadLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((file, reader, line)) = &mut self.current else {
                let path = self.files.next()?;
                match open(&path) {
                    Ok(r) => self.current = Some((path, r, 0)),
                    // A segment deleted by retention between the listing and now.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Some(Err(BadLine { file: path, line: 0, error: e.to_string() })),
                }
                continue;
            };
            self.buf.clear();
            match reader.read_line(&mut self.buf) {
                Ok(0) => self.current = None,
                Ok(_) => {
                    *line += 1;
                    let text = self.buf.trim_end();
                    if text.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Record>(text) {
                        Ok(r) if self.filter.matches(&r) => return Some(Ok(r)),
                        Ok(_) => {}
                        Err(e) => return Some(Err(BadLine { file: file.clone(), line: *line, error: e.to_string() })),
                    }
                }
                Err(e) => {
                    let bad = BadLine { file: file.clone(), line: *line + 1, error: e.to_string() };
                    self.current = None;
                    return Some(Err(bad));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_instants_and_spans_back() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("2h", now).unwrap().to_rfc3339(), "2026-12-07T08:00:00+00:00");
        assert_eq!(parse_time("2026-12-01", now).unwrap().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(parse_time("2026-12-07T09:30:00+08:00", now).unwrap().to_rfc3339(), "2026-12-07T01:30:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("3w", now).is_err());
    }
}
