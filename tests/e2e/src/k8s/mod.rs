//! An independent Kubernetes streaming client for tests: exec, attach and
//! port-forward against a CRI streaming server, speaking what client-go
//! (kubectl) puts on the wire, written from client-go, apimachinery,
//! moby/spdystream and the SPDY/3 and WebSocket specs.
//!
//! - [`exec_spdy`] / [`exec_ws`]: remotecommand over SPDY/3.1 or WebSocket,
//!   both returning a [`Session`];
//! - [`port_forward_spdy`] / [`port_forward_ws`]: one forwarded connection
//!   (the `_conn` variants give a [`PortForwarder`] that can open several,
//!   with rising requestIDs, over one upgrade);
//! - [`SpdyConn`]: the SPDY client session underneath, usable directly.
//!
//! Every function takes the URL the CRI `Exec`/`Attach`/`PortForward` RPC
//! returned (plain `http://` only).
//!
//! ```text
//! let mut s = exec_spdy(&url, SPDY_PROTOCOLS, StreamOptions {
//!     stdin: true, stdout: true, stderr: true, tty: false }).await?;
//! s.write_stdin(b"hello\n").await?;
//! s.close_stdin().await?;
//! let out = s.wait(Duration::from_secs(10)).await?;
//! assert_eq!(out.exit_code, 0);
//! ```

mod portforward;
mod remotecommand;
mod spdy;
pub mod spdy_frame;
mod upgrade;
mod ws;

use std::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::TcpStream;

pub use portforward::{
    port_forward_spdy, port_forward_spdy_conn, port_forward_ws, port_forward_ws_conn,
    PortForwardStream, PortForwarder, PORT_FORWARD_PROTOCOL, PORT_FORWARD_TUNNEL_PROTOCOL,
    TUNNEL_PING_PERIOD,
};
pub use remotecommand::{
    exec_spdy, exec_ws, Outcome, Session, StreamOptions, WsSession, SPDY_PING_PERIOD,
    SPDY_PROTOCOLS, STREAM_PROTOCOL_V1, STREAM_PROTOCOL_V2, STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V5, WS_PROTOCOLS,
};
pub use spdy::{BoxRead, BoxWrite, SpdyConn, SpdyStream, CREATE_STREAM_TIMEOUT, WRITE_CHUNK};
pub use ws::{STREAM_CLOSE, WS_PING_PERIOD};

/// The upgrade did not produce a usable session.
///
/// `status` is the HTTP status the server answered (404 for an unknown
/// token, 403 with `X-Accepted-Stream-Protocol-Versions` headers when no
/// protocol matched, 400 for a malformed request, ...), or 101 when the
/// server switched protocols but in a way client-go rejects (missing
/// upgrade headers, a subprotocol not offered), or 0 when no HTTP answer
/// was involved (connect failure, stream creation failed after the
/// upgrade). `body` is the response body, or a description for 101 and 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeError {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl UpgradeError {
    pub(crate) fn local(msg: impl Into<String>) -> Self {
        UpgradeError {
            status: 0,
            body: msg.into(),
            headers: Vec::new(),
        }
    }

    /// Every value of a response header (case-insensitive name).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upgrade failed (status {}): {}", self.status, self.body)
    }
}

impl std::error::Error for UpgradeError {}

/// A second descriptor for the socket, so `abort` can shut it down while
/// the session's tasks still own the stream.
fn dup_socket(s: &TcpStream) -> Option<std::net::TcpStream> {
    s.as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// A SPDY session over an upgraded TCP connection. client-go reads the 101
/// through a `bufio.Reader` and then hands the raw `net.Conn` to
/// spdystream, so bytes the server sent right behind the 101 are lost to
/// it; here they are kept but noted.
fn spdy_over_tcp(
    s: TcpStream,
    leftover: Vec<u8>,
    killer: Option<std::net::TcpStream>,
    ping: Option<Duration>,
) -> SpdyConn {
    let early = leftover.len();
    let (r, w) = s.into_split();
    let conn = SpdyConn::new(Box::new(r), Box::new(w), leftover, ping, killer);
    if early > 0 {
        conn.note(format!(
            "{early} bytes arrived with the 101 response, before the client spoke; \
             client-go's SpdyRoundTripper would lose them in its bufio.Reader"
        ));
    }
    conn
}
