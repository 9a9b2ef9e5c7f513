//! The CRI log format: `<RFC3339Nano UTC> <stdout|stderr> <F|P> <message>\n`.
//!
//! Lines are cut the way containerd's CRI logger cuts them: the `\n` and
//! one `\r` before it are dropped; content longer than [`MAX_LINE`] goes out
//! as `P` (partial) entries of exactly `MAX_LINE` bytes followed by an `F`
//! (full) entry with the rest; an empty line is an `F` entry with an empty
//! message; content still pending at end of stream goes out as `P`.

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

/// The longest message of one log entry (containerd's default
/// `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;
/// The splitter holds one byte more than a message, so a `\r` at the
/// boundary can wait for the byte that says whether it ends the line.
const CAP: usize = MAX_LINE + 1;

pub const FULL: u8 = b'F';
pub const PARTIAL: u8 = b'P';

/// Cuts one output stream into log entries.
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> Self {
        LineSplitter { buf: Vec::new() }
    }

    /// Feeds bytes read from the stream; `emit(tag, message)` is called for
    /// each entry that is complete.
    pub fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(u8, &[u8])) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, after) = rest.split_at(i);
                    if self.buf.is_empty() {
                        emit_line(line, emit);
                    } else {
                        self.append(line, emit);
                        self.end_line(emit);
                    }
                    rest = after.get(1..).unwrap_or_default();
                }
                None => {
                    self.append(rest, emit);
                    break;
                }
            }
        }
    }

    /// End of stream: what is pending goes out as partial entries.
    pub fn finish(&mut self, emit: &mut dyn FnMut(u8, &[u8])) {
        for chunk in self.buf.chunks(MAX_LINE) {
            emit(PARTIAL, chunk);
        }
        self.buf.clear();
    }

    fn append(&mut self, mut data: &[u8], emit: &mut dyn FnMut(u8, &[u8])) {
        if self.buf.capacity() < CAP {
            self.buf.reserve_exact(CAP - self.buf.len());
        }
        loop {
            if self.buf.len() >= CAP {
                // A full message plus one byte: unless that byte is a `\r`
                // that may be followed by the `\n` (which would drop it), the
                // message is cut here.
                if data.is_empty() && self.buf.last() == Some(&b'\r') {
                    return;
                }
                let (head, tail) = self.buf.split_at(MAX_LINE);
                emit(PARTIAL, head);
                let keep = tail.len();
                self.buf.copy_within(MAX_LINE.., 0);
                self.buf.truncate(keep);
            }
            if data.is_empty() {
                return;
            }
            let n = (CAP - self.buf.len()).min(data.len());
            let (now, later) = data.split_at(n);
            self.buf.extend_from_slice(now);
            data = later;
        }
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(u8, &[u8])) {
        emit_line(&self.buf, emit);
        self.buf.clear();
    }
}

/// Emits one complete line (without its `\n`).
fn emit_line(line: &[u8], emit: &mut dyn FnMut(u8, &[u8])) {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    while line.len() > MAX_LINE {
        let (head, tail) = line.split_at(MAX_LINE);
        emit(PARTIAL, head);
        line = tail;
    }
    emit(FULL, line);
}

/// Longest timestamp: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const TIMESTAMP_MAX: usize = 30;

/// Formats a UTC time like Go's `time.RFC3339Nano`: the fraction loses its
/// trailing zeros, and the dot too when the fraction is zero. Returns the
/// length written.
pub fn rfc3339nano(secs: i64, nanos: u32, out: &mut [u8; TIMESTAMP_MAX]) -> usize {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u32;
    let mut w = Cursor { out, len: 0 };
    w.num(year, 4);
    w.byte(b'-');
    w.num(month, 2);
    w.byte(b'-');
    w.num(day, 2);
    w.byte(b'T');
    w.num((of_day / 3600) as u32, 2);
    w.byte(b':');
    w.num((of_day / 60 % 60) as u32, 2);
    w.byte(b':');
    w.num((of_day % 60) as u32, 2);
    let nanos = nanos.min(999_999_999);
    if nanos != 0 {
        let mut frac = nanos;
        let mut digits = 9;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        w.byte(b'.');
        w.num(frac, digits);
    }
    w.byte(b'Z');
    w.len
}

