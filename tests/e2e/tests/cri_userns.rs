//! Pods with a user namespace (KEP-127, CRI `userns_options`) through
//! berthd's real CRI socket, on both handlers: the pod's root is root
//! inside and an unprivileged id on the host, the image and its volumes
//! are usable through idmapped views, bad requests are refused, and
//! nothing is left behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_e2e::*;
use berth_testkit::TestDaemon;
use k8s_cri::v1 as api;
use tonic::Code;

const HANDLERS: [&str; 2] = ["", "runc"];

fn require_root() {
    // SAFETY: plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: run the suite as root"
    );
}

fn mapping(container_id: u32, host_id: u32, length: u32) -> api::IdMapping {
    api::IdMapping {
        container_id,
        host_id,
        length,
    }
}

/// A pod whose user namespace maps container ids 0..65536 to `host_id`...
fn userns_pod(name: &str, logs: &Path, host_id: u32) -> api::PodSandboxConfig {
    with_userns(
        pod_config(name, logs),
        api::UserNamespace {
            mode: api::NamespaceMode::Pod as i32,
            uids: vec![mapping(0, host_id, 65_536)],
            gids: vec![mapping(0, host_id, 65_536)],
        },
    )
}

fn with_userns(
    mut pod: api::PodSandboxConfig,
    userns: api::UserNamespace,
) -> api::PodSandboxConfig {
    let linux = pod.linux.get_or_insert_with(Default::default);
    let sec = linux.security_context.get_or_insert_with(Default::default);
    let ns = sec.namespace_options.get_or_insert_with(Default::default);
    ns.userns_options = Some(userns);
    pod
}

