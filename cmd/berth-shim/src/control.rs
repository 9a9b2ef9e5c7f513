//! The control socket's line protocol: one command per line, each answered
//! with `ok\n` or `error <message>\n`.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// Longest accepted command line, newline included.
pub const MAX_LINE: usize = 128;
/// Connected clients served at once; more are answered with an error and
/// closed.
pub const MAX_CLIENTS: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    ReopenLog,
    Resize { cols: u16, rows: u16 },
}

pub fn parse(line: &[u8]) -> Result<Command, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let cmd = words.next().ok_or("empty command")?;
    match cmd {
        b"reopen-log" => match words.next() {
            None => Ok(Command::ReopenLog),
            Some(_) => Err("usage: reopen-log"),
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
        }
    }

    /// Reads what is available and answers every complete line with
    /// `handle`'s result.
    pub fn serve(&mut self, handle: &mut dyn FnMut(Command) -> Result<(), String>) -> Step {
        loop {
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
            while let Some(nl) = self
                .buf
                .get(..self.len)
                .and_then(|b| b.iter().position(|&c| c == b'\n'))
            {
                let line = self.buf.get(..nl).unwrap_or_default();
                let answer = match parse(line) {
                    Ok(cmd) => handle(cmd),
                    Err(e) => Err(e.to_string()),
                };
                if !self.reply(answer) {
                    return Step::Close;
                }
                self.buf.copy_within(nl + 1..self.len, 0);
                self.len -= nl + 1;
            }
        }
    }

    /// Sends one answer; false when it could not go out whole (a client
    /// that does not read its answers is dropped rather than waited for).
    pub fn reply(&self, answer: Result<(), String>) -> bool {
        let mut msg = [0u8; 256];
        let text: &[u8] = match &answer {
            Ok(()) => b"ok\n",
            Err(e) => {
                let mut len = 0;
                let e = e.replace('\n', " ");
                for part in [b"error ".as_slice(), e.as_bytes()] {
                    for &b in part {
                        if len < msg.len() - 1 {
                            msg[len] = b;
                            len += 1;
                        }
                    }
                }
                msg[len] = b'\n';
                &msg[..=len]
            }
        };
        matches!(sys::send_nonblocking(self.fd.as_raw_fd(), text), Ok(n) if n == text.len())
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
        assert!(parse(b"").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }
}
