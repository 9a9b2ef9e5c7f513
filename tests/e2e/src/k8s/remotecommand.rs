//! Exec and attach as client-go's `tools/remotecommand` does them, over
//! SPDY (`spdy.go` + `v1.go`..`v5.go`) or WebSocket (`websocket.go`).

use std::io;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{SpdyConn, SpdyStream, WRITE_CHUNK};
use super::upgrade::{connect, parse_url, round_trip, spdy_request};
use super::ws::{ws_connect, WsChannels, STREAM_CLOSE};
use super::{dup_socket, spdy_over_tcp, UpgradeError};

pub const STREAM_PROTOCOL_V1: &str = "channel.k8s.io";
pub const STREAM_PROTOCOL_V2: &str = "v2.channel.k8s.io";
pub const STREAM_PROTOCOL_V3: &str = "v3.channel.k8s.io";
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
pub const STREAM_PROTOCOL_V5: &str = "v5.channel.k8s.io";

/// What client-go's `NewSPDYExecutor` offers, most preferred first.
pub const SPDY_PROTOCOLS: &[&str] = &[
    STREAM_PROTOCOL_V5,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
];
/// What kubectl's `NewWebSocketExecutor` offers: v5 only (older servers
/// don't understand the CLOSE signal).
pub const WS_PROTOCOLS: &[&str] = &[STREAM_PROTOCOL_V5];

/// client-go's SPDY ping period for exec/attach/port-forward.
pub const SPDY_PING_PERIOD: Duration = Duration::from_secs(5);

/// Which streams to open. client-go opens stdin/stdout/stderr when the
/// caller passes a reader/writer; stderr is never opened with a TTY.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How an exec/attach ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the error stream carried: its JSON (v4/v5 send a metav1.Status
    /// even on success: `{"metadata":{},"status":"Success"}`), or the text
    /// as a JSON string (v1-v3 send plain text, and only on failure).
    /// `None` when the error stream ended empty.
    pub error: Option<Value>,
    /// The error stream's bytes as received.
    pub error_raw: Vec<u8>,
    /// 0 on success (an empty error stream or status Success); the code of
    /// a `NonZeroExitCode` status's `ExitCode` cause; -1 for any other
    /// failure (see `client_error`).
    pub exit_code: i32,
    /// The error client-go's `StreamWithContext` would return, word for
    /// word, or `None` where it returns nil.
    pub client_error: Option<String>,
}

impl Outcome {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Maps a negotiated protocol to client-go's handler version. `""` falls
/// back to v1 as client-go does. The base64 variants are not something
/// client-go negotiates; they are accepted so servers offering them can be
/// exercised.
fn version_of(protocol: &str) -> Option<u8> {
    Some(match protocol {
        "" | STREAM_PROTOCOL_V1 | "base64.channel.k8s.io" => 1,
        STREAM_PROTOCOL_V2 => 2,
        STREAM_PROTOCOL_V3 => 3,
        STREAM_PROTOCOL_V4 | "v4.base64.channel.k8s.io" => 4,
        STREAM_PROTOCOL_V5 => 5,
        _ => return None,
    })
}

/// Decodes the error stream like client-go's `errorDecoderV2` (v1-v3) and
/// `errorDecoderV4` (v4, v5).
fn decode_error(version: u8, raw: &[u8]) -> (Option<Value>, i32, Option<String>) {
    if raw.is_empty() {
        return (None, 0, None);
    }
    let text = String::from_utf8_lossy(raw).into_owned();
    if version < 4 {
        let prefix = if version == 1 {
            "Error executing remote command"
        } else {
            "error executing remote command"
        };
        return (
            Some(Value::String(text.clone())),
            -1,
            Some(format!("{prefix}: {text}")),
        );
    }
    let parsed = match serde_json::from_slice::<Value>(raw) {
        // Go's json.Unmarshal into a struct accepts only an object or null.
        Ok(v @ (Value::Object(_) | Value::Null)) => Ok(v),
        Ok(other) => Err(format!(
            "json: cannot unmarshal {other} into Go value of type v1.Status"
        )),
        Err(e) => Err(e.to_string()),
    };
    let status: Value = match parsed {
        Ok(v) => v,
        Err(e) => {
            return (
                Some(Value::String(text.clone())),
                -1,
                Some(format!("error stream protocol error: {e} in {text:?}")),
            )
        }
    };
    let field = |k: &str| status.get(k).and_then(Value::as_str).unwrap_or("");
    let (code, err) = match field("status") {
        "Success" => (0, None),
        "Failure" if field("reason") == "NonZeroExitCode" => {
            match status.get("details").filter(|d| !d.is_null()) {
                None => (
                    -1,
                    Some("error stream protocol error: details must be set".to_string()),
                ),
                Some(details) => {
                    let cause = details
                        .get("causes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"));
                    match cause {
                        None => (
                            -1,
                            Some(
                                "error stream protocol error: no ExitCode cause given".to_string(),
                            ),
                        ),
                        Some(c) => {
                            let msg = c.get("message").and_then(Value::as_str).unwrap_or("");
                            // strconv.ParseUint(msg, 10, 8): 0..=255 only.
                            match msg.parse::<u8>() {
                                Ok(rc) => (
                                    rc as i32,
                                    Some(format!("command terminated with exit code {rc}")),
                                ),
                                Err(_) => (
                                    -1,
                                    Some(format!(
                                        "error stream protocol error: invalid exit code value {msg:?}"
                                    )),
                                ),
                            }
                        }
                    }
                }
            }
        }
        "Failure" => (-1, Some(field("message").to_string())),
        _ => (
            -1,
            Some("error stream protocol error: unknown error".to_string()),
        ),
    };
    (Some(status), code, err)
}

