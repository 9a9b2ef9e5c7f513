//! What critest (cri-tools' conformance suite) checks, done by a CRI client
//! of our own: pods without a hostname, a nil seccomp profile, the default
//! pid namespace, and mount propagation with both handlers.

use std::path::Path;
use std::process::Command;

use berth_e2e::*;
use berth_testkit::TestDaemon;
use k8s_cri::v1 as api;

fn node_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_hostname_gets_the_nodes_even_with_a_long_name() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    // critest's pod names are 66-80 bytes: more than a UTS hostname holds.
    let name = format!(
        "podsandbox-for-create-container-{}",
        "0123456789abcdef".repeat(3)
    );
    assert!(name.len() > 64);
    let mut pc = pod_config(&name, &d.dir().join("logs"));
    pc.hostname = String::new();
    let pod = run_pod(&mut rt, pc, "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("c", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    assert_eq!(
        exec_out(&mut rt, &ctr, &["hostname"]).await,
        node_hostname()
    );
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/etc/hostname"]).await,
        node_hostname()
    );
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_a_log_path_runs() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("nolog", &d.dir().join("logs")), "").await;
    let mut cc = container_config("nolog", &reg.image("busybox"), &["sleep", "3600"]);
    cc.log_path = String::new();
    let ctr = run_container(&mut rt, &pod, cc).await;
    assert_eq!(exec_out(&mut rt, &ctr, &["echo", "ok"]).await, "ok");
    assert_eq!(status(&mut rt, &ctr).await.log_path, "");
    teardown(&mut rt, &pod).await;
}

/// The `Seccomp:` mode of a container asking for no profile.
async fn seccomp_mode_without_a_profile(d: &TestDaemon, image: &str) -> String {
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pod_config("nil", &d.dir().join("logs")), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("nil", image, &["sleep", "3600"]),
    )
    .await;
    let status = exec_out(&mut rt, &ctr, &["cat", "/proc/self/status"]).await;
    teardown(&mut rt, &pod).await;
    status_field(&status, "Seccomp:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nil_seccomp_profile_is_unconfined_unless_the_node_sets_a_default() {
    let reg = berth_testkit::TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let d = TestDaemon::start().await;
    pull(&d, &reg, &["busybox"]).await;
    assert_eq!(seccomp_mode_without_a_profile(&d, &image).await, "0");
    drop(d);
    let d = TestDaemon::builder()
        .config_toml("seccomp_default = true\n")
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    assert_eq!(seccomp_mode_without_a_profile(&d, &image).await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_namespace_options_containers_share_the_pods_pid_namespace() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let mut pc = pod_config("nsdefault", &d.dir().join("logs"));
    pc.linux = None;
    let pod = run_pod(&mut rt, pc, "").await;
    let mut cc = container_config("c", &reg.image("busybox"), &["sleep", "3600"]);
    cc.linux = None;
    let ctr = run_container(&mut rt, &pod, cc).await;
    // PID 1 is the pod's own (berth's pause), not the container's sleep.
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/proc/1/comm"]).await,
        "berth-pause"
    );
    teardown(&mut rt, &pod).await;
}

/// Makes `dir` a shared mount point of its own (the test dir is on a
/// private /tmp here), as a host path for propagation must be.
fn shared_mount(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for args in [
        vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
        vec!["--make-shared", dir.to_str().unwrap()],
    ] {
        let ok = Command::new("mount")
            .args(&args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount {args:?}");
    }
}

fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn unmount_tree(dir: &Path) {
    let _ = Command::new("umount").arg("-R").arg(dir).status();
}

async fn propagation_works_with(handler: &str) {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let shared = d.dir().join("shared");
    shared_mount(&shared);
    std::fs::create_dir_all(shared.join("from-container")).unwrap();
    std::fs::create_dir_all(shared.join("from-host")).unwrap();
    let pod = run_pod(&mut rt, pod_config("prop", &d.dir().join("logs")), handler).await;
    let mut cc = container_config("prop", &reg.image("busybox"), &["sleep", "3600"]);
    cc.mounts = vec![
        api::Mount {
            container_path: "/bidi".into(),
            host_path: shared.display().to_string(),
            propagation: api::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        },
        api::Mount {
            container_path: "/slave".into(),
            host_path: shared.display().to_string(),
            propagation: api::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
    ];
    cc.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let ctr = run_container(&mut rt, &pod, cc).await;
    // Container → host (rshared).
    exec_out(
        &mut rt,
        &ctr,
        &["mount", "-t", "tmpfs", "tmpfs", "/bidi/from-container"],
    )
    .await;
    assert!(
        is_mount_point(&shared.join("from-container")),
        "{handler}: a mount made in the container did not reach the host"
    );
    // Host → container (rslave).
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(shared.join("from-host"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mounts = exec_out(&mut rt, &ctr, &["cat", "/proc/self/mountinfo"]).await;
    assert!(
        mounts.contains(" /slave/from-host "),
        "{handler}: a host mount did not reach the container: {mounts}"
    );
    teardown(&mut rt, &pod).await;
    unmount_tree(&shared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_reaches_both_ways_with_crun() {
    propagation_works_with("crun").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_reaches_both_ways_with_runc() {
    propagation_works_with("runc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spdy_upgrade_is_answered_as_client_go_expects() {
    use std::io::{Read, Write};
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("upgrade", &d.dir().join("logs")), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("upgrade", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    let (addr, path) = exec_true_endpoint(&mut rt, &ctr).await;
    // The request head client-go (crictl, kubelet) sends, byte for byte.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    )
    .unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut byte).unwrap(), 1, "closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // "connection: upgrade, close" reads to client-go as no answer at all.
    let connection = head
        .lines()
        .find_map(|l| l.strip_prefix("connection:"))
        .unwrap_or_default();
    assert!(!connection.contains("close"), "{head}");
    drop(c);
    teardown(&mut rt, &pod).await;
}
