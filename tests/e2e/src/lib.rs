//! End-to-end suites live in tests/; this library holds what they share:
//! CRI request builders and calls with the assertions every suite repeats.

pub mod docker_peer;
pub mod k8s;
pub mod replay;
pub mod scrape;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_testkit::{eventually, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub type Runtime = RuntimeServiceClient<Channel>;

/// A daemon with `images` pulled from a fresh local registry.
pub async fn daemon_with(images: &[&str]) -> (TestDaemon, TestRegistry, Runtime) {
    let reg = TestRegistry::start();
    reg.push(images);
    let d = TestDaemon::start().await;
    pull(&d, &reg, images).await;
    let rt = d.runtime().await;
    (d, reg, rt)
}

/// Pulls `images` from `reg` into the daemon through the CRI.
pub async fn pull(d: &TestDaemon, reg: &TestRegistry, images: &[&str]) {
    let mut ic = d.images().await;
    for name in images {
        ic.pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: reg.image(name),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull");
    }
}

pub fn pod_config(name: &str, log_dir: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    pid: api::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        ..Default::default()
    }
}

pub async fn run_pod(rt: &mut Runtime, config: api::PodSandboxConfig, handler: &str) -> String {
    rt.run_pod_sandbox(api::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: handler.to_string(),
    })
    .await
    .expect("run pod sandbox")
    .into_inner()
    .pod_sandbox_id
}

pub async fn create(
    rt: &mut Runtime,
    pod: &str,
    config: api::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(api::CreateContainerRequest {
        pod_sandbox_id: pod.to_string(),
        config: Some(config),
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// CreateContainer then StartContainer; returns the container id.
pub async fn run_container(rt: &mut Runtime, pod: &str, config: api::ContainerConfig) -> String {
    let id = create(rt, pod, config).await.expect("create container");
    start(rt, &id).await;
    id
}

pub async fn start(rt: &mut Runtime, id: &str) {
    rt.start_container(api::StartContainerRequest {
        container_id: id.to_string(),
    })
    .await
    .expect("start container");
}

pub async fn status(rt: &mut Runtime, id: &str) -> api::ContainerStatus {
    rt.container_status(api::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    })
    .await
    .expect("container status")
    .into_inner()
    .status
    .expect("status")
}

pub async fn verbose_info(rt: &mut Runtime, id: &str) -> serde_json::Value {
    let info = rt
        .container_status(api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .expect("container status")
        .into_inner()
        .info;
    serde_json::from_str(&info["info"]).expect("info json")
}

pub async fn exec(rt: &mut Runtime, id: &str, cmd: &[&str]) -> api::ExecSyncResponse {
    rt.exec_sync(api::ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    })
    .await
    .expect("exec sync")
    .into_inner()
}

pub async fn exec_out(rt: &mut Runtime, id: &str, cmd: &[&str]) -> String {
    let r = exec(rt, id, cmd).await;
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

pub async fn wait_state(
    rt: &mut Runtime,
    id: &str,
    want: api::ContainerState,
) -> api::ContainerStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(rt, id).await;
        if s.state == want as i32 {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every Kubernetes pod sandbox the daemon lists.
pub async fn list_pods(rt: &mut Runtime) -> Vec<api::PodSandbox> {
    rt.list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .expect("list pod sandboxes")
        .into_inner()
        .items
}

/// Every Kubernetes container the daemon lists.
pub async fn list_containers(rt: &mut Runtime) -> Vec<api::Container> {
    rt.list_containers(api::ListContainersRequest { filter: None })
        .await
        .expect("list containers")
        .into_inner()
        .containers
}

/// The one-time streaming URL CRI Exec answers for `req`.
pub async fn exec_url(rt: &mut Runtime, req: api::ExecRequest) -> String {
    rt.exec(req).await.expect("Exec").into_inner().url
}

/// A one-time exec of `true` in `ctr`: the streaming server's address and
/// the URL's path.
pub async fn exec_true_endpoint(rt: &mut Runtime, ctr: &str) -> (String, String) {
    let url = exec_url(
        rt,
        api::ExecRequest {
            container_id: ctr.to_string(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').expect("a path in the URL"));
    (addr.to_string(), path.to_string())
}

pub async fn teardown(rt: &mut Runtime, pod: &str) {
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .expect("stop pod");
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .expect("remove pod");
}

// ---- pod networking ----

/// A busybox container serving `body` over HTTP on 8080.
pub fn web_server(body: &str, image: &str) -> api::ContainerConfig {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www");
    container_config("web", image, &["sh", "-c", &script])
}

pub fn with_ports(
    mut pod: api::PodSandboxConfig,
    ports: &[(i32, i32, &str)],
) -> api::PodSandboxConfig {
    pod.port_mappings = ports
        .iter()
        .map(|(host, container, ip)| api::PortMapping {
            protocol: api::Protocol::Tcp as i32,
            container_port: *container,
            host_port: *host,
            host_ip: ip.to_string(),
        })
        .collect();
    pod
}

pub fn host_network(mut pod: api::PodSandboxConfig) -> api::PodSandboxConfig {
    let linux = pod.linux.get_or_insert_with(Default::default);
    let sec = linux.security_context.get_or_insert_with(Default::default);
    let ns = sec.namespace_options.get_or_insert_with(Default::default);
    ns.network = api::NamespaceMode::Node as i32;
    pod
}

pub async fn pod_ip(rt: &mut Runtime, pod: &str) -> String {
    rt.pod_sandbox_status(api::PodSandboxStatusRequest {
        pod_sandbox_id: pod.to_string(),
        verbose: false,
    })
    .await
    .expect("pod status")
    .into_inner()
    .status
    .and_then(|s| s.network)
    .map(|n| n.ip)
    .unwrap_or_default()
}

pub async fn pod_status(rt: &mut Runtime, pod: &str) -> api::PodSandboxStatus {
    rt.pod_sandbox_status(api::PodSandboxStatusRequest {
        pod_sandbox_id: pod.to_string(),
        verbose: false,
    })
    .await
    .expect("pod status")
    .into_inner()
    .status
    .expect("status")
}

pub async fn network_condition(rt: &mut Runtime) -> api::RuntimeCondition {
    rt.status(api::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("conditions")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady")
}

/// GET `url` from the host with curl, retrying until `deadline`.
pub async fn http_get(url: &str) -> String {
    eventually(&format!("GET {url}"), Duration::from_secs(10), || {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "2", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await
}

/// Runs `cmd` in the container until it exits 0 (the server may still be
/// starting); returns its stdout.
pub async fn exec_until_ok(rt: &mut Runtime, id: &str, cmd: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = exec(rt, id, cmd).await;
        if out.exit_code == 0 {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{cmd:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Figures for the benchmark binaries.
pub mod bench {
    /// The `p` quantile (0..=1) of `v`, nearest rank.
    pub fn percentile(v: &[f64], p: f64) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    }

    /// A process's resident memory in KiB (`VmRSS`), 0 if it is gone.
    pub fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Seconds as milliseconds with one decimal.
    pub fn ms(v: f64) -> String {
        format!("{:.1} ms", v * 1000.0)
    }
}

/// A tar entry written byte for byte (tar writers refuse `..`).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A tar of `(name, type flag, link target, data)` entries, written byte
/// for byte so that it may hold what tar writers refuse (`../x`).
pub fn tar_of(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        raw_entry(&mut out, name, *kind, link, data);
    }
    out.resize(out.len() + 1024, 0);
    out
}