enum Chan {
    Spdy(SpdyStream),
    Ws(mpsc::UnboundedReceiver<Vec<u8>>),
}

impl Chan {
    async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        match self {
            Chan::Spdy(s) => s.read_chunk().await,
            Chan::Ws(rx) => rx.recv().await,
        }
    }
}

async fn drain(chan: &mut Option<Chan>, buf: &mut Vec<u8>) {
    if let Some(c) = chan {
        while let Some(d) = c.read_chunk().await {
            buf.extend_from_slice(&d);
        }
    }
}

enum Transport {
    Spdy {
        conn: SpdyConn,
        stdin: Option<SpdyStream>,
        resize: Option<SpdyStream>,
    },
    Ws {
        chans: WsChannels,
        stdin: bool,
        stdin_closed: bool,
        resize: bool,
    },
}

/// A running exec or attach, over SPDY or WebSocket.
pub struct Session {
    protocol: String,
    version: u8,
    transport: Transport,
    stdout: Option<Chan>,
    stderr: Option<Chan>,
    error: Option<Chan>,
    out: Vec<u8>,
    out_mark: usize,
    err: Vec<u8>,
    err_mark: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The WebSocket flavour has the same API.
pub type WsSession = Session;

fn not_requested(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no {what} stream in this session"),
    )
}

/// `{"Width":w,"Height":h}` plus the newline Go's `json.Encoder.Encode`
/// appends: one resize message.
fn resize_json(width: u16, height: u16) -> Vec<u8> {
    format!("{{\"Width\":{width},\"Height\":{height}}}\n").into_bytes()
}

