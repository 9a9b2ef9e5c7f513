//! Security regressions (issue 11), each through berthd's real CRI socket:
//! what a local user can reach, what a cancelled call leaves, and how
//! berthd answers input that would reach node files, /proc/sys or the
//! runtime.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use tonic::Code;

/// Runs `script` as the unprivileged user 65534 (nobody); returns
/// (exit success, stdout + stderr).
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The RunPodSandbox request's code and message.
async fn run_pod_err(rt: &mut Runtime, config: api::PodSandboxConfig) -> tonic::Status {
    rt.run_pod_sandbox(api::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .expect_err("RunPodSandbox should have been refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_layers_and_container_configs_are_closed_to_other_host_users() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    // The test's temp dir is 0700 itself: open it so that only berthd's own
    // modes stand between a local user and its files.
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = d.dir().join("logs");
    let pod = run_pod(&mut rt, pod_config("closed", &logs), "").await;
    let mut cc = container_config("closed", &reg.image("busybox"), &["sleep", "3600"]);
    cc.envs = vec![api::KeyValue {
        key: "DB_PASSWORD".into(),
        value: "s3cret-value".into(),
    }];
    let ctr = run_container(&mut rt, &pod, cc).await;

    let root = d.root.clone();
    let state = d.state_dir.clone();
    let busybox: PathBuf = std::fs::read_dir(root.join("images/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs/bin/busybox"))
        .find(|p| p.exists())
        .expect("a snapshot holding /bin/busybox");
    let config_json = root.join(format!("containers/{ctr}/bundle/config.json"));
    assert!(std::fs::read_to_string(&config_json)
        .unwrap()
        .contains("s3cret-value"));

    // The modes, as the threat model promises them.
    assert_eq!(mode(&root), 0o711);
    assert_eq!(mode(&state), 0o711);
    for dir in [
        root.join("images"),
        root.join("containers"),
        root.join("pods"),
        state.join("c"),
        state.join("pods"),
        state.join("runtimes"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&config_json), 0o600);
    assert_eq!(mode(&root.join("meta.redb")), 0o600);

    // A real lookup by an unprivileged user: every layer file and the
    // container's config (with its env) are out of reach, whatever the
    // user tries; root can read them.
    for path in [&busybox, &config_json] {
        let (ok, out) = as_nobody(&format!("cat '{}' > /dev/null", path.display()));
        assert!(!ok, "nobody read {}", path.display());
        assert!(out.contains("Permission denied"), "{out}");
    }
    let (ok, out) = as_nobody(&format!("'{}' true", busybox.display()));
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (_, found) = as_nobody(&format!(
        "find '{}' '{}' 2>/dev/null; grep -rs s3cret-value '{}' '{}'",
        root.display(),
        state.display(),
        root.display(),
        state.display()
    ));
    assert!(!found.contains("s3cret-value"), "{found}");
    assert!(!found.contains("/snapshots/"), "{found}");
    assert!(!found.contains("/bundle"), "{found}");
    // The 0711 roots still let a group member reach the CRI socket.
    assert_eq!(mode(&d.socket), 0o660);
    teardown(&mut rt, &pod).await;
}

/// A runtime handler whose `run` (the start) takes a second longer than
/// runc's: its script, and the config table naming it.
fn slow_handler(dir: &Path) -> String {
    let script = dir.join("slow-runc");
    std::fs::write(
        &script,
        "#!/bin/sh\n# run is slow: a client deadline fires mid-start\ncase \" $* \" in *\" run \"*) sleep 1 ;; esac\nexec runc \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("[runtimes.slow]\nprogram = \"{}\"\n", script.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cut_short_by_the_client_deadline_is_completed_and_recorded() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let scripts = tempfile::tempdir().unwrap();
    let d = TestDaemon::builder()
        .config_toml(&slow_handler(scripts.path()))
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    let logs = d.dir().join("logs");
    let pod = run_pod(&mut rt, pod_config("cut", &logs), "slow").await;
    let id = create(
        &mut rt,
        &pod,
        container_config("cut", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await
    .expect("create");

    let mut req = tonic::Request::new(api::StartContainerRequest {
        container_id: id.clone(),
    });
    req.set_timeout(Duration::from_millis(300));
    let e = rt
        .start_container(req)
        .await
        .expect_err("the deadline fires first");
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    // The start goes on without its caller and is recorded: kubelet then
    // finds the container running, and a second start is refused.
    wait_state(&mut rt, &id, api::ContainerState::ContainerRunning).await;
    let again = rt
        .start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("it runs already");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let s = status(&mut rt, &id).await;
    assert!(s.started_at > 0, "{s:?}");
    teardown(&mut rt, &pod).await;
    // The leak checks on drop: no monitor, cgroup, mount or directory left.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pod_sandbox_cut_short_at_any_point_leaves_a_recorded_pod_or_nothing() {
    let d = TestDaemon::start().await;
    let mut rt = d.runtime().await;
    let logs = d.dir().join("logs");
    for (i, ms) in [1u64, 2, 3, 5, 8, 13, 21].into_iter().enumerate() {
        let name = format!("cut{i}");
        let mut req = tonic::Request::new(api::RunPodSandboxRequest {
            config: Some(pod_config(&name, &logs)),
            runtime_handler: String::new(),
        });
        req.set_timeout(Duration::from_millis(ms));
        let first = rt.run_pod_sandbox(req).await;
        // Whatever happened, the retry either makes the pod or finds it
        // recorded: never a name reserved for an id nobody lists.
        let id = match first {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(_) => {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let retry = rt
                        .run_pod_sandbox(api::RunPodSandboxRequest {
                            config: Some(pod_config(&name, &logs)),
                            runtime_handler: String::new(),
                        })
                        .await;
                    match retry {
                        Ok(r) => break r.into_inner().pod_sandbox_id,
                        Err(e) if e.code() == Code::AlreadyExists => {
                            let pods = list_pods(&mut rt).await;
                            if let Some(p) = pods.iter().find(|p| e.message().contains(&p.id)) {
                                break p.id.clone();
                            }
                            assert!(
                                std::time::Instant::now() < deadline,
                                "{name}: {e:?} names a pod that is never listed: {pods:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("{name}: {e:?}"),
                    }
                }
            }
        };
        teardown(&mut rt, &id).await;
    }
    assert!(list_pods(&mut rt).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_reach_node_files_are_checked_before_anything_is_made() {
    let d = TestDaemon::start().await;
    let mut rt = d.runtime().await;
    let logs = d.dir().join("logs");
    let with = |f: &dyn Fn(&mut api::PodSandboxConfig)| {
        let mut pc = pod_config("checked", &logs);
        f(&mut pc);
        pc
    };
    let sysctl = |k: &str| {
        let k = k.to_string();
        move |pc: &mut api::PodSandboxConfig| {
            pc.linux.as_mut().unwrap().sysctls = HashMap::from([(k.clone(), "1".to_string())]);
        }
    };
    let cases: Vec<(&str, api::PodSandboxConfig, &str)> = vec![
        (
            "hostname with a newline",
            with(&|pc| pc.hostname = "evil\n10.0.0.1 bank.example".into()),
            "not a valid RFC 1123 name",
        ),
        (
            "dns search with a newline",
            with(&|pc| {
                pc.dns_config = Some(api::DnsConfig {
                    searches: vec!["x\nnameserver 6.6.6.6".into()],
                    ..Default::default()
                })
            }),
            "dns search",
        ),
        (
            "dns option with a newline",
            with(&|pc| {
                pc.dns_config = Some(api::DnsConfig {
                    options: vec!["ndots:1\nnameserver 6.6.6.6".into()],
                    ..Default::default()
                })
            }),
            "dns option",
        ),
        (
            "kernel.panic",
            with(&sysctl("kernel.panic")),
            "not namespaced",
        ),
        (
            "a sysctl climbing out of net/",
            with(&sysctl("net/ipv4/../../kernel/panic")),
            "not a valid name",
        ),
        (
            "net.* with the host network",
            host_network(with(&sysctl("net.core.somaxconn"))),
            "network namespace",
        ),
        (
            "a relative log directory",
            with(&|pc| pc.log_directory = "var/log/pods".into()),
            "log_directory",
        ),
        (
            "a log directory climbing out",
            with(&|pc| pc.log_directory = "/var/log/pods/../../etc".into()),
            "log_directory",
        ),
    ];
    for (what, config, says) in cases {
        let e = run_pod_err(&mut rt, config).await;
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains(says), "{what}: {e:?}");
    }
    // A 10 KB hostname is refused with a message short enough for gRPC
    // metadata, which still says what was wrong.
    let e = run_pod_err(&mut rt, with(&|pc| pc.hostname = "a".repeat(10_000))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() < 1024, "{} bytes", e.message().len());
    assert!(e.message().contains("more bytes"), "{}", e.message());
    // Nothing was made by any of them, and the name is still free.
    assert!(list_pods(&mut rt).await.is_empty());
    let pod = run_pod(&mut rt, pod_config("checked", &logs), "").await;

    // Container log paths: NUL and "." are the caller's mistakes.
    for bad in ["a\0b.log", ".", "../escape.log", "dir/"] {
        let mut cc = container_config("logpath", "busybox", &["true"]);
        cc.log_path = bad.into();
        let e = create(&mut rt, &pod, cc).await.expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(e.message().contains("log_path"), "{bad:?}: {e:?}");
    }
    // A NUL in what becomes the runtime's C strings is refused up front.
    let mut cc = container_config("nul", "busybox", &["true"]);
    cc.envs = vec![api::KeyValue {
        key: "A".into(),
        value: "x\0y".into(),
    }];
    let e = create(&mut rt, &pod, cc).await.expect_err("NUL in env");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("NUL"), "{e:?}");
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_sysctls_in_slash_form_reach_the_pod() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs");
    let mut pc = pod_config("sysctl", &logs);
    pc.linux.as_mut().unwrap().sysctls = HashMap::from([(
        "net/ipv4/ip_unprivileged_port_start".to_string(),
        "99".to_string(),
    )]);
    let pod = run_pod(&mut rt, pc, "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("sysctl", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    assert_eq!(
        exec_out(
            &mut rt,
            &ctr,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )
        .await,
        "99"
    );
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_resource_exhausted() {
    let d = TestDaemon::start().await;
    let mut rt = d.runtime().await;
    let mut pc = pod_config("big", &d.dir().join("logs"));
    pc.annotations
        .insert("big".into(), "x".repeat(5 * 1024 * 1024));
    let e = run_pod_err(&mut rt, pc).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("4194304"), "{e:?}");
    assert!(list_pods(&mut rt).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_directories_outside_the_configured_log_root_are_refused() {
    let logs = tempfile::tempdir().unwrap();
    let log_root = logs.path().join("pods");
    let d = TestDaemon::builder()
        .config_toml(&format!("log_root = \"{}\"\n", log_root.display()))
        .start()
        .await;
    let mut rt = d.runtime().await;
    let e = run_pod_err(&mut rt, pod_config("outside", Path::new("/etc"))).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("outside the log root"), "{e:?}");
    let pod = run_pod(
        &mut rt,
        pod_config("inside", &log_root.join("ns_inside_uid")),
        "",
    )
    .await;
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_annotations_reach_the_runtime_spec() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::builder()
        .config_toml(
            "[runtimes.crun]\nallowed_annotations = [\"io.example.allowed\", \"cdi.k8s.io/*\"]\n",
        )
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    let pod = run_pod(
        &mut rt,
        pod_config("annotated", &d.dir().join("logs")),
        "crun",
    )
    .await;
    let mut cc = container_config("annotated", &reg.image("busybox"), &["true"]);
    cc.annotations = HashMap::from([
        ("run.oci.seccomp.receiver".into(), "/tmp/steal.sock".into()),
        ("io.example.allowed".into(), "yes".into()),
        ("cdi.k8s.io/gpu".into(), "vendor.com/gpu=0".into()),
        ("io.example.allowed.not".into(), "no".into()),
    ]);
    let ctr = create(&mut rt, &pod, cc).await.expect("create");
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.root.join(format!("containers/{ctr}/bundle/config.json"))).unwrap(),
    )
    .unwrap();
    let mut keys: Vec<&str> = spec["annotations"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort();
    assert_eq!(keys, ["cdi.k8s.io/gpu", "io.example.allowed"]);
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_leaves_no_host_directory_behind() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("mounts", &d.dir().join("logs")), "").await;
    let fresh = d.dir().join("fresh");
    let mount = |host: &Path, dest: &str| api::Mount {
        container_path: dest.into(),
        host_path: host.display().to_string(),
        ..Default::default()
    };
    // A later mount is invalid.
    let mut cc = container_config("mounts", &reg.image("busybox"), &["true"]);
    cc.mounts = vec![
        mount(&fresh.join("a"), "/a"),
        mount(Path::new("relative/path"), "/b"),
    ];
    let e = create(&mut rt, &pod, cc)
        .await
        .expect_err("relative host path");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        !fresh.exists(),
        "made {} for a refused create",
        fresh.display()
    );
    // The mounts are fine but the create fails later (a Localhost seccomp
    // profile that does not exist): the directory made for it goes again.
    let mut cc = container_config("mounts", &reg.image("busybox"), &["true"]);
    cc.mounts = vec![mount(&fresh.join("a"), "/a")];
    cc.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            seccomp: Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::Localhost as i32,
                localhost_ref: d.dir().join("no-such-profile.json").display().to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create(&mut rt, &pod, cc)
        .await
        .expect_err("missing profile");
    assert!(e.message().contains("no-such-profile"), "{e:?}");
    assert!(
        !fresh.exists(),
        "made {} for a failed create",
        fresh.display()
    );
    teardown(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_cut_short_by_the_client_deadline_leave_no_work_behind() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    let mut ic = d.images().await;
    let mut cut = 0;
    for ms in [1u64, 3, 10, 30, 100] {
        let mut req = tonic::Request::new(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: reg.image("busybox"),
                ..Default::default()
            }),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(ms));
        match ic.pull_image(req).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
                    "{e:?}"
                );
                cut += 1;
            }
        }
    }
    assert!(cut > 0, "no pull was cut short: the test proves nothing");
    // Whatever was cut, a full pull then works, and no work in progress is
    // left in the image store once things settle.
    pull(&d, &reg, &["busybox"]).await;
    let tmp = d.root.join("images/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left in {}: {left:?}",
            tmp.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_limits_from_the_config_stop_a_pull_that_unpacks_too_much() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    // busybox-static alone unpacks to about 2 MB: a 64 KiB layer cap stops it.
    let d = TestDaemon::builder()
        .config_toml("[image_limits]\nmax_layer_bytes = 65536\n")
        .start()
        .await;
    let mut ic = d.images().await;
    let e = ic
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: reg.image("busybox"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("the layer is over the cap");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limit"), "{e:?}");
    let images = ic
        .list_images(api::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(images.is_empty(), "{images:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_streaming_requests_cannot_starve_berthd() {
    use std::io::{Read, Write};
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("flood", &d.dir().join("logs")), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("flood", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    let (addr, _) = exec_true_endpoint(&mut rt, &ctr).await;
    // More half-sent requests than the server serves at once (256), all
    // within the header-read timeout (10 s).
    let mut conns: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).expect("connect");
            c.write_all(b"GET /exec/x HTTP/1.1\r\nHost: a\r\n").unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect();
    // Those past the cap are answered (503) or closed at once.
    let answered = |c: &mut std::net::TcpStream| {
        let mut buf = [0u8; 64];
        !matches!(c.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = vec![false; conns.len()];
    while refused.iter().filter(|r| **r).count() < 300 - 256 {
        for (c, r) in conns.iter_mut().zip(refused.iter_mut()) {
            *r = *r || answered(c);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 300 half-sent requests were refused",
            refused.iter().filter(|r| **r).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held: Vec<std::net::TcpStream> = conns
        .into_iter()
        .zip(refused)
        .filter(|(_, r)| !r)
        .map(|(c, _)| c)
        .collect();
    assert!(held.len() <= 256, "{} connections held", held.len());
    // The CRI socket still answers, and so does the container.
    rt.version(api::VersionRequest::default())
        .await
        .expect("Version during the flood");
    assert_eq!(exec_out(&mut rt, &ctr, &["echo", "alive"]).await, "alive");
    // The silent ones are closed by the header-read timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for mut c in held {
        while !answered(&mut c) {
            assert!(
                std::time::Instant::now() < deadline,
                "a half-sent request was never closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    teardown(&mut rt, &pod).await;
}
