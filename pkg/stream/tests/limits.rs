//! The streaming server's limits (issue 11, finding 3), with real TCP
//! clients against a real `StreamServer` on 127.0.0.1 and short,
//! test-configured timeouts: the connection cap, the request-head timeout,
//! the stream-creation timeout, the idle timeout, and port-forward's pair
//! timeout and socket budget. The backend is a small fake (an exec that
//! prints "hello", port-forward to a listener the test owns).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_core::ExecSpec;
use berth_errdefs::{Error, Result};
use berth_stream::backend::BoxFuture;
use berth_stream::spdy::frame::{Frame, FrameDecoder, FrameEncoder};
use berth_stream::{Backend, Process, Request, StreamConfig, StreamServer};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Guards every wait: a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(20);

async fn guard<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[derive(Default)]
struct Fake {
    execs: AtomicUsize,
    /// Where port-forward connects.
    pod: std::sync::Mutex<Option<SocketAddr>>,
}

impl Backend for Fake {
    fn exec(&self, _: &str, _: ExecSpec) -> BoxFuture<Result<Process>> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(Bytes::from_static(b"hello\n")).await.unwrap();
            Ok(Process {
                stdin: None,
                stdout: Some(rx),
                stderr: None,
                resize: None,
                exit: Box::pin(async { Ok(0) }),
            })
        })
    }

    fn attach(&self, _: &str, _: bool) -> BoxFuture<Result<Process>> {
        Box::pin(async { Err(Error::internal("no attach here")) })
    }

    fn port_forward(&self, _: &str, _: u16) -> BoxFuture<Result<TcpStream>> {
        let pod = *self.pod.lock().unwrap();
        Box::pin(async move {
            let pod = pod.ok_or_else(|| Error::internal("no pod"))?;
            Ok(TcpStream::connect(pod).await?)
        })
    }
}

fn config() -> StreamConfig {
    StreamConfig {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        stream_creation_timeout: Duration::from_secs(10),
        max_connections: 64,
    }
}

async fn server(config: StreamConfig) -> (Arc<StreamServer>, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let backend: Arc<dyn Backend> = fake.clone();
    let server = StreamServer::start_with("127.0.0.1:0".parse().unwrap(), backend, config)
        .await
        .unwrap();
    (server, fake)
}

