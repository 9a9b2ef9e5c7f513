//! Port-forward as client-go's `tools/portforward` does it: one upgraded
//! SPDY connection (direct, or tunnelled through a WebSocket as current
//! kubectl does), and per forwarded TCP connection a pair of streams tied
//! together by a `requestID`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::remotecommand::{check_spdy_101, SPDY_PING_PERIOD};
use super::spdy::{SpdyConn, SpdyStream};
use super::upgrade::{connect, parse_url, round_trip, spdy_request};
use super::ws::{ws_connect, WsTunnel};
use super::{dup_socket, spdy_over_tcp, UpgradeError};

/// The SPDY subprotocol for port-forward.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol kubectl offers for SPDY tunnelled over
/// WebSocket (`constants.WebsocketsSPDYTunnelingPortForwardV1`).
pub const PORT_FORWARD_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// client-go's tunneling dialer `PingPeriod`.
pub const TUNNEL_PING_PERIOD: Duration = Duration::from_secs(10);

/// One upgraded port-forward connection, like client-go's
/// `PortForwarder.streamConn`; each [`PortForwarder::open`] is one
/// forwarded local connection.
pub struct PortForwarder {
    conn: SpdyConn,
    protocol: String,
    next_request_id: AtomicU32,
}

/// Port-forward over SPDY: POST upgrade offering only
/// `portforward.k8s.io` (kubectl's `spdy.NewDialer(.., "POST", url)` then
/// `Dial(PortForwardProtocolV1Name)`). The server must answer 101 naming
/// that protocol in `X-Stream-Protocol-Version`; anything else fails as
/// `ForwardPorts` fails ("unable to negotiate protocol").
pub async fn port_forward_spdy_conn(url: &str) -> Result<PortForwarder, UpgradeError> {
    let t = parse_url(url)?;
    let mut s = connect(&t).await?;
    let killer = dup_socket(&s);
    let resp = round_trip(&mut s, &spdy_request("POST", &t, &[PORT_FORWARD_PROTOCOL])).await?;
    check_spdy_101(&resp)?;
    let protocol = resp
        .header("X-Stream-Protocol-Version")
        .unwrap_or("")
        .to_string();
    if protocol != PORT_FORWARD_PROTOCOL {
        return Err(UpgradeError {
            status: resp.status,
            body: format!(
                "unable to negotiate protocol: client supports {PORT_FORWARD_PROTOCOL:?}, \
                 server returned {protocol:?}"
            ),
            headers: resp.headers,
        });
    }
    Ok(PortForwarder {
        conn: spdy_over_tcp(s, resp.leftover, killer, Some(SPDY_PING_PERIOD)),
        protocol,
        next_request_id: AtomicU32::new(0),
    })
}

/// Port-forward as current kubectl does it: a GET WebSocket upgrade
/// offering only `SPDY/3.1+portforward.k8s.io`; every binary message then
/// carries raw SPDY bytes (no HTTP exchange inside the tunnel), and the
/// same SPDY port-forward streams run through it. The negotiated protocol,
/// with the `SPDY/3.1+` prefix trimmed, must be `portforward.k8s.io`.
pub async fn port_forward_ws_conn(url: &str) -> Result<PortForwarder, UpgradeError> {
    let up = ws_connect(url, &[PORT_FORWARD_TUNNEL_PROTOCOL]).await?;
    let protocol = up
        .protocol
        .strip_prefix("SPDY/3.1+")
        .unwrap_or(&up.protocol)
        .to_string();
    if protocol != PORT_FORWARD_PROTOCOL {
        return Err(UpgradeError {
            status: 101,
            body: format!(
                "unable to negotiate protocol: client supports {PORT_FORWARD_PROTOCOL:?}, \
                 server returned {protocol:?}"
            ),
            headers: vec![],
        });
    }
    let (r, w) = tokio::io::split(WsTunnel::new(up.ws));
    Ok(PortForwarder {
        conn: SpdyConn::new(
            Box::new(r),
            Box::new(w),
            Vec::new(),
            Some(TUNNEL_PING_PERIOD),
            up.killer,
        ),
        protocol,
        next_request_id: AtomicU32::new(0),
    })
}

