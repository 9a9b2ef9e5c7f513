//! Container I/O through the Docker Engine API, end to end: the real
//! docker CLI (v28) running `logs`, `exec` (piped and under a pty) against
//! containers that Kubernetes made through CRI, plus raw HTTP on the
//! socket for what the CLI hides (attach's frames, exec inspect, 404s).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};
use k8s_cri::v1 as api;

/// One HTTP/1.1 request on the docker socket with `Connection: close`;
/// returns the status line and the body (chunked bodies decoded).
fn raw(socket: &Path, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the docker socket");
    // One write: a daemon may answer from the head alone (404 for an
    // unknown exec) and close, and a later write of the body would then
    // fail with EPIPE.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A pod with one container made and started through CRI; returns the
/// pod id, the container id and the name `docker` knows it by.
async fn cri_container(
    d: &TestDaemon,
    rt: &mut Runtime,
    pod_name: &str,
    config: api::ContainerConfig,
) -> (String, String, String) {
    let logs = d.dir().join("logs").join(pod_name);
    let pod = run_pod(rt, pod_config(pod_name, &logs), "").await;
    let name = format!(
        "k8s_{}_{pod_name}_default_uid-{pod_name}_0",
        config.metadata.as_ref().unwrap().name
    );
    let ctr = run_container(rt, &pod, config).await;
    (pod, ctr, name)
}

fn sh(name: &str, image: &str, script: &str) -> api::ContainerConfig {
    container_config(name, image, &["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_separates_streams_and_reads_tail_timestamps_and_since() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, ctr, name) = cri_container(
        &d,
        &mut rt,
        "logs",
        sh(
            "talk",
            &image,
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf no-newline",
        ),
    )
    .await;
    wait_state(&mut rt, &ctr, api::ContainerState::ContainerExited).await;

    let run = d.docker(&["logs", &name]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    // A last line the container never ended is shown as it is.
    assert_eq!(run.stdout, "out1\nout2\nout3\nout4\nout5\nno-newline");
    assert_eq!(run.stderr, "err1\nerr2\nerr3\nerr4\nerr5\n");

    // --tail counts the lines of both streams as the log has them (the
    // two streams are copied separately, so their interleaving varies).
    let run = d.docker(&["logs", "--tail", "2", &name]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let tail: Vec<&str> = run.stdout.lines().chain(run.stderr.lines()).collect();
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert!(
        tail.iter()
            .all(|l| ["out4", "out5", "err4", "err5", "no-newline"].contains(l)),
        "{tail:?}"
    );
    let run = d.docker(&["logs", "--tail", "0", &name]);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));

    let stamped = d.docker_ok(&["logs", "--timestamps", &ctr[..12]]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 6, "{stamped}");
    for (i, line) in lines.iter().enumerate() {
        let (ts, text) = line.split_once(' ').unwrap();
        let want = if i < 5 {
            format!("out{}", i + 1)
        } else {
            "no-newline".into()
        };
        assert_eq!(text, want);
        assert!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "not an RFC3339 time: {line}"
        );
        assert!(ts.starts_with("20"), "{line}");
    }

    // --since: everything was written in the last hour, nothing after now.
    assert_eq!(
        d.docker_ok(&["logs", "--since", "1h", &name])
            .lines()
            .count(),
        6
    );
    let later = d.docker(&["logs", "--since", "2099-01-01T00:00:00Z", &name]);
    assert_eq!((later.stdout.as_str(), later.stderr.as_str()), ("", ""));
    let until = d.docker(&["logs", "--until", "2000-01-01T00:00:00Z", &name]);
    assert_eq!(until.stdout, "");

    let missing = d.docker(&["logs", "nope"]);
    assert_eq!(missing.status, Some(1));
    assert!(
        missing.stderr.contains("No such container: nope"),
        "{}",
        missing.stderr
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_follow_returns_when_the_container_exits() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, ctr, name) = cri_container(
        &d,
        &mut rt,
        "follow",
        sh(
            "slow",
            &image,
            "echo start; sleep 2; echo end; echo bye >&2",
        ),
    )
    .await;
    let started = Instant::now();
    let mut follow = d.docker_command();
    follow.args(["logs", "-f", &name]);
    let out = tokio::task::spawn_blocking(move || follow.output().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "start\nend\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "bye\n");
    // It followed the container to its end (2 s), and no longer.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(15),
        "logs -f took {took:?}"
    );
    let s = status(&mut rt, &ctr).await;
    assert_eq!(s.state, api::ContainerState::ContainerExited as i32);
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_exec_propagates_exit_codes_stdin_and_a_terminal() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, _ctr, name) = cri_container(
        &d,
        &mut rt,
        "exec",
        container_config("box", &image, &["sleep", "3600"]),
    )
    .await;

    let run = d.docker(&["exec", &name, "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(run.status, Some(5), "{}", run.stderr);
    assert_eq!(run.stdout, "out\n");
    assert_eq!(run.stderr, "err\n");
    assert_eq!(d.docker_ok(&["exec", &name, "true"]), "");

    // Piped stdin reaches the command, and its end ends the command.
    let out = d.docker_piped(&["exec", "-i", &name, "cat"], b"hi\nthere\n");
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hi\nthere\n");

    // -it under a pseudo-terminal: the command has a tty, output is raw.
    let pty = d.docker_under_pty(&format!(
        "docker exec -it {name} sh -c 'tty; echo hello-tty; exit 3'"
    ));
    let (code, screen) = (pty.status, pty.stdout);
    assert!(
        screen.contains("/dev/pts/"),
        "no terminal in the exec: {screen:?}"
    );
    assert!(screen.contains("hello-tty\r\n"), "{screen:?}");
    assert_eq!(code, Some(3), "{screen:?}\n{}", d.log_tail());

    // An exec in a container that is not there, and one with no command.
    let missing = d.docker(&["exec", "nope", "true"]);
    assert!(
        missing.stderr.contains("No such container: nope"),
        "{}",
        missing.stderr
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_exec_takes_env_workdir_user_privileged_and_shows_its_pid() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let mut config = container_config("box", &image, &["sleep", "3600"]);
    config.envs = vec![api::KeyValue {
        key: "B".into(),
        value: "from-cri".into(),
    }];
    let (pod, ctr, name) = cri_container(&d, &mut rt, "opts", config).await;

    let script = "echo $A $B; pwd; id -u; id -g";
    let out = d.docker_ok(&[
        "exec", "-e", "A=1", "-w", "/tmp", "-u", "1000", &name, "sh", "-c", script,
    ]);
    assert_eq!(
        out, "1 from-cri\n/tmp\n1000\n1000\n",
        "uid 1000 takes app's gid"
    );
    // The exec's env overrides the container's; a name and a group resolve
    // in the container's /etc/passwd and /etc/group.
    let out = d.docker_ok(&[
        "exec", "-e", "B=mine", "-u", "app:50", &name, "sh", "-c", script,
    ]);
    assert_eq!(out, "mine\n/\n1000\n50\n");
    // Without options the exec is the container's process as it was.
    let out = d.docker_ok(&["exec", &name, "sh", "-c", script]);
    assert_eq!(out, "from-cri\n/\n0\n0\n");

    // A user the container does not know: as dockerd, the reason comes on
    // the stream and the exec's exit code is 126.
    let unknown = d.docker(&["exec", "-u", "nobody-here", &name, "true"]);
    assert_eq!(unknown.status, Some(126), "{unknown:?}");
    assert!(
        unknown.stdout.contains("user \"nobody-here\" not found"),
        "{unknown:?}"
    );
    // --privileged: every capability the host gives (CAP_SYS_ADMIN is bit
    // 21), which the container's own process does not have.
    let cap_eff = |args: &[&str]| {
        let out = d.docker_ok(
            &[
                args,
                &[name.as_str(), "grep", "CapEff", "/proc/self/status"],
            ]
            .concat(),
        );
        let hex = out.trim().trim_start_matches("CapEff:").trim().to_string();
        u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("CapEff in {out:?}"))
    };
    let plain = cap_eff(&["exec"]);
    let privileged = cap_eff(&["exec", "--privileged"]);
    assert_eq!(plain & (1 << 21), 0, "{plain:x}");
    assert_ne!(privileged & (1 << 21), 0, "{privileged:x}");
    assert_eq!(privileged & plain, plain, "{privileged:x} ⊇ {plain:x}");

    // A running exec's inspect shows its process's pid on the host.
    let sock = d.docker_socket();
    let (_, body) = raw(
        &sock,
        "POST",
        &format!("/v1.41/containers/{name}/exec"),
        r#"{"Cmd":["sleep","300"],"User":"app"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["Id"].as_str().expect("an exec id").to_string();
    let (status, _) = raw(
        &sock,
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        r#"{"Detach":true}"#,
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    let v = eventually("the exec's pid", Duration::from_secs(20), || {
        let (_, body) = raw(&sock, "GET", &format!("/v1.41/exec/{id}/json"), "");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["Pid"].as_u64()? > 0).then_some(v)
    })
    .await;
    assert_eq!(v["Running"], true, "{v}");
    assert_eq!(v["ProcessConfig"]["user"], "app", "{v}");
    let pid = v["Pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        cmdline, b"sleep\x00300\x00",
        "pid {pid} is the exec's sleep"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t1000\t")),
        "{status}"
    );
    assert_eq!(
        exec_out(&mut rt, &ctr, &["echo", "cri-too"]).await,
        "cri-too"
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_instances_inspect_detach_and_404_like_dockerd() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, ctr, name) = cri_container(
        &d,
        &mut rt,
        "insp",
        container_config("box", &image, &["sleep", "3600"]),
    )
    .await;
    let sock = d.docker_socket();

    let (status, body) = raw(&sock, "GET", "/v1.41/exec/nope/json", "");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "{\"message\":\"No such exec instance: nope\"}\n");
    let (status, _) = raw(&sock, "POST", "/v1.41/exec/nope/start", "{}");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, body) = raw(
        &sock,
        "POST",
        &format!("/v1.41/containers/{name}/exec"),
        "{}",
    );
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");

    let (status, body) = raw(
        &sock,
        "POST",
        &format!("/v1.41/containers/{name}/exec"),
        r#"{"AttachStdout":true,"Cmd":["sh","-c","touch /made; exit 4"]}"#,
    );
    assert_eq!(status, "HTTP/1.1 201 Created", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);

    let (_, body) = raw(&sock, "GET", &format!("/v1.41/exec/{id}/json"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ID"], id.as_str());
    assert_eq!(v["Running"], false);
    assert_eq!(v["ExitCode"], serde_json::Value::Null);
    assert_eq!(v["ContainerID"], ctr.as_str());
    assert_eq!(v["OpenStdout"], true);
    assert_eq!(v["ProcessConfig"]["entrypoint"], "sh");
    assert_eq!(
        v["ProcessConfig"]["arguments"],
        serde_json::json!(["-c", "touch /made; exit 4"])
    );

    // Detached: 200 at once, the exit code shows in inspect later.
    let (status, _) = raw(
        &sock,
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        r#"{"Detach":true,"Tty":false}"#,
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    let done = eventually(
        "the detached exec to finish",
        Duration::from_secs(20),
        || {
            let (_, body) = raw(&sock, "GET", &format!("/v1.41/exec/{id}/json"), "");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["Running"] == false && !v["ExitCode"].is_null()).then_some(v)
        },
    )
    .await;
    assert_eq!(done["ExitCode"], 4);
    assert_eq!(exec_out(&mut rt, &ctr, &["ls", "/made"]).await, "/made");
    // An exec runs once.
    let (status, _) = raw(
        &sock,
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        r#"{"Detach":true}"#,
    );
    assert_eq!(status, "HTTP/1.1 409 Conflict");
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

/// `POST /containers/{name}/attach?{query}` with the CLI's upgrade
/// headers; returns the connection and the response head.
fn hijack(d: &TestDaemon, name: &str, query: &str) -> (UnixStream, String) {
    let mut s = UnixStream::connect(d.docker_socket()).unwrap();
    write!(
        s,
        "POST /v1.41/containers/{name}/attach?{query} HTTP/1.1\r\n\
         Host: api.moby.localhost\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_hijacks_with_multiplexed_frames_and_stdin_once() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let mut config = sh("echo", &image, "cat; echo bye >&2");
    config.stdin = true;
    config.stdin_once = true;
    let (pod, ctr, name) = cri_container(&d, &mut rt, "att", config).await;

    let (mut s, head) = hijack(&d, &name, "stderr=1&stdin=1&stdout=1&stream=1");
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/vnd.docker.raw-stream"),
        "{head}"
    );
    assert!(lower.contains("upgrade: tcp"), "{head}");
    assert!(!lower.contains("api-version"), "{head}");

    s.write_all(b"hi\n").unwrap();
    // The client's half-close closes the StdinOnce container's stdin:
    // cat ends, and the container with it.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let mut want = b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n".to_vec();
    want.extend_from_slice(b"\x02\x00\x00\x00\x00\x00\x00\x04bye\n");
    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&got));
    wait_state(&mut rt, &ctr, api::ContainerState::ContainerExited).await;

    // logs=1 without stream: what it wrote, framed, from a stopped one.
    let (mut s, head) = hijack(&d, &name, "logs=1&stdout=1&stderr=1");
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    let mut history = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.read_to_end(&mut history).unwrap();
    assert_eq!(history, want, "{:?}", String::from_utf8_lossy(&history));

    // Resizing a container without a terminal is refused.
    let (status, _) = raw(
        &d.docker_socket(),
        "POST",
        &format!("/v1.41/containers/{name}/resize?h=30&w=100"),
        "",
    );
    assert_eq!(status, "HTTP/1.1 409 Conflict");
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}
