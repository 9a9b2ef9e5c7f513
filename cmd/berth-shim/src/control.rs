//! The control socket's line protocol: one command per line, each answered
//! with `ok\n` or `error <message>\n`.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// Longest accepted command line, newline included.
pub const MAX_LINE: usize = 128;
/// Longest answer, newline included (a runtime's error message is cut).
pub const MAX_ANSWER: usize = 1024;
/// Connected clients served at once; more are answered with an error and
/// closed.
pub const MAX_CLIENTS: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    ReopenLog,
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Run the container (the runtime's `run --detach`); answered with
    /// `ok <init pid>` once the runtime is done.
    Start,
    /// Before the start: end without running the container, recorded as
    /// a SIGKILL.
    Cancel,
}

/// How a command is answered.
pub enum Answer {
    /// `ok[ <text>]` or `error <message>`, at once.
    Now(Result<String, String>),
    /// Later, through [`Client::reply`]; the client's next lines wait.
    Later,
}

pub fn parse(line: &[u8]) -> Result<Command, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let cmd = words.next().ok_or("empty command")?;
    match cmd {
        b"reopen-log" | b"start" | b"cancel" => match words.next() {
            Some(_) => Err("this command takes no arguments"),
            None if cmd == b"start" => Ok(Command::Start),
            None if cmd == b"cancel" => Ok(Command::Cancel),
            None => Ok(Command::ReopenLog),
        },
        b"resize" => {
            let mut num = || -> Option<u16> {
                let w = words.next()?;
                std::str::from_utf8(w).ok()?.parse().ok()
            };
            match (num(), num(), words.next()) {
                (Some(cols), Some(rows), None) => Ok(Command::Resize { cols, rows }),
                _ => Err("usage: resize <cols> <rows>"),
            }
        }
        _ => Err("unknown command"),
    }
}

/// One connected client and its partial line.
pub struct Client {
    pub fd: OwnedFd,
    buf: [u8; MAX_LINE],
    len: usize,
    /// A command of this client is answered later: it is not read until.
    pub awaiting: bool,
}

/// What reading from a client gave.
pub enum Step {
    /// Keep the client.
    Open,
    /// Drop the client (gone, misbehaving, or not reading its answers).
    Close,
}

impl Client {
    pub fn new(fd: OwnedFd) -> Self {
        Client {
            fd,
            buf: [0; MAX_LINE],
            len: 0,
            awaiting: false,
        }
    }

    /// Answers the complete lines already read, then reads what is
    /// available and answers those, until a command is answered later.
    pub fn serve(&mut self, handle: &mut dyn FnMut(Command) -> Answer) -> Step {
        loop {
            while let Some(nl) = self
                .buf
                .get(..self.len)
                .and_then(|b| b.iter().position(|&c| c == b'\n'))
                .filter(|_| !self.awaiting)
            {
                let line = self.buf.get(..nl).unwrap_or_default();
                let answer = match parse(line) {
                    Ok(cmd) => handle(cmd),
                    Err(e) => Answer::Now(Err(e.to_string())),
                };
                match answer {
                    Answer::Now(answer) => {
                        if !self.reply(answer) {
                            return Step::Close;
                        }
                    }
                    Answer::Later => self.awaiting = true,
                }
                self.buf.copy_within(nl + 1..self.len, 0);
                self.len -= nl + 1;
            }
            if self.awaiting {
                return Step::Open;
            }
            let Some(room) = self.buf.get_mut(self.len..) else {
                return Step::Close;
            };
            if room.is_empty() {
                self.reply(Err("line too long".into()));
                return Step::Close;
            }
            match sys::read(self.fd.as_raw_fd(), room) {
                Ok(0) => return Step::Close,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Open,
                Err(_) => return Step::Close,
            }
        }
    }

    /// Sends one answer; false when it could not go out whole (a client
    /// that does not read its answers is dropped rather than waited for).
    pub fn reply(&self, answer: Result<String, String>) -> bool {
        let mut line = match answer {
            Ok(t) if t.is_empty() => "ok".to_string(),
            Ok(t) => format!("ok {t}"),
            Err(e) => format!("error {e}"),
        }
        .replace('\n', " ");
        // Cut to the longest answer, on a character boundary.
        let mut end = line.len().min(MAX_ANSWER - 1);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('\n');
        matches!(sys::send_nonblocking(self.fd.as_raw_fd(), line.as_bytes()), Ok(n) if n == line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"reopen-log"), Ok(Command::ReopenLog));
        assert_eq!(parse(b"reopen-log\r"), Ok(Command::ReopenLog));
        assert_eq!(
            parse(b"resize 100 40"),
            Ok(Command::Resize {
                cols: 100,
                rows: 40
            })
        );
        assert_eq!(
            parse(b"  resize   80\t24 "),
            Ok(Command::Resize { cols: 80, rows: 24 })
        );
        assert!(parse(b"resize 100").is_err());
        assert!(parse(b"resize 100 40 1").is_err());
        assert!(parse(b"resize -1 40").is_err());
        assert!(parse(b"resize 70000 40").is_err());
        assert!(parse(b"reopen-log now").is_err());
        assert_eq!(parse(b"start"), Ok(Command::Start));
        assert_eq!(parse(b"cancel\r"), Ok(Command::Cancel));
        assert!(parse(b"start now").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }
}
