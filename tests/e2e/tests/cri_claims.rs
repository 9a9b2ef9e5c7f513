//! What README.md and docs/dev/architecture.md claim and no other suite
//! checks, end to end through the real CRI socket of a real berthd:
//! kubelet's cgroup parents (both drivers), sandbox readiness after a stop
//! and after a restart that finds the namespace pins gone, kubelet's pod
//! CIDR across restarts, runtime handlers from the config file, host IPC
//! and PID namespaces, sandbox events, CPU/memory/process stats, and the
//! state dir length limit. Every test ends with the harness's leak check.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{berthd_bin, cgroups_under, eventually, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use tonic::Code;

/// README: "The state dir may be at most 27 bytes long".
const README_MAX_STATE_DIR: usize = 27;

fn must_be_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: run the suite as root"
    );
}

/// A daemon with berthd's config file `toml` and busybox pulled.
async fn daemon_with_config(toml: &str) -> (TestDaemon, TestRegistry, Runtime) {
    must_be_root();
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::builder().config_toml(toml).start().await;
    pull(&d, &reg, &["busybox"]).await;
    let rt = d.runtime().await;
    (d, reg, rt)
}

fn with_cgroup_parent(mut pod: api::PodSandboxConfig, parent: &str) -> api::PodSandboxConfig {
    pod.linux.get_or_insert_with(Default::default).cgroup_parent = parent.to_string();
    pod
}

fn sleeper(name: &str, image: &str) -> api::ContainerConfig {
    container_config(name, image, &["sleep", "3600"])
}

/// The host's cgroups, as berth drives them.
fn host_cgroups() -> Box<dyn berth_cgroups::Cgroups> {
    berth_cgroups::open(Path::new("/sys/fs/cgroup")).expect("open the host's cgroups")
}

/// The v1 cgroup paths of `pid` by hierarchy (`memory` → `/a/b`); the v2
/// line (no controllers) is left out.
fn v1_cgroups_of(pid: u64) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"))
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (!controllers.is_empty()).then(|| (controllers.to_string(), path.to_string()))
        })
        .collect()
}

/// The container's process is in `<parent>/<id>` in every v1 hierarchy
/// (the memory one included), and berth reports that path.
async fn assert_container_under(rt: &mut Runtime, ctr: &str, parent: &str) {
    let info = verbose_info(rt, ctr).await;
    let want = format!("{parent}/{ctr}");
    assert_eq!(info["cgroupsPath"], want.as_str(), "{info}");
    let pid = info["pid"].as_u64().expect("container pid");
    let cgroups = v1_cgroups_of(pid);
    assert!(
        cgroups
            .iter()
            .any(|(c, _)| c.split(',').any(|c| c == "memory")),
        "{cgroups:?}"
    );
    for (controllers, path) in &cgroups {
        assert_eq!(path, &want, "{controllers} of {ctr}: {cgroups:?}");
    }
}

/// Whether a cgroup directory `path` is in any hierarchy.
fn cgroup_anywhere(path: &str) -> bool {
    let (parent, _) = path.rsplit_once('/').expect("an absolute cgroup path");
    cgroups_under(parent)
        .iter()
        .any(|d| d.to_string_lossy().ends_with(path))
}

/// The cgroups a test made in kubelet's place, or that the runtime made
/// above a pod parent: removed (deepest first) when the test is done, as
/// kubelet would remove its QoS tiers. Only those missing at the start
/// are tracked, so a host's own are never touched.
struct KubeletCgroups(Vec<String>);

impl KubeletCgroups {
    fn missing(paths: &[&str]) -> KubeletCgroups {
        let cg = host_cgroups();
        KubeletCgroups(
            paths
                .iter()
                .filter(|p| !cg.exists(p))
                .map(|p| p.to_string())
                .collect(),
        )
    }

    fn remove(&mut self) {
        let cg = host_cgroups();
        self.0.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in self.0.drain(..) {
            if let Err(e) = cg.remove(&p) {
                if !std::thread::panicking() {
                    panic!("remove cgroup {p}: {e}");
                }
            }
        }
    }
}

