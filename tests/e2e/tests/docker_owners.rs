//! Owners across the two front doors, and bad input at the Docker door:
//! what the docker CLI makes stays out of CRI's sight, and a bad request
//! gets dockerd's status and wording and leaves nothing half-made.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use berth_e2e::*;
use k8s_cri::v1 as api;

/// One HTTP/1.1 request with a JSON body on the socket; (status code, body).
fn post(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the docker socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server that refuses early may close before reading it all.
    let _ = s.write_all(body);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not, the JSON object is the one line starting with '{'.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
    (status, json.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_docker_makes_stays_out_of_cri() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&["pull", "-q", &image]);
    let id = d.docker_ok(&["run", "-d", "--name", "admin-tool", &image, "sleep", "600"]);
    let id = id.trim();

    let containers = list_containers(&mut rt).await;
    assert!(
        containers.iter().all(|c| c.id != id),
        "CRI lists the docker container: {containers:?}"
    );
    let pods = list_pods(&mut rt).await;
    assert!(
        pods.is_empty(),
        "CRI lists a docker container's sandbox: {pods:?}"
    );
    let status = rt
        .container_status(api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await;
    assert_eq!(
        status.map(|_| ()).unwrap_err().code(),
        tonic::Code::NotFound,
        "CRI answered for the docker container"
    );

    // And the pod kubelet made shows beside it in docker ps.
    let pod = run_pod(
        &mut rt,
        pod_config("mixed", &d.dir().join("logs/mixed")),
        "",
    )
    .await;
    run_container(
        &mut rt,
        &pod,
        container_config("side", &image, &["sleep", "600"]),
    )
    .await;
    let names = d.docker_ok(&["ps", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["admin-tool", "k8s_side_mixed_default_uid-mixed_0"]);

    d.docker_ok(&["rm", "-f", "admin-tool"]);
    teardown(&mut rt, &pod).await;
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_dockerds_answers_and_leave_nothing() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&["pull", "-q", &image]);
    let sock = d.docker_socket();

    let (status, body) = post(&sock, "/v1.41/containers/create", b"{\"Image\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("{\"message\":"), "{body}");

    let huge = format!(
        "{{\"Image\":\"{image}\",\"Env\":[\"X={}\"]}}",
        "x".repeat(5 << 20)
    );
    let (status, body) = post(&sock, "/v1.41/containers/create", huge.as_bytes());
    assert_eq!(status, 413, "{body}");

    let missing = post(
        &sock,
        "/v1.41/containers/create",
        br#"{"Image":"127.0.0.1:1/nothing:here"}"#,
    );
    assert_eq!(missing.0, 404, "{}", missing.1);
    assert_eq!(
        missing.1,
        r#"{"message":"No such image: 127.0.0.1:1/nothing:here"}"#
    );

    let holder = d.docker_ok(&["run", "-d", "--name", "taken", &image, "sleep", "600"]);
    let holder = holder.trim();
    let again = d.docker(&["create", "--name", "taken", &image, "true"]);
    assert_ne!(again.status, Some(0));
    assert!(
        again.stderr.contains(&format!(
            "Conflict. The container name \"/taken\" is already in use by container \"{holder}\""
        )),
        "{}",
        again.stderr
    );
    let rm = d.docker(&["rm", "taken"]);
    assert_ne!(rm.status, Some(0));
    assert!(
        rm.stderr.contains("You cannot remove a running container"),
        "{}",
        rm.stderr
    );
    let unknown = d.docker(&["start", "no-such-thing"]);
    assert!(
        unknown.stderr.contains("No such container: no-such-thing"),
        "{}",
        unknown.stderr
    );

    // Nothing half-made: only the one container, and berthd still answers.
    assert_eq!(d.docker_ok(&["ps", "-aq", "--no-trunc"]).trim(), holder);
    d.docker_ok(&["rm", "-f", "taken"]);
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");
    d.assert_no_leaks();
}