fn exec_request() -> Request {
    Request::Exec {
        container_id: "c1".into(),
        cmd: vec!["echo".into()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
    }
}

/// The path of a one-time URL.
fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

/// Reads until EOF or an error; what came, and how it ended.
async fn read_to_close(tcp: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// A SPDY client on an upgraded connection.
struct Spdy {
    tcp: TcpStream,
    enc: FrameEncoder,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl Spdy {
    /// Sends the upgrade request for `url` and checks the 101.
    async fn upgrade(server: &StreamServer, url: &str, protocol: &str) -> Spdy {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\n\r\n",
            path_of(url)
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = guard("the 101", tcp.read_buf(&mut buf)).await.unwrap();
            assert!(n > 0, "closed before the response: {buf:?}");
        };
        let head = buf.split_to(end);
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Spdy {
            tcp,
            enc: FrameEncoder::new().unwrap(),
            dec: FrameDecoder::new(),
            buf,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.enc.encode(&frame, &mut out).unwrap();
        self.tcp.write_all(&out).await.unwrap();
    }

    async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.send(Frame::SynStream {
            stream_id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        })
        .await;
    }

    /// The next frame; `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.dec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            match guard("a frame", self.tcp.read_buf(&mut self.buf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Frames until the server closes the connection.
    async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.recv().await {
            frames.push(f);
        }
        frames
    }

    /// A ping round trip: the session is alive.
    async fn ping(&mut self, id: u32) {
        self.send(Frame::Ping { id }).await;
        loop {
            match self.recv().await {
                Some(Frame::Ping { id: got }) if got == id => return,
                Some(_) => {}
                None => panic!("the session closed instead of answering ping {id}"),
            }
        }
    }
}

/// Data received per stream id.
fn data_of(frames: &[Frame], stream: u32) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data {
                stream_id, data, ..
            } if *stream_id == stream => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A whole exec over SPDY: the two streams it implies, "hello" on stdout,
/// Success on the error stream.
async fn full_exec(server: &StreamServer) {
    let url = server.url_for(exec_request()).unwrap();
    let mut c = Spdy::upgrade(server, &url, "v4.channel.k8s.io").await;
    c.open(1, &[("streamtype", "error")]).await;
    c.open(3, &[("streamtype", "stdout")]).await;
    let frames = c.until_closed().await;
    assert_eq!(data_of(&frames, 3), b"hello\n", "{frames:?}");
    let status = String::from_utf8(data_of(&frames, 1)).unwrap();
    assert!(status.contains("Success"), "{status}");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_silent_ones_time_out() {
    const CAP: usize = 4;
    let header_timeout = Duration::from_millis(1500);
    let (server, _) = server(StreamConfig {
        header_read_timeout: header_timeout,
        max_connections: CAP,
        ..config()
    })
    .await;
    // CAP clients that start a request head and never finish it.
    let mut silent = Vec::new();
    for _ in 0..CAP {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        tcp.write_all(b"GET /exec/abc HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        silent.push(tcp);
    }
    let sent = Instant::now();
    // One more half-sent request is turned away at once: a 503, unless the
    // close overtook it (its bytes arrived after the server let go).
    let mut extra = TcpStream::connect(server.addr()).await.unwrap();
    extra
        .write_all(b"GET /exec/abc HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (got, end) = guard("the refusal", read_to_close(&mut extra)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 503 ")
            || (got.is_empty()
                && end.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)),
        "{text:?}"
    );
    // So is every further connection, with a 503.
    for _ in 0..20 {
        let mut extra = TcpStream::connect(server.addr()).await.unwrap();
        let (got, _) = guard("the refusal", read_to_close(&mut extra)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
        assert!(
            text.ends_with("too many connections, try again\n"),
            "{text:?}"
        );
    }
    assert!(
        sent.elapsed() < header_timeout,
        "refusals must not wait for the held connections: {:?}",
        sent.elapsed()
    );
    // The silent ones are closed once the head timeout passes, unanswered.
    for tcp in &mut silent {
        let (got, _) = guard("the head timeout", read_to_close(tcp)).await;
        assert_eq!(got, b"", "no answer to an unfinished head");
    }
    let waited = sent.elapsed();
    assert!(
        waited >= header_timeout - Duration::from_millis(100),
        "closed after {waited:?}, before the {header_timeout:?} head timeout"
    );
    // Their slots are free again: a whole exec works, and so does a plain
    // request, which is answered and closed (no keep-alive).
    full_exec(&server).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /exec/unknown HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, end) = guard("the 404", read_to_close(&mut tcp)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 404 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    end.unwrap();
}

#[tokio::test]
async fn streams_that_never_come_end_the_session_at_the_creation_timeout() {
    let timeout = Duration::from_millis(700);
    let (server, fake) = server(StreamConfig {
        stream_creation_timeout: timeout,
        ..config()
    })
    .await;
    let url = server.url_for(exec_request()).unwrap();
    let mut c = Spdy::upgrade(&server, &url, "v4.channel.k8s.io").await;
    let start = Instant::now();
    // The error stream comes; the stdout stream the request implies never does.
    c.open(1, &[("streamtype", "error")]).await;
    let frames = c.until_closed().await;
    let waited = start.elapsed();
    assert!(waited >= timeout - Duration::from_millis(50), "{waited:?}");
    assert!(
        matches!(frames.last(), Some(Frame::GoAway { .. })),
        "{frames:?}"
    );
    assert_eq!(fake.execs.load(Ordering::SeqCst), 0, "nothing was run");
}

#[tokio::test]
async fn a_session_without_traffic_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_millis(600);
    let (server, _) = server(StreamConfig {
        idle_timeout: idle,
        ..config()
    })
    .await;
    let forward = Request::PortForward {
        sandbox_id: "p1".into(),
    };
    let url = server.url_for(forward.clone()).unwrap();
    let mut c = Spdy::upgrade(&server, &url, "portforward.k8s.io").await;
    // Traffic (pings, as kubectl sends) keeps it open well past the timeout.
    let start = Instant::now();
    let mut id = 1;
    let mut quiet = Instant::now();
    while start.elapsed() < idle * 3 {
        c.ping(id).await;
        quiet = Instant::now();
        id += 2;
        tokio::time::sleep(idle / 4).await;
    }
    // Then silence: it is closed, an idle period after the last ping.
    let frames = c.until_closed().await;
    assert!(frames.is_empty(), "{frames:?}");
    let waited = quiet.elapsed();
    assert!(waited >= idle - Duration::from_millis(50), "{waited:?}");

    // A session that never says anything goes the same way, and its slot
    // is returned: the server still serves.
    let url = server.url_for(forward).unwrap();
    let mut c = Spdy::upgrade(&server, &url, "portforward.k8s.io").await;
    assert!(c.until_closed().await.is_empty());
    full_exec(&server).await;
}

/// A listener standing in for the pod: echoes what each connection sends.
async fn echo_pod() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn pf_headers(kind: &'static str, request: &'static str) -> [(&'static str, &'static str); 3] {
    [("streamtype", kind), ("port", "80"), ("requestid", request)]
}

#[tokio::test]
async fn port_forward_pairs_time_out_and_forwards_share_the_socket_budget() {
    let timeout = Duration::from_millis(500);
    // Two sockets: the client's session, and one forwarded connection.
    let (server, fake) = server(StreamConfig {
        stream_creation_timeout: timeout,
        max_connections: 2,
        ..config()
    })
    .await;
    *fake.pod.lock().unwrap() = Some(echo_pod().await);
    let url = server
        .url_for(Request::PortForward {
            sandbox_id: "p1".into(),
        })
        .unwrap();
    let mut c = Spdy::upgrade(&server, &url, "portforward.k8s.io").await;

    // An error stream whose data stream never comes: dropped with a reason.
    let start = Instant::now();
    c.open(1, &pf_headers("error", "0")).await;
    let mut said = Vec::new();
    loop {
        match c.recv().await.expect("the session stays open") {
            Frame::Data {
                stream_id: 1,
                fin,
                data,
            } => {
                said.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            Frame::SynReply { stream_id: 1, .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(start.elapsed() >= timeout - Duration::from_millis(50));
    let said = String::from_utf8(said).unwrap();
    assert!(said.contains("timed out waiting for streams"), "{said}");

    // A whole pair is forwarded (and takes the last socket)...
    c.open(3, &pf_headers("error", "1")).await;
    c.open(5, &pf_headers("data", "1")).await;
    c.send(Frame::Data {
        stream_id: 5,
        fin: false,
        data: Bytes::from_static(b"ping"),
    })
    .await;
    let mut echoed = Vec::new();
    while echoed != b"ping" {
        match c.recv().await.expect("the echo") {
            Frame::Data {
                stream_id: 5, data, ..
            } => echoed.extend_from_slice(&data),
            Frame::SynReply { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // ...so the next one is refused on its error stream, by name.
    c.open(7, &pf_headers("error", "2")).await;
    c.open(9, &pf_headers("data", "2")).await;
    let mut said = Vec::new();
    let mut data_reset = false;
    while !(data_reset && said.ends_with(b"limit")) {
        match c.recv().await.expect("the refusal") {
            Frame::Data {
                stream_id: 7, data, ..
            } => said.extend_from_slice(&data),
            Frame::RstStream { stream_id: 9, .. } => data_reset = true,
            Frame::SynReply { .. } | Frame::Data { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let said = String::from_utf8(said).unwrap();
    assert!(said.contains("connection limit"), "{said}");
}

#[tokio::test]
async fn incomplete_port_forward_pairs_are_bounded() {
    let (server, _) = server(config()).await;
    let url = server
        .url_for(Request::PortForward {
            sandbox_id: "p1".into(),
        })
        .unwrap();
    let mut c = Spdy::upgrade(&server, &url, "portforward.k8s.io").await;
    // 64 error streams wait for their data streams; the 65th is refused.
    let ids: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        let stream_id = 1 + 2 * i as u32;
        c.open(
            stream_id,
            &[("streamtype", "error"), ("port", "80"), ("requestid", id)],
        )
        .await;
    }
    let last = 1 + 2 * 64;
    loop {
        match c.recv().await.expect("the session stays open") {
            Frame::SynReply { .. } => {}
            Frame::RstStream { stream_id, .. } => {
                assert_eq!(stream_id, last, "only the one past the bound is reset");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    c.ping(1).await;
}
