//! The HTTP side of the streaming server: one-time URLs
//! (`/exec/<token>`, `/attach/<token>`, `/portforward/<token>`), the
//! upgrade to SPDY/3.1 or WebSocket with protocol negotiation, and the
//! hand-off to the protocol drivers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::metrics::Service;
use berth_core::ExecSpec;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::backend::{Backend, Process};
use crate::conn::{Activity, Watched};
use crate::remotecommand::{self, Outputs, ResizeDecoder, Sink, Version};
use crate::tokens::{Request, Tokens, TOKEN_TTL};
use crate::{portforward, spdy, ws};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const WS_PROTOCOL_HEADER: &str = "sec-websocket-protocol";
/// What a connection beyond the cap gets before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 50\r\n\
connection: close\r\n\
\r\n\
streaming server: too many connections, try again\n";

type Body = Full<Bytes>;

/// Limits of the streaming server; [`Default`] gives the production
/// values. Every client reaching the streaming port is unauthenticated
/// until its one-time token is checked, so none of them may hold a
/// descriptor or a task for long without doing its part.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// A client must send its whole request head within this, or it is
    /// closed without an answer. 10 s: kubelet's clients send the head at
    /// once; a slow network still has ample time.
    pub header_read_timeout: Duration,
    /// An upgraded session (exec, attach, port-forward) in which no byte
    /// moved either way for this long is closed. 4 h: kubelet's
    /// `streamingConnectionIdleTimeout`, which spdystream likewise counts
    /// from the last frame. An exec or attach session has no stream-less
    /// phase beyond `stream_creation_timeout` (it ends with its process);
    /// a port-forward session without a forwarded connection is what
    /// `kubectl port-forward` holds while it waits for local clients, so
    /// it gets the same allowance (current clients ping every 5 s anyway).
    pub idle_timeout: Duration,
    /// After the upgrade, how long a client has to open the streams its
    /// exec or attach implies, and how long the first stream of a
    /// port-forward pair waits for the second. 30 s, kubelet's.
    pub stream_creation_timeout: Duration,
    /// Sockets the server holds at once: client connections (from accept
    /// to the session's end) plus the connections it makes into pods for
    /// port-forward. A client connection beyond it gets a 503 and is closed
    /// at once; a forward beyond it is refused on its error stream. 256
    /// keeps berthd well inside the usual 1024-descriptor soft limit with
    /// room for the CRI socket, images and monitors.
    pub max_connections: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(4 * 60 * 60),
            stream_creation_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// The streaming server: where URLs point, and the tokens behind them.
pub struct StreamServer {
    tokens: Tokens,
    addr: SocketAddr,
    backend: Arc<dyn Backend>,
    config: StreamConfig,
    /// One permit per socket held (see [`StreamConfig::max_connections`]).
    sockets: Arc<Semaphore>,
}

/// An accepted upgrade, run by the connection's task once hyper hands the
/// transport over.
struct Upgrade {
    on: hyper::upgrade::OnUpgrade,
    websocket: bool,
    protocol: String,
    request: Request,
}

type UpgradeSlot = Arc<Mutex<Option<Upgrade>>>;

impl StreamServer {
    /// Binds `addr` (port 0: any free port) and serves in the background
    /// with the default limits.
    pub async fn start(
        addr: SocketAddr,
        backend: Arc<dyn Backend>,
    ) -> std::io::Result<Arc<StreamServer>> {
        Self::start_with(addr, backend, StreamConfig::default()).await
    }

