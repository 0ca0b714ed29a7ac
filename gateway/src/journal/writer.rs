//! The journal's files: NDJSON segments in a directory of this process's own
//! (`<dir>/<host>-<pid>-<start>/`), closed by size or age and then gzip-compressed, the
//! oldest closed ones deleted past the retention's age or total size.
//!
//! Runs on the writer's own thread (see `super::Journal`), never on a request's: blocking
//! file I/O is fine here. A batch that cannot be written is cut back off the file, so a
//! reader never meets half a line written by a full disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::JournalSettings;

/// Why records were dropped: the label of `qiao_journal_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The writer fell behind: the channel was full.
    ChannelFull,
    DiskFull,
    /// A read-only file system, or no permission to write.
    ReadOnly,
    /// Any other I/O error.
    Io,
}

impl Reason {
    pub const ALL: [Reason; 4] = [Reason::ChannelFull, Reason::DiskFull, Reason::ReadOnly, Reason::Io];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ChannelFull => "channel_full",
            Reason::DiskFull => "disk_full",
            Reason::ReadOnly => "read_only",
            Reason::Io => "io",
        }
    }

    pub fn of(e: &io::Error) -> Reason {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Reason::DiskFull,
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => Reason::ReadOnly,
            _ if e.raw_os_error() == Some(28) => Reason::DiskFull,
            _ => Reason::Io,
        }
    }
}

/// How long a directory that could not be opened is left alone before the next try.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// How often retention looks at the files (also after every rotation).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

struct Current {
    path: PathBuf,
    file: File,
    bytes: u64,
    opened: SystemTime,
}

/// This process's segments.
pub struct Segments {
    root: PathBuf,
    dir: PathBuf,
    settings: JournalSettings,
    current: Option<Current>,
    seq: u64,
    /// After a failure to open: when to try again, and the failure's reason.
    broken: Option<(Instant, Reason)>,
    last_retention: Option<Instant>,
    compressing: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").field("dir", &self.dir).field("seq", &self.seq).finish()
    }
}

/// `<host>-<pid>-<start>`: replicas sharing a volume never share a file, and a restarted
/// process does not append to its predecessor's.
pub fn process_dir_name(now: SystemTime) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' }).collect();
    let host = if host.is_empty() { "host".to_string() } else { host };
    format!("{host}-{}-{}", std::process::id(), stamp(now))
}

fn stamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

impl Segments {
    pub fn new(root: &Path, settings: &JournalSettings, dir_name: &str) -> Segments {
        Segments {
            root: root.to_path_buf(),
            dir: root.join(dir_name),
            settings: settings.clone(),
            current: None,
            seq: 0,
            broken: None,
            last_retention: None,
            compressing: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open(&mut self, now: SystemTime) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.seq += 1;
        let path = self.dir.join(format!("{:06}-{}.ndjson", self.seq, stamp(now)));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.current = Some(Current { path, file, bytes: 0, opened: now });
        Ok(())
    }

    /// Appends whole lines; on failure nothing of them stays in the file.
    pub fn append(&mut self, lines: &[u8], now: SystemTime) -> Result<(), Reason> {
        if let Some((until, reason)) = self.broken {
            if Instant::now() < until {
                return Err(reason);
            }
            self.broken = None;
        }
        if let Some(c) = &self.current
            && c.bytes > 0
            && c.bytes + lines.len() as u64 > self.settings.segment_bytes
        {
            self.rotate(now);
        }
        if self.current.is_none()
            && let Err(e) = self.open(now)
        {
            let reason = Reason::of(&e);
            self.broken = Some((Instant::now() + RETRY_OPEN, reason));
            return Err(reason);
        }
        let c = self.current.as_mut().expect("opened above");
        match c.file.write_all(lines) {
            Ok(()) => {
                c.bytes += lines.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the half-written batch off; in append mode the next write goes to the
                // new end.
                let _ = c.file.set_len(c.bytes);
                Err(Reason::of(&e))
            }
        }
    }

    /// Closes a segment that is old enough, and applies the retention now and then.
    pub fn tick(&mut self, now: SystemTime) {
        if let Some(c) = &self.current
            && now.duration_since(c.opened).unwrap_or_default() >= self.settings.segment_age
        {
            self.rotate(now);
        }
        if self.last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            self.retain(now);
        }
        self.compressing.retain(|h| !h.is_finished());
    }

    /// Closes the current segment (compressed in the background) and applies the retention.
    pub fn rotate(&mut self, now: SystemTime) {
        if let Some(c) = self.current.take() {
            self.close_file(c, false);
        }
        self.retain(now);
    }

    fn close_file(&mut self, c: Current, wait: bool) {
        let Current { path, file, bytes, .. } = c;
        drop(file);
        if bytes == 0 {
            let _ = std::fs::remove_file(&path);
            return;
        }
        if wait {
            compress(&path);
        } else {
            self.compressing.push(std::thread::spawn(move || compress(&path)));
        }
    }

    /// Closes and compresses the current segment, and waits for every compression: the
    /// end of the process.
    pub fn close(&mut self) {
        if let Some(c) = self.current.take() {
            self.close_file(c, true);
        }
        for h in self.compressing.drain(..) {
            let _ = h.join();
        }
    }

