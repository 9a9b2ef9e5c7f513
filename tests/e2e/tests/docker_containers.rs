//! Docker's own containers end to end: the real docker CLI (v28) against a
//! real berthd making, stopping, killing, restarting, renaming, waiting
//! for, removing and pruning containers, each in a sandbox of its own on
//! the node's default network; raw HTTP where the CLI hides dockerd's
//! answer. Every test ends with nothing left on the node.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};

/// A shell that ignores SIGTERM (as pid 1 of its pid namespace without a
/// handler would too) and keeps running until SIGKILL.
const IGNORES_TERM: &str = "trap '' TERM; while true; do sleep 0.2; done";

/// One HTTP/1.1 request with a JSON body on the socket; (status line, body).
fn post(socket: &Path, path: &str, body: &str) -> (String, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the docker socket");
    // One write: a daemon may answer from the head alone and close, and a
    // later write of the body would then fail with EPIPE.
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn inspect(d: &TestDaemon, name: &str, format: &str) -> String {
    d.docker_ok(&["inspect", "--format", format, name])
        .trim()
        .to_string()
}

#[track_caller]
fn assert_fails_with(d: &TestDaemon, args: &[&str], message: &str) {
    let run = d.docker(args);
    assert_ne!(run.status, Some(0), "docker {args:?} succeeded: {run:?}");
    assert!(
        run.stderr.contains(message),
        "docker {args:?}: want {message:?} in: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stop_start_kill_restart_rename_wait_and_rm() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    let id = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "life",
        &image,
        "sh",
        "-c",
        IGNORES_TERM,
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "docker run -d prints the id: {id:?}");
    assert_eq!(inspect(&d, "life", "{{.State.Status}}"), "running");
    assert_eq!(inspect(&d, "life", "{{.Config.Hostname}}"), &id[..12]);

    // Its stop signal is ignored: SIGKILL after the 1 s timeout.
    let started = Instant::now();
    d.docker_ok(&["stop", "-t", "1", "life"]);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "stop -t 1 took {took:?}");
    assert_eq!(inspect(&d, "life", "{{.State.Status}}"), "exited");
    assert_eq!(inspect(&d, "life", "{{.State.ExitCode}}"), "137");
    assert_eq!(d.docker_ok(&["wait", "life"]).trim(), "137");

    // Started again on the same writable layer.
    d.docker_ok(&["start", "life"]);
    assert_eq!(inspect(&d, "life", "{{.State.Status}}"), "running");
    d.docker_ok(&["restart", "-t", "1", "life"]);
    assert_eq!(inspect(&d, "life", "{{.State.Status}}"), "running");

    d.docker_ok(&["kill", "life"]);
    assert_eq!(d.docker_ok(&["wait", "life"]).trim(), "137");

    // --stop-signal replaces SIGTERM.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "SIGUSR1",
        &image,
        "sh",
        "-c",
        "trap 'exit 7' USR1; while true; do sleep 0.2; done",
    ]);
    assert_eq!(inspect(&d, "usr1", "{{.Config.StopSignal}}"), "SIGUSR1");
    d.docker_ok(&["stop", "-t", "30", "usr1"]);
    assert_eq!(inspect(&d, "usr1", "{{.State.ExitCode}}"), "7");
    d.docker_ok(&["rm", "usr1"]);

    // --stop-timeout is the default of a stop without -t.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "quick",
        "--stop-timeout",
        "1",
        &image,
        "sh",
        "-c",
        IGNORES_TERM,
    ]);
    assert_eq!(
        inspect(
            &d,
            "quick",
            "{{.Config.StopTimeout}} {{.HostConfig.AutoRemove}}"
        ),
        "1 false"
    );
    let started = Instant::now();
    d.docker_ok(&["stop", "quick"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "stop with --stop-timeout 1 took {took:?}"
    );
    assert_eq!(inspect(&d, "quick", "{{.State.ExitCode}}"), "137");
    d.docker_ok(&["rm", "quick"]);

    d.docker_ok(&["rename", "life", "life2"]);
    assert_eq!(inspect(&d, &id, "{{.Name}}"), "/life2");
    assert_fails_with(&d, &["inspect", "life"], "No such");

    // The name is taken; a running container needs force.
    assert_fails_with(
        &d,
        &["create", "--name", "life2", &image, "true"],
        &format!("Conflict. The container name \"/life2\" is already in use by container \"{id}\""),
    );
    d.docker_ok(&["start", "life2"]);
    assert_fails_with(
        &d,
        &["rm", "life2"],
        &format!("You cannot remove a running container {id}"),
    );
    d.docker_ok(&["rm", "-f", "life2"]);
    assert_fails_with(&d, &["inspect", &id], "No such");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_serve_the_host_and_docker_port_lists_them() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let fixed = free_port();
    let script =
        "mkdir -p /www && echo hello-docker > /www/index.html && exec httpd -f -p 80 -h /www";
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{fixed}:80"),
        "-p",
        "127.0.0.1::8080/tcp",
        &image,
        "sh",
        "-c",
        script,
    ]);
    let body = http_get(&format!("http://127.0.0.1:{fixed}/")).await;
    assert_eq!(body, "hello-docker");
    let ports = inspect(&d, "web", "{{json .NetworkSettings.Ports}}");
    assert!(
        ports.contains(&format!("\"HostPort\":\"{fixed}\"")),
        "{ports}"
    );
    assert_eq!(
        d.docker_ok(&["port", "web", "80"]).trim(),
        format!("127.0.0.1:{fixed}")
    );
    // No host port asked: berth chose a free one, and it is reported.
    let chosen = d.docker_ok(&["port", "web", "8080/tcp"]);
    let chosen: u16 = chosen
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a chosen host port: {chosen:?}"));
    assert_ne!(chosen, 0);
    let all = d.docker_ok(&["port", "web"]);
    assert!(
        all.contains(&format!("80/tcp -> 127.0.0.1:{fixed}"))
            && all.contains(&format!("8080/tcp -> 127.0.0.1:{chosen}")),
        "{all}"
    );
    let unpublished = d.docker(&["port", "web", "9999"]);
    assert_eq!(unpublished.status, Some(1));
    assert!(
        unpublished
            .stderr
            .contains("No public port '9999' published for web"),
        "{}",
        unpublished.stderr
    );
    d.docker_ok(&["rm", "-f", "web"]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_remove_and_prune_leave_nothing() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    let gone = d.docker_ok(&["run", "-d", "--rm", &image, "sh", "-c", "exit 3"]);
    let gone = gone.trim().to_string();
    eventually(
        "the --rm container removed",
        Duration::from_secs(10),
        || {
            let ps = d.docker_ok(&["ps", "-aq", "--no-trunc"]);
            (!ps.contains(&gone)).then_some(())
        },
    )
    .await;

    let a = d.docker_ok(&["run", "-d", "--name", "pa", &image, "true"]);
    let b = d.docker_ok(&["create", "--name", "pb", &image, "true"]);
    let kept = d.docker_ok(&["run", "-d", "--name", "kept", &image, "sleep", "60"]);
    assert_eq!(d.docker_ok(&["wait", "pa"]).trim(), "0");
    let pruned = d.docker_ok(&["container", "prune", "-f"]);
    for id in [&a, &b] {
        assert!(
            pruned.contains(id.trim()),
            "prune did not list {id}: {pruned}"
        );
    }
    let left = d.docker_ok(&["ps", "-aq", "--no-trunc"]);
    assert_eq!(left.trim(), kept.trim(), "only the running one is kept");
    d.docker_ok(&["rm", "-f", "kept"]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_creates_answer_like_dockerd_and_make_nothing() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let sock = d.docker_socket();
    let image = reg.image("busybox");

    let (status, body) = post(&sock, "/v1.41/containers/create", "{\"Image\": ");
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
    assert!(body.contains("invalid JSON"), "{body}");

    let missing = format!("{}/nothing:1", image.split('/').next().unwrap());
    let (status, body) = post(
        &sock,
        "/v1.41/containers/create",
        &format!("{{\"Image\":\"{missing}\"}}"),
    );
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    assert_eq!(
        body.trim(),
        format!("{{\"message\":\"No such image: {missing}\"}}")
    );

    let (status, body) = post(
        &sock,
        "/v1.41/containers/create?name=-bad",
        &format!("{{\"Image\":\"{image}\"}}"),
    );
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
    assert!(body.contains("Invalid container name (-bad)"), "{body}");

    let (status, body) = post(
        &sock,
        "/v1.41/containers/create?name=x1",
        &format!("{{\"Image\":\"{image}\",\"HostConfig\":{{\"NetworkMode\":\"nope\"}}}}"),
    );
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    assert!(body.contains("network nope not found"), "{body}");

    let (status, body) = post(&sock, "/v1.41/containers/nope/start", "");
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    assert_eq!(body.trim(), r#"{"message":"No such container: nope"}"#);
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_berthd_restart_and_their_network_modes_hold() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let port = free_port();
    let script =
        "mkdir -p /www && echo still-here > /www/index.html && exec httpd -f -p 80 -h /www";
    let web = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        &image,
        "sh",
        "-c",
        script,
    ]);
    let web = web.trim().to_string();
    // Sharing web's sandbox: the same network namespace, so the same server.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "side",
        "--network",
        &format!("container:{web}"),
        &image,
        "sleep",
        "600",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "alone",
        "--network",
        "none",
        &image,
        "sleep",
        "600",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hosted",
        "--network",
        "host",
        &image,
        "sleep",
        "600",
    ]);
    assert_eq!(inspect(&d, "alone", "{{.HostConfig.NetworkMode}}"), "none");
    assert_eq!(inspect(&d, "hosted", "{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(
        inspect(&d, "side", "{{.HostConfig.NetworkMode}}"),
        format!("container:{web}")
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "still-here"
    );

    d.restart().await;
    for name in ["web", "side", "alone", "hosted"] {
        assert_eq!(inspect(&d, name, "{{.State.Status}}"), "running", "{name}");
    }
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "still-here"
    );
    // Names are still taken after the restart.
    assert_fails_with(
        &d,
        &["create", "--name", "web", &image, "true"],
        "is already in use by container",
    );
    d.docker_ok(&["restart", "-t", "1", "web"]);
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "still-here"
    );

    // The sandbox goes with the last container in it.
    d.docker_ok(&["rm", "-f", "web"]);
    assert_eq!(inspect(&d, "side", "{{.State.Status}}"), "running");
    d.docker_ok(&["rm", "-f", "side", "alone", "hosted"]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_options_reach_the_container() {
    use std::os::unix::fs::PermissionsExt;
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let out = d.dir().join("out");
    let ro = d.dir().join("ro");
    for dir in [&out, &ro] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // cgroup v2 files, else v1's (the node may have either).
    let script = "id -u > /out/uid; id -g > /out/gid; echo $FOO > /out/foo; pwd > /out/pwd; \
        c=/sys/fs/cgroup; \
        { cat $c/pids.max || cat $c/pids/pids.max; } > /out/pids; \
        { cat $c/memory.max || cat $c/memory/memory.limit_in_bytes; } > /out/mem; \
        { cat $c/cpu.max || echo $(cat $c/cpu/cpu.cfs_quota_us) $(cat $c/cpu/cpu.cfs_period_us); } > /out/cpu; \
        touch /ro/x 2> /out/ro; hostname > /out/host; echo done > /out/done";
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "opts",
        "--pids-limit",
        "50",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "-v",
        &format!("{}:/out", out.display()),
        "-v",
        &format!("{}:/ro:ro", ro.display()),
        "-e",
        "FOO=bar",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "--hostname",
        "box",
        &image,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(d.docker_ok(&["wait", "opts"]).trim(), "0");
    let read = |f: &str| {
        std::fs::read_to_string(out.join(f))
            .unwrap_or_else(|e| panic!("/out/{f}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(read("done"), "done");
    assert_eq!((read("uid"), read("gid")), ("1000".into(), "1000".into()));
    assert_eq!(read("foo"), "bar");
    assert_eq!(read("pwd"), "/tmp");
    assert_eq!(read("pids"), "50");
    assert_eq!(read("mem"), (64 << 20).to_string());
    assert_eq!(read("cpu"), "50000 100000");
    assert!(
        read("ro").contains("Read-only file system"),
        "{}",
        read("ro")
    );
    assert_eq!(read("host"), "box");
    d.docker_ok(&["rm", "opts"]);
    d.assert_no_leaks();
}
