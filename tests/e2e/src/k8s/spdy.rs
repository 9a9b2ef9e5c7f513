//! A SPDY/3.1 client session that behaves like moby/spdystream driven by
//! apimachinery's `httpstream/spdy` connection (what client-go uses):
//!
//! - streams get odd ids from 1; `create_stream` sends SYN_STREAM (priority
//!   0, slot 0, no flags) and waits up to 30 s for SYN_REPLY, as
//!   `connection.CreateStream` does with `createStreamResponseTimeout`;
//! - DATA is one frame per write (io.Copy writes at most 32 KiB); `close`
//!   half-closes with an empty DATA frame carrying FIN; `reset` sends
//!   RST_STREAM CANCEL unless this side already finished the stream;
//! - a server PING (even id) is echoed; our own PINGs use odd ids from 1
//!   (client-go pings every 5 s, 10 s when tunnelled over WebSocket);
//! - RST_STREAM, FIN and connection loss all end a stream's reads with EOF,
//!   as spdystream's `Stream.Read` does;
//! - GOAWAY stops all reading, as spdystream's `Serve` loop breaks on it, so
//!   anything the server sends after its GOAWAY is never seen;
//! - WINDOW_UPDATE and SETTINGS are ignored (spdystream has no flow
//!   control), and server-initiated streams are accepted with an empty
//!   SYN_REPLY and ignored (`NoOpNewStreamHandler`).
//!
//! Where the server does something spdystream would mishandle (DATA before
//! SYN_REPLY is dropped, HEADERS frames wedge a frame worker, bytes after
//! the 101 response may be swallowed by client-go's bufio.Reader, ...), a
//! note goes to [`SpdyConn::violations`] so tests can assert there are none.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::spdy_frame::{
    decode, encode, Frame, HeaderCompressor, HeaderDecompressor, Headers, FLAG_FIN, RST_CANCEL,
    RST_PROTOCOL_ERROR,
};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// apimachinery's `createStreamResponseTimeout`.
pub const CREATE_STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// `io.Copy`'s buffer: the most one client-go write puts in a DATA frame.
pub const WRITE_CHUNK: usize = 32 * 1024;
/// How long an unanswered PING is waited for before it is noted.
const PING_TIMEOUT: Duration = Duration::from_secs(30);

enum Cmd {
    Frame(Frame, Option<oneshot::Sender<io::Result<()>>>),
    /// Flush and shut the write side (spdystream closing its net.Conn).
    Shutdown(oneshot::Sender<()>),
}

struct Entry {
    replied: bool,
    reply: Option<oneshot::Sender<Result<Headers, u32>>>,
    data: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// spdystream's `finished`: we sent FIN or RST, or the peer sent RST.
    finished: bool,
    remote_fin: bool,
    reset: Arc<AtomicU32>,
}

struct State {
    streams: HashMap<u32, Entry>,
    next_id: u32,
    /// spdystream's `receivedStreamId`: 2 for a client, then last + 2.
    received_stream_id: u32,
    next_ping: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    goaway: Option<(u32, u32)>,
    sent_goaway: bool,
    /// Why reading stopped, once it has.
    ended: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    cmd: mpsc::UnboundedSender<Cmd>,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn note(&self, msg: impl Into<String>) {
        self.violations.lock().unwrap().push(msg.into());
    }

    fn send(&self, f: Frame) {
        let _ = self.cmd.send(Cmd::Frame(f, None));
    }

