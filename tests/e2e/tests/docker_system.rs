//! The Docker Engine API's system endpoints and Kubernetes visibility, end
//! to end: the real docker CLI (v28) against a real berthd, plus raw HTTP
//! on the socket where the CLI hides what dockerd answers.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use berth_e2e::*;
use berth_testkit::TestDaemon;

/// One HTTP/1.1 exchange on the socket; returns the status line, the
/// headers (lower-cased names) and the body.
fn raw(socket: &Path, method: &str, path: &str) -> (String, Vec<(String, String)>, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the docker socket");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_negotiates_down_and_reads_version_and_info() {
    let d = TestDaemon::start().await;
    let mode = std::fs::metadata(d.docker_socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "the docker socket's mode");

    let version = d.docker_ok(&["version"]);
    assert!(
        version.contains("1.41 (downgraded from"),
        "the CLI did not negotiate down to 1.41:\n{version}"
    );
    assert!(version.contains("Server:"), "{version}");
    let info = d.docker_ok(&[
        "info",
        "--format",
        "{{.CgroupVersion}}|{{.CgroupDriver}}|{{.NCPU}}|{{.OSType}}|{{.DockerRootDir}}|{{.Containers}}",
    ]);
    let expected_cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        info.trim(),
        format!("1|cgroupfs|{expected_cpus}|linux|{}|0", d.root.display())
    );
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_versions_and_unknown_paths_answer_like_dockerd() {
    let d = TestDaemon::start().await;
    let sock = d.docker_socket();
    let (status, headers, body) = raw(&sock, "HEAD", "/_ping");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "api-version"), Some("1.41"));
    assert_eq!(header(&headers, "ostype"), Some("linux"));
    assert_eq!(header(&headers, "docker-experimental"), Some("false"));
    assert_eq!(header(&headers, "builder-version"), Some("1"));
    assert_eq!(body, "");
    let (status, _, body) = raw(&sock, "GET", "/_ping");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "OK"));

    let (status, _, body) = raw(&sock, "GET", "/v1.99/version");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        body.trim(),
        r#"{"message":"client version 1.99 is too new. Maximum supported API version is 1.41"}"#
    );
    let (status, _, body) = raw(&sock, "GET", "/v1.12/info");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(body.contains("client version 1.12 is too old"), "{body}");

    let (status, _, body) = raw(&sock, "GET", "/v1.41/version");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ApiVersion"], "1.41");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Os"], "linux");

    let (status, _, body) = raw(&sock, "GET", "/v1.41/nothing/here");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body.trim(), r#"{"message":"page not found"}"#);
    let (status, _, body) = raw(&sock, "GET", "/containers/nope/json");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body.trim(), r#"{"message":"No such container: nope"}"#);
    let (status, _, body) = raw(
        &sock,
        "GET",
        "/containers/json?filters=%7B%22foo%22%3A%7B%22x%22%3Atrue%7D%7D",
    );
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(body.trim(), r#"{"message":"Invalid filter 'foo'"}"#);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_socket_can_move_or_be_turned_off() {
    let off = TestDaemon::builder()
        .arg("--docker-socket")
        .arg("")
        .start()
        .await;
    assert!(
        !off.docker_socket().exists(),
        "--docker-socket '' still made a socket"
    );
    drop(off);
    let d = TestDaemon::builder()
        .arg("--docker-tcp")
        .arg("127.0.0.1:1")
        .start_failure();
    assert!(
        d.contains("refusing the Docker API on plain TCP"),
        "plain TCP was not refused: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_pods_show_in_docker_ps_and_inspect() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/seen");
    let pod = run_pod(&mut rt, pod_config("seen", &logs), "").await;
    let image = reg.image("busybox");
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("web", &image, &["sleep", "3600"]),
    )
    .await;

    let name = "k8s_web_seen_default_uid-seen_0";
    let ps = d.docker_ok(&[
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}}",
    ]);
    let line = ps
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("docker ps does not show the pod's container as {name}:\n{ps}"));
    assert!(line.starts_with(&ctr), "{line}");
    assert!(line.contains(" Up "), "{line}");

    let inspect = d.docker_ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], ctr.as_str());
    assert_eq!(c["Name"], format!("/{name}"));
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_u64().unwrap_or(0) > 0, "{c}");
    assert_eq!(c["Path"], "sleep");
    assert_eq!(c["Args"], serde_json::json!(["3600"]));
    let ip = pod_ip(&mut rt, &pod).await;
    assert_eq!(c["NetworkSettings"]["IPAddress"], ip.as_str());

    // The writable layer's size, as `ps --size` shows it.
    exec_out(
        &mut rt,
        &ctr,
        &["dd", "if=/dev/zero", "of=/big", "bs=1024", "count=100"],
    )
    .await;
    let size = d.docker_ok(&[
        "ps",
        "--size",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Size}}",
    ]);
    // 100 KiB of data, plus the blocks of the layer's directories.
    let kb: f64 = size.split("kB").next().unwrap().parse().unwrap_or(0.0);
    assert!(
        (102.0..130.0).contains(&kb) && size.contains("(virtual "),
        "{size}"
    );

    let filtered = d.docker_ok(&["ps", "-q", "--no-trunc", "--filter", "label=container=web"]);
    assert_eq!(filtered.trim(), ctr);
    let none = d.docker_ok(&["ps", "-q", "--filter", "status=exited"]);
    assert_eq!(none.trim(), "");
    teardown(&mut rt, &pod).await;
    let after = d.docker_ok(&["ps", "-a", "-q"]);
    assert_eq!(after.trim(), "", "removed containers still listed");
    d.assert_no_leaks();
}