/// Exec/attach over SPDY/3.1, as client-go's `spdyStreamExecutor`.
///
/// `url` is what the CRI `Exec`/`Attach` RPC returned. The request is a POST
/// (kubectl uses POST for exec, attach and port-forward) with `Connection:
/// Upgrade`, `Upgrade: SPDY/3.1` and one `X-Stream-Protocol-Version` header
/// per entry of `protocols` in order (client-go offers [`SPDY_PROTOCOLS`]).
/// A non-101 answer is an [`UpgradeError`] with its status and body; so is
/// a 101 without `Connection: upgrade` / `Upgrade: SPDY/3.1` (client-go's
/// `NewConnection` check). The negotiated protocol is the response's
/// `X-Stream-Protocol-Version` (none means v1).
///
/// Streams are then created one at a time, each waiting for its SYN_REPLY,
/// in client-go's order with a single `streamType` header: `error`, then
/// `stdin`, `stdout`, `stderr` (not with a TTY) as requested, then
/// `resize` when `tty` and the protocol is v3 or later. A failure there is
/// an `UpgradeError` with status 0.
pub async fn exec_spdy(
    url: &str,
    protocols: &[&str],
    opts: StreamOptions,
) -> Result<Session, UpgradeError> {
    let t = parse_url(url)?;
    let mut s = connect(&t).await?;
    let killer = dup_socket(&s);
    let resp = round_trip(&mut s, &spdy_request("POST", &t, protocols)).await?;
    check_spdy_101(&resp)?;
    let protocol = resp
        .header("X-Stream-Protocol-Version")
        .unwrap_or("")
        .to_string();
    let Some(version) = version_of(&protocol) else {
        return Err(UpgradeError {
            status: resp.status,
            body: format!("server negotiated {protocol:?}, which client-go has no handler for"),
            headers: resp.headers,
        });
    };
    let conn = spdy_over_tcp(s, resp.leftover, killer, Some(SPDY_PING_PERIOD));
    if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
        conn.note(format!(
            "server chose {protocol:?}, which the client did not offer"
        ));
    }
    let mk = |ty: &'static str| {
        let conn = conn.clone();
        async move {
            conn.create_stream(vec![("streamType".into(), vec![ty.into()])])
                .await
                .map_err(|e| UpgradeError::local(format!("creating the {ty} stream: {e}")))
        }
    };
    let error = mk("error").await?;
    let stdin = if opts.stdin {
        Some(mk("stdin").await?)
    } else {
        None
    };
    let stdout = if opts.stdout {
        Some(mk("stdout").await?)
    } else {
        None
    };
    let stderr = if opts.stderr && !opts.tty {
        Some(mk("stderr").await?)
    } else {
        None
    };
    let resize = if opts.tty && version >= 3 {
        Some(mk("resize").await?)
    } else {
        None
    };
    Ok(Session {
        protocol,
        version,
        transport: Transport::Spdy {
            conn,
            stdin,
            resize,
        },
        stdout: stdout.map(Chan::Spdy),
        stderr: stderr.map(Chan::Spdy),
        error: Some(Chan::Spdy(error)),
        out: Vec::new(),
        out_mark: 0,
        err: Vec::new(),
        err_mark: 0,
    })
}

/// apimachinery `SpdyRoundTripper.NewConnection`'s acceptance test.
pub(crate) fn check_spdy_101(resp: &super::upgrade::Response) -> Result<(), UpgradeError> {
    let conn = resp.header("Connection").unwrap_or("").to_ascii_lowercase();
    let upg = resp.header("Upgrade").unwrap_or("").to_ascii_lowercase();
    if !conn.contains("upgrade") || !upg.contains("spdy/3.1") {
        return Err(UpgradeError {
            status: resp.status,
            body: format!(
                "unable to upgrade connection: 101 without Connection: Upgrade / Upgrade: \
                 SPDY/3.1 (got {conn:?}, {upg:?})"
            ),
            headers: resp.headers.clone(),
        });
    }
    Ok(())
}

/// Exec/attach over WebSocket, as client-go's `wsStreamExecutor`: a GET
/// upgrade offering `protocols` in one `Sec-WebSocket-Protocol` header
/// (kubectl offers only [`WS_PROTOCOLS`], i.e. v5). The server's choice must
/// be one of them. Messages are `[channel, data...]` with channels 0 stdin,
/// 1 stdout, 2 stderr, 3 error, 4 resize; the error channel is always
/// read, the others only when requested (stderr not with a TTY, resize only
/// with a TTY on v3+), and messages for unopened channels are dropped as
/// client-go drops them. Stdout/stderr/error end only when the connection
/// does (client-go ignores a server-sent CLOSE signal).
pub async fn exec_ws(
    url: &str,
    protocols: &[&str],
    opts: StreamOptions,
) -> Result<Session, UpgradeError> {
    let up = ws_connect(url, protocols).await?;
    let protocol = up.protocol.clone();
    let Some(version) = version_of(&protocol) else {
        return Err(UpgradeError {
            status: 101,
            body: format!("server negotiated {protocol:?}, which client-go has no handler for"),
            headers: vec![],
        });
    };
    let resize = opts.tty && version >= 3;
    let open = [
        opts.stdin,
        opts.stdout,
        opts.stderr && !opts.tty,
        true,
        resize,
    ];
    let (chans, mut rx) = WsChannels::start(up, open);
    Ok(Session {
        protocol,
        version,
        transport: Transport::Ws {
            chans,
            stdin: opts.stdin,
            stdin_closed: false,
            resize,
        },
        stdout: rx[1].take().map(Chan::Ws),
        stderr: rx[2].take().map(Chan::Ws),
        error: rx[3].take().map(Chan::Ws),
        out: Vec::new(),
        out_mark: 0,
        err: Vec::new(),
        err_mark: 0,
    })
}

