//! The CRI RuntimeService end to end: a real berthd with real crun and runc,
//! images pulled from a real local registry, driven by the tonic CRI client
//! kubelet's protocol uses. Every test ends with the daemon's leak check
//! (mounts, namespace pins, cgroups, monitor processes, files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::eventually;
use k8s_cri::v1 as api;
use tonic::Code;

/// CRI log lines: `<RFC3339Nano> <stream> <P|F> <message>`.
fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default();
            assert!(
                ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "bad timestamp in {l:?}"
            );
            (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_lifecycle_with_logs_exec_stats_and_stop() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/lifecycle");
    let pod = run_pod(&mut rt, pod_config("lifecycle", &logs), "").await;

    let ready = rt
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                state: Some(api::PodSandboxStateValue { state: 0 }),
                label_selector: HashMap::from([("app".into(), "lifecycle".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, pod);

    // A container that logs on both streams, then handles SIGTERM itself.
    let script = "echo out-line; echo err-line >&2; trap 'echo got-term; exit 0' TERM; \
                  while true; do sleep 0.1; done";
    let ctr = create(
        &mut rt,
        &pod,
        container_config("web", &reg.image("busybox"), &["sh", "-c", script]),
    )
    .await
    .expect("create");
    assert_eq!(
        status(&mut rt, &ctr).await.state,
        api::ContainerState::ContainerCreated as i32
    );
    start(&mut rt, &ctr).await;
    let s = status(&mut rt, &ctr).await;
    assert_eq!(s.state, api::ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at && s.created_at > 0);
    assert_eq!(s.log_path, logs.join("web.log").display().to_string());

    let log = logs.join("web.log");
    let lines = eventually("both log lines", Duration::from_secs(10), || {
        let l = log_lines(&log);
        (l.len() >= 2).then_some(l)
    })
    .await;
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "out-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "err-line".into())),
        "{lines:?}"
    );

    // Listing filters: by id prefix, pod, state and label.
    let list = |f: api::ContainerFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(api::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
        }
    };
    assert_eq!(
        list(api::ContainerFilter {
            id: ctr[..12].into(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(api::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(api::ContainerFilter {
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerExited as i32
            }),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        list(api::ContainerFilter {
            label_selector: HashMap::from([("container".into(), "web".into())]),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(list(api::ContainerFilter {
        label_selector: HashMap::from([("container".into(), "other".into())]),
        ..Default::default()
    })
    .await
    .is_empty());

    // Exec: output, stderr and exit codes.
    let r = exec(
        &mut rt,
        &ctr,
        &["sh", "-c", "echo hi; echo oops >&2; exit 3"],
    )
    .await;
    assert_eq!(r.stdout, b"hi\n");
    assert_eq!(r.stderr, b"oops\n");
    assert_eq!(r.exit_code, 3);
    assert_eq!(exec_out(&mut rt, &ctr, &["hostname"]).await, "lifecycle");
    let timed_out = rt
        .exec_sync(api::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    // The timed-out process was killed: only the container's own remain.
    let ps = exec_out(&mut rt, &ctr, &["ps", "-o", "args"]).await;
    assert!(!ps.contains("sleep 30"), "{ps}");

    // Stats from the container's cgroup and writable layer.
    exec_out(
        &mut rt,
        &ctr,
        &["sh", "-c", "head -c 300000 /dev/zero > /big"],
    )
    .await;
    let stats = rt
        .container_stats(api::ContainerStatsRequest {
            container_id: ctr.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let mem = stats.memory.unwrap().working_set_bytes.unwrap().value;
    assert!(mem > 0, "memory working set {mem}");
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let layer = stats.writable_layer.unwrap().used_bytes.unwrap().value;
    assert!(layer >= 300_000, "writable layer {layer}");
    let pod_stats = rt
        .list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pod_stats.len(), 1);
    assert_eq!(pod_stats[0].linux.as_ref().unwrap().containers.len(), 1);

    // Stop with a grace period: the trap runs and the exit is 0.
    rt.stop_container(api::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let s = status(&mut rt, &ctr).await;
    assert_eq!(s.state, api::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 0);
    assert_eq!(s.reason, "Completed");
    assert!(s.finished_at >= s.started_at);
    let lines = eventually("the trap's line", Duration::from_secs(5), || {
        let l = log_lines(&log);
        l.iter().any(|(_, _, m)| m == "got-term").then_some(l)
    })
    .await;
    assert_eq!(lines.last().unwrap().2, "got-term");
    // Stop again: idempotent.
    rt.stop_container(api::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    })
    .await
    .unwrap();

    rt.remove_container(api::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let e = rt
        .container_status(api::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    teardown(&mut rt, &pod).await;
    assert!(list_pods(&mut rt).await.is_empty());
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_timeout_and_the_images_stop_signal() {
    let (_d, reg, mut rt) = daemon_with(&["busybox", "stopsignal"]).await;
    let logs = _d.dir().join("logs/stop");
    let pod = run_pod(&mut rt, pod_config("stop", &logs), "").await;
    // sh as pid 1 ignores SIGTERM without a trap: SIGKILL after the timeout.
    let stubborn = run_container(
        &mut rt,
        &pod,
        container_config(
            "stubborn",
            &reg.image("busybox"),
            &["sh", "-c", "while true; do sleep 0.1; done"],
        ),
    )
    .await;
    let t = std::time::Instant::now();
    rt.stop_container(api::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let s = status(&mut rt, &stubborn).await;
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert_eq!(s.reason, "Error");

    // The image says SIGUSR1: the trap for USR1 runs, not TERM's.
    let script = "trap 'exit 42' USR1; trap 'exit 43' TERM; while true; do sleep 0.1; done";
    let polite = run_container(
        &mut rt,
        &pod,
        container_config("polite", &reg.image("stopsignal"), &["sh", "-c", script]),
    )
    .await;
    rt.stop_container(api::StopContainerRequest {
        container_id: polite.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    assert_eq!(status(&mut rt, &polite).await.exit_code, 42);
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_is_applied_inside_the_container() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/spec");
    let mut pc = pod_config("spec", &logs);
    pc.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let linux = pc.linux.as_mut().unwrap();
    linux.sysctls = HashMap::from([("kernel.shm_rmid_forced".to_string(), "1".to_string())]);
    linux.resources = Some(api::LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    });
    linux.overhead = Some(api::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let pod = run_pod(&mut rt, pc, "").await;
    // berth made the pod's cgroup parent, so it sizes it: resources + overhead.
    let info = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let parent = info["cgroupParent"].as_str().unwrap().to_string();
    assert!(parent.starts_with(&d.cgroup_root), "{parent}");
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{parent}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(limit.trim(), (272u64 << 20).to_string());

    let host_dir = d.dir().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("hello.txt"), "from the host\n").unwrap();
    let mut cc = container_config("spec", &reg.image("busybox"), &["sleep", "3600"]);
    cc.envs = vec![api::KeyValue {
        key: "GREETING".into(),
        value: "hello world".into(),
    }];
    cc.working_dir = "/tmp".into();
    cc.mounts = vec![api::Mount {
        container_path: "/data".into(),
        host_path: host_dir.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    cc.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 64 * 1024 * 1024,
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        security_context: Some(api::LinuxContainerSecurityContext {
            run_as_user: Some(api::Int64Value { value: 1000 }),
            run_as_group: Some(api::Int64Value { value: 1000 }),
            supplemental_groups: vec![4242],
            readonly_rootfs: true,
            no_new_privs: true,
            seccomp: Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            capabilities: Some(api::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["NET_RAW".into()],
                ..Default::default()
            }),
            namespace_options: Some(api::NamespaceOption {
                pid: api::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let ctr = create(&mut rt, &pod, cc).await.expect("create");
    start(&mut rt, &ctr).await;

    assert_eq!(exec_out(&mut rt, &ctr, &["id", "-u"]).await, "1000");
    assert_eq!(exec_out(&mut rt, &ctr, &["id", "-g"]).await, "1000");
    let groups = exec_out(&mut rt, &ctr, &["id", "-G"]).await;
    assert!(groups.split(' ').any(|g| g == "4242"), "{groups}");
    assert_eq!(
        exec_out(&mut rt, &ctr, &["sh", "-c", "echo $GREETING"]).await,
        "hello world"
    );
    assert_eq!(exec_out(&mut rt, &ctr, &["pwd"]).await, "/tmp");
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/data/hello.txt"]).await,
        "from the host"
    );
    // Read-only rootfs and bind mount, probed as root (uid 1000 would be
    // refused by the 0755 directories anyway): the refusal must be EROFS,
    // and a writable bind in the same container is the control.
    let writable = d.dir().join("writable");
    std::fs::create_dir_all(&writable).unwrap();
    let mut probe = container_config("probe", &reg.image("busybox"), &["sleep", "3600"]);
    probe.mounts = vec![
        api::Mount {
            container_path: "/data".into(),
            host_path: host_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        api::Mount {
            container_path: "/rw".into(),
            host_path: writable.display().to_string(),
            ..Default::default()
        },
    ];
    probe.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            run_as_user: Some(api::Int64Value { value: 0 }),
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let probe = run_container(&mut rt, &pod, probe).await;
    assert_eq!(exec_out(&mut rt, &probe, &["id", "-u"]).await, "0");
    for path in ["/data/new", "/etc/new"] {
        let w = exec(&mut rt, &probe, &["touch", path]).await;
        assert_ne!(w.exit_code, 0, "{path} was writable");
        let err = String::from_utf8_lossy(&w.stderr);
        assert!(err.contains("Read-only file system"), "{path}: {err}");
    }
    exec_out(&mut rt, &probe, &["touch", "/rw/new"]).await;
    assert!(writable.join("new").exists());
    assert!(!host_dir.join("new").exists());
    // Masked paths are /dev/null (char 1:3) even for root; unmasked /proc
    // files are not.
    assert_eq!(
        exec_out(
            &mut rt,
            &probe,
            &["stat", "-c", "%F %t:%T", "/proc/timer_list"]
        )
        .await,
        "character special file 1:3"
    );
    assert_eq!(
        exec_out(&mut rt, &probe, &["stat", "-c", "%F", "/proc/uptime"]).await,
        "regular empty file"
    );
    // Capabilities: the bounding set has NET_ADMIN (12) and not NET_RAW (13).
    let status_text = exec_out(&mut rt, &ctr, &["cat", "/proc/self/status"]).await;
    let field = |name: &str| {
        status_text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let bounding = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    assert_ne!(bounding & (1 << 12), 0, "NET_ADMIN missing: {bounding:x}");
    assert_eq!(bounding & (1 << 13), 0, "NET_RAW present: {bounding:x}");
    assert_eq!(bounding & (1 << 21), 0, "SYS_ADMIN present: {bounding:x}");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "seccomp filter mode");
    // Pod files and sysctls.
    let resolv = exec_out(&mut rt, &ctr, &["cat", "/etc/resolv.conf"]).await;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/etc/hostname"]).await,
        "spec"
    );
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/proc/sys/kernel/shm_rmid_forced"]).await,
        "1"
    );
    // Limits, read from the container's cgroup on the host.
    let info = verbose_info(&mut rt, &ctr).await;
    let cgroup = info["cgroupsPath"].as_str().unwrap().to_string();
    let read = |controller: &str, file: &str| read_v1_cgroup(&cgroup, controller, file);
    assert_eq!(read("memory", "memory.limit_in_bytes").trim(), "67108864");
    assert_eq!(read("cpu", "cpu.shares").trim(), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us").trim(), "50000");

    // UpdateContainerResources changes the live cgroup.
    update_limits(&mut rt, &ctr, 96 * 1024 * 1024, 256).await;
    assert_eq!(read("memory", "memory.limit_in_bytes").trim(), "100663296");
    assert_eq!(read("cpu", "cpu.shares").trim(), "256");
    let s = status(&mut rt, &ctr).await;
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        96 * 1024 * 1024
    );

    // A created container is not in the runtime yet: an update lands in
    // the spec it will run with.
    let later = create(
        &mut rt,
        &pod,
        container_config("later", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await
    .expect("create");
    update_limits(&mut rt, &later, 80 * 1024 * 1024, 300).await;
    start(&mut rt, &later).await;
    let info = verbose_info(&mut rt, &later).await;
    let cgroup = info["cgroupsPath"].as_str().unwrap();
    assert_eq!(
        read_v1_cgroup(cgroup, "memory", "memory.limit_in_bytes").trim(),
        "83886080"
    );
    assert_eq!(read_v1_cgroup(cgroup, "cpu", "cpu.shares").trim(), "300");
    teardown(&mut rt, &pod).await;
}

/// UpdateContainerResources with a memory limit and CPU shares.
async fn update_limits(rt: &mut Runtime, id: &str, memory: i64, cpu_shares: i64) {
    rt.update_container_resources(api::UpdateContainerResourcesRequest {
        container_id: id.to_string(),
        linux: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_shares,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("update the resources of {id}: {e:?}"));
}

/// A file of a container's cgroup in one v1 controller (this host's
/// layout).
fn read_v1_cgroup(cgroup: &str, controller: &str, file: &str) -> String {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/{controller}{cgroup}/{file}"));
    std::fs::read_to_string(&v1).unwrap_or_else(|e| panic!("{}: {e}", v1.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_is_a_second_handler_and_pods_can_share_a_pid_namespace() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let status = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert!(
        names.contains(&"crun") && names.contains(&"runc"),
        "{names:?}"
    );
    let runtime_ready = &status.status.as_ref().unwrap().conditions[0];
    assert_eq!(runtime_ready.r#type, "RuntimeReady");
    assert!(runtime_ready.status);

    let mut pc = pod_config("shared-pid", &d.dir().join("logs/pid"));
    pc.linux.as_mut().unwrap().security_context = Some(api::LinuxSandboxSecurityContext {
        namespace_options: Some(api::NamespaceOption {
            pid: api::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, pc, "runc").await;
    let shared = |name: &str, cmd: &[&str]| {
        let mut c = container_config(name, &reg.image("busybox"), cmd);
        c.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    pid: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let a = run_container(&mut rt, &pod, shared("a", &["sleep", "1111"])).await;
    let b = run_container(&mut rt, &pod, shared("b", &["sleep", "2222"])).await;
    assert_eq!(verbose_info(&mut rt, &a).await["runtimeHandler"], "runc");
    // b sees a's process, and neither is pid 1 (the pod's pause holds it).
    let ps = exec_out(&mut rt, &b, &["ps", "-o", "pid,args"]).await;
    assert!(
        ps.contains("sleep 1111") && ps.contains("sleep 2222"),
        "{ps}"
    );
    let first = ps.lines().nth(1).unwrap_or_default().trim().to_string();
    assert!(first.starts_with("1 "), "pid 1 is the pod's: {ps}");
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_the_lifecycle() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let mut events = d
        .runtime()
        .await
        .get_container_events(api::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod = run_pod(&mut rt, pod_config("events", &d.dir().join("logs/ev")), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("ev", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    rt.stop_container(api::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open");
        if e.container_id == ctr {
            assert_eq!(e.pod_sandbox_status.as_ref().unwrap().id, pod);
            seen.push(e.container_event_type);
        }
    }
    use api::ContainerEventType as T;
    assert_eq!(
        seen,
        vec![
            T::ContainerCreatedEvent as i32,
            T::ContainerStartedEvent as i32,
            T::ContainerStoppedEvent as i32,
            T::ContainerDeletedEvent as i32
        ]
    );
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_kill9_and_are_recovered() {
    let (mut d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/recovery");
    let pod = run_pod(&mut rt, pod_config("recovery", &logs), "").await;
    let long = run_container(
        &mut rt,
        &pod,
        container_config(
            "long",
            &reg.image("busybox"),
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        ),
    )
    .await;
    let short = run_container(
        &mut rt,
        &pod,
        container_config(
            "short",
            &reg.image("busybox"),
            &[
                "sh",
                "-c",
                "read x < /proc/self/fd/0 2>/dev/null; sleep 1; exit 7",
            ],
        ),
    )
    .await;
    let created = create(
        &mut rt,
        &pod,
        container_config("never-started", &reg.image("busybox"), &["true"]),
    )
    .await
    .unwrap();
    let short_pid = verbose_info(&mut rt, &short).await["pid"].as_u64().unwrap();
    let long_pid = verbose_info(&mut rt, &long).await["pid"].as_u64().unwrap();

    d.kill9();
    // While berthd is down, one container exits and the other keeps going.
    eventually(
        "the short container to exit",
        Duration::from_secs(15),
        || (!Path::new(&format!("/proc/{short_pid}")).exists()).then_some(()),
    )
    .await;
    let ticks_before = log_lines(&logs.join("long.log")).len();
    eventually(
        "the long container to keep logging",
        Duration::from_secs(10),
        || (log_lines(&logs.join("long.log")).len() > ticks_before + 2).then_some(()),
    )
    .await;
    assert!(Path::new(&format!("/proc/{long_pid}")).exists());

    d.start_again().await;
    let mut rt = d.runtime().await;
    let pods = list_pods(&mut rt).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].state, api::PodSandboxState::SandboxReady as i32);
    let all = rt
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(all.len(), 3, "nothing lost or duplicated: {all:?}");
    assert_eq!(
        status(&mut rt, &long).await.state,
        api::ContainerState::ContainerRunning as i32
    );
    let s = status(&mut rt, &short).await;
    assert_eq!(s.state, api::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 7);
    assert_eq!(
        status(&mut rt, &created).await.state,
        api::ContainerState::ContainerCreated as i32
    );
    // The recovered container is fully usable.
    assert_eq!(
        exec_out(&mut rt, &long, &["echo", "still here"]).await,
        "still here"
    );
    rt.stop_container(api::StopContainerRequest {
        container_id: long.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    wait_state(&mut rt, &long, api::ContainerState::ContainerExited).await;
    start(&mut rt, &created).await;
    let s = wait_state(&mut rt, &created, api::ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 0);
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_container_log_after_rotation() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/rotate");
    let pod = run_pod(&mut rt, pod_config("rotate", &logs), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config(
            "talker",
            &reg.image("busybox"),
            &["sh", "-c", "while true; do echo line; sleep 0.05; done"],
        ),
    )
    .await;
    let log = logs.join("talker.log");
    eventually("first lines", Duration::from_secs(10), || {
        (!log_lines(&log).is_empty()).then_some(())
    })
    .await;
    std::fs::rename(&log, logs.join("talker.log.1")).unwrap();
    rt.reopen_container_log(api::ReopenContainerLogRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("reopen log");
    eventually("lines in the new file", Duration::from_secs(10), || {
        (log_lines(&log).len() >= 2).then_some(())
    })
    .await;
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_leaves_nothing() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let missing = "0".repeat(64);
    let e = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: missing.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&missing));
    // Idempotent calls on missing objects succeed.
    teardown(&mut rt, &missing).await;
    rt.stop_container(api::StopContainerRequest {
        container_id: missing.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: missing.clone(),
    })
    .await
    .unwrap();
    let e = rt
        .start_container(api::StartContainerRequest {
            container_id: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = create(
        &mut rt,
        &missing,
        container_config("x", &reg.image("busybox"), &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Unknown runtime handler.
    let logs = d.dir().join("logs/bad");
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config("bad", &logs)),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("kata"), "{}", e.message());

    // A name in use names its holder.
    let pod = run_pod(&mut rt, pod_config("bad", &logs), "").await;
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config("bad", &logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains(&pod), "{}", e.message());
    let c1 = create(
        &mut rt,
        &pod,
        container_config("dup", &reg.image("busybox"), &["sleep", "60"]),
    )
    .await
    .unwrap();
    let e = create(
        &mut rt,
        &pod,
        container_config("dup", &reg.image("busybox"), &["sleep", "60"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains(&c1), "{}", e.message());

    // An image that is not present, a command that does not exist.
    let e = create(
        &mut rt,
        &pod,
        container_config("noimg", "127.0.0.1:1/nothing:here", &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("127.0.0.1:1/nothing:here"),
        "{}",
        e.message()
    );
    let e = create(
        &mut rt,
        &pod,
        container_config("nocmd", &reg.image("busybox"), &["/no/such/binary"]),
    )
    .await;
    if let Ok(id) = &e {
        // crun and runc report a missing binary at start, not at create.
        let err = rt
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await;
        assert!(err.is_err(), "starting a missing binary must fail");
        rt.remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    // Starting twice is refused.
    start(&mut rt, &c1).await;
    let e = rt
        .start_container(api::StartContainerRequest {
            container_id: c1.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // A stopped sandbox takes no new containers.
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        status(&mut rt, &c1).await.state,
        api::ContainerState::ContainerExited as i32
    );
    let e = create(
        &mut rt,
        &pod,
        container_config("late", &reg.image("busybox"), &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not ready"), "{}", e.message());

    // Only the one good container exists; nothing half-made on disk.
    let all = rt
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(all.len(), 1, "{all:?}");
    let on_disk = std::fs::read_dir(d.root.join("containers"))
        .unwrap()
        .count();
    assert_eq!(on_disk, 1);
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kills_ttys_and_devices() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/misc");
    let pod = run_pod(&mut rt, pod_config("misc", &logs), "").await;

    // dd allocates a 64 MiB buffer under a 16 MiB limit: the OOM killer.
    let mut hog = container_config(
        "hog",
        &reg.image("busybox"),
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    hog.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = run_container(&mut rt, &pod, hog).await;
    let s = wait_state(&mut rt, &hog, api::ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert_eq!(s.reason, "OOMKilled");

    // A TTY: the monitor holds the pty master and logs it as stdout.
    let mut tty = container_config(
        "tty",
        &reg.image("busybox"),
        &["sh", "-c", "test -t 1 && echo is-a-tty"],
    );
    tty.tty = true;
    let tty = run_container(&mut rt, &pod, tty).await;
    wait_state(&mut rt, &tty, api::ContainerState::ContainerExited).await;
    let lines = eventually("the tty line", Duration::from_secs(5), || {
        let l = log_lines(&logs.join("tty.log"));
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(lines[0].0, "stdout");
    assert_eq!(lines[0].2.trim_end_matches('\r'), "is-a-tty");

    // A host device under another name.
    let mut dev = container_config("dev", &reg.image("busybox"), &["sleep", "3600"]);
    dev.devices = vec![api::Device {
        container_path: "/dev/xzero".into(),
        host_path: "/dev/zero".into(),
        permissions: "rwm".into(),
    }];
    let dev = run_container(&mut rt, &pod, dev).await;
    assert_eq!(
        exec_out(&mut rt, &dev, &["sh", "-c", "head -c 5 /dev/xzero | wc -c"]).await,
        "5"
    );
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_in_use_is_not_removed() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = tempfile::tempdir().unwrap();
    let pod = run_pod(&mut rt, pod_config("inuse", logs.path()), "").await;
    let ctr = create(
        &mut rt,
        &pod,
        container_config("c", &reg.image("busybox"), &["sleep", "30"]),
    )
    .await
    .unwrap();
    let mut ic = d.images().await;
    let spec = || {
        Some(api::ImageSpec {
            image: reg.image("busybox"),
            ..Default::default()
        })
    };
    let e = ic
        .remove_image(api::RemoveImageRequest { image: spec() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains(&format!("in use by container {ctr}")),
        "{}",
        e.message()
    );
    rt.remove_container(api::RemoveContainerRequest { container_id: ctr })
        .await
        .unwrap();
    ic.remove_image(api::RemoveImageRequest { image: spec() })
        .await
        .unwrap();
    let st = ic
        .image_status(api::ImageStatusRequest {
            image: spec(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());
    teardown(&mut rt, &pod).await;
}
