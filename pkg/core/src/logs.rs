//! Reading a container's log: the CRI-format file its monitor writes
//! (`<RFC3339Nano UTC> <stdout|stderr> <P|F> <message>`), partial lines
//! joined, filtered by time and tail, and optionally followed until the
//! container has exited and the file is drained. Front doors only frame
//! what this yields.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use berth_errdefs::Result;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::Containers;

/// How often a followed log is read again while the container runs: the
/// monitor gives no notification of its own, and a bounded poll keeps the
/// CPU cost flat however many followers there are.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read from the file at once.
const READ_CHUNK: usize = 64 * 1024;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One complete line of the log (partial lines joined), with its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: LogStream,
    /// When the line's first part was written, ns since the epoch.
    pub timestamp_ns: i64,
    pub bytes: Vec<u8>,
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    /// Only lines written at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Only lines written before this time.
    pub until_ns: Option<i64>,
    /// Only the last this many lines of what is already written.
    pub tail: Option<usize>,
    /// Keep reading new lines until the container has exited.
    pub follow: bool,
}

/// The lines of a container's log, read as they are asked for.
pub struct LogReader {
    path: PathBuf,
    options: LogOptions,
    file: Option<tokio::fs::File>,
    /// Bytes read that do not yet end in a newline.
    pending: Vec<u8>,
    /// A line whose `P` parts are being joined.
    partial: Option<LogEntry>,
    ready: VecDeque<LogEntry>,
    /// The first read (the existing lines, with `tail` applied) is done.
    backlog_done: bool,
    exited: Option<watch::Receiver<bool>>,
    finished: bool,
}

impl Containers {
    /// The container's log. Errors: NotFound. A container without a log
    /// file (its pod has no log directory) has an empty log.
    pub fn logs(&self, id: &str, options: LogOptions) -> Result<LogReader> {
        let record = self.status(id)?;
        let exited = self.container_entry(id).map(|e| e.exited.subscribe());
        Ok(LogReader {
            path: record.log_path,
            options,
            file: None,
            pending: Vec::new(),
            partial: None,
            ready: VecDeque::new(),
            backlog_done: false,
            exited,
            finished: false,
        })
    }
}

impl LogReader {
    /// The next line; `None` at the end (without follow: what was written
    /// when it was read; with follow: once the container exited and
    /// everything it wrote was read).
    pub async fn next_entry(&mut self) -> Option<LogEntry> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(entry);
            }
            if self.finished {
                return None;
            }
            if !self.backlog_done {
                self.read_backlog().await;
                self.backlog_done = true;
                continue;
            }
            // Following: whether it has exited is looked at before reading,
            // so that lines written just before the exit are not lost.
            let exited = self.has_exited();
            let got = self.read_available().await;
            if got == 0 {
                if exited {
                    self.finish();
                    continue;
                }
                self.wait_for_more().await;
            }
        }
    }

    /// The next line already read, if any: no I/O, never waits. Lets a
    /// caller batch what one read of the file gave.
    pub fn next_ready(&mut self) -> Option<LogEntry> {
        self.ready.pop_front()
    }

    /// The end: a last line the container never ended is shown as it is.
    fn finish(&mut self) {
        self.finished = true;
        if let Some(open) = self.partial.take() {
            self.emit(open);
        }
    }

    fn has_exited(&self) -> bool {
        match &self.exited {
            Some(rx) => *rx.borrow() || rx.has_changed().is_err(),
            None => true,
        }
    }

    async fn wait_for_more(&mut self) {
        match self.exited.as_mut() {
            Some(rx) => {
                tokio::select! {
                    _ = rx.changed() => {}
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
            None => tokio::time::sleep(FOLLOW_POLL).await,
        }
    }

    /// Reads what is written so far, applying `tail`.
    async fn read_backlog(&mut self) {
        while self.read_available().await > 0 {}
        if !self.options.follow {
            self.finish();
        }
        if let Some(n) = self.options.tail {
            while self.ready.len() > n {
                self.ready.pop_front();
            }
        }
    }

    /// Reads one chunk of whatever the file has past what was read; the
    /// number of bytes read.
    async fn read_available(&mut self) -> usize {
        if self.file.is_none() {
            if self.path.as_os_str().is_empty() {
                return 0;
            }
            match tokio::fs::File::open(&self.path).await {
                Ok(f) => self.file = Some(f),
                Err(_) => return 0,
            }
        }
        let Some(file) = self.file.as_mut() else {
            return 0;
        };
        let mut buf = Vec::with_capacity(READ_CHUNK);
        let n = match (&mut *file)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut buf)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "reading a container log: {e}");
                0
            }
        };
        self.pending.extend_from_slice(&buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.take_line(&line[..end]);
        }
        n
    }

    fn take_line(&mut self, line: &[u8]) {
        let Some(parsed) = parse_line(line) else {
            return;
        };
        let mut entry = match self.partial.take() {
            Some(mut open) if open.stream == parsed.stream => {
                open.bytes.extend_from_slice(parsed.message);
                open
            }
            other => {
                // A partial line of the other stream stays open.
                if let Some(open) = other {
                    self.partial = Some(open);
                }
                LogEntry {
                    stream: parsed.stream,
                    timestamp_ns: parsed.timestamp_ns,
                    bytes: parsed.message.to_vec(),
                }
            }
        };
        if !parsed.full {
            if let Some(other) = self.partial.replace(entry) {
                self.emit(other);
            }
            return;
        }
        entry.bytes.push(b'\n');
        self.emit(entry);
    }

    fn emit(&mut self, entry: LogEntry) {
        let o = &self.options;
        let wanted = match entry.stream {
            LogStream::Stdout => o.stdout,
            LogStream::Stderr => o.stderr,
        };
        if wanted
            && o.since_ns.is_none_or(|s| entry.timestamp_ns >= s)
            && o.until_ns.is_none_or(|u| entry.timestamp_ns < u)
        {
            self.ready.push_back(entry);
        }
    }
}

