//! The server side of one SPDY/3.1 connection.
//!
//! Two tasks own the transport: a reader that parses frames and dispatches
//! them, and a writer that owns the write half and the send-side header
//! compressor, fed through one queue so frames leave in the order they were
//! queued (a SYN_REPLY always precedes the stream's DATA, which
//! spdystream's client needs: it drops DATA on a stream it has no reply
//! for).
//!
//! Flow control: spdystream, the Go client kubectl and kubelet use,
//! ignores WINDOW_UPDATE (it parses the frame and drops it) and never sends
//! one, so SPDY/3.1 windows are not enforced in either direction here and
//! none are advertised. Instead each stream buffers a bounded number of
//! received DATA frames; when a stream's consumer falls behind, the reader
//! task waits, which stalls the whole connection (spdystream does the same).
//! Every stream handed out must therefore be read or dropped. Sending is
//! bounded by a per-connection budget of queued bytes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::frame::{Frame, FrameDecoder, FrameEncoder, GoAwayStatus, Headers, RstStatus};

/// Largest DATA payload we send; writes are split at this size (the size
/// of Go's io.Copy buffer, which is what the client sends too).
pub const MAX_DATA_FRAME: usize = 32 * 1024;

/// Received DATA frames buffered per stream before the reader waits.
const STREAM_BUFFER_FRAMES: usize = 16;
/// New streams buffered before the reader waits for `serve`'s caller.
const INCOMING_BACKLOG: usize = 32;
/// Bytes of DATA queued for the writer before `write` waits.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Frames the reader may queue on its own (PING replies, RST_STREAM) before
/// it drops them: a peer that sends pings but never reads cannot grow the
/// queue without bound.
const MAX_PENDING_CONTROL: usize = 1024;
/// How long closing waits for queued frames to reach a slow peer.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes the writer coalesces into one write.
const WRITE_BATCH: usize = 256 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// Serves one SPDY/3.1 connection (server side) over an upgraded transport.
///
/// Returns a handle to the connection and the streams the client opens, in
/// order. Must be called inside a Tokio runtime: the connection runs on two
/// spawned tasks until the peer goes away, a protocol error occurs or
/// [`Connection::close`] is called. Works over any byte stream (TCP, a
/// hijacked HTTP/1.1 connection, `tokio::io::duplex`, a tunnel).
pub fn serve<IO>(io: IO) -> (Connection, mpsc::Receiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_BACKLOG);
    let shared = Arc::new(Shared {
        out: out_tx,
        budget: Arc::new(Semaphore::new(WRITE_BUDGET)),
        pending_control: AtomicUsize::new(0),
        finishing: AtomicBool::new(false),
        state: Mutex::new(State::default()),
        writer_done: watch::Sender::new(false),
        closed: watch::Sender::new(false),
    });
    tokio::spawn(run_writer(wr, out_rx, Arc::clone(&shared)));
    tokio::spawn(run_reader(rd, Arc::clone(&shared), incoming_tx));
    (Connection { shared }, incoming_rx)
}

/// A handle to a served connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    /// Sends GOAWAY (OK) after the frames already queued, then closes the
    /// transport once they are written (or after a timeout if the peer does
    /// not read). Open streams end: reads return `None`, writes fail.
    /// Idempotent; concurrent callers all wait for the end.
    pub async fn close(&self) {
        self.shared.finish(Some(GoAwayStatus::Ok)).await;
    }

    /// Resolves once the connection has ended: the peer sent GOAWAY or
    /// disconnected, a protocol error occurred, or we closed it.
    pub async fn closed(&self) {
        self.shared.wait_closed().await;
    }

    /// Whether the connection has ended (see [`Connection::closed`]).
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A stream the client opened with SYN_STREAM.
///
/// Reply with [`Stream::reply`] to accept it (the Go client waits for the
/// SYN_REPLY before using the stream), or [`Stream::reset`] it to refuse.
/// Dropping every handle of a stream we have not half-closed resets it.
pub struct Stream {
    pub id: u32,
    /// Header pairs as received: lower-case names, one pair per value.
    pub headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    /// The first value of header `name` (names are compared ignoring case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sends SYN_REPLY with no headers and no FIN, as kubelet does for every
    /// stream it accepts. Idempotent; the first write or close replies
    /// implicitly if this was not called.
    pub fn reply(&self) {
        self.writer.core.reply();
    }