    /// Handles one frame; false once reading must stop.
    fn handle(&self, frame: Frame) -> bool {
        let mut st = self.state.lock().unwrap();
        match frame {
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let Some(e) = st.streams.get_mut(&stream_id) else {
                    return true;
                };
                if e.replied {
                    drop(st);
                    self.note(format!("second SYN_REPLY on stream {stream_id} (ignored)"));
                    return true;
                }
                e.replied = true;
                if let Some(tx) = e.reply.take() {
                    let _ = tx.send(Ok(headers));
                }
                if flags & FLAG_FIN != 0 {
                    e.remote_fin = true;
                    e.data = None;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let Some(e) = st.streams.get_mut(&stream_id) else {
                    return true;
                };
                if !e.replied {
                    drop(st);
                    self.note(format!(
                        "DATA on stream {stream_id} before its SYN_REPLY: spdystream drops it"
                    ));
                    return true;
                }
                if !data.is_empty() {
                    match &e.data {
                        Some(tx) => {
                            // The reader may have gone; the data is then moot.
                            let _ = tx.send(data);
                        }
                        None if e.remote_fin => {
                            drop(st);
                            self.note(format!("DATA on stream {stream_id} after its FIN"));
                            return true;
                        }
                        None => {}
                    }
                }
                if flags & FLAG_FIN != 0 {
                    e.remote_fin = true;
                    e.data = None;
                }
            }
            Frame::RstStream { stream_id, status } => {
                let Some(e) = st.streams.get_mut(&stream_id) else {
                    return true;
                };
                e.reset.store(status, Ordering::SeqCst);
                e.finished = true;
                e.data = None;
                if !e.replied {
                    e.replied = true;
                    if let Some(tx) = e.reply.take() {
                        let _ = tx.send(Err(status));
                    }
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if let Some(e) = st.streams.get_mut(&stream_id) {
                    if flags & FLAG_FIN != 0 {
                        e.remote_fin = true;
                        e.data = None;
                    }
                }
                drop(st);
                self.note(format!(
                    "HEADERS frame on stream {stream_id}: spdystream blocks a frame worker \
                     until someone calls ReceiveHeader, which client-go never does"
                ));
            }
            Frame::SynStream {
                stream_id, flags, ..
            } => {
                if stream_id % 2 == 1 || stream_id < st.received_stream_id {
                    drop(st);
                    self.note(format!("server opened invalid stream id {stream_id}"));
                    self.send(Frame::RstStream {
                        stream_id,
                        status: RST_PROTOCOL_ERROR,
                    });
                    return true;
                }
                st.received_stream_id = stream_id + 2;
                st.streams.insert(
                    stream_id,
                    Entry {
                        replied: true,
                        reply: None,
                        data: None,
                        finished: false,
                        remote_fin: flags & FLAG_FIN != 0,
                        reset: Arc::default(),
                    },
                );
                drop(st);
                self.note(format!(
                    "server opened stream {stream_id}; client-go accepts and ignores it"
                ));
                self.send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: vec![],
                });
            }
            Frame::Ping { id } => {
                // spdystream: a PING of the peer's parity is echoed, one of
                // ours answers a pending Ping().
                if id % 2 == 1 {
                    if let Some(tx) = st.pings.remove(&id) {
                        let _ = tx.send(());
                    } else {
                        drop(st);
                        self.note(format!("PING reply {id} that was never sent"));
                    }
                } else {
                    drop(st);
                    self.send(Frame::Ping { id });
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                st.goaway = Some((last_good_stream_id, status));
                return false;
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
        }
        true
    }

    /// Reading has stopped: every stream reads EOF, pending work fails.
    fn end(&self, why: String) {
        let mut st = self.state.lock().unwrap();
        st.ended.get_or_insert(why);
        for e in st.streams.values_mut() {
            e.data = None;
            e.reply = None;
        }
        st.pings.clear();
    }
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// A second handle on the TCP socket, so `abort` can cut it off.
    killer: Mutex<Option<std::net::TcpStream>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A SPDY/3.1 client connection. Cheap to clone; the connection stays up
/// while any clone or stream of it is alive.
#[derive(Clone)]
pub struct SpdyConn {
    inner: Arc<Inner>,
}

impl SpdyConn {
    /// Starts a client session over an upgraded connection. `leftover` are
    /// bytes already read past the HTTP response; `ping_period` is
    /// client-go's PingPeriod; `killer` is a duplicate of the TCP socket
    /// used by [`SpdyConn::abort`].
    pub fn new(
        read: BoxRead,
        write: BoxWrite,
        leftover: Vec<u8>,
        ping_period: Option<Duration>,
        killer: Option<std::net::TcpStream>,
    ) -> SpdyConn {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_id: 1,
                received_stream_id: 2,
                next_ping: 1,
                pings: HashMap::new(),
                goaway: None,
                sent_goaway: false,
                ended: None,
            }),
            cmd,
            violations: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![
            tokio::spawn(writer(write, cmd_rx)),
            tokio::spawn(reader(read, leftover, shared.clone())),
        ];
        if let Some(period) = ping_period {
            tasks.push(tokio::spawn(pinger(shared.clone(), period)));
        }
        SpdyConn {
            inner: Arc::new(Inner {
                shared,
                tasks: Mutex::new(tasks),
                killer: Mutex::new(killer),
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Opens a stream and waits for its SYN_REPLY (apimachinery's
    /// `connection.CreateStream`). Header names go out lower-cased: Go's
    /// `headers.Set("streamType", ..)` canonicalises to `Streamtype` and
    /// spdystream lower-cases that to `streamtype`.
    pub async fn create_stream(&self, headers: Headers) -> io::Result<SpdyStream> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let reset = Arc::new(AtomicU32::new(0));
        let id = {
            // Allocate and enqueue under one lock: ids must rise in wire order.
            let mut st = self.shared().state.lock().unwrap();
            if let Some(why) = &st.ended {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("connection ended: {why}"),
                ));
            }
            let id = st.next_id;
            st.next_id += 2;
            st.streams.insert(
                id,
                Entry {
                    replied: false,
                    reply: Some(reply_tx),
                    data: Some(data_tx),
                    finished: false,
                    remote_fin: false,
                    reset: reset.clone(),
                },
            );
            self.shared().send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers,
            });
            id
        };
        let reply_headers = match tokio::time::timeout(CREATE_STREAM_TIMEOUT, reply_rx).await {
            Ok(Ok(Ok(h))) => h,
            Ok(Ok(Err(status))) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("stream {id} reset by server (RST_STREAM status {status})"),
                ))
            }
            Ok(Err(_)) => {
                let why = self.shared().state.lock().unwrap().ended.clone();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "connection ended before SYN_REPLY for stream {id}: {}",
                        why.unwrap_or_default()
                    ),
                ));
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no SYN_REPLY for stream {id} within {CREATE_STREAM_TIMEOUT:?}"),
                ))
            }
        };
        Ok(SpdyStream {
            id,
            conn: self.clone(),
            rx: data_rx,
            buf: Vec::new(),
            pos: 0,
            reset,
            reply_headers,
            pending: None,
            shutdown_sent: false,
        })
    }

    /// Sends a PING and waits for its echo (spdystream's `Ping`).
    pub async fn ping(&self, timeout: Duration) -> io::Result<Duration> {
        ping(self.shared(), timeout).await
    }

    /// Closes like client-go's deferred `conn.Close()`: RST_STREAM CANCEL for
    /// every stream this side has not finished, then GOAWAY (last good
    /// stream 0 unless the server opened streams, status OK), then the
    /// socket is shut.
    pub async fn close(&self) {
        let sh = self.shared();
        let (ids, goaway) = {
            let mut st = sh.state.lock().unwrap();
            let mut ids: Vec<u32> = st
                .streams
                .iter_mut()
                .filter_map(|(id, e)| {
                    e.data = None;
                    let send = !e.finished;
                    e.finished = true;
                    send.then_some(*id)
                })
                .collect();
            ids.sort_unstable();
            let goaway = (!st.sent_goaway).then(|| {
                st.sent_goaway = true;
                st.received_stream_id.saturating_sub(2)
            });
            (ids, goaway)
        };
        for stream_id in ids {
            sh.send(Frame::RstStream {
                stream_id,
                status: RST_CANCEL,
            });
        }
        if let Some(last_good_stream_id) = goaway {
            sh.send(Frame::GoAway {
                last_good_stream_id,
                status: 0,
            });
        }
        let (tx, rx) = oneshot::channel();
        if sh.cmd.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        sh.end("closed by client".into());
    }

    /// Drops the connection with no RST_STREAM or GOAWAY, as a killed
    /// kubectl would: the socket is shut down in both directions at once.
    pub fn abort(&self) {
        if let Some(s) = self.inner.killer.lock().unwrap().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.shared().end("aborted by client".into());
    }

    /// Protocol problems seen so far (see the module docs).
    pub fn violations(&self) -> Vec<String> {
        self.shared().violations.lock().unwrap().clone()
    }

    pub(crate) fn note(&self, msg: impl Into<String>) {
        self.shared().note(msg)
    }

    /// The server's GOAWAY (last good stream id, status), if one came.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        self.shared().state.lock().unwrap().goaway
    }

    /// Why reading stopped (EOF, GOAWAY, a bad frame, ...), once it has.
    pub fn ended(&self) -> Option<String> {
        self.shared().state.lock().unwrap().ended.clone()
    }
}