impl Drop for KubeletCgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

async fn refused(rt: &mut Runtime, pod: api::PodSandboxConfig, handler: &str) -> tonic::Status {
    rt.run_pod_sandbox(api::RunPodSandboxRequest {
        config: Some(pod),
        runtime_handler: handler.to_string(),
    })
    .await
    .expect_err("RunPodSandbox should be refused")
}

/// kubelet with the cgroupfs driver sends a path; berth puts the pod's
/// containers under it, removes it with the pod only if it made it, and
/// refuses a parent that is not an absolute path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroupfs_parents_hold_the_containers_and_only_berths_own_go_with_the_pod() {
    let (d, reg, mut rt) = daemon_with_config("").await;
    let image = reg.image("busybox");
    let logs = d.dir().join("logs");
    // kubelet's layout, under this daemon's cgroup root so the harness's
    // leak check and scrub cover it.
    let kubepods = format!("{}/kubepods", d.cgroup_root);
    let qos = format!("{kubepods}/burstable");
    let ours = format!("{qos}/pod0a1b2c3d_e4f5_0001");
    let kubelets = format!("{qos}/pod0a1b2c3d_e4f5_0002");
    let mut tiers = KubeletCgroups::missing(&[&kubepods, &qos, &kubelets]);
    host_cgroups()
        .create(&kubelets)
        .expect("kubelet's pod cgroup");

    let pod_ours = run_pod(
        &mut rt,
        with_cgroup_parent(pod_config("cg-ours", &logs), &ours),
        "",
    )
    .await;
    let pod_kubelets = run_pod(
        &mut rt,
        with_cgroup_parent(pod_config("cg-kubelets", &logs), &kubelets),
        "",
    )
    .await;
    // RunPodSandbox makes berth's own parent, before any container.
    assert!(cgroup_anywhere(&ours), "{ours} not made by RunPodSandbox");
    let a = run_container(&mut rt, &pod_ours, sleeper("a", &image)).await;
    let b = run_container(&mut rt, &pod_kubelets, sleeper("b", &image)).await;
    assert_container_under(&mut rt, &a, &ours).await;
    assert_container_under(&mut rt, &b, &kubelets).await;

    teardown(&mut rt, &pod_ours).await;
    teardown(&mut rt, &pod_kubelets).await;
    assert!(!cgroup_anywhere(&ours), "berth's pod cgroup {ours} is left");
    assert!(
        host_cgroups().exists(&kubelets),
        "kubelet's pod cgroup {kubelets} was removed"
    );
    let left = cgroups_under(&kubelets);
    assert!(left.is_empty(), "container cgroups left: {left:?}");

    // Not absolute, or climbing out: refused with the reason, nothing made.
    for bad in [
        "kubepods/burstable/pod0a1b2c3d",
        "/kubepods/../../escape",
        // A slice name is a relative path to the cgroupfs driver.
        "kubepods-burstable-pod0a1b2c3d.slice",
    ] {
        let e = refused(
            &mut rt,
            with_cgroup_parent(pod_config("cg-bad", &logs), bad),
            "",
        )
        .await;
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(
            e.message()
                .contains(&format!("cgroup parent {bad:?} must be an absolute path")),
            "{bad}: {}",
            e.message()
        );
    }
    assert!(list_pods(&mut rt).await.is_empty());
    tiers.remove();
    d.assert_no_leaks();
}