    /// The next DATA payload; `None` once the peer half-closed (FIN), the
    /// stream was reset or the connection ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        self.reader.read().await
    }

    /// A handle for sending on this stream.
    pub fn writer(&self) -> StreamWriter {
        self.writer.clone()
    }

    /// Resets the stream (RST_STREAM CANCEL), e.g. to refuse it.
    pub fn reset(&self) {
        self.writer.reset();
    }

    /// Splits the stream so that reading and writing can happen in
    /// different tasks.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a [`Stream`].
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    _guard: Arc<HandleGuard>,
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next DATA payload (never empty); `None` once the peer
    /// half-closed, the stream was reset or the connection ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The sending half of a [`Stream`]; clones send on the same stream.
#[derive(Clone)]
pub struct StreamWriter {
    core: Arc<StreamCore>,
    _guard: Arc<HandleGuard>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.core.id
    }

    /// Queues `data` as DATA frames of at most [`MAX_DATA_FRAME`] bytes.
    /// Waits while the connection's send budget is used up. Fails once we
    /// half-closed or reset the stream, the peer reset it, or the
    /// connection ended. Concurrent writes through clones may interleave
    /// at frame boundaries.
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return self.core.check_writable(&self.core.lock());
        }
        for chunk in data.chunks(MAX_DATA_FRAME) {
            let permit = Arc::clone(&self.core.shared.budget)
                .acquire_many_owned(chunk.len() as u32)
                .await
                .map_err(|_| connection_closed())?;
            let mut st = self.core.lock();
            self.core.check_writable(&st)?;
            self.core.ensure_reply(&mut st);
            self.core.shared.send(
                Frame::Data {
                    stream_id: self.core.id,
                    fin: false,
                    data: Bytes::copy_from_slice(chunk),
                },
                Some(permit),
            )?;
        }
        Ok(())
    }

    /// Half-closes our side: an empty DATA frame with FIN. The peer may go
    /// on sending. Closing twice is a no-op.
    pub async fn close(&self) -> io::Result<()> {
        {
            let mut st = self.core.lock();
            if st.fin_sent && !st.reset {
                return Ok(());
            }
            self.core.check_writable(&st)?;
            self.core.ensure_reply(&mut st);
            self.core.shared.send(
                Frame::Data {
                    stream_id: self.core.id,
                    fin: true,
                    data: Bytes::new(),
                },
                None,
            )?;
            st.fin_sent = true;
        }
        self.core.shared.forget_if_done(self.core.id);
        Ok(())
    }

    /// Resets the stream (RST_STREAM CANCEL) unless it already ended in
    /// both directions; pending reads end and later writes fail.
    pub fn reset(&self) {
        self.core.reset(RstStatus::Cancel);
    }
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.core.id)
            .finish_non_exhaustive()
    }
}

/// Shared by every handle of one stream; the last one dropped cleans up.
struct HandleGuard(Arc<StreamCore>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        // Nobody can send on the stream any more: unless we already
        // half-closed it, tell the peer (as kubelet's teardown does) so it
        // does not wait for data forever. If we did half-close, whatever the
        // peer still sends is discarded until it finishes.
        let abandoned = {
            let st = self.0.lock();
            !st.fin_sent && !st.reset
        };
        if abandoned {
            self.0.reset(RstStatus::Cancel);
        }
    }
}

/// Per-stream state the session and the handles share.
struct StreamCore {
    id: u32,
    shared: Arc<Shared>,
    st: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    replied: bool,
    /// We sent FIN (or may never send: a unidirectional stream).
    fin_sent: bool,
    /// The peer sent FIN.
    remote_fin: bool,
    /// Either side reset the stream.
    reset: bool,
}