/// What Status says of each handler's user namespace support.
async fn userns_features(rt: &mut Runtime) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| (h.name, h.features.expect("features").user_namespaces))
        .collect();
    out.sort();
    out
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// The real uid of host process `pid`.
fn host_uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_user_namespace_maps_its_root_on_both_handlers() {
    require_root();
    let (d, reg, mut rt) = daemon_with(&["layered"]).await;
    let image = reg.image("layered");

    // With the test's temp dir closed to others, the pods' roots could not
    // reach their rootfs under <state>/u, and Status says so.
    let all = |on: bool| ["", "crun", "runc"].map(|h| (h.to_string(), on)).to_vec();
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(userns_features(&mut rt).await, all(false));
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(userns_pod("closed", &d.dir().join("logs"), 100_000)),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a pod whose root cannot reach its rootfs");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not searchable by others"), "{e:?}");
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(userns_features(&mut rt).await, all(true));

    let volume = d.dir().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("from-host"), "host\n").unwrap();
    for (i, handler) in HANDLERS.into_iter().enumerate() {
        let host_id = 100_000 + 100_000 * i as u32;
        let name = format!("userns-{i}");
        let pod = run_pod(
            &mut rt,
            userns_pod(&name, &d.dir().join("logs"), host_id),
            handler,
        )
        .await;

        // PodSandboxStatus reports the maps.
        let status = pod_status(&mut rt, &pod).await;
        let userns = status
            .linux
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .and_then(|o| o.userns_options)
            .expect("userns_options in the pod's status");
        assert_eq!(userns.mode, api::NamespaceMode::Pod as i32);
        assert_eq!(userns.uids, vec![mapping(0, host_id, 65_536)]);
        assert_eq!(userns.gids, vec![mapping(0, host_id, 65_536)]);

        let mut cc = container_config(&name, &image, &["sleep", "3600"]);
        cc.mounts = vec![api::Mount {
            container_path: "/data".into(),
            host_path: volume.display().to_string(),
            ..Default::default()
        }];
        let ctr = run_container(&mut rt, &pod, cc).await;
        let ctx = format!("handler {handler:?}");

        // The pod's network namespace (the pod's user namespace owns it)
        // is wired by the bridge like any other.
        let ip = pod_ip(&mut rt, &pod).await;
        assert!(!ip.is_empty(), "{ctx}: no pod IP");
        let addrs = exec_out(&mut rt, &ctr, &["ip", "-o", "addr", "show", "eth0"]).await;
        assert!(addrs.contains(&format!("inet {ip}/")), "{ctx}: {addrs}");

        // Root inside, host_id outside.
        let uid_map = exec_out(&mut rt, &ctr, &["cat", "/proc/self/uid_map"]).await;
        assert_eq!(words(&uid_map), format!("0 {host_id} 65536"), "{ctx}");
        let gid_map = exec_out(&mut rt, &ctr, &["cat", "/proc/self/gid_map"]).await;
        assert_eq!(words(&gid_map), format!("0 {host_id} 65536"), "{ctx}");
        assert_eq!(exec_out(&mut rt, &ctr, &["id", "-u"]).await, "0", "{ctx}");
        let pid = verbose_info(&mut rt, &ctr).await["pid"]
            .as_u64()
            .expect("the container's pid");
        assert_eq!(host_uid_of(pid as u32), host_id, "{ctx}: host uid");

        // The image's files (three layers) are root's inside: idmapped.
        for path in ["/", "/bin/busybox", "/etc/passwd"] {
            let out = exec_out(&mut rt, &ctr, &["stat", "-c", "%u:%g", path]).await;
            assert_eq!(out, "0:0", "{ctx}: owner of {path}");
        }
        // What root writes is owned by host_id in the writable layer.
        exec_out(
            &mut rt,
            &ctr,
            &["sh", "-c", "echo hi > /made-by-root && mkdir /tmp/d"],
        )
        .await;
        let upper = d.root.join(format!("containers/{ctr}/upper"));
        assert_eq!(
            owner(&upper.join("made-by-root")),
            (host_id, host_id),
            "{ctx}"
        );
        assert_eq!(owner(&upper.join("tmp/d")), (host_id, host_id), "{ctx}");

        // The volume: the host's root-owned files are root's inside, and
        // what the pod's root writes there is the host's root's.
        let out = exec_out(&mut rt, &ctr, &["stat", "-c", "%u:%g", "/data/from-host"]).await;
        assert_eq!(out, "0:0", "{ctx}");
        let made = format!("/data/from-pod-{i}");
        exec_out(&mut rt, &ctr, &["sh", "-c", &format!("echo pod > {made}")]).await;
        assert_eq!(
            owner(&volume.join(format!("from-pod-{i}"))),
            (0, 0),
            "{ctx}"
        );

        // runAsUser is the id inside; on the host it is the mapped one.
        let mut cc = container_config(
            &format!("{name}-app"),
            &image,
            &["sh", "-c", "touch /tmp/by-app && exec sleep 3600"],
        );
        cc.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                run_as_user: Some(api::Int64Value { value: 1000 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let app = run_container(&mut rt, &pod, cc).await;
        assert_eq!(
            exec_out(&mut rt, &app, &["id", "-u"]).await,
            "1000",
            "{ctx}"
        );
        let app_upper = d.root.join(format!("containers/{app}/upper"));
        let file = app_upper.join("tmp/by-app");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{ctx}: /tmp/by-app never made"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(owner(&file).0, host_id + 1000, "{ctx}");

        // An id the pod's user namespace does not map is refused up front.
        let mut cc = container_config(&format!("{name}-unmapped"), &image, &["true"]);
        cc.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                run_as_user: Some(api::Int64Value { value: 70_000 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = create(&mut rt, &pod, cc).await.expect_err("unmapped uid");
        assert_eq!(e.code(), Code::InvalidArgument, "{ctx}: {e:?}");
        assert!(
            e.message()
                .contains("user 70000 is not mapped in the pod's user namespace"),
            "{ctx}: {e:?}"
        );

        // A container must not ask for another user namespace than its pod's.
        let mut cc = container_config(&format!("{name}-other"), &image, &["true"]);
        cc.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    userns_options: Some(api::UserNamespace {
                        mode: api::NamespaceMode::Pod as i32,
                        uids: vec![mapping(0, 900_000, 65_536)],
                        gids: vec![mapping(0, 900_000, 65_536)],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = create(&mut rt, &pod, cc).await.expect_err("another userns");
        assert_eq!(e.code(), Code::InvalidArgument, "{ctx}: {e:?}");
        assert!(
            e.message().contains("user namespace options differ"),
            "{ctx}: {e:?}"
        );

        teardown(&mut rt, &pod).await;
        let left: Vec<_> = std::fs::read_dir(d.state_dir.join("u"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{ctx}: left in <state>/u: {left:?}");
    }
    assert_eq!(
        std::fs::read_to_string(volume.join("from-host")).unwrap(),
        "host\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_namespace_requests_are_invalid_arguments_and_make_nothing() {
    require_root();
    let d = TestDaemon::start().await;
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut rt = d.runtime().await;
    let logs = d.dir().join("logs");
    let pod_mode = api::NamespaceMode::Pod as i32;
    let userns = |uids: Vec<api::IdMapping>, gids: Vec<api::IdMapping>| api::UserNamespace {
        mode: pod_mode,
        uids,
        gids,
    };
    let good = || vec![mapping(0, 100_000, 65_536)];
    let cases: Vec<(api::PodSandboxConfig, &str)> = vec![
        (
            with_userns(
                pod_config("len0", &logs),
                userns(vec![mapping(0, 100_000, 0)], good()),
            ),
            "uid mapping (container 0 host 100000 length 0): length must be at least 1",
        ),
        (
            with_userns(
                pod_config("two", &logs),
                userns(
                    vec![mapping(0, 100_000, 65_536), mapping(0, 300_000, 65_536)],
                    good(),
                ),
            ),
            "2 uid mappings given; exactly one is supported",
        ),
        (
            with_userns(
                pod_config("not0", &logs),
                userns(good(), vec![mapping(1, 100_000, 65_536)]),
            ),
            "gid mapping (container 1 host 100000 length 65536): must start at container id 0",
        ),
        (
            with_userns(
                pod_config("past", &logs),
                userns(vec![mapping(0, 4_294_967_000, 65_536)], good()),
            ),
            "runs past the last host id",
        ),
        (
            with_userns(pod_config("nomaps", &logs), userns(vec![], vec![])),
            "0 uid mappings given",
        ),
        (
            with_userns(
                pod_config("container", &logs),
                api::UserNamespace {
                    mode: api::NamespaceMode::Container as i32,
                    ..Default::default()
                },
            ),
            "user namespace mode CONTAINER is not supported",
        ),
        (
            with_userns(
                pod_config("target", &logs),
                api::UserNamespace {
                    mode: api::NamespaceMode::Target as i32,
                    ..Default::default()
                },
            ),
            "user namespace mode TARGET is not supported",
        ),
        (
            host_network(userns_pod("hostnet", &logs, 100_000)),
            "cannot use the node's network namespace",
        ),
    ];
    for handler in HANDLERS {
        for (config, want) in &cases {
            let e = rt
                .run_pod_sandbox(api::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: handler.to_string(),
                })
                .await
                .expect_err(want);
            assert_eq!(e.code(), Code::InvalidArgument, "{want}: {e:?}");
            assert!(e.message().contains(want), "want {want:?}: {e:?}");
        }
    }
    assert!(list_pods(&mut rt).await.is_empty());
    for dir in [d.root.join("pods"), d.state_dir.join("pods")] {
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "{}",
            dir.display()
        );
    }

    // NODE is the node's user namespace, as without options.
    let reg = berth_testkit::TestRegistry::start();
    reg.push(&["busybox"]);
    pull(&d, &reg, &["busybox"]).await;
    for handler in HANDLERS {
        let config = with_userns(
            pod_config(&format!("node{}", handler.len()), &logs),
            api::UserNamespace {
                mode: api::NamespaceMode::Node as i32,
                ..Default::default()
            },
        );
        let pod = run_pod(&mut rt, config, handler).await;
        let ctr = run_container(
            &mut rt,
            &pod,
            container_config("node", &reg.image("busybox"), &["sleep", "3600"]),
        )
        .await;
        let uid_map = exec_out(&mut rt, &ctr, &["cat", "/proc/self/uid_map"]).await;
        assert_eq!(
            words(&uid_map),
            words(&std::fs::read_to_string("/proc/self/uid_map").unwrap())
        );
        teardown(&mut rt, &pod).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_userns_pod_outlives_a_berthd_crash_and_is_removed_cleanly() {
    require_root();
    let (mut d, reg, mut rt) = daemon_with(&["busybox"]).await;
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let pod = run_pod(
        &mut rt,
        userns_pod("crash", &d.dir().join("logs"), 400_000),
        "runc",
    )
    .await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("crash", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    d.kill9();
    d.start_again().await;
    let mut rt = d.runtime().await;
    let uid_map = exec_out(&mut rt, &ctr, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(words(&uid_map), "0 400000 65536");
    teardown(&mut rt, &pod).await;
    // The testkit's leak check on drop: no mount (rootfs, views, pins),
    // no pause process, nothing under the daemon's directories.
}
