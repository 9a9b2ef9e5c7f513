//! The attach socket's clients and the container's stdin as they feed it.
//! Frames are `[kind: u8][len: u32 big-endian][payload]` both ways (see the
//! crate documentation for the contract).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// client → shim: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// shim → client: output.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// shim → client: the container exited (payload: the code in decimal).
pub const EXIT: u8 = 3;
/// client → shim: this client is done with stdin (empty payload).
pub const CLOSE_STDIN: u8 = 4;

const HEAD: usize = 5;
/// Attach clients served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 64;
/// Output the shim queues for one client on top of its socket buffer; a
/// client further behind is dropped, so it never slows the log.
pub const MAX_PENDING: usize = 64 * 1024;
/// The largest stdin frame accepted; a bigger length is a malformed frame.
pub const MAX_STDIN_FRAME: u32 = 1024 * 1024;
/// Bytes read from one client per poll round. Clients are read only while
/// the stdin backlog is empty, so this also bounds the backlog.
pub const READ_CHUNK: usize = 8 * 1024;

/// What a client's frames ask for.
pub enum Input<'a> {
    Stdin(&'a [u8]),
    CloseStdin,
}

/// What reading a client gave.
pub enum Got {
    /// Frames (or nothing yet); keep reading later.
    Data,
    /// The client sends no more (closed or shut down its writing side); it
    /// may still read output.
    Eof,
    /// A malformed frame or a socket error: drop the client.
    Bad,
}

/// One connected attach client.
pub struct Client {
    pub fd: OwnedFd,
    /// Unique per shim, to know which client owns stdin (stdin-once).
    pub id: u64,
    /// What the last poll reported for this client.
    pub revents: libc::c_short,
    /// Output accepted but not yet taken by the socket.
    pending: Vec<u8>,
    /// False once a send failed: the peer reads no more.
    writable: bool,
    /// False after EOF from the peer.
    pub input_open: bool,
    head: [u8; HEAD],
    head_len: usize,
    /// Payload bytes of the current stdin frame still to come.
    body_left: u32,
    /// The client sent CLOSE_STDIN: its later stdin bytes are ignored.
    stdin_closed: bool,
}

impl Client {
    pub fn new(fd: OwnedFd, id: u64) -> Self {
        Client {
            fd,
            id,
            revents: 0,
            pending: Vec::new(),
            writable: true,
            input_open: true,
            head: [0; HEAD],
            head_len: 0,
            body_left: 0,
            stdin_closed: false,
        }
    }

    /// The poll events wanted, or `None` to leave the client out of this
    /// round. Input is not read while stdin is blocked (back-pressure on the
    /// writers); after EOF only hang-ups are watched, to see the peer go.
    pub fn poll_events(&self, stdin_blocked: bool) -> Option<libc::c_short> {
        let out = if self.pending.is_empty() {
            0
        } else {
            libc::POLLOUT
        };
        match (self.input_open, stdin_blocked) {
            (true, true) => (out != 0).then_some(out),
            (true, false) => Some(libc::POLLIN | out),
            (false, _) => Some(out),
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the client is finished both ways, given its poll events.
    pub fn gone(&self, revents: libc::c_short) -> bool {
        !self.input_open && (!self.writable || revents & (libc::POLLHUP | libc::POLLERR) != 0)
    }

    /// Queues one frame without blocking; false when the client must be
    /// dropped (too far behind, or gone both ways).
    pub fn send(&mut self, kind: u8, data: &[u8]) -> bool {
        if !self.writable {
            return self.input_open;
        }
        let Ok(len) = u32::try_from(data.len()) else {
            return false;
        };
        let [a, b, c, d] = len.to_be_bytes();
        let head = [kind, a, b, c, d];
        let mut sent = 0;
        if self.pending.is_empty() {
            match sys::send2_nonblocking(self.fd.as_raw_fd(), &head, data) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.lost();
                    return self.input_open;
                }
            }
        }
        let head_rest = head.get(sent.min(HEAD)..).unwrap_or_default();
        let data_rest = data.get(sent.saturating_sub(HEAD)..).unwrap_or_default();
        if self.pending.len() + head_rest.len() + data_rest.len() > MAX_PENDING {
            return false;
        }
        self.pending.extend_from_slice(head_rest);
        self.pending.extend_from_slice(data_rest);
        true
    }