    /// Deletes the oldest closed segments (of every process under the root) while they are
    /// older than the retention age or all together hold more than the retention size.
    /// Returns how many were deleted.
    pub fn retain(&mut self, now: SystemTime) -> usize {
        self.last_retention = Some(Instant::now());
        let mut files = Vec::new();
        collect(&self.root, &mut files);
        let current = self.current.as_ref().map(|c| c.path.clone());
        let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
        files.retain(|(p, _, _)| Some(p) != current.as_ref());
        files.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
        let mut deleted = 0;
        for (path, size, modified) in files {
            let old = now.duration_since(modified).unwrap_or_default() > self.settings.retention_age;
            if !old && total <= self.settings.retention_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
                deleted += 1;
                if let Some(parent) = path.parent()
                    && parent != self.dir
                {
                    // Another process's directory, emptied: it has stopped.
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        deleted
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            collect(&path, out);
        } else if super::read::is_segment(&path) {
            out.push((path, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
    }
}

/// `x.ndjson` → `x.ndjson.gz`, through a temporary name so that a reader never opens half
/// a gzip file. When it cannot be done (a full disk) the plain segment stays.
pub fn compress(path: &Path) {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    let mut tmp = gz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> io::Result<()> {
        let mut input = File::open(path)?;
        let out = io::BufWriter::new(File::create(&tmp)?);
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &gz)?;
        std::fs::remove_file(path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(segment = %path.display(), error = %e, "journal: the segment stays uncompressed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(segment_bytes: u64) -> JournalSettings {
        JournalSettings { segment_bytes, ..JournalSettings::default() }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        collect(dir, &mut out);
        let mut names: Vec<String> =
            out.iter().map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    fn line(n: usize) -> Vec<u8> {
        format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(80)).into_bytes()
    }

    #[test]
    fn segments_rotate_by_size_and_are_compressed_when_closed() {
        let root = tempfile::tempdir().unwrap();
        let mut s = Segments::new(root.path(), &settings(300), "h-1-t");
        let now = SystemTime::now();
        for n in 0..7 {
            s.append(&line(n), now).unwrap();
        }
        s.close();
        let names = files(root.path());
        // ~100 bytes a line, 300 a segment: 3 + 3 + 1.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".ndjson.gz")), "{names:?}");
        assert!(names[0].starts_with("000001-"), "{names:?}");
        let records: Vec<String> = super::super::read::segments(&[root.path().to_path_buf()])
            .unwrap()
            .iter()
            .flat_map(|p| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(File::open(p).unwrap()), &mut text)
                    .unwrap();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(records.len(), 7);
        assert!(records[6].starts_with("{\"n\":6"), "written in order: {records:?}");
    }

    #[test]
    fn segments_rotate_by_age() {
        let root = tempfile::tempdir().unwrap();
        let mut s = Segments::new(
            root.path(),
            &JournalSettings { segment_age: Duration::from_secs(60), ..JournalSettings::default() },
            "h-1-t",
        );
        let t0 = SystemTime::now();
        s.append(&line(0), t0).unwrap();
        s.tick(t0 + Duration::from_secs(59));
        assert!(s.current.is_some(), "not old enough yet");
        s.tick(t0 + Duration::from_secs(61));
        assert!(s.current.is_none(), "closed at its age");
        s.append(&line(1), t0 + Duration::from_secs(62)).unwrap();
        s.close();
        assert_eq!(files(root.path()).len(), 2);
    }

    #[test]
    fn retention_deletes_the_oldest_closed_segments_by_size_and_by_age() {
        let root = tempfile::tempdir().unwrap();
        // Another process's old directory, closed segments of 1000 bytes each.
        let other = root.path().join("other-7-x");
        std::fs::create_dir_all(&other).unwrap();
        for i in 0..4 {
            std::fs::write(other.join(format!("{i:06}-x.ndjson.gz")), vec![b'a'; 1000]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = Segments::new(
            root.path(),
            &JournalSettings { retention_bytes: 2500, ..JournalSettings::default() },
            "h-1-t",
        );
        s.append(&line(0), SystemTime::now()).unwrap();
        assert_eq!(s.retain(SystemTime::now()), 2, "4100 bytes down to 2100");
        let left = files(root.path());
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"000002-x.ndjson.gz".to_string()) && !left.contains(&"000001-x.ndjson.gz".into()));
        // By age: a week later, every closed one goes; the open segment stays.
        let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
        assert_eq!(s.retain(later), 2);
        assert_eq!(files(root.path()).len(), 1);
        assert!(!other.exists(), "the emptied directory of a stopped process is removed");
    }

    #[test]
    fn a_failed_write_leaves_no_half_line_and_an_unwritable_dir_is_a_reason() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        // The journal directory is a file: it cannot be made.
        let mut s = Segments::new(&blocker, &settings(1 << 20), "h-1-t");
        assert!(s.append(&line(0), SystemTime::now()).is_err());
        assert!(s.append(&line(1), SystemTime::now()).is_err(), "left alone for a while");
        assert_eq!(Reason::of(&io::Error::from_raw_os_error(28)), Reason::DiskFull);
        assert_eq!(Reason::of(&io::Error::from_raw_os_error(30)), Reason::ReadOnly);
    }
}
