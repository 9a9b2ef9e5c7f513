//! WebSocket transport as client-go uses it: the gorilla/websocket
//! handshake of `transport/websocket.RoundTripper`, the channel
//! multiplexing of `tools/remotecommand/websocket.go`, and the
//! `TunnelingConnection` that carries SPDY inside binary messages for
//! port-forward.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::Engine;
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::upgrade::{connect, parse_url, round_trip, ws_request};
use super::{dup_socket, UpgradeError};

/// client-go's heartbeat `pingPeriod` for remotecommand over WebSocket.
pub const WS_PING_PERIOD: Duration = Duration::from_secs(5);
/// remotecommand's CLOSE signal (v5): `[255, channel]`.
pub const STREAM_CLOSE: u8 = 255;

pub(crate) struct Upgraded {
    pub ws: WebSocketStream<TcpStream>,
    pub protocol: String,
    pub killer: Option<std::net::TcpStream>,
}

/// GET upgrade to WebSocket with `protocols` offered in one
/// `Sec-WebSocket-Protocol` header, then gorilla's checks (101, `Upgrade:
/// websocket`, `Connection: upgrade`, the accept key) and client-go's
/// (the chosen subprotocol must be one offered; none chosen is an error).
pub(crate) async fn ws_connect(url: &str, protocols: &[&str]) -> Result<Upgraded, UpgradeError> {
    let t = parse_url(url)?;
    let mut s = connect(&t).await?;
    let killer = dup_socket(&s);
    let key = generate_key();
    let resp = round_trip(&mut s, &ws_request(&t, protocols, &key)).await?;
    let accept = derive_accept_key(key.as_bytes());
    if !resp.header_has_token("Upgrade", "websocket")
        || !resp.header_has_token("Connection", "upgrade")
        || resp.header("Sec-WebSocket-Accept") != Some(accept.as_str())
    {
        return Err(UpgradeError {
            status: resp.status,
            body: "websocket: bad handshake (Upgrade, Connection or Sec-WebSocket-Accept wrong)"
                .into(),
            headers: resp.headers,
        });
    }
    let protocol = resp
        .header("Sec-WebSocket-Protocol")
        .unwrap_or("")
        .trim()
        .to_string();
    if !protocols.contains(&protocol.as_str()) {
        return Err(UpgradeError {
            status: resp.status,
            body: format!("invalid protocol, expected one of {protocols:?}, got {protocol:?}"),
            headers: resp.headers,
        });
    }
    let ws = WebSocketStream::from_partially_read(s, resp.leftover, Role::Client, None).await;
    Ok(Upgraded {
        ws,
        protocol,
        killer,
    })
}

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

#[derive(Default)]
struct WsState {
    violations: Vec<String>,
    /// The peer's close code, if a close frame came.
    close: Option<Option<u16>>,
    /// Why reading stopped abnormally (client-go's stream read error).
    error: Option<String>,
}

/// A remotecommand channel connection: one reader task demultiplexing
/// messages by their leading channel byte, writes prefixed the same way.
pub(crate) struct WsChannels {
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    base64: bool,
    state: Arc<Mutex<WsState>>,
    tasks: Vec<JoinHandle<()>>,
    killer: Option<std::net::TcpStream>,
}

impl Drop for WsChannels {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl WsChannels {
    /// Starts demultiplexing. `open[i]` says whether client-go would have
    /// created a stream for channel `i`; messages for other channels are
    /// discarded as client-go does ("Unknown stream, discarding message").
    pub fn start(
        up: Upgraded,
        open: [bool; 5],
    ) -> (WsChannels, [Option<mpsc::UnboundedReceiver<Vec<u8>>>; 5]) {
        let base64 = up.protocol.contains("base64");
        let (sink, stream) = up.ws.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let state = Arc::new(Mutex::new(WsState::default()));
        let mut senders: [Option<mpsc::UnboundedSender<Vec<u8>>>; 5] = Default::default();
        let mut receivers: [Option<mpsc::UnboundedReceiver<Vec<u8>>>; 5] = Default::default();
        for i in 0..5 {
            if open[i] {
                let (tx, rx) = mpsc::unbounded_channel();
                senders[i] = Some(tx);
                receivers[i] = Some(rx);
            }
        }
        let tasks = vec![
            tokio::spawn(demux(stream, senders, base64, state.clone())),
            tokio::spawn(heartbeat(sink.clone())),
        ];
        (
            WsChannels {
                sink,
                base64,
                state,
                tasks,
                killer: up.killer,
            },
            receivers,
        )
    }

    /// One message: the channel byte then `data` (base64 protocols: the
    /// channel as an ASCII digit then base64 text).
    pub async fn send(&self, channel: u8, data: &[u8]) -> io::Result<()> {
        let msg = if self.base64 {
            let mut s = String::from((b'0' + channel) as char);
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::Text(s.into())
        } else {
            let mut b = Vec::with_capacity(data.len() + 1);
            b.push(channel);
            b.extend_from_slice(data);
            Message::Binary(b.into())
        };
        self.send_raw(msg).await
    }