    /// Sends what is pending, as far as the socket takes it.
    pub fn flush(&mut self) {
        if !self.writable || self.pending.is_empty() {
            return;
        }
        match sys::send_nonblocking(self.fd.as_raw_fd(), &self.pending) {
            Ok(n) => {
                self.pending.drain(..n.min(self.pending.len()));
                if self.pending.is_empty() {
                    // Give the memory back: most clients are idle most of the time.
                    self.pending = Vec::new();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.lost(),
        }
    }

    fn lost(&mut self) {
        self.writable = false;
        self.pending = Vec::new();
    }

    /// Reads one chunk and passes its frames' requests to `on`.
    pub fn read(&mut self, buf: &mut [u8], on: &mut dyn FnMut(Input)) -> Got {
        let n = match sys::read(self.fd.as_raw_fd(), buf) {
            Ok(0) => {
                self.input_open = false;
                return Got::Eof;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Got::Data,
            Err(_) => return Got::Bad,
        };
        let mut rest = buf.get(..n).unwrap_or_default();
        while !rest.is_empty() {
            if self.body_left > 0 {
                let take = rest.len().min(self.body_left as usize);
                let (now, later) = rest.split_at(take);
                if !self.stdin_closed {
                    on(Input::Stdin(now));
                }
                self.body_left -= take as u32;
                rest = later;
                continue;
            }
            let take = (HEAD - self.head_len).min(rest.len());
            let (now, later) = rest.split_at(take);
            if let Some(dst) = self.head.get_mut(self.head_len..self.head_len + take) {
                dst.copy_from_slice(now);
            }
            self.head_len += take;
            rest = later;
            if self.head_len < HEAD {
                break;
            }
            self.head_len = 0;
            if !self.start_frame(on) {
                return Got::Bad;
            }
        }
        Got::Data
    }

    /// Acts on a complete header; false for a malformed one.
    fn start_frame(&mut self, on: &mut dyn FnMut(Input)) -> bool {
        let [kind, a, b, c, d] = self.head;
        let len = u32::from_be_bytes([a, b, c, d]);
        match kind {
            STDIN if len <= MAX_STDIN_FRAME => {
                self.body_left = len;
                if len == 0 && !self.stdin_closed {
                    on(Input::Stdin(&[]));
                }
                true
            }
            CLOSE_STDIN if len == 0 => {
                if !self.stdin_closed {
                    self.stdin_closed = true;
                    on(Input::CloseStdin);
                }
                true
            }
            _ => false,
        }
    }

    /// Reads and drops what the client still sent, so that closing the
    /// socket does not turn into ECONNRESET for a peer still reading.
    pub fn discard_input(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match sys::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// The container's stdin as attach clients feed it: the pipe's write end,
/// or a duplicate of the pty master; non-blocking. What does not fit waits
/// in the backlog while no client is read.
pub struct Stdin {
    pub fd: OwnedFd,
    backlog: Vec<u8>,
    /// Closing was asked: the sink goes once the backlog is out.
    closing: bool,
}

impl Stdin {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Stdin {
            fd,
            backlog: Vec::new(),
            closing: false,
        })
    }

    pub fn blocked(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Writes or queues `data`; false when the container's stdin is gone.
    pub fn write(&mut self, data: &[u8]) -> bool {
        if self.closing {
            return true;
        }
        if self.blocked() {
            self.backlog.extend_from_slice(data);
            return true;
        }
        match self.write_some(data) {
            Ok(n) => {
                self.backlog
                    .extend_from_slice(data.get(n..).unwrap_or_default());
                true
            }
            Err(_) => false,
        }
    }

    /// Sends the backlog as far as it goes; false when stdin is gone.
    pub fn flush(&mut self) -> bool {
        match self.write_some(&self.backlog) {
            Ok(n) => {
                self.backlog.drain(..n.min(self.backlog.len()));
                if self.backlog.is_empty() {
                    self.backlog = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Writes until done or the pipe (or tty) is full; returns how much went.
    fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
            match sys::write(self.fd.as_raw_fd(), rest) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Ends the container's input once the backlog is out. A tty cannot be
    /// closed without hanging up its output too, so it gets its end-of-file
    /// character (VEOF, normally ^D) instead.
    pub fn close(&mut self, tty: bool) {
        if self.closing {
            return;
        }
        if tty {
            if let Some(eof) = sys::veof(self.fd.as_raw_fd()) {
                self.backlog.push(eof);
            }
        }
        self.closing = true;
    }

    /// Closing was asked and everything went out: drop the sink.
    pub fn done(&self) -> bool {
        self.closing && self.backlog.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// A connected, non-blocking pair: (the shim's end, the client's end).
    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both are new and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn put(fd: &OwnedFd, bytes: &[u8]) {
        assert_eq!(sys::write(fd.as_raw_fd(), bytes).unwrap(), bytes.len());
    }

    /// Reads the client once; returns the inputs and what the read gave.
    fn take(c: &mut Client) -> (Vec<Option<Vec<u8>>>, Got) {
        let mut got = Vec::new();
        let mut buf = [0u8; READ_CHUNK];
        let step = c.read(&mut buf, &mut |i| {
            got.push(match i {
                Input::Stdin(d) => Some(d.to_vec()),
                Input::CloseStdin => None,
            })
        });
        (got, step)
    }

    #[test]
    fn frames_split_anywhere() {
        let (ours, theirs) = pair();
        let mut c = Client::new(ours, 1);
        put(&theirs, &[STDIN, 0, 0]);
        assert!(matches!(take(&mut c), (v, Got::Data) if v.is_empty()));
        put(&theirs, &[0, 5, b'h', b'e']);
        assert!(matches!(take(&mut c), (v, Got::Data) if v == [Some(b"he".to_vec())]));
        put(
            &theirs,
            &[
                b'l',
                b'l',
                b'o',
                CLOSE_STDIN,
                0,
                0,
                0,
                0,
                STDIN,
                0,
                0,
                0,
                1,
                b'x',
            ],
        );
        let (v, _) = take(&mut c);
        // After CLOSE_STDIN this client's stdin bytes are dropped.
        assert_eq!(v, [Some(b"llo".to_vec()), None]);
        drop(theirs);
        assert!(matches!(take(&mut c), (_, Got::Eof)));
        assert!(!c.input_open);
    }

    #[test]
    fn malformed_frames() {
        for bad in [
            &[9u8, 0, 0, 0, 0][..],
            &[STDOUT, 0, 0, 0, 1, b'x'],
            &[CLOSE_STDIN, 0, 0, 0, 1],
            &[STDIN, 0xff, 0xff, 0xff, 0xff],
        ] {
            let (ours, theirs) = pair();
            let mut c = Client::new(ours, 1);
            put(&theirs, bad);
            assert!(matches!(take(&mut c), (_, Got::Bad)), "{bad:?}");
        }
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped() {
        let (ours, theirs) = pair();
        let mut c = Client::new(ours, 1);
        let chunk = [b'o'; 32 * 1024];
        let mut sent = 0;
        while c.send(STDOUT, &chunk) {
            sent += 1;
            assert!(sent < 1000, "never dropped");
        }
        assert!(c.pending.len() <= MAX_PENDING);
        // The frames that went out are whole and in order.
        let mut buf = vec![0u8; 64 * 1024];
        let n = sys::read(theirs.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(buf.get(..5), Some(&[STDOUT, 0, 0, 0x80, 0][..]));
        assert!(n > 5);
    }

    #[test]
    fn output_survives_the_peer_shutting_down_its_writing() {
        let (ours, theirs) = pair();
        let mut c = Client::new(ours, 1);
        // SAFETY: shutdown on our own socket.
        assert_eq!(
            unsafe { libc::shutdown(theirs.as_raw_fd(), libc::SHUT_WR) },
            0
        );
        assert!(matches!(take(&mut c), (_, Got::Eof)));
        assert!(c.send(STDOUT, b"hi"));
        assert!(!c.gone(0));
        let mut buf = [0u8; 16];
        assert_eq!(sys::read(theirs.as_raw_fd(), &mut buf).unwrap(), 7);
        drop(theirs);
        // Gone both ways: dropped.
        assert!(!c.send(STDOUT, b"more"));
        assert!(c.gone(libc::POLLHUP));
    }
}