    /// [`StreamServer::start`] with the given limits.
    pub async fn start_with(
        addr: SocketAddr,
        backend: Arc<dyn Backend>,
        config: StreamConfig,
    ) -> std::io::Result<Arc<StreamServer>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let server = Arc::new(StreamServer {
            tokens: Tokens::new(TOKEN_TTL),
            addr: listener.local_addr()?,
            backend,
            sockets: Arc::new(Semaphore::new(config.max_connections)),
            config,
        });
        let serving = server.clone();
        tokio::spawn(async move {
            let mut refusing = false;
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of descriptors, say: back off instead of spinning.
                        tracing::warn!("streaming server accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match serving.sockets.clone().try_acquire_owned() {
                    Ok(permit) => {
                        refusing = false;
                        tokio::spawn(serving.clone().connection(tcp, permit));
                    }
                    Err(_) => {
                        if !refusing {
                            tracing::warn!(
                                limit = serving.config.max_connections,
                                "streaming server at its connection limit; refusing new connections"
                            );
                            refusing = true;
                        }
                        refuse(tcp);
                    }
                }
            }
        });
        tracing::info!(address = %server.addr, "CRI streaming server listening");
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stores `request` and returns its one-time URL.
    pub fn url_for(&self, request: Request) -> Option<String> {
        let kind = request.kind();
        let token = self.tokens.insert(request)?;
        Some(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// Serves one client connection, holding its socket permit to the end:
    /// the request head within the header timeout, then the upgraded
    /// session until it ends or idles out.
    async fn connection(self: Arc<Self>, tcp: TcpStream, _permit: OwnedSemaphorePermit) {
        let activity = Activity::new();
        let io = TokioIo::new(Watched::new(tcp, activity.clone()));
        let upgrade = UpgradeSlot::default();
        let head = Arc::new(AtomicBool::new(false));
        let service = {
            let (server, upgrade, head) = (self.clone(), upgrade.clone(), head.clone());
            hyper::service::service_fn(move |req| {
                head.store(true, Ordering::Release);
                let response = server.handle(req, &upgrade);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        // Keep-alive stays on: with it off hyper answers the upgrade with
        // `connection: Upgrade, close`, which client-go takes for an empty
        // answer. Every request head, the first or one on a kept-alive
        // connection, must come within the header-read timeout.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        let config = &self.config;
        tokio::select! {
            _ = &mut conn => {}
            () = tokio::time::sleep(config.header_read_timeout) => {
                if !head.load(Ordering::Acquire) {
                    tracing::debug!("streaming client sent no request head within {:?}", config.header_read_timeout);
                    return; // dropping the connection closes the socket
                }
                tokio::select! {
                    _ = &mut conn => {}
                    () = activity.idle(config.idle_timeout) => return,
                }
            }
        }
        let Some(upgrade) = lock(&upgrade).take() else {
            return;
        };
        let io = match upgrade.on.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!("stream upgrade failed: {e}");
                return;
            }
        };
        let kind = upgrade.request.kind();
        let started = Instant::now();
        let session = self.serve(io, upgrade.websocket, &upgrade.protocol, upgrade.request);
        let code = tokio::select! {
            () = session => "OK",
            () = activity.idle(config.idle_timeout) => {
                tracing::debug!("closing a streaming session idle for {:?}", config.idle_timeout);
                // Fails the transport under the session's own tasks too.
                activity.cut();
                "idle_timeout"
            }
        };
        // A session's time is how long it was open.
        self.backend
            .recorder()
            .operation(Service::Stream, kind, code, started.elapsed());
    }

    fn handle(
        &self,
        req: HttpRequest<hyper::body::Incoming>,
        slot: &UpgradeSlot,
    ) -> Response<Body> {
        let path = req.uri().path().trim_matches('/').to_string();
        let Some((kind, token)) = path.split_once('/') else {
            return text(StatusCode::NOT_FOUND, "not found");
        };
        let Some(request) = self.tokens.take(token, kind) else {
            return text(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let kind = request.kind();
        let response = self.upgrade(req, request, slot);
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A refused upgrade is a session that never began.
            self.backend.recorder().operation(
                Service::Stream,
                kind,
                response.status().as_str(),
                Duration::ZERO,
            );
        }
        response
    }

    /// Answers the upgrade of a request whose token was good: 101 with the
    /// protocol chosen (the session then runs on the connection's task),
    /// or why not.
    fn upgrade(
        &self,
        mut req: HttpRequest<hyper::body::Incoming>,
        request: Request,
        slot: &UpgradeSlot,
    ) -> Response<Body> {
        let upgrade = header(&req, UPGRADE.as_str()).to_ascii_lowercase();
        let websocket = upgrade == "websocket";
        if !websocket && upgrade != "spdy/3.1" {
            return text(
                StatusCode::BAD_REQUEST,
                "streaming needs an Upgrade to SPDY/3.1 or websocket",
            );
        }
        let offered: Vec<String> = req
            .headers()
            .get_all(if websocket {
                WS_PROTOCOL_HEADER
            } else {
                PROTOCOL_HEADER
            })
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if offered.is_empty() {
            let header = if websocket {
                "Sec-WebSocket-Protocol"
            } else {
                "X-Stream-Protocol-Version"
            };
            return text(
                StatusCode::BAD_REQUEST,
                &format!("unable to upgrade: {header} is required"),
            );
        }
        let is_forward = matches!(request, Request::PortForward { .. });
        let (protocol, supported): (Option<String>, Vec<&str>) = if is_forward {
            let wanted = if websocket {
                portforward::WEBSOCKET_PROTOCOL
            } else {
                portforward::PROTOCOL
            };
            (offered.iter().find(|p| *p == wanted).cloned(), vec![wanted])
        } else {
            let chosen = remotecommand::negotiate(offered.iter().map(String::as_str));
            (
                chosen.map(|v| v.name().to_string()),
                remotecommand::supported_names(),
            )
        };
        let Some(protocol) = protocol else {
            // kubelet's answer, word for word, with the accepted list.
            let mut response = text(
                StatusCode::FORBIDDEN,
                &format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                ),
            );
            for p in supported {
                response.headers_mut().append(
                    "x-accepted-stream-protocol-versions",
                    HeaderValue::from_static(p),
                );
            }
            return response;
        };
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if websocket {
            let key = header(&req, "sec-websocket-key");
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                headers.insert("sec-websocket-accept", accept);
            }
            if let Ok(p) = HeaderValue::from_str(&protocol) {
                headers.insert(WS_PROTOCOL_HEADER, p);
            }
        } else {
            headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(p) = HeaderValue::from_str(&protocol) {
                headers.insert(PROTOCOL_HEADER, p);
            }
        }
        *lock(slot) = Some(Upgrade {
            on: hyper::upgrade::on(&mut req),
            websocket,
            protocol,
            request,
        });
        response
    }

    async fn serve(
        &self,
        io: TokioIo<hyper::upgrade::Upgraded>,
        websocket: bool,
        protocol: &str,
        request: Request,
    ) {
        let backend = self.backend.clone();
        if let Request::PortForward { sandbox_id } = request {
            let (connection, incoming) = if websocket {
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                spdy::serve(ws::tunnel(socket))
            } else {
                spdy::serve(io)
            };
            let limits = portforward::Limits {
                pair_timeout: self.config.stream_creation_timeout,
                sockets: self.sockets.clone(),
            };
            portforward::serve(connection, incoming, backend, sandbox_id, limits).await;
            return;
        }
        let Some(version) = Version::from_name(protocol) else {
            return;
        };
        let wants = Wants::of(&request);
        if websocket {
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let process = match start(&*backend, &request).await {
                Ok(p) => p,
                Err(e) => {
                    ws_error(socket, version, e).await;
                    return;
                }
            };
            ws::serve_remotecommand(socket, version, process, wants.cmd).await;
        } else {
            let (connection, incoming) = spdy::serve(io);
            let timeout = self.config.stream_creation_timeout;
            serve_spdy_command(
                &*backend, connection, incoming, version, &request, wants, timeout,
            )
            .await;
        }
    }
}

/// The streams one remotecommand request expects (kubelet's rule).
struct Wants {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    cmd: Vec<String>,
}

impl Wants {
    fn of(request: &Request) -> Wants {
        let (cmd, tty, stdin, stdout, stderr) = match request {
            Request::Exec {
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
                ..
            } => (cmd.clone(), *tty, *stdin, *stdout, *stderr),
            Request::Attach {
                tty,
                stdin,
                stdout,
                stderr,
                ..
            } => (Vec::new(), *tty, *stdin, *stdout, *stderr),
            Request::PortForward { .. } => (Vec::new(), false, false, false, false),
        };
        Wants {
            stdin,
            stdout,
            // A terminal merges stderr into stdout.
            stderr: stderr && !tty,
            tty,
            cmd,
        }
    }
}

async fn start(backend: &dyn Backend, request: &Request) -> berth_errdefs::Result<Process> {
    match request {
        Request::Exec {
            container_id,
            cmd,
            tty,
            stdin,
            stdout,
            stderr,
        } => {
            backend
                .exec(
                    container_id,
                    ExecSpec {
                        cmd: cmd.clone(),
                        tty: *tty,
                        stdin: *stdin,
                        stdout: *stdout,
                        stderr: *stderr && !*tty,
                        ..ExecSpec::default()
                    },
                )
                .await
        }
        Request::Attach {
            container_id,
            stdin,
            ..
        } => backend.attach(container_id, *stdin).await,
        Request::PortForward { .. } => Err(berth_errdefs::Error::internal("not a command")),
    }
}

/// An error before the process started, written on the error channel.
async fn ws_error<S>(socket: WebSocketStream<S>, version: Version, e: berth_errdefs::Error)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::SinkExt;
    let mut socket = socket;
    if let Some(status) = remotecommand::final_status(version, &Err(e.message), &[]) {
        let mut frame = vec![3u8];
        frame.extend_from_slice(&status);
        let _ = socket
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                frame.into(),
            ))
            .await;
    }
    let _ = socket.close(Some(ws::normal_close_frame())).await;
}