impl StreamCore {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.st)
    }

    fn reply(&self) {
        let mut st = self.lock();
        if !st.reset {
            self.ensure_reply(&mut st);
        }
    }

    /// Queues SYN_REPLY once. Called with the stream lock held so that no
    /// DATA for the stream can be queued ahead of it.
    fn ensure_reply(&self, st: &mut StreamState) {
        if st.replied {
            return;
        }
        let reply = Frame::SynReply {
            stream_id: self.id,
            fin: false,
            headers: Vec::new(),
        };
        if self.shared.send(reply, None).is_ok() {
            st.replied = true;
        }
    }

    fn check_writable(&self, st: &StreamState) -> io::Result<()> {
        if st.reset {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            ));
        }
        if st.fin_sent {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream is closed for writing",
            ));
        }
        if self.shared.finishing.load(Ordering::Acquire) {
            return Err(connection_closed());
        }
        Ok(())
    }

    fn reset(&self, status: RstStatus) {
        {
            let mut st = self.lock();
            if st.reset || (st.fin_sent && st.remote_fin) {
                return;
            }
            st.reset = true;
            let rst = Frame::RstStream {
                stream_id: self.id,
                status,
            };
            // Nothing to tell a peer that is gone.
            let _ = self.shared.send(rst, None);
        }
        // Dropping the entry ends pending reads.
        self.shared.forget(self.id);
    }
}

enum Outgoing {
    Frame {
        frame: Frame,
        /// Send budget held until the frame is written.
        permit: Option<OwnedSemaphorePermit>,
        /// Counts against `MAX_PENDING_CONTROL`.
        control: bool,
    },
    /// Flush, shut the write half down and stop.
    Shutdown,
}

struct Shared {
    out: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
    pending_control: AtomicUsize,
    /// Set once the connection starts closing: nothing new is queued.
    finishing: AtomicBool,
    state: Mutex<State>,
    writer_done: watch::Sender<bool>,
    /// Set once the connection has ended; both tasks stop on it.
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Streams that may still receive frames.
    streams: HashMap<u32, Entry>,
    /// Highest stream id the client opened (ids must increase).
    last_stream_id: u32,
}

struct Entry {
    core: Arc<StreamCore>,
    /// `None` after the peer's FIN.
    data_tx: Option<mpsc::Sender<Bytes>>,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues a frame from the application side.
    fn send(&self, frame: Frame, permit: Option<OwnedSemaphorePermit>) -> io::Result<()> {
        if self.finishing.load(Ordering::Acquire) {
            return Err(connection_closed());
        }
        self.out
            .send(Outgoing::Frame {
                frame,
                permit,
                control: false,
            })
            .map_err(|_| connection_closed())
    }