impl Session {
    /// The negotiated subprotocol (`X-Stream-Protocol-Version` for SPDY,
    /// `Sec-WebSocket-Protocol` for WebSocket; "" if the SPDY server named
    /// none, which client-go treats as v1).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The remotecommand version client-go would run (1-5).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The SPDY connection, for pings or lower-level checks.
    pub fn spdy(&self) -> Option<&SpdyConn> {
        match &self.transport {
            Transport::Spdy { conn, .. } => Some(conn),
            Transport::Ws { .. } => None,
        }
    }

    /// Protocol problems noticed so far (empty for a well-behaved server).
    pub fn violations(&self) -> Vec<String> {
        match &self.transport {
            Transport::Spdy { conn, .. } => conn.violations(),
            Transport::Ws { chans, .. } => chans.violations(),
        }
    }

    /// Sends stdin data: DATA frames (SPDY) or `[0, data...]` messages
    /// (WebSocket), at most 32 KiB each like client-go's io.Copy.
    pub async fn write_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        match &self.transport {
            Transport::Spdy { stdin: Some(s), .. } => s.write(data).await,
            Transport::Ws {
                chans,
                stdin: true,
                stdin_closed,
                ..
            } => {
                if *stdin_closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "write on closed stream 0",
                    ));
                }
                for chunk in data.chunks(WRITE_CHUNK) {
                    chans.send(0, chunk).await?;
                }
                Ok(())
            }
            _ => Err(not_requested("stdin")),
        }
    }

    /// Ends stdin as client-go does once its stdin reader hits EOF: SPDY
    /// half-closes the stdin stream (empty DATA with FIN); WebSocket sends
    /// the CLOSE signal `[255, 0]`. client-go sends that signal whatever
    /// protocol was negotiated, but only v5 servers understand it (a v4
    /// server ignores it as a message for an unknown channel).
    pub async fn close_stdin(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Spdy { stdin: Some(s), .. } => s.close().await,
            Transport::Ws {
                chans,
                stdin: true,
                stdin_closed,
                ..
            } => {
                if *stdin_closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "Close() on already closed stream 0",
                    ));
                }
                *stdin_closed = true;
                chans
                    .send_raw(Message::Binary(vec![STREAM_CLOSE, 0].into()))
                    .await
            }
            _ => Err(not_requested("stdin")),
        }
    }

    /// Sends a terminal size the way client-go's `handleResizes` does: one
    /// `json.Encoder.Encode(TerminalSize)` per resize, i.e.
    /// `{"Width":w,"Height":h}\n`, on the resize stream / channel 4. Only
    /// available with a TTY on v3 or later.
    pub async fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        let msg = resize_json(width, height);
        match &self.transport {
            Transport::Spdy {
                resize: Some(s), ..
            } => s.write(&msg).await,
            Transport::Ws {
                chans,
                resize: true,
                ..
            } => chans.send(4, &msg).await,
            _ => Err(not_requested("resize")),
        }
    }

    /// Reads stdout until `needle` appears after the previous match, and
    /// returns all stdout read so far (everything since the session began).
    pub async fn read_stdout_until(
        &mut self,
        needle: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        read_until(
            &mut self.stdout,
            &mut self.out,
            &mut self.out_mark,
            needle,
            timeout,
            "stdout",
        )
        .await
    }

    /// [`Session::read_stdout_until`] for stderr.
    pub async fn read_stderr_until(
        &mut self,
        needle: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        read_until(
            &mut self.stderr,
            &mut self.err,
            &mut self.err_mark,
            needle,
            timeout,
            "stderr",
        )
        .await
    }

    /// Waits for the end like client-go: stdout and stderr to EOF, the
    /// error stream to EOF, then decodes the error stream. Afterwards the
    /// connection is closed as client-go closes it (SPDY: RST_STREAM for
    /// every stream this side did not finish, GOAWAY, socket closed;
    /// WebSocket: socket closed). On timeout the connection is closed the
    /// same way and a `TimedOut` error carries what had arrived.
    pub async fn wait(self, timeout: Duration) -> io::Result<Outcome> {
        let Session {
            version,
            transport,
            mut stdout,
            mut stderr,
            mut error,
            mut out,
            mut err,
            ..
        } = self;
        let mut error_raw = Vec::new();
        let done = tokio::time::timeout(timeout, async {
            tokio::join!(
                drain(&mut stdout, &mut out),
                drain(&mut stderr, &mut err),
                drain(&mut error, &mut error_raw)
            )
        })
        .await
        .is_ok();
        let read_error = match transport {
            Transport::Spdy { conn, .. } => {
                conn.close().await;
                None
            }
            Transport::Ws { chans, .. } => {
                let e = chans.read_error();
                chans.close();
                e
            }
        };
        if !done {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "session not finished after {timeout:?}; stdout {:?}, stderr {:?}, \
                     error stream {:?}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err),
                    String::from_utf8_lossy(&error_raw)
                ),
            ));
        }
        let (error, exit_code, mut client_error) = decode_error(version, &error_raw);
        if let Some(e) = read_error {
            // watchErrorStream reports a failed read instead of decoding.
            client_error = Some(format!("error reading from error stream: {e}"));
        }
        Ok(Outcome {
            stdout: out,
            stderr: err,
            error,
            error_raw,
            exit_code,
            client_error,
        })
    }

    /// Drops the connection abruptly: no RST_STREAM, GOAWAY or close frame;
    /// the socket is shut in both directions (a killed kubectl).
    pub fn abort(self) {
        match self.transport {
            Transport::Spdy { conn, .. } => conn.abort(),
            Transport::Ws { chans, .. } => chans.abort(),
        }
    }
}