struct Line<'a> {
    timestamp_ns: i64,
    stream: LogStream,
    full: bool,
    message: &'a [u8],
}

/// One line of the file, without its newline; `None` if it is not CRI format.
fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Line {
        timestamp_ns: parse_utc_rfc3339(ts)?,
        stream,
        full,
        message: parts.next().unwrap_or(b""),
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as the monitor writes it, to ns
/// since the epoch.
fn parse_utc_rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let secs = days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reader(path: PathBuf, options: LogOptions) -> LogReader {
        LogReader {
            path,
            options,
            file: None,
            pending: Vec::new(),
            partial: None,
            ready: VecDeque::new(),
            backlog_done: false,
            exited: None,
            finished: false,
        }
    }

    #[test]
    fn timestamps_parse_to_unix_nanoseconds() {
        assert_eq!(parse_utc_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_rfc3339("2026-12-04T14:18:22.6591Z"),
            Some(1_796_393_902_659_100_000)
        );
        assert_eq!(parse_utc_rfc3339("2026-12-04T14:18:22"), None);
        assert_eq!(parse_utc_rfc3339("2026-12-04T14:18:22.x1Z"), None);
    }

    #[tokio::test]
    async fn partial_lines_join_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(
            f,
            "1970-01-01T00:00:01Z stdout P hel\n\
             1970-01-01T00:00:02Z stderr F oops\n\
             1970-01-01T00:00:03Z stdout F lo\n\
             garbage\n\
             1970-01-01T00:00:04Z stdout F \n\
             1970-01-01T00:00:05Z stdout F last\n\
             1970-01-01T00:00:06Z stdout F unterminated"
        )
        .unwrap();
        let all = LogOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut r = reader(path.clone(), all.clone());
        let mut got = Vec::new();
        while let Some(e) = r.next_entry().await {
            got.push((e.stream, e.timestamp_ns / 1_000_000_000, e.bytes));
        }
        assert_eq!(
            got,
            vec![
                (LogStream::Stderr, 2, b"oops\n".to_vec()),
                (LogStream::Stdout, 1, b"hello\n".to_vec()),
                (LogStream::Stdout, 4, b"\n".to_vec()),
                (LogStream::Stdout, 5, b"last\n".to_vec()),
            ]
        );
        let mut r = reader(
            path,
            LogOptions {
                stderr: false,
                since_ns: Some(1_000_000_000),
                until_ns: Some(5_000_000_000),
                tail: Some(1),
                ..all
            },
        );
        assert_eq!(r.next_entry().await.unwrap().bytes, b"\n".to_vec());
        assert_eq!(r.next_entry().await, None);
    }
}