/// [`port_forward_spdy_conn`] then [`PortForwarder::open`]`(port)`.
pub async fn port_forward_spdy(url: &str, port: u16) -> Result<PortForwardStream, UpgradeError> {
    let pf = port_forward_spdy_conn(url).await?;
    pf.open(port)
        .await
        .map_err(|e| UpgradeError::local(format!("opening port-forward streams: {e}")))
}

/// [`port_forward_ws_conn`] then [`PortForwarder::open`]`(port)`.
pub async fn port_forward_ws(url: &str, port: u16) -> Result<PortForwardStream, UpgradeError> {
    let pf = port_forward_ws_conn(url).await?;
    pf.open(port)
        .await
        .map_err(|e| UpgradeError::local(format!("opening port-forward streams: {e}")))
}

impl PortForwarder {
    /// `portforward.k8s.io`.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    pub fn conn(&self) -> &SpdyConn {
        &self.conn
    }

    /// One forwarded connection, as `PortForwarder.handleConnection`: the
    /// next requestID (0, 1, 2, ... per connection); an error stream with
    /// headers `streamType: error`, `port: <port>`, `requestID: <id>`,
    /// half-closed at once ("we're not writing to this stream"); then a data
    /// stream with the same headers but `streamType: data`. On the wire the
    /// names are `streamtype`, `port`, `requestid`.
    pub async fn open(&self, port: u16) -> io::Result<PortForwardStream> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::SeqCst);
        let headers = |ty: &str| {
            vec![
                ("streamType".to_string(), vec![ty.to_string()]),
                ("port".to_string(), vec![port.to_string()]),
                ("requestID".to_string(), vec![request_id.to_string()]),
            ]
        };
        let error = self.conn.create_stream(headers("error")).await?;
        error.close().await?;
        let data = self.conn.create_stream(headers("data")).await?;
        Ok(PortForwardStream {
            data,
            error,
            request_id,
            error_text: None,
        })
    }

    /// client-go's `conn.Close()`: RST_STREAM for unfinished streams,
    /// GOAWAY, socket closed.
    pub async fn close(self) {
        self.conn.close().await
    }

    /// Drops the connection abruptly.
    pub fn abort(self) {
        self.conn.abort()
    }
}

/// The data stream of one forwarded connection (`AsyncRead + AsyncWrite`;
/// shutdown half-closes it with FIN, as client-go does when the local side
/// stops sending), plus its error stream.
pub struct PortForwardStream {
    data: SpdyStream,
    error: SpdyStream,
    request_id: u32,
    error_text: Option<String>,
}

impl PortForwardStream {
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    pub fn data(&mut self) -> &mut SpdyStream {
        &mut self.data
    }

    /// The error stream's text once the server ended it ("" means no
    /// error, which is what a clean forward ends with).
    pub async fn error_text(&mut self, timeout: Duration) -> io::Result<String> {
        if let Some(t) = &self.error_text {
            return Ok(t.clone());
        }
        let raw = tokio::time::timeout(timeout, self.error.read_to_end())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("error stream still open after {timeout:?}"),
                )
            })?;
        let t = String::from_utf8_lossy(&raw).into_owned();
        self.error_text = Some(t.clone());
        Ok(t)
    }

    /// Ends the forward as client-go does once the remote side is done:
    /// reset the data stream (RST_STREAM unless we already sent FIN), then
    /// read the error stream to its end; returns its text.
    pub async fn finish(mut self, timeout: Duration) -> io::Result<String> {
        self.data.reset().await?;
        self.error_text(timeout).await
    }

    /// The SPDY connection the streams run on (close it, ping it, read
    /// its violations).
    pub fn conn(&self) -> &SpdyConn {
        self.data.conn()
    }

    /// Violations noticed on the underlying connection.
    pub fn violations(&self) -> Vec<String> {
        self.conn().violations()
    }
}

impl AsyncRead for PortForwardStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().data).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForwardStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().data).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().data).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().data).poll_shutdown(cx)
    }
}