    /// A raw message, for the CLOSE signal (which client-go sends as a raw
    /// binary `[255, channel]` whatever the protocol).
    pub async fn send_raw(&self, msg: Message) -> io::Result<()> {
        self.sink
            .lock()
            .await
            .send(msg)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// client-go's error for a stream read once the connection went away
    /// without a normal (1000) close, `None` after a normal close.
    pub fn read_error(&self) -> Option<String> {
        self.state.lock().unwrap().error.clone()
    }

    /// Closes the TCP connection without a close frame, as gorilla's
    /// `Conn.Close` (client-go's deferred close) does.
    pub fn close(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Cuts the socket in both directions at once.
    pub fn abort(mut self) {
        if let Some(k) = self.killer.take() {
            let _ = k.shutdown(std::net::Shutdown::Both);
        }
        self.close();
    }
}

async fn heartbeat(sink: Arc<tokio::sync::Mutex<WsSink>>) {
    loop {
        tokio::time::sleep(WS_PING_PERIOD).await;
        if sink
            .lock()
            .await
            .send(Message::Ping(Bytes::new()))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn demux(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    senders: [Option<mpsc::UnboundedSender<Vec<u8>>>; 5],
    base64: bool,
    state: Arc<Mutex<WsState>>,
) {
    let note = |m: String| state.lock().unwrap().violations.push(m);
    let error = loop {
        let msg = match stream.next().await {
            None => break None,
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break None,
            Some(Err(e)) => break Some(format!("next reader: {e}")),
            Some(Ok(m)) => m,
        };
        let (channel, data) = match msg {
            Message::Binary(b) if !base64 => {
                if b.is_empty() {
                    note("empty binary message: client-go fails with 'read stream id: EOF'".into());
                    break Some("read stream id: EOF".into());
                }
                (b[0], b.slice(1..).to_vec())
            }
            Message::Text(t) if base64 => {
                let t = t.as_bytes();
                let Some((&c, rest)) = t.split_first() else {
                    continue;
                };
                match base64::engine::general_purpose::STANDARD.decode(rest) {
                    Ok(d) => (c.wrapping_sub(b'0'), d),
                    Err(e) => {
                        note(format!("bad base64 on channel {c}: {e}"));
                        continue;
                    }
                }
            }
            Message::Binary(_) | Message::Text(_) => {
                note("message of the wrong type for the protocol".into());
                break Some("unexpected message type".into());
            }
            Message::Close(f) => {
                state.lock().unwrap().close = Some(f.map(|f| u16::from(f.code)));
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if channel == STREAM_CLOSE {
            note(format!(
                "server sent CLOSE for channel {:?}; client-go discards it",
                data.first()
            ));
            continue;
        }
        match senders.get(channel as usize).and_then(Option::as_ref) {
            Some(tx) if !data.is_empty() => {
                let _ = tx.send(data);
            }
            Some(_) => {}
            None => note(format!(
                "{} bytes on channel {channel}, which the client did not open; client-go discards them",
                data.len()
            )),
        }
    };
    let mut st = state.lock().unwrap();
    st.error = match (error, st.close) {
        (Some(e), _) => Some(e),
        (None, Some(Some(1000))) => None,
        (None, Some(code)) => Some(format!(
            "next reader: websocket: close {}",
            code.map_or("1005 (no status)".to_string(), |c| c.to_string())
        )),
        (None, None) => Some("next reader: unexpected EOF (no close frame)".into()),
    };
    // Dropping the senders ends every channel with EOF.
}

/// client-go's `TunnelingConnection`: a byte stream whose writes are one
/// binary message each and whose reads run through consecutive binary
/// messages; a normal close reads as EOF; shutdown sends a normal close.
pub(crate) struct WsTunnel {
    ws: WebSocketStream<TcpStream>,
    rbuf: Bytes,
    close_sent: bool,
}

impl WsTunnel {
    pub fn new(ws: WebSocketStream<TcpStream>) -> Self {
        WsTunnel {
            ws,
            rbuf: Bytes::new(),
            close_sent: false,
        }
    }
}

fn ws_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl AsyncRead for WsTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rbuf.is_empty() {
                let n = out.remaining().min(this.rbuf.len());
                out.put_slice(&this.rbuf.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_io(e))),
                Some(Ok(Message::Binary(b))) => this.rbuf = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "invalid message type received",
                    )))
                }
                Some(Ok(Message::Close(f))) => {
                    return match f {
                        Some(f) if f.code == CloseCode::Normal => Poll::Ready(Ok(())),
                        f => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("websocket closed: {f:?}"),
                        ))),
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

impl AsyncWrite for WsTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_io)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(ws_io)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_io)?;
            Pin::new(&mut this.ws)
                .start_send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                })))
                .map_err(ws_io)?;
            this.close_sent = true;
        }
        Pin::new(&mut this.ws).poll_flush(cx).map_err(ws_io)
    }
}
