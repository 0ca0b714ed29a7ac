//! Reading journal records back: files and directories of `*.ndjson` and `*.ndjson.gz`
//! segments, filtered by route, time and id.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::journal::Record;

/// Which records to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub route: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Message ids or trace ids; empty: all.
    pub ids: Vec<String>,
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        if self.route.as_deref().is_some_and(|route| route != r.route) {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|id| *id == r.id || (!r.trace_id.is_empty() && *id == r.trace_id))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Ok(at) = DateTime::parse_from_rfc3339(&r.received_at).map(|t| t.with_timezone(&Utc)) else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u) {
                return false;
            }
        }
        true
    }
}

/// A point in time on the command line: RFC 3339 (`2026-12-07T08:00:00Z`), a date
/// (`2026-12-07`, midnight UTC), or a time ago (`90s`, `30m`, `2h`, `1d`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    match n.parse::<i64>() {
        Ok(n) if seconds > 0 => Ok(now - chrono::TimeDelta::seconds(n.saturating_mul(seconds))),
        _ => Err(format!(
            "`{s}` is not a time: write RFC 3339 (2026-12-07T08:00:00Z), a date (2026-12-07) or a time ago (30m, 2h, 1d)"
        )),
    }
}

/// The segment files under `paths` (files as given, directories searched to any depth for
/// `*.ndjson` and `*.ndjson.gz`), each directory's in name order: segments are named so
/// that this is the order they were written in.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.to_string_lossy().ends_with(".ndjson") || p.to_string_lossy().ends_with(".ndjson.gz") {
            out.push(p);
        }
    }
    Ok(())
}

/// What reading found besides records.
#[derive(Debug, Default)]
pub struct Stats {
    pub files: usize,
    pub lines: usize,
    /// Lines that are not a record (a torn last line of a segment still being written, or
    /// another program's output), with the first one's place.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
}

/// Calls `each` with every record under `paths` that `filter` keeps, in file order.
pub fn read(paths: &[PathBuf], filter: &Filter, mut each: impl FnMut(Record)) -> Result<Stats, String> {
    let mut stats = Stats::default();
    for file in files(paths)? {
        let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let reader: Box<dyn Read> = if file.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        stats.files += 1;
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut line = String::new();
        let mut number = 0usize;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // A truncated gzip segment: what was read so far still counts.
                    stats.unreadable += 1;
                    stats.first_unreadable.get_or_insert_with(|| format!("{}: {e}", file.display()));
                    break;
                }
            }
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            stats.lines += 1;
            match serde_json::from_str::<Record>(&line) {
                Ok(r) if filter.keeps(&r) => each(r),
                Ok(_) => {}
                Err(e) => {
                    stats.unreadable += 1;
                    stats.first_unreadable.get_or_insert_with(|| format!("{}:{number}: {e}", file.display()));
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_on_the_command_line() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").unwrap().with_timezone(&Utc);
        let t = |s| parse_time(s, now).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        assert_eq!(t("2026-12-06T08:00:00+08:00").unwrap(), "2026-12-06T00:00:00Z");
        assert_eq!(t("2026-12-06").unwrap(), "2026-12-06T00:00:00Z");
        assert_eq!(t("2h").unwrap(), "2026-12-07T10:00:00Z");
        assert_eq!(t("1d").unwrap(), "2026-12-06T12:00:00Z");
        assert!(t("yesterday").unwrap_err().contains("not a time"));
        assert!(t("5w").is_err());
    }
}