struct Cursor<'a> {
    out: &'a mut [u8; TIMESTAMP_MAX],
    len: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.out.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// `n` in decimal, zero-padded to `width` digits.
    fn num(&mut self, n: u32, width: u32) {
        for i in (0..width).rev() {
            let digit = (n / 10u32.pow(i) % 10) as u8;
            self.byte(b'0' + digit);
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// counting in 400-year eras of 146097 days that start on March 1st.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The container's log file, opened `O_APPEND`; each entry is one
/// `writev(2)`, so readers never see half an entry from a healthy disk.
pub struct LogFile {
    path: CString,
    file: Option<File>,
    /// Set after a failed write, so a full disk is reported once, not per
    /// line.
    pub failing: bool,
}

impl LogFile {
    pub fn open(path: CString) -> io::Result<Self> {
        let file = open_log(&path)?;
        Ok(LogFile {
            path,
            file: Some(file),
            failing: false,
        })
    }

    /// Opens the path again (after rotation renamed the old file). On
    /// failure the old file stays in use.
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_log(&self.path)?;
        self.file = Some(file);
        self.failing = false;
        Ok(())
    }

    pub fn write_entry(&mut self, stream: &[u8], tag: u8, msg: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let (secs, nanos) = crate::sys::now_realtime();
        let mut head = [0u8; TIMESTAMP_MAX + 12];
        let mut ts = [0u8; TIMESTAMP_MAX];
        let n = rfc3339nano(secs, nanos, &mut ts);
        let mut len = 0;
        for part in [
            ts.get(..n).unwrap_or_default(),
            b" ",
            stream,
            b" ",
            &[tag],
            b" ",
        ] {
            let Some(dst) = head.get_mut(len..len + part.len()) else {
                break;
            };
            dst.copy_from_slice(part);
            len += part.len();
        }
        let head = head.get(..len).unwrap_or_default();
        let mut slices = [IoSlice::new(head), IoSlice::new(msg), IoSlice::new(b"\n")];
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            match file.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Opens the log for appending, creating it private (0600, as conmon does).
///
/// The path is the kubelet's and its directory may be reachable from a
/// pod (a hostPath volume): a symlink planted there is refused rather than
/// followed (O_NOFOLLOW), and so is anything but a regular file (a FIFO
/// would block the open; O_NONBLOCK turns that into ENXIO).
fn open_log(path: &CString) -> io::Result<File> {
    let shown = String::from_utf8_lossy(path.as_bytes());
    let fail = |e: io::Error| {
        let cause = if e.raw_os_error() == Some(libc::ELOOP) {
            "it is a symbolic link, which the monitor does not follow (ELOOP)".to_string()
        } else {
            e.to_string()
        };
        io::Error::new(e.kind(), format!("cannot open log {shown}: {cause}"))
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(OsStr::from_bytes(path.as_bytes()))
        .map_err(fail)?;
    // /dev/null is berthd's "no log" (a container without a log path).
    let no_log = path.as_bytes() == b"/dev/null";
    if !no_log && !file.metadata().map_err(fail)?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot open log {shown}: not a regular file"),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new();
        for c in chunks {
            s.feed(c, &mut |t, m| out.push((t as char, m.to_vec())));
        }
        s.finish(&mut |t, m| out.push((t as char, m.to_vec())));
        out
    }

    fn entries(v: &[(char, Vec<u8>)]) -> Vec<(char, usize)> {
        v.iter().map(|(t, m)| (*t, m.len())).collect()
    }

    #[test]
    fn lines_crlf_empty_and_trailing_partial() {
        let got = split(&[b"one\ntw", b"o\r\n\nthree\rx\nend"]);
        let want: Vec<(char, Vec<u8>)> = vec![
            ('F', b"one".to_vec()),
            ('F', b"two".to_vec()),
            ('F', b"".to_vec()),
            ('F', b"three\rx".to_vec()),
            ('P', b"end".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_are_cut_like_containerd() {
        let m = MAX_LINE;
        for feed_size in [1, 7, 4096, m, m + 1, 100_000] {
            type Case = (Vec<u8>, Vec<(char, usize)>);
            let cases: Vec<Case> = vec![
                ([vec![b'a'; m], b"\n".to_vec()].concat(), vec![('F', m)]),
                (
                    [vec![b'a'; m + 1], b"\n".to_vec()].concat(),
                    vec![('P', m), ('F', 1)],
                ),
                (
                    [vec![b'a'; 2 * m], b"\n".to_vec()].concat(),
                    vec![('P', m), ('F', m)],
                ),
                ([vec![b'a'; m], b"\r\n".to_vec()].concat(), vec![('F', m)]),
                (
                    [vec![b'a'; m], b"\r\r\n".to_vec()].concat(),
                    vec![('P', m), ('F', 1)],
                ),
                (
                    [vec![b'a'; m], b"\rb\n".to_vec()].concat(),
                    vec![('P', m), ('F', 2)],
                ),
                (vec![b'a'; m + 5], vec![('P', m), ('P', 5)]),
                (
                    [vec![b'a'; m], b"\r".to_vec()].concat(),
                    vec![('P', m), ('P', 1)],
                ),
                (
                    [b"x\n".to_vec(), vec![b'a'; 3 * m + 2], b"\n".to_vec()].concat(),
                    vec![('F', 1), ('P', m), ('P', m), ('P', m), ('F', 2)],
                ),
            ];
            for (input, want) in cases {
                let chunks: Vec<&[u8]> = input.chunks(feed_size).collect();
                let got = split(&chunks);
                assert_eq!(entries(&got), want, "feed size {feed_size}");
                let total: usize = got.iter().map(|(_, m)| m.len()).sum();
                let content = input.iter().filter(|&&b| b != b'\n').count();
                let dropped_cr = input.windows(2).filter(|w| w == b"\r\n").count();
                assert_eq!(total, content - dropped_cr);
            }
        }
    }

    fn ts(secs: i64, nanos: u32) -> String {
        let mut buf = [0u8; TIMESTAMP_MAX];
        let n = rfc3339nano(secs, nanos, &mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            ts(1_475_713_029, 669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(ts(1_475_713_029, 500_000_000), "2016-10-06T00:17:09.5Z");
        assert_eq!(ts(1_475_713_029, 10), "2016-10-06T00:17:09.00000001Z");
        assert_eq!(ts(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            ts(4_107_542_399, 999_999_999),
            "2100-02-28T23:59:59.999999999Z"
        );
        assert_eq!(ts(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(ts(253_402_300_799, 0), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn civil_dates_agree_with_a_day_by_day_count() {
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..200_000i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