/// A SPDY stream as an output of the command.
struct StreamSink(spdy::StreamWriter);

impl Sink for StreamSink {
    fn write(&self, data: Bytes) -> crate::backend::BoxFuture<std::io::Result<()>> {
        let w = self.0.clone();
        Box::pin(async move { w.write(&data).await })
    }

    fn close(&self) -> crate::backend::BoxFuture<std::io::Result<()>> {
        let w = self.0.clone();
        Box::pin(async move { w.close().await })
    }
}

async fn serve_spdy_command(
    backend: &dyn Backend,
    connection: spdy::Connection,
    mut incoming: tokio::sync::mpsc::Receiver<spdy::Stream>,
    version: Version,
    request: &Request,
    wants: Wants,
    creation_timeout: Duration,
) {
    // Wait for the streams the request implies, in whatever order.
    let expected = 1
        + usize::from(wants.stdin)
        + usize::from(wants.stdout)
        + usize::from(wants.stderr)
        + usize::from(wants.tty && version.has_resize());
    let mut streams: std::collections::HashMap<String, spdy::Stream> = Default::default();
    let collect = async {
        while streams.len() < expected {
            let Some(stream) = incoming.recv().await else {
                return false;
            };
            stream.reply();
            let kind = stream.header("streamtype").unwrap_or_default().to_string();
            streams.insert(kind, stream);
        }
        true
    };
    match tokio::time::timeout(creation_timeout, collect).await {
        Ok(true) => {}
        _ => {
            tracing::debug!("stream client did not open its streams within {creation_timeout:?}");
            connection.close().await;
            return;
        }
    }
    let Some(error) = streams.remove("error") else {
        connection.close().await;
        return;
    };
    let error = StreamSink(error.writer());
    let mut process = match start(backend, request).await {
        Ok(p) => p,
        Err(e) => {
            if let Some(status) = remotecommand::final_status(version, &Err(e.message), &[]) {
                let _ = error.write(status).await;
            }
            let _ = error.close().await;
            connection.close().await;
            return;
        }
    };
    if let (Some(mut stdin_stream), Some(tx)) = (streams.remove("stdin"), process.stdin.take()) {
        tokio::spawn(async move {
            while let Some(data) = stdin_stream.read().await {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
            // FIN from the client: the process's stdin closes with `tx`.
        });
    }
    if let (Some(mut resize_stream), Some(resize)) =
        (streams.remove("resize"), process.resize.take())
    {
        tokio::spawn(async move {
            let mut sizes = ResizeDecoder::default();
            while let Some(data) = resize_stream.read().await {
                for (cols, rows) in sizes.feed(&data) {
                    resize(cols, rows);
                }
            }
        });
    }
    let sink = |name: &str| {
        streams
            .get(name)
            .map(|s| Box::new(StreamSink(s.writer())) as Box<dyn Sink>)
    };
    let outputs = Outputs {
        stdout: sink("stdout"),
        stderr: sink("stderr"),
        error: Box::new(error),
    };
    let closed = connection.clone();
    remotecommand::drive(process, outputs, version, &wants.cmd, async move {
        closed.closed().await
    })
    .await;
    connection.close().await;
}

fn header(req: &HttpRequest<hyper::body::Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Turns away a connection beyond the cap at once: no task, no wait.
fn refuse(tcp: TcpStream) {
    // Take what the client already sent (so closing sends FIN, not RST,
    // and the answer is not lost), answer into the empty send buffer, and
    // close. Both calls are non-blocking.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = tcp.try_write(BUSY_RESPONSE);
}

/// Locks a mutex, ignoring poisoning (nothing panics while holding it).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