async fn ping(sh: &Shared, timeout: Duration) -> io::Result<Duration> {
    let (tx, rx) = oneshot::channel();
    let id = {
        let mut st = sh.state.lock().unwrap();
        if let Some(why) = &st.ended {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("connection ended: {why}"),
            ));
        }
        let id = st.next_ping;
        st.next_ping = if id > 0x7fff_fffe {
            id - 0x7fff_fffe
        } else {
            id + 2
        };
        st.pings.insert(id, tx);
        id
    };
    let start = Instant::now();
    sh.send(Frame::Ping { id });
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(_)) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection ended before the PING reply",
        )),
        Err(_) => {
            sh.state.lock().unwrap().pings.remove(&id);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("PING {id} unanswered after {timeout:?}"),
            ))
        }
    }
}

async fn pinger(sh: Arc<Shared>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        if sh.state.lock().unwrap().ended.is_some() {
            return;
        }
        if let Err(e) = ping(&sh, PING_TIMEOUT).await {
            if e.kind() == io::ErrorKind::TimedOut {
                sh.note(e.to_string());
            }
        }
    }
}

async fn writer(mut w: BoxWrite, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut z = HeaderCompressor::new();
    let mut failed: Option<String> = None;
    let mut buf = Vec::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Frame(frame, ack) => {
                let res = match &failed {
                    Some(why) => Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone())),
                    None => {
                        buf.clear();
                        encode(&frame, &mut z, &mut buf);
                        let res = async {
                            w.write_all(&buf).await?;
                            w.flush().await
                        }
                        .await;
                        if let Err(e) = &res {
                            failed = Some(format!("write failed: {e}"));
                        }
                        res
                    }
                };
                if let Some(ack) = ack {
                    let _ = ack.send(res);
                }
            }
            Cmd::Shutdown(done) => {
                if failed.is_none() {
                    let _ = w.flush().await;
                    let _ = w.shutdown().await;
                    failed = Some("connection closed by client".into());
                }
                let _ = done.send(());
            }
        }
    }
}

