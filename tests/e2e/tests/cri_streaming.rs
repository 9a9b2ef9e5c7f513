//! CRI streaming end to end: the CRI `Exec`, `Attach` and `PortForward`
//! URLs driven by clients written independently of berth's server: the
//! Rust client in `berth_e2e::k8s` (from client-go and the SPDY/3 spec)
//! and Python's websocket-client. Every test ends with the leak check.

use std::process::Command;
use std::time::Duration;

use berth_e2e::k8s::{self, StreamOptions};
use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};
use k8s_cri::v1 as api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn exec_request(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> api::ExecRequest {
    api::ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

fn opts(stdin: bool, tty: bool) -> StreamOptions {
    StreamOptions {
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// A daemon with one running busybox container that sleeps.
async fn sleeper() -> (
    TestDaemon,
    berth_testkit::TestRegistry,
    Runtime,
    String,
    String,
) {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("streams", &d.dir().join("logs")), "").await;
    let c = run_container(
        &mut rt,
        &pod,
        container_config("sleeper", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    (d, reg, rt, pod, c)
}

async fn attach_url(rt: &Runtime, id: &str, stdin: bool) -> String {
    rt.clone()
        .attach(api::AttachRequest {
            container_id: id.to_string(),
            stdin,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url
}

/// Runs the Python websocket-client script; its JSON answer.
fn python_ws(url: &str, protocol: &str, stdin: Option<&str>) -> serde_json::Value {
    let script = berth_testkit::workspace_root().join("tests/e2e/clients/ws_remotecommand.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(url).arg(protocol);
    if let Some(s) = stdin {
        cmd.arg(s);
    }
    let out = cmd.output().expect("run python3");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python client JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_with_and_without_a_tty() {
    let (d, _reg, mut rt, pod, c) = sleeper().await;

    // Separate stdout and stderr, a non-zero exit code, newest protocol.
    let url = exec_url(
        &mut rt,
        exec_request(
            &c,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ),
    )
    .await;
    let s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(false, false))
        .await
        .expect("upgrade");
    assert_eq!(s.protocol(), k8s::STREAM_PROTOCOL_V5);
    let out = s.wait(WAIT).await.unwrap();
    assert_eq!(
        (out.stdout_str().as_str(), out.stderr_str().as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(out.exit_code, 3, "{:?}", out.error);
    assert_eq!(out.error.as_ref().unwrap()["reason"], "NonZeroExitCode");

    // Success on v4 is an explicit Success status.
    let url = exec_url(&mut rt, exec_request(&c, &["true"], false, false)).await;
    let s = k8s::exec_spdy(&url, &[k8s::STREAM_PROTOCOL_V4], opts(false, false))
        .await
        .unwrap();
    assert_eq!(s.protocol(), k8s::STREAM_PROTOCOL_V4);
    let out = s.wait(WAIT).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.error.as_ref().unwrap()["status"], "Success");
    assert!(out.client_error.is_none(), "{:?}", out.client_error);

    // v2: the error stream is text, and says nothing on success.
    let url = exec_url(
        &mut rt,
        exec_request(&c, &["sh", "-c", "exit 2"], false, false),
    )
    .await;
    let s = k8s::exec_spdy(&url, &[k8s::STREAM_PROTOCOL_V2], opts(false, false))
        .await
        .unwrap();
    let out = s.wait(WAIT).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.error_raw).contains("exit code 2"),
        "{out:?}"
    );

    // stdin piped through, 256 KiB, then closed: cat sees EOF and exits 0.
    let url = exec_url(&mut rt, exec_request(&c, &["cat"], false, true)).await;
    let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(true, false))
        .await
        .unwrap();
    let input: Vec<u8> = (0..256 * 1024).map(|i| b"abcdefghij\n"[i % 11]).collect();
    s.write_stdin(&input).await.unwrap();
    s.close_stdin().await.unwrap();
    let out = s.wait(WAIT).await.unwrap();
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdin came back changed");
    assert_eq!(out.exit_code, 0);

    // A terminal: the process sees a tty, and a resize reaches it.
    let url = exec_url(
        &mut rt,
        exec_request(
            &c,
            &["sh", "-c", "test -t 0 && echo is-a-tty; read go; stty size"],
            true,
            true,
        ),
    )
    .await;
    let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(true, true))
        .await
        .unwrap();
    s.read_stdout_until(b"is-a-tty", WAIT).await.unwrap();
    s.resize(100, 30).await.unwrap();
    // The size lands before the line that asks for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_stdin(b"go\n").await.unwrap();
    let seen = s.read_stdout_until(b"30 100", WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("30 100"));
    let out = s.wait(WAIT).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(out.stderr.is_empty(), "a tty has no separate stderr");

    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_websocket_from_python_and_rust() {
    let (d, _reg, mut rt, pod, c) = sleeper().await;
    let url = exec_url(
        &mut rt,
        exec_request(
            &c,
            &["sh", "-c", "echo py-out; echo py-err >&2; exit 5"],
            false,
            false,
        ),
    )
    .await;
    let out = python_ws(&url, "v5.channel.k8s.io", None);
    assert_eq!(out["protocol"], "v5.channel.k8s.io");
    // 1000 (normal) after the status: client-go reads anything else, even
    // a close without a code, as a failed session.
    assert_eq!(out["close_code"], 1000, "{out}");
    assert_eq!(out["stdout"], "py-out\n");
    assert_eq!(out["stderr"], "py-err\n");
    let status: serde_json::Value = serde_json::from_str(out["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "5");

    // v5's close message ends stdin: cat returns what it got and exits.
    let url = exec_url(&mut rt, exec_request(&c, &["cat"], false, true)).await;
    let out = python_ws(&url, "v5.channel.k8s.io", Some("hello from python\n"));
    assert_eq!(out["stdout"], "hello from python\n");
    let status: serde_json::Value = serde_json::from_str(out["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["status"], "Success");

    // v4 over WebSocket works too (no stdin close there).
    let url = exec_url(&mut rt, exec_request(&c, &["echo", "four"], false, false)).await;
    let out = python_ws(&url, "v4.channel.k8s.io", None);
    assert_eq!(
        (out["protocol"].as_str(), out["stdout"].as_str()),
        (Some("v4.channel.k8s.io"), Some("four\n"))
    );

    // The Rust client, kubectl's way (v5 only), with a resize on a tty.
    let url = exec_url(
        &mut rt,
        exec_request(&c, &["sh", "-c", "read go; stty size"], true, true),
    )
    .await;
    let mut s = k8s::exec_ws(&url, k8s::WS_PROTOCOLS, opts(true, true))
        .await
        .unwrap();
    s.resize(120, 40).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_stdin(b"go\n").await.unwrap();
    s.read_stdout_until(b"40 120", WAIT).await.unwrap();
    let out = s.wait(WAIT).await.unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    // client-go's view of the close: clean only with code 1000.
    assert_eq!(out.client_error, None, "{out:?}");

    // A process that cannot start (its container stopped after the URL was
    // issued): the failure on the error channel, then the same close.
    let url = exec_url(&mut rt, exec_request(&c, &["true"], false, false)).await;
    rt.stop_container(api::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    let out = python_ws(&url, "v5.channel.k8s.io", None);
    assert_eq!(out["close_code"], 1000, "{out}");
    let status: serde_json::Value = serde_json::from_str(out["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["status"], "Failure", "{out}");

    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reaches_a_running_containers_stdio_from_several_clients() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("attach", &d.dir().join("logs")), "").await;
    let mut config = container_config(
        "echoer",
        &reg.image("busybox"),
        &[
            "sh",
            "-c",
            "echo ready; while read l; do echo got:$l; echo err:$l >&2; done",
        ],
    );
    config.stdin = true;
    let c = run_container(&mut rt, &pod, config).await;
    // Each URL fixes the streams its client must open (kubelet's rule).
    let mut first = k8s::exec_spdy(
        &attach_url(&rt, &c, true).await,
        k8s::SPDY_PROTOCOLS,
        opts(true, false),
    )
    .await
    .expect("first attach");
    let mut second = k8s::exec_spdy(
        &attach_url(&rt, &c, false).await,
        k8s::SPDY_PROTOCOLS,
        opts(false, false),
    )
    .await
    .expect("second attach");
    first.write_stdin(b"one\n").await.unwrap();
    first.read_stdout_until(b"got:one", WAIT).await.unwrap();
    second.read_stdout_until(b"got:one", WAIT).await.unwrap();
    second.read_stderr_until(b"err:one", WAIT).await.unwrap();
    // One client leaving does not disturb the other.
    second.abort();
    first.write_stdin(b"two\n").await.unwrap();
    first.read_stdout_until(b"got:two", WAIT).await.unwrap();
    first.abort();
    // The container kept running and logged everything.
    let st = wait_state(&mut rt, &c, api::ContainerState::ContainerRunning).await;
    let log = eventually("the log to have both lines", WAIT, || {
        let log = std::fs::read_to_string(&st.log_path).ok()?;
        (log.contains("got:one") && log.contains("got:two")).then_some(log)
    })
    .await;
    assert!(log.contains("stderr F err:two"), "{log}");

    // Attaching with stdin to a container without stdin is refused.
    let other = run_container(
        &mut rt,
        &pod,
        container_config("plain", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    let e = rt
        .attach(api::AttachRequest {
            container_id: other,
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_spdy_and_the_websocket_tunnel() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("forward", &d.dir().join("logs")), "").await;
    let c = run_container(
        &mut rt,
        &pod,
        web_server("forwarded-hello", &reg.image("busybox")),
    )
    .await;
    // httpd is up once the pod's own loopback answers.
    exec_until_ok(
        &mut rt,
        &c,
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
    )
    .await;
    let forward_url = |rt: &mut Runtime| {
        let (pod, mut rt) = (pod.clone(), rt.clone());
        async move {
            rt.port_forward(api::PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![8080],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url
        }
    };
    for websocket in [false, true] {
        let url = forward_url(&mut rt).await;
        let mut stream = if websocket {
            k8s::port_forward_ws(&url, 8080).await
        } else {
            k8s::port_forward_spdy(&url, 8080).await
        }
        .unwrap_or_else(|e| panic!("port-forward (websocket: {websocket}): {e:?}"));
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("response in time")
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.") && response.contains("forwarded-hello"),
            "{response}"
        );
        let errors = stream.finish(WAIT).await.unwrap();
        assert_eq!(errors, "", "websocket: {websocket}");
    }
    // Nothing listens on 9: the error stream says so.
    let url = forward_url(&mut rt).await;
    let mut stream = k8s::port_forward_spdy(&url, 9).await.unwrap();
    let error = stream.error_text(WAIT).await.unwrap();
    assert!(
        error.contains("an error occurred forwarding 9 -> 9"),
        "{error}"
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_protocols_and_a_vanishing_client_are_handled() {
    let (d, _reg, mut rt, pod, c) = sleeper().await;
    // A used token and an unknown one are 404s.
    let url = exec_url(&mut rt, exec_request(&c, &["true"], false, false)).await;
    k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(false, false))
        .await
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let again = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(false, false))
        .await
        .expect_err("the upgrade must fail");
    assert_eq!(again.status, 404, "{again:?}");
    let bogus = format!("{}0000", &url[..url.len() - 4]);
    assert_eq!(
        k8s::exec_spdy(&bogus, k8s::SPDY_PROTOCOLS, opts(false, false))
            .await
            .expect_err("the upgrade must fail")
            .status,
        404
    );

    // An unsupported subprotocol: 403 naming what the server accepts.
    let url = exec_url(&mut rt, exec_request(&c, &["true"], false, false)).await;
    let e = k8s::exec_spdy(&url, &["v9.channel.k8s.io"], opts(false, false))
        .await
        .expect_err("the upgrade must fail");
    assert_eq!(e.status, 403);
    assert!(
        e.body.contains("v4.channel.k8s.io") && e.body.contains("v9.channel.k8s.io"),
        "{}",
        e.body
    );
    assert!(e
        .header_values("x-accepted-stream-protocol-versions")
        .contains(&"v4.channel.k8s.io"));
    let url = exec_url(&mut rt, exec_request(&c, &["true"], false, false)).await;
    let e = k8s::exec_ws(&url, &["base64.channel.k8s.io"], opts(false, false))
        .await
        .expect_err("the upgrade must fail");
    assert_eq!(e.status, 403, "{e:?}");

    // The client vanishes mid-exec: the exec'd process is killed.
    let berthd_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .unwrap()
            .count()
    };
    let fds_before = berthd_fds();
    let url = exec_url(
        &mut rt,
        exec_request(
            &c,
            &["sh", "-c", "echo started; exec sleep 4242"],
            false,
            false,
        ),
    )
    .await;
    let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts(false, false))
        .await
        .unwrap();
    s.read_stdout_until(b"started", WAIT).await.unwrap();
    assert!(ps(rt.clone(), &c).await.contains("sleep 4242"));
    s.abort();
    let deadline = std::time::Instant::now() + WAIT;
    while ps(rt.clone(), &c).await.contains("sleep 4242") {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec'd process outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("berthd's descriptors to come back", WAIT, || {
        (berthd_fds() <= fds_before).then_some(())
    })
    .await;

    // CRI-level refusals.
    let e = rt
        .exec(api::ExecRequest {
            stdout: false,
            stderr: false,
            ..exec_request(&c, &["true"], false, false)
        })
        .await
        .expect_err("the upgrade must fail");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .exec(exec_request("nope", &["true"], false, false))
        .await
        .expect_err("the upgrade must fail");
    assert_eq!(e.code(), Code::NotFound);
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

/// The container's processes, one command line per line.
async fn ps(mut rt: Runtime, id: &str) -> String {
    exec_out(&mut rt, id, &["ps", "-o", "args"]).await
}