/// kubelet with the systemd driver sends a slice name; berth expands it as
/// systemd does and puts the containers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_slice_parents_expand_like_systemd() {
    let (d, reg, mut rt) = daemon_with_config("cgroup_driver = \"systemd\"\n").await;
    let driver = rt
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner()
        .linux
        .expect("linux")
        .cgroup_driver;
    assert_eq!(driver, api::CgroupDriver::Systemd as i32);
    let logs = d.dir().join("logs");
    // A pod uid no other run of this test shares.
    let slice = format!("kubepods-burstable-pod{}claims.slice", std::process::id());
    let path = format!("/kubepods.slice/kubepods-burstable.slice/{slice}");
    let mut tiers = KubeletCgroups::missing(&[
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
    ]);

    let pod = run_pod(
        &mut rt,
        with_cgroup_parent(pod_config("cg-systemd", &logs), &slice),
        "",
    )
    .await;
    let ctr = run_container(&mut rt, &pod, sleeper("s", &reg.image("busybox"))).await;
    assert_container_under(&mut rt, &ctr, &path).await;
    teardown(&mut rt, &pod).await;
    assert!(!cgroup_anywhere(&path), "berth's pod slice {path} is left");

    let e = refused(
        &mut rt,
        with_cgroup_parent(pod_config("cg-bad-slice", &logs), "kubepods--x.slice"),
        "",
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("\"kubepods--x.slice\" is not a valid slice name"),
        "{}",
        e.message()
    );
    assert!(list_pods(&mut rt).await.is_empty());
    tiers.remove();
    d.assert_no_leaks();
}

/// StopPodSandbox makes the pod NotReady with no IP; so does a restart that
/// finds the pod's network namespace pin gone, which also frees its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_or_unpinned_sandboxes_are_not_ready_and_detached() {
    must_be_root();
    let (mut d, _reg, mut rt) = daemon_with(&[]).await;
    let logs = d.dir().join("logs");
    let stopped = run_pod(&mut rt, pod_config("stopped", &logs), "").await;
    assert!(!pod_ip(&mut rt, &stopped).await.is_empty());
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: stopped.clone(),
    })
    .await
    .expect("stop pod");
    let s = pod_status(&mut rt, &stopped).await;
    assert_eq!(s.state, api::PodSandboxState::SandboxNotready as i32);
    assert_eq!(s.network.map(|n| n.ip).unwrap_or_default(), "");

    let unpinned = run_pod(&mut rt, pod_config("unpinned", &logs), "").await;
    let ip = pod_ip(&mut rt, &unpinned).await;
    assert!(!ip.is_empty());
    assert_eq!(d.network.veths().len(), 1, "{:?}", d.network.veths());
    d.stop().expect("berthd was running");
    let pin = d.state_dir.join(format!("pods/{unpinned}/ns/net"));
    let c = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: unmounting a path of this test's own daemon.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        r,
        0,
        "unmount {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    std::fs::remove_file(&pin).expect("remove the pin");

    d.start_again().await;
    let mut rt = d.runtime().await;
    let s = pod_status(&mut rt, &unpinned).await;
    assert_eq!(s.state, api::PodSandboxState::SandboxNotready as i32);
    assert_eq!(s.network.map(|n| n.ip).unwrap_or_default(), "");
    let veths = d.network.veths();
    assert!(veths.is_empty(), "pod veths left: {veths:?}");
    // A NotReady pod holds no namespace: the pins that survived (ipc,
    // uts) and its shm went with the lost one.
    let pod_state = d.state_dir.join(format!("pods/{unpinned}"));
    let held = berth_testkit::mounts_under(&pod_state);
    assert!(held.is_empty(), "mounts left by a NotReady pod: {held:?}");
    let not_ready: Vec<String> = rt
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(not_ready.len(), 2, "{not_ready:?}");
    // Its address is free: the next pod may get it, and no lease is held
    // once both are gone (the harness checks leases after berthd stops).
    let next = run_pod(&mut rt, pod_config("next", &logs), "").await;
    assert!(!pod_ip(&mut rt, &next).await.is_empty());
    for pod in [&stopped, &unpinned, &next] {
        teardown(&mut rt, pod).await;
    }
    d.stop();
    d.assert_no_leaks();
}