async fn reader(mut r: BoxRead, leftover: Vec<u8>, sh: Arc<Shared>) {
    let mut z = HeaderDecompressor::new();
    let mut buf = leftover;
    let mut pos = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    let why = 'read: loop {
        loop {
            match decode(&buf[pos..], &mut z) {
                Ok(Some(d)) => {
                    pos += d.len;
                    if let Some(v) = d.odd_version {
                        sh.note(format!("control frame with SPDY version {v}"));
                    }
                    if !sh.handle(d.frame) {
                        break 'read "GOAWAY received".to_string();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    sh.note(format!("fatal frame error (spdystream stops reading): {e}"));
                    break 'read format!("frame error: {e}");
                }
            }
        }
        buf.drain(..pos);
        pos = 0;
        match r.read(&mut chunk).await {
            Ok(0) => {
                if !buf.is_empty() {
                    sh.note(format!(
                        "connection ended inside a frame ({} bytes)",
                        buf.len()
                    ));
                }
                break "EOF".to_string();
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("read error: {e}"),
        }
    };
    sh.end(why);
}

/// One SPDY stream. Reads yield DATA payloads in order and end (EOF) on
/// FIN, RST_STREAM or loss of the connection. Also usable as
/// `AsyncRead + AsyncWrite`, where shutdown sends FIN.
pub struct SpdyStream {
    id: u32,
    conn: SpdyConn,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    reset: Arc<AtomicU32>,
    reply_headers: Headers,
    /// Completion of the last frame queued through `AsyncWrite`.
    pending: Option<oneshot::Receiver<io::Result<()>>>,
    shutdown_sent: bool,
}

impl SpdyStream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The connection this stream belongs to.
    pub fn conn(&self) -> &SpdyConn {
        &self.conn
    }

    /// Headers of the server's SYN_REPLY (the kubelet sends none).
    pub fn reply_headers(&self) -> &Headers {
        &self.reply_headers
    }

    /// The RST_STREAM status the server reset this stream with, if it did.
    pub fn reset_status(&self) -> Option<u32> {
        match self.reset.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Queues one frame; `fin` marks this side finished.
    fn enqueue(&self, data: Vec<u8>, fin: bool) -> io::Result<oneshot::Receiver<io::Result<()>>> {
        let sh = self.conn.shared();
        let mut st = sh.state.lock().unwrap();
        match st.streams.get_mut(&self.id) {
            Some(e) if !e.finished => e.finished = fin,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("write on closed stream {}", self.id),
                ))
            }
        }
        let (tx, rx) = oneshot::channel();
        let frame = Frame::Data {
            stream_id: self.id,
            flags: if fin { FLAG_FIN } else { 0 },
            data,
        };
        sh.cmd
            .send(Cmd::Frame(frame, Some(tx)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"))?;
        Ok(rx)
    }

    async fn wait(rx: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
        rx.await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed",
            ))
        })
    }

    /// Writes `data` as DATA frames of at most 32 KiB (an empty slice sends
    /// one empty frame, as spdystream's `Write` would).
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Self::wait(self.enqueue(Vec::new(), false)?).await;
        }
        for chunk in data.chunks(WRITE_CHUNK) {
            Self::wait(self.enqueue(chunk.to_vec(), false)?).await?;
        }
        Ok(())
    }

    /// Half-closes: an empty DATA frame with FIN (spdystream `Close`).
    pub async fn close(&self) -> io::Result<()> {
        Self::wait(self.enqueue(Vec::new(), true)?).await
    }

    /// spdystream's `Reset`: RST_STREAM CANCEL, unless this side already
    /// sent FIN or the server reset the stream; reads end either way.
    pub async fn reset(&mut self) -> io::Result<()> {
        let send = {
            let mut st = self.conn.shared().state.lock().unwrap();
            match st.streams.get_mut(&self.id) {
                Some(e) => {
                    e.data = None;
                    let send = !e.finished;
                    e.finished = true;
                    send
                }
                None => false,
            }
        };
        self.rx.close();
        if send {
            self.conn.shared().send(Frame::RstStream {
                stream_id: self.id,
                status: RST_CANCEL,
            });
        }
        Ok(())
    }

    /// The next DATA payload, or `None` once the stream has ended.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.buf.len() {
            let rest = self.buf.split_off(self.pos);
            self.buf.clear();
            self.pos = 0;
            return Some(rest);
        }
        self.rx.recv().await
    }

    /// Everything until the stream ends.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = self.read_chunk().await {
            out.extend_from_slice(&c);
        }
        out
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(rx) = &mut self.pending {
            let res = match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "connection closed",
                    ))
                }),
            };
            self.pending = None;
            res?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(v)) => {
                    this.buf = v;
                    this.pos = 0;
                }
            }
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One frame in flight: accept the next write once the last is out.
        if let Poll::Ready(r) = this.poll_pending(cx) {
            r?;
        } else {
            return Poll::Pending;
        }
        let n = data.len().min(WRITE_CHUNK);
        this.pending = Some(this.enqueue(data[..n].to_vec(), false)?);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = this.poll_pending(cx) {
            r?;
        } else {
            return Poll::Pending;
        }
        if !this.shutdown_sent {
            this.shutdown_sent = true;
            this.pending = Some(this.enqueue(Vec::new(), true)?);
            return this.poll_pending(cx);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    //! The session against a scripted peer on an in-memory pipe, which
    //! speaks frames through the same codec.
    use super::*;
    use crate::k8s::spdy_frame::RST_REFUSED_STREAM;
    use tokio::io::DuplexStream;

    struct Peer {
        io: DuplexStream,
        z_out: HeaderCompressor,
        z_in: HeaderDecompressor,
        buf: Vec<u8>,
    }

    impl Peer {
        async fn send(&mut self, f: Frame) {
            let mut out = Vec::new();
            encode(&f, &mut self.z_out, &mut out);
            self.io.write_all(&out).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(d) = decode(&self.buf, &mut self.z_in).unwrap() {
                    self.buf.drain(..d.len);
                    return Some(d.frame);
                }
                let mut c = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut c))
                    .await
                    .expect("peer read timed out")
                    .unwrap();
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&c[..n]);
            }
        }
    }

    fn pair() -> (SpdyConn, Peer) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(a);
        let conn = SpdyConn::new(Box::new(r), Box::new(w), Vec::new(), None, None);
        let peer = Peer {
            io: b,
            z_out: HeaderCompressor::new(),
            z_in: HeaderDecompressor::new(),
            buf: Vec::new(),
        };
        (conn, peer)
    }

    fn st(t: &str) -> Headers {
        vec![("streamType".into(), vec![t.into()])]
    }

    /// Answers the next SYN_STREAM; returns its id and headers.
    async fn accept(peer: &mut Peer) -> (u32, Headers) {
        match peer.recv().await.unwrap() {
            Frame::SynStream {
                stream_id,
                headers,
                priority,
                flags,
                ..
            } => {
                assert_eq!((priority, flags), (0, 0));
                peer.send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: vec![],
                })
                .await;
                (stream_id, headers)
            }
            f => panic!("expected SYN_STREAM, got {f:?}"),
        }
    }

    #[tokio::test]
    async fn streams_data_fin_and_close() {
        let (conn, mut peer) = pair();
        let c = conn.clone();
        let client = tokio::spawn(async move {
            let mut a = c.create_stream(st("stdout")).await.unwrap();
            let b = c.create_stream(st("stdin")).await.unwrap();
            assert_eq!((a.id(), b.id()), (1, 3));
            b.write(b"hi").await.unwrap();
            b.close().await.unwrap();
            assert!(b.write(b"late").await.is_err());
            let out = a.read_to_end().await;
            c.close().await;
            out
        });
        let (id1, h1) = accept(&mut peer).await;
        assert_eq!(
            h1,
            vec![("streamtype".to_string(), vec!["stdout".to_string()])]
        );
        let (id3, _) = accept(&mut peer).await;
        assert_eq!(
            peer.recv().await.unwrap(),
            Frame::Data {
                stream_id: id3,
                flags: 0,
                data: b"hi".to_vec()
            }
        );
        assert_eq!(
            peer.recv().await.unwrap(),
            Frame::Data {
                stream_id: id3,
                flags: FLAG_FIN,
                data: vec![]
            }
        );
        peer.send(Frame::Ping { id: 2 }).await;
        assert_eq!(peer.recv().await.unwrap(), Frame::Ping { id: 2 });
        for part in [&b"one "[..], b"two"] {
            peer.send(Frame::Data {
                stream_id: id1,
                flags: 0,
                data: part.to_vec(),
            })
            .await;
        }
        peer.send(Frame::Data {
            stream_id: id1,
            flags: FLAG_FIN,
            data: vec![],
        })
        .await;
        assert_eq!(client.await.unwrap(), b"one two");
        // client-go's Close: RST for stream 1 (stream 3 already sent FIN),
        // then GOAWAY, then EOF.
        assert_eq!(
            peer.recv().await.unwrap(),
            Frame::RstStream {
                stream_id: id1,
                status: RST_CANCEL
            }
        );
        assert_eq!(
            peer.recv().await.unwrap(),
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0
            }
        );
        assert_eq!(peer.recv().await, None);
        assert!(conn.violations().is_empty(), "{:?}", conn.violations());
    }

    #[tokio::test]
    async fn refused_stream_and_reset_and_goaway() {
        let (conn, mut peer) = pair();
        let c = conn.clone();
        let client = tokio::spawn(async move {
            let refused = c.create_stream(st("bogus")).await;
            let mut s = c.create_stream(st("stdout")).await.unwrap();
            let got = s.read_to_end().await;
            (refused.is_err(), got, s.reset_status())
        });
        match peer.recv().await.unwrap() {
            Frame::SynStream { stream_id, .. } => {
                peer.send(Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                })
                .await
            }
            f => panic!("{f:?}"),
        }
        let (id, _) = accept(&mut peer).await;
        peer.send(Frame::Data {
            stream_id: id,
            flags: 0,
            data: b"x".to_vec(),
        })
        .await;
        peer.send(Frame::RstStream {
            stream_id: id,
            status: RST_CANCEL,
        })
        .await;
        let (refused, got, reset) = client.await.unwrap();
        assert!(refused);
        assert_eq!(got, b"x");
        assert_eq!(reset, Some(RST_CANCEL));
        peer.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
        // Frames after GOAWAY are never read.
        peer.send(Frame::Ping { id: 4 }).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(conn.goaway(), Some((0, 0)));
        assert_eq!(conn.ended().as_deref(), Some("GOAWAY received"));
        assert!(conn.create_stream(st("x")).await.is_err());
    }

    #[tokio::test]
    async fn ping_and_violations() {
        let (conn, mut peer) = pair();
        let c = conn.clone();
        let pinger = tokio::spawn(async move { c.ping(Duration::from_secs(5)).await });
        assert_eq!(peer.recv().await.unwrap(), Frame::Ping { id: 1 });
        peer.send(Frame::Ping { id: 1 }).await;
        pinger.await.unwrap().unwrap();

        let c = conn.clone();
        let client = tokio::spawn(async move { c.create_stream(st("stdout")).await });
        let id = match peer.recv().await.unwrap() {
            Frame::SynStream { stream_id, .. } => stream_id,
            f => panic!("{f:?}"),
        };
        // Data before the reply is lost, as with spdystream.
        peer.send(Frame::Data {
            stream_id: id,
            flags: 0,
            data: b"early".to_vec(),
        })
        .await;
        peer.send(Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: vec![],
        })
        .await;
        peer.send(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: b"late".to_vec(),
        })
        .await;
        let mut s = client.await.unwrap().unwrap();
        assert_eq!(s.read_to_end().await, b"late");
        let v = conn.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("before its SYN_REPLY"));
    }

    #[tokio::test]
    async fn async_read_write_on_a_stream() {
        let (conn, mut peer) = pair();
        let c = conn.clone();
        let client = tokio::spawn(async move {
            let mut s = c.create_stream(st("data")).await.unwrap();
            s.write_all(&vec![7u8; 40 * 1024]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = String::new();
            s.read_to_string(&mut back).await.unwrap();
            back
        });
        let (id, _) = accept(&mut peer).await;
        let mut got = Vec::new();
        loop {
            match peer.recv().await.unwrap() {
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    assert_eq!(stream_id, id);
                    assert!(data.len() <= WRITE_CHUNK);
                    got.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(got.len(), 40 * 1024);
        peer.send(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: b"pong".to_vec(),
        })
        .await;
        assert_eq!(client.await.unwrap(), "pong");
    }
}