    /// Queues a frame the reader generated, dropping it past the cap.
    fn send_control(&self, frame: Frame) {
        if self.finishing.load(Ordering::Acquire) {
            return;
        }
        if self.pending_control.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_CONTROL {
            self.pending_control.fetch_sub(1, Ordering::AcqRel);
            debug!("SPDY peer is not reading; dropping {frame:?}");
            return;
        }
        let queued = self.out.send(Outgoing::Frame {
            frame,
            permit: None,
            control: true,
        });
        if queued.is_err() {
            self.pending_control.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn forget(&self, id: u32) {
        self.lock_state().streams.remove(&id);
    }

    /// Drops the stream's entry once both sides are done with it.
    fn forget_if_done(&self, id: u32) {
        let mut state = self.lock_state();
        let done = state.streams.get(&id).is_some_and(|e| {
            let st = e.core.lock();
            st.reset || (st.fin_sent && st.remote_fin)
        });
        if done {
            state.streams.remove(&id);
        }
    }

    async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        // Err only if the sender is gone, and `self` owns it.
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Ends the connection once: optionally queues GOAWAY behind the frames
    /// already queued, lets the writer flush and shut down (bounded by
    /// `CLOSE_FLUSH_TIMEOUT`), then marks the connection closed, which stops
    /// both tasks. Later callers wait for the first to finish.
    async fn finish(&self, goaway: Option<GoAwayStatus>) {
        if self.finishing.swap(true, Ordering::AcqRel) {
            self.wait_closed().await;
            return;
        }
        let last_good_stream_id = {
            let mut state = self.lock_state();
            // Dropping the senders ends every pending read.
            state.streams.clear();
            state.last_stream_id
        };
        if let Some(status) = goaway {
            let _ = self.out.send(Outgoing::Frame {
                frame: Frame::GoAway {
                    last_good_stream_id,
                    status,
                },
                permit: None,
                control: false,
            });
        }
        let _ = self.out.send(Outgoing::Shutdown);
        // Wakes writers waiting for budget; they fail.
        self.budget.close();
        let mut writer_done = self.writer_done.subscribe();
        if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_done.wait_for(|d| *d))
            .await
            .is_err()
        {
            debug!("SPDY peer did not take the final frames; dropping the connection");
        }
        self.closed.send_replace(true);
    }
}

/// The writer task: encodes queued frames in order and writes them,
/// coalescing whatever is already queued into one write.
async fn run_writer<W>(mut wr: W, mut rx: mpsc::UnboundedReceiver<Outgoing>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    let mut closed = shared.closed.subscribe();
    let clean = match FrameEncoder::new() {
        Ok(mut encoder) => {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            'run: loop {
                let first = tokio::select! {
                    biased;
                    _ = closed.wait_for(|c| *c) => break 'run false,
                    msg = rx.recv() => msg,
                };
                let Some(mut msg) = first else {
                    break 'run false;
                };
                let mut permits = Vec::new();
                let mut control = 0;
                let mut shutdown = false;
                loop {
                    match msg {
                        Outgoing::Shutdown => {
                            shutdown = true;
                            break;
                        }
                        Outgoing::Frame {
                            frame,
                            permit,
                            control: is_control,
                        } => {
                            if let Err(err) = encoder.encode(&frame, &mut buf) {
                                debug!(%err, "cannot encode SPDY frame");
                                break 'run false;
                            }
                            permits.extend(permit);
                            control += usize::from(is_control);
                        }
                    }
                    if buf.len() >= WRITE_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
                let written = tokio::select! {
                    biased;
                    _ = closed.wait_for(|c| *c) => break 'run false,
                    res = write_flush(&mut wr, &buf) => res,
                };
                buf.clear();
                drop(permits);
                shared.pending_control.fetch_sub(control, Ordering::AcqRel);
                if let Err(err) = written {
                    debug!(%err, "SPDY write failed");
                    break 'run false;
                }
                if shutdown {
                    tokio::select! {
                        biased;
                        _ = closed.wait_for(|c| *c) => {}
                        _ = wr.shutdown() => {}
                    }
                    break 'run true;
                }
            }
        }
        Err(err) => {
            debug!(%err, "cannot set up SPDY header compression");
            false
        }
    };
    shared.writer_done.send_replace(true);
    if !clean {
        // The transport is unusable: end the connection (a no-op if it is
        // already ending).
        shared.finish(None).await;
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(wr: &mut W, buf: &[u8]) -> io::Result<()> {
    wr.write_all(buf).await?;
    wr.flush().await
}

enum Flow {
    Continue,
    Stop,
}

/// The reader task: parses frames and dispatches them until the peer goes
/// away, a protocol error occurs or the connection is closed.
async fn run_reader<R>(mut rd: R, shared: Arc<Shared>, incoming: mpsc::Sender<Stream>)
where
    R: AsyncRead + Unpin,
{
    let mut closed = shared.closed.subscribe();
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Flow::Stop = dispatch(frame, &shared, &incoming, &mut closed).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    debug!(%err, "malformed SPDY frame; closing the connection");
                    shared.finish(Some(GoAwayStatus::ProtocolError)).await;
                    return;
                }
            }
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return,
            read = rd.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                debug!("SPDY peer disconnected");
                shared.finish(None).await;
                return;
            }
            Ok(_) => {}
            Err(err) => {
                debug!(%err, "SPDY read failed");
                shared.finish(None).await;
                return;
            }
        }
    }
}