/// kubelet's pod CIDR (UpdateRuntimeConfig) is stored and wins over the
/// configured subnet after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_pod_cidr_survives_a_restart() {
    must_be_root();
    let (mut d, _reg, mut rt) = daemon_with(&[]).await;
    let logs = d.dir().join("logs");
    let cidr = (900..)
        .map(|n| berth_testkit::TestNetwork::pick(n).subnet)
        .find(|s| *s != d.network.subnet)
        .unwrap();
    rt.update_runtime_config(api::UpdateRuntimeConfigRequest {
        runtime_config: Some(api::RuntimeConfig {
            network_config: Some(api::NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    })
    .await
    .expect("UpdateRuntimeConfig");
    d.stop().expect("berthd was running");
    // Stored per bridge in the network settings; read while berthd is down.
    let store = berth_store::Store::open(&d.root).expect("open the store");
    let stored: Option<String> = store
        .get(
            "network_settings",
            &format!("pod_cidr/{}", d.network.bridge),
        )
        .expect("read the stored pod CIDR");
    assert_eq!(stored, Some(cidr.to_string()));
    drop(store);

    // The harness passes --pod-subnet with the old subnet again.
    d.start_again().await;
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pod_config("after-restart", &logs), "").await;
    let ip: std::net::Ipv4Addr = pod_ip(&mut rt, &pod).await.parse().expect("a pod IPv4");
    assert!(cidr.contains(ip), "{ip} not in {cidr}");
    let addr = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", &d.network.bridge])
        .output()
        .expect("ip addr");
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(
        addr.contains(&format!("{}/", cidr.gateway())),
        "bridge {} is not on {cidr}: {addr}",
        d.network.bridge
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

/// `runc` from $PATH, as berthd finds it.
fn runc_path() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("runc"))
        .find(|p| p.exists())
        .expect("runc is installed")
}

/// The `status` and `pid` runc reports for `id` under `root`.
fn runc_state(root: &Path, id: &str) -> (String, u64) {
    let out = Command::new(runc_path())
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .expect("run runc state");
    assert!(
        out.status.success(),
        "runc --root {} state {id}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc state json");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["pid"].as_u64().unwrap_or(0),
    )
}

/// Handlers and the default come from the config file: Status lists them,
/// each pod runs under its handler's runtime (its state in that runtime's
/// root), and an unknown handler is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_handlers_and_the_default_come_from_the_config_file() {
    let toml = format!(
        "default_runtime = \"runc\"\n\
         [runtimes.crun]\n\
         [runtimes.runc]\n\
         [runtimes.fast]\n\
         program = \"{}\"\n",
        runc_path().display()
    );
    let (d, reg, mut rt) = daemon_with_config(&toml).await;
    let image = reg.image("busybox");
    let logs = d.dir().join("logs");
    let status = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    let mut names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["", "crun", "fast", "runc"]);
    for h in &status.runtime_handlers {
        assert!(h.features.is_some(), "{h:?} has no features");
    }

    let roots = d.state_dir.join("runtimes");
    // (handler asked for, the runtime root its containers must be in)
    for (handler, root) in [
        ("", "runc"),
        ("runc", "runc"),
        ("fast", "fast"),
        ("crun", "crun"),
    ] {
        let name = format!(
            "h-{}",
            if handler.is_empty() {
                "default"
            } else {
                handler
            }
        );
        let pod = run_pod(&mut rt, pod_config(&name, &logs), handler).await;
        assert_eq!(pod_status(&mut rt, &pod).await.runtime_handler, handler);
        let ctr = run_container(&mut rt, &pod, sleeper("c", &image)).await;
        let pid = verbose_info(&mut rt, &ctr).await["pid"].as_u64().unwrap();
        for other in ["crun", "runc", "fast"] {
            assert_eq!(
                roots.join(other).join(&ctr).exists(),
                other == root,
                "handler {handler:?}: {ctr} in {other}'s root"
            );
        }
        if root != "crun" {
            assert_eq!(
                runc_state(&roots.join(root), &ctr),
                ("running".to_string(), pid)
            );
        }
        teardown(&mut rt, &pod).await;
    }

    let e = refused(&mut rt, pod_config("h-unknown", &logs), "nope").await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("unknown runtime handler \"nope\""),
        "{}",
        e.message()
    );
    assert!(list_pods(&mut rt).await.is_empty());
    d.assert_no_leaks();
}

fn host_namespace(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("read /proc/self/ns/{kind}: {e}"))
        .display()
        .to_string()
}

