//! The CRI socket as gRPC clients other than kubelet see it: grpcio's
//! authorities, deadlines answered by the server, and berthd's own log.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::TestDaemon;
use k8s_cri::v1 as api;
use tonic::Code;

/// Runs the grpcio client (tests/e2e/clients/grpc_version.py) against
/// `socket` once per authority; its JSON answer.
fn grpcio(socket: &std::path::Path, authorities: &[&str]) -> Vec<serde_json::Value> {
    let script = berth_testkit::workspace_root().join("tests/e2e/clients/grpc_version.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(socket)
        .args(authorities)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "grpcio client failed (is python3-grpcio installed? hack/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grpcio client JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_that_send_the_socket_path_as_authority_are_served() {
    let d = TestDaemon::start().await;
    let path = d.socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    let authorities = [
        "-", // grpcio's own default
        "localhost",
        path.as_str(), // grpc-java, .NET, grpcurl
        &format!("unix:{path}"),
        &format!("unix://{path}"),
        &encoded, // grpcio 1.57 and later
    ];
    let answers = grpcio(&d.socket, &authorities);
    assert_eq!(answers.len(), authorities.len());
    for (authority, answer) in authorities.iter().zip(&answers) {
        let responses = answer["responses"]
            .as_array()
            .unwrap_or_else(|| panic!(":authority {authority:?}: {answer}"));
        assert_eq!(responses.len(), 4, "{answer}");
        // Version's runtime_name, "berth", in each of the three answers.
        for version in &responses[..3] {
            let bytes = hex(version.as_str().unwrap());
            assert!(
                bytes.windows(5).any(|w| w == b"berth"),
                ":authority {authority:?}: {version}"
            );
        }
    }
    // tonic's client (kubelet-like, its own authority) still works.
    let mut rt = d.runtime().await;
    let v = rt
        .version(api::VersionRequest::default())
        .await
        .expect("Version over tonic")
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    d.assert_no_leaks();
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A "registry" on loopback that accepts connections and never answers.
struct SilentRegistry {
    addr: String,
    _listener: std::thread::JoinHandle<()>,
}

impl SilentRegistry {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            // Each connection is read (so the client's request is sent)
            // until the client hangs up; nothing is ever answered.
            for conn in listener.incoming().take(16) {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        SilentRegistry {
            addr,
            _listener: thread,
        }
    }
}

/// One unary gRPC call with `grpc-timeout: timeout` by a bare HTTP/2
/// client (h2). tonic's and grpcio's channels enforce a deadline locally
/// too, and first; this one does not, so the answer is the server's.
/// Returns grpc-status and grpc-message.
async fn call_with_deadline(
    socket: &std::path::Path,
    method: &str,
    message: impl prost::Message,
    timeout: &str,
) -> (String, String) {
    let io = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = tonic::codegen::http::Request::post(format!("http://localhost{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    let message = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    body.send_data(frame.into(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let field = |h: &tonic::codegen::http::HeaderMap, name: &str| {
        h.get(name).map(|v| v.to_str().unwrap().to_string())
    };
    // A trailers-only answer carries the status in its headers.
    if let Some(code) = field(response.headers(), "grpc-status") {
        return (
            code,
            field(response.headers(), "grpc-message").unwrap_or_default(),
        );
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        data.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    (
        field(&trailers, "grpc-status").expect("grpc-status"),
        field(&trailers, "grpc-message").unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_deadline_is_answered_deadline_exceeded() {
    let registry = SilentRegistry::start();
    let d = TestDaemon::start().await;
    let pull = api::PullImageRequest {
        image: Some(api::ImageSpec {
            image: format!("{}/hangs:1", registry.addr),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let (code, message) = call_with_deadline(
        &d.socket,
        "/runtime.v1.ImageService/PullImage",
        pull,
        "300m",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        code,
        (Code::DeadlineExceeded as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("deadline"), "{message}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );
    // A call that makes its deadline is answered as usual.
    let (code, message) = call_with_deadline(
        &d.socket,
        "/runtime.v1.RuntimeService/Version",
        api::VersionRequest::default(),
        "10S",
    )
    .await;
    assert_eq!(code, "0", "{message}");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_plain_text_and_rejected_calls_stay_below_info() {
    let mut d = TestDaemon::start().await;
    let mut rt = d.runtime().await;
    let e = rt
        .container_status(api::ContainerStatusRequest {
            container_id: "no-such-container-4f1e".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    d.assert_no_leaks();
    d.stop().expect("berthd stopped");
    // testkit sends berthd's stderr to a file: no terminal, no colour.
    let log = d.log();
    assert!(log.contains("berthd serving CRI v1"), "{log}");
    assert!(log.contains("berthd stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log:\n{log}");
    assert!(!log.contains("4f1e"), "a rejected call was logged:\n{log}");
}