async fn read_until(
    chan: &mut Option<Chan>,
    buf: &mut Vec<u8>,
    mark: &mut usize,
    needle: &[u8],
    timeout: Duration,
    what: &str,
) -> io::Result<Vec<u8>> {
    let Some(chan) = chan else {
        return Err(not_requested(what));
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(i) = find(&buf[*mark..], needle) {
            *mark += i + needle.len();
            return Ok(buf.clone());
        }
        match tokio::time::timeout_at(deadline, chan.read_chunk()).await {
            Ok(Some(d)) => buf.extend_from_slice(&d),
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{what} ended before {:?}; got {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(buf)
                    ),
                ))
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no {:?} on {what} within {timeout:?}; got {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(buf)
                    ),
                ))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resize_message() {
        assert_eq!(resize_json(80, 24), b"{\"Width\":80,\"Height\":24}\n");
    }

    #[test]
    fn versions() {
        assert_eq!(version_of(""), Some(1));
        assert_eq!(version_of("v4.channel.k8s.io"), Some(4));
        assert_eq!(version_of("v5.channel.k8s.io"), Some(5));
        assert_eq!(version_of("v9.channel.k8s.io"), None);
    }

    #[test]
    fn error_stream_decoding_follows_client_go() {
        assert_eq!(decode_error(4, b""), (None, 0, None));
        let ok = br#"{"metadata":{},"status":"Success"}"#;
        let (v, code, e) = decode_error(5, ok);
        assert_eq!(
            (v.unwrap()["status"].clone(), code, e),
            (json!("Success"), 0, None)
        );

        let exit = json!({
            "metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        });
        let (_, code, e) = decode_error(4, exit.to_string().as_bytes());
        assert_eq!(code, 3);
        assert_eq!(e.as_deref(), Some("command terminated with exit code 3"));

        let no_details = json!({"status": "Failure", "reason": "NonZeroExitCode"});
        let (_, code, e) = decode_error(4, no_details.to_string().as_bytes());
        assert_eq!(code, -1);
        assert_eq!(
            e.as_deref(),
            Some("error stream protocol error: details must be set")
        );

        let big = json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "256"}]}});
        let (_, code, e) = decode_error(4, big.to_string().as_bytes());
        assert_eq!(code, -1);
        assert!(e.unwrap().contains("invalid exit code value \"256\""));

        let internal = json!({"status": "Failure", "reason": "InternalError",
            "message": "error executing command in container: boom"});
        let (_, code, e) = decode_error(4, internal.to_string().as_bytes());
        assert_eq!(
            (code, e.as_deref()),
            (-1, Some("error executing command in container: boom"))
        );

        let (v, code, e) = decode_error(3, b"boom");
        assert_eq!(v, Some(json!("boom")));
        assert_eq!(
            (code, e.as_deref()),
            (-1, Some("error executing remote command: boom"))
        );
        let (_, _, e) = decode_error(4, b"not json");
        assert!(e.unwrap().starts_with("error stream protocol error: "));
    }

    #[test]
    fn needle_search() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"x"), None);
    }
}