/// A pod with the node's IPC and PID namespaces: its containers are in the
/// host's (this test runs in them), not in ones of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ipc_and_pid_namespaces_are_the_hosts() {
    let (d, reg, mut rt) = daemon_with_config("").await;
    let node = api::NamespaceOption {
        ipc: api::NamespaceMode::Node as i32,
        pid: api::NamespaceMode::Node as i32,
        ..Default::default()
    };
    let mut pc = pod_config("host-ns", &d.dir().join("logs"));
    pc.linux.as_mut().unwrap().security_context = Some(api::LinuxSandboxSecurityContext {
        namespace_options: Some(node.clone()),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, pc, "").await;
    let mut c = sleeper("c", &reg.image("busybox"));
    c.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            namespace_options: Some(node),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ctr = run_container(&mut rt, &pod, c).await;
    for kind in ["ipc", "pid"] {
        let inside = exec_out(
            &mut rt,
            &ctr,
            &["readlink", &format!("/proc/self/ns/{kind}")],
        )
        .await;
        assert_eq!(inside, host_namespace(kind), "{kind}");
    }
    // The pod's network is still its own.
    let net = exec_out(&mut rt, &ctr, &["readlink", "/proc/self/ns/net"]).await;
    assert_ne!(net, host_namespace("net"));
    // Host pids: berthd is visible by its own pid.
    let comm = exec_out(&mut rt, &ctr, &["cat", &format!("/proc/{}/comm", d.pid())]).await;
    assert_eq!(comm, "berthd");
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

/// GetContainerEvents streams a sandbox's own lifecycle under its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_lifecycle_events_carry_the_sandbox_id() {
    must_be_root();
    let (d, _reg, mut rt) = daemon_with(&[]).await;
    let mut events = d
        .runtime()
        .await
        .get_container_events(api::GetEventsRequest {})
        .await
        .expect("subscribe")
        .into_inner();
    let pod = run_pod(&mut rt, pod_config("pod-events", &d.dir().join("logs")), "").await;
    teardown(&mut rt, &pod).await;

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("event stream")
            .expect("stream open");
        if e.container_id == pod {
            seen.push(e);
        }
    }
    use api::ContainerEventType as T;
    let kinds: Vec<i32> = seen.iter().map(|e| e.container_event_type).collect();
    assert_eq!(
        kinds,
        [
            T::ContainerCreatedEvent as i32,
            T::ContainerStartedEvent as i32,
            T::ContainerStoppedEvent as i32,
            T::ContainerDeletedEvent as i32,
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    assert!(seen[0].created_at > 0);
    for e in &seen {
        assert!(e.containers_statuses.is_empty(), "{e:?}");
    }
    // Its status rides along (kubelet's evented PLEG drops events without
    // one). It is read when the event is sent, so the created and started
    // events may already see it stopped; the deleted one carries the last
    // status the stream saw.
    use api::PodSandboxState as S;
    for (e, states) in seen.iter().zip([
        &[S::SandboxReady, S::SandboxNotready][..],
        &[S::SandboxReady, S::SandboxNotready][..],
        &[S::SandboxNotready][..],
        &[S::SandboxNotready][..],
    ]) {
        let s = e
            .pod_sandbox_status
            .as_ref()
            .unwrap_or_else(|| panic!("no pod sandbox status: {e:?}"));
        assert_eq!(s.id, pod);
        assert!(states.iter().any(|st| *st as i32 == s.state), "{e:?}");
        assert_eq!(s.metadata.as_ref().unwrap().name, "pod-events");
    }
    d.assert_no_leaks();
}

async fn container_stats(rt: &mut Runtime, ctr: &str) -> api::ContainerStats {
    rt.container_stats(api::ContainerStatsRequest {
        container_id: ctr.to_string(),
    })
    .await
    .expect("ContainerStats")
    .into_inner()
    .stats
    .expect("stats")
}

fn value(v: &Option<api::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

/// CPU rate on the second sample, memory and process counts, per
/// container and summed per pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_cpu_rate_rss_and_process_counts() {
    let (d, reg, mut rt) = daemon_with_config("").await;
    let image = reg.image("busybox");
    let pod = run_pod(&mut rt, pod_config("stats", &d.dir().join("logs")), "").await;
    // Three processes: two sleeps and the shell that burns a CPU.
    let burner = run_container(
        &mut rt,
        &pod,
        container_config(
            "burner",
            &image,
            &[
                "sh",
                "-c",
                "sleep 3600 & sleep 3600 & exec sh -c 'while :; do :; done'",
            ],
        ),
    )
    .await;
    let idle = run_container(&mut rt, &pod, sleeper("idle", &image)).await;
    let cgroup = verbose_info(&mut rt, &burner).await["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();
    let cg = host_cgroups();
    let procs = |cg: &dyn berth_cgroups::Cgroups| cg.stats(&cgroup).map(|s| s.pids).unwrap_or(0);
    eventually(
        "the burner's three processes",
        Duration::from_secs(10),
        || (procs(cg.as_ref()) == 3).then_some(()),
    )
    .await;

    let first = container_stats(&mut rt, &burner).await;
    let used = value(&first.cpu.as_ref().unwrap().usage_core_nano_seconds);
    // Let it burn a measurable 50 ms of CPU before the second sample.
    eventually("the burner to use CPU", Duration::from_secs(10), || {
        let now = cg.stats(&cgroup).ok()?.cpu_usage_ns;
        (now > used + 50_000_000).then_some(())
    })
    .await;
    let second = container_stats(&mut rt, &burner).await;
    let cpu = second.cpu.as_ref().unwrap();
    let cores = value(&cpu.usage_nano_cores);
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        cores > 0 && cores <= cpus * 1_100_000_000,
        "usage_nano_cores {cores} on the second sample"
    );
    assert!(value(&cpu.usage_core_nano_seconds) > used);
    assert!(cpu.timestamp > first.cpu.as_ref().unwrap().timestamp);
    let mem = second.memory.as_ref().unwrap();
    assert!(value(&mem.rss_bytes) > 0, "{mem:?}");
    assert!(value(&mem.working_set_bytes) > 0, "{mem:?}");
    assert_eq!(second.attributes.as_ref().unwrap().id, burner);

    let stats = rt
        .pod_sandbox_stats(api::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("pod stats");
    let linux = stats.linux.expect("linux pod stats");
    let process = linux.process.expect("process stats");
    // The burner's three and the idle container's sleep.
    assert_eq!(value(&process.process_count), 4);
    let mut ids: Vec<String> = linux
        .containers
        .iter()
        .map(|c| c.attributes.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    let mut want = vec![burner.clone(), idle.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(value(&linux.memory.unwrap().rss_bytes) >= value(&mem.rss_bytes));
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

/// A state dir too long for the monitors' socket paths is refused at start
/// with the dir and the limit named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_that_is_too_long_is_refused_with_the_limit() {
    must_be_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("temp dir");
    let state = dir.path().join("run-far-too-long-for-sockets");
    let len = state.as_os_str().len();
    assert!(len > README_MAX_STATE_DIR, "{} is short", state.display());
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    std::fs::write(dir.path().join("registries.conf"), "").unwrap();
    let mut child = Command::new(berthd_bin())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--cri-socket")
        .arg(dir.path().join("berth.sock"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--registries-config")
        .arg(dir.path().join("registries.conf"))
        .arg("--network-backend")
        .arg("none")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berthd");
    let exited = eventually("berthd to refuse and exit", Duration::from_secs(20), || {
        child.try_wait().expect("wait berthd")
    })
    .await;
    let out = child.wait_with_output().expect("berthd output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!exited.success(), "berthd started: {stderr}");
    assert!(
        stderr.contains(&format!(
            "state dir {} is {len} bytes long; at most {} ",
            state.display(),
            README_MAX_STATE_DIR
        )),
        "{stderr}"
    );
    // A configuration error (EX_USAGE, as every other), found before
    // anything is made on the node.
    assert_eq!(exited.code(), Some(64), "{stderr}");
    for made in ["root", "run-far-too-long-for-sockets", "berth.sock"] {
        let p = dir.path().join(made);
        assert!(!p.exists(), "{} was made: {stderr}", p.display());
    }
}