async fn dispatch(
    frame: Frame,
    shared: &Arc<Shared>,
    incoming: &mpsc::Sender<Stream>,
    closed: &mut watch::Receiver<bool>,
) -> Flow {
    match frame {
        Frame::SynStream {
            stream_id,
            fin,
            unidirectional,
            headers,
            ..
        } => {
            open_stream(
                stream_id,
                fin,
                unidirectional,
                headers,
                shared,
                incoming,
                closed,
            )
            .await
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let Some(tx) = take_data_sender(shared, stream_id, fin) else {
                // Unknown, reset or already finished by the peer: drop it,
                // as spdystream does, rather than answer every frame in
                // flight with a reset.
                return Flow::Continue;
            };
            if data.is_empty() {
                return Flow::Continue;
            }
            tokio::select! {
                biased;
                _ = closed.wait_for(|c| *c) => Flow::Stop,
                // An error means the reader was dropped: discard.
                _ = tx.send(data) => Flow::Continue,
            }
        }
        Frame::RstStream { stream_id, status } => {
            debug!(stream_id, ?status, "SPDY stream reset by peer");
            let entry = shared.lock_state().streams.remove(&stream_id);
            if let Some(entry) = entry {
                entry.core.lock().reset = true;
            }
            Flow::Continue
        }
        Frame::Ping { id } => {
            // Odd ids are the client's; an even id would answer a ping of
            // ours, and we send none.
            if id & 1 == 1 {
                shared.send_control(Frame::Ping { id });
            }
            Flow::Continue
        }
        Frame::GoAway { status, .. } => {
            debug!(?status, "SPDY peer sent GOAWAY");
            shared.finish(None).await;
            Flow::Stop
        }
        // Replies and HEADERS belong to streams we never open; SETTINGS,
        // WINDOW_UPDATE (no flow control, see the module docs) and unknown
        // control frames are ignored, as the spec allows.
        Frame::SynReply { .. }
        | Frame::Headers { .. }
        | Frame::Settings { .. }
        | Frame::WindowUpdate { .. }
        | Frame::Unknown { .. } => Flow::Continue,
    }
}

/// The sender for a DATA frame's stream; with `fin` it also marks the peer
/// finished (the returned sender is then the last, so the reader sees the
/// end after this frame).
fn take_data_sender(shared: &Shared, stream_id: u32, fin: bool) -> Option<mpsc::Sender<Bytes>> {
    let mut state = shared.lock_state();
    let entry = state.streams.get_mut(&stream_id)?;
    if !fin {
        return entry.data_tx.clone();
    }
    let tx = entry.data_tx.take();
    let done = {
        let mut st = entry.core.lock();
        st.remote_fin = true;
        st.fin_sent || st.reset
    };
    if done {
        state.streams.remove(&stream_id);
    }
    tx
}

async fn open_stream(
    stream_id: u32,
    fin: bool,
    unidirectional: bool,
    headers: Headers,
    shared: &Arc<Shared>,
    incoming: &mpsc::Sender<Stream>,
    closed: &mut watch::Receiver<bool>,
) -> Flow {
    if shared.finishing.load(Ordering::Acquire) {
        // After GOAWAY new streams are ignored (spec, and spdystream).
        return Flow::Continue;
    }
    let (data_tx, rx) = mpsc::channel(STREAM_BUFFER_FRAMES);
    let core = Arc::new(StreamCore {
        id: stream_id,
        shared: Arc::clone(shared),
        st: Mutex::new(StreamState {
            fin_sent: unidirectional,
            remote_fin: fin,
            ..StreamState::default()
        }),
    });
    {
        let mut state = shared.lock_state();
        // Client ids are odd and strictly increasing; anything else reuses
        // or skips the id space.
        if stream_id & 1 == 0 || stream_id <= state.last_stream_id {
            drop(state);
            debug!(stream_id, "SPDY SYN_STREAM with an invalid id");
            shared.send_control(Frame::RstStream {
                stream_id,
                status: RstStatus::ProtocolError,
            });
            return Flow::Continue;
        }
        state.last_stream_id = stream_id;
        state.streams.insert(
            stream_id,
            Entry {
                core: Arc::clone(&core),
                data_tx: (!fin).then_some(data_tx),
            },
        );
    }
    let guard = Arc::new(HandleGuard(Arc::clone(&core)));
    let stream = Stream {
        id: stream_id,
        headers,
        reader: StreamReader {
            id: stream_id,
            rx,
            _guard: Arc::clone(&guard),
        },
        writer: StreamWriter {
            core,
            _guard: guard,
        },
    };
    tokio::select! {
        biased;
        _ = closed.wait_for(|c| *c) => Flow::Stop,
        // If nobody takes streams any more, the failed send hands the
        // stream back and dropping it resets it.
        _ = incoming.send(stream) => Flow::Continue,
    }
}

fn connection_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY connection is closed")
}

/// Locks a mutex, ignoring poisoning: the guarded state stays consistent
/// because no code path panics while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
