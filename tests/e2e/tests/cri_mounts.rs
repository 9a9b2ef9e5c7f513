//! CRI mounts and identities (issue 12), through berthd's real CRI socket
//! on both runtime handlers: recursive read-only mounts, which berth makes
//! itself since crun 1.8 and runc 1.1 know no `rro` option, and the
//! SupplementalGroupsPolicy with the identity ContainerStatus reports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{eventually, mounts_under, TestDaemon};
use k8s_cri::v1 as api;
use tonic::Code;

const HANDLERS: [&str; 2] = ["", "runc"];

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host directory with a tmpfs mounted on its `tmpfs` subdirectory, as
/// critest makes it; the tmpfs goes (lazily) before the directory does.
struct HostTree {
    dir: tempfile::TempDir,
}

impl HostTree {
    fn new() -> HostTree {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "needs root: run the suite as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-rro-host-")
            .tempdir()
            .unwrap();
        let sub = dir.path().join("tmpfs");
        std::fs::create_dir(&sub).unwrap();
        run("mount", &["-t", "tmpfs", "none", sub.to_str().unwrap()]);
        HostTree { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("tmpfs"))
            .status();
    }
}

fn bind(host: &Path, dest: &str, readonly: bool, rro: bool) -> api::Mount {
    api::Mount {
        host_path: host.display().to_string(),
        container_path: dest.to_string(),
        readonly,
        recursive_read_only: rro,
        ..Default::default()
    }
}

async fn status_response(rt: &mut Runtime) -> api::StatusResponse {
    rt.status(api::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner()
}

/// Staging mounts berth holds under its state dir (only while a container
/// is being created).
fn staging_mounts(d: &TestDaemon) -> Vec<String> {
    mounts_under(&d.state_dir)
        .into_iter()
        .filter(|m| m.contains("/rro"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_make_submounts_read_only_on_both_handlers() {
    let host = HostTree::new();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let report = status_response(&mut rt).await;
    let names: Vec<&str> = report
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    for h in HANDLERS {
        assert!(names.contains(&h), "handler {h:?} not in {names:?}");
    }
    for h in &report.runtime_handlers {
        assert!(
            h.features.is_some_and(|f| f.recursive_read_only_mounts),
            "handler {:?} does not advertise recursive read-only mounts",
            h.name
        );
    }

    for handler in HANDLERS {
        let name = format!(
            "rro-{}",
            if handler.is_empty() {
                "default"
            } else {
                handler
            }
        );
        let pod = run_pod(&mut rt, pod_config(&name, &d.dir().join("logs")), handler).await;
        let mut cc = container_config(&name, &reg.image("busybox"), &["sleep", "3600"]);
        cc.mounts = vec![
            bind(host.path(), "/rro", true, true),
            bind(host.path(), "/ro", true, false),
        ];
        let id = run_container(&mut rt, &pod, cc).await;
        assert_eq!(staging_mounts(&d), Vec::<String>::new(), "{handler:?}");

        // Recursive: the tmpfs under the mount is read-only too.
        let r = exec(&mut rt, &id, &["sh", "-c", "touch /rro/tmpfs/f 2>&1"]).await;
        let out = String::from_utf8_lossy(&r.stdout);
        assert_ne!(r.exit_code, 0, "{handler:?}: wrote through /rro: {out}");
        assert!(out.contains("Read-only file system"), "{handler:?}: {out}");
        let r = exec(&mut rt, &id, &["sh", "-c", "touch /rro/top 2>&1"]).await;
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("Read-only file system"),
            "{handler:?}: {r:?}"
        );
        // The control: plain read-only leaves the submount writable.
        let r = exec(&mut rt, &id, &["sh", "-c", "touch /ro/top 2>&1"]).await;
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("Read-only file system"),
            "{handler:?}: {r:?}"
        );
        let file = format!("from-{name}");
        exec_out(&mut rt, &id, &["touch", &format!("/ro/tmpfs/{file}")]).await;
        assert!(host.path().join("tmpfs").join(&file).exists());
        // What the host wrote shows through the read-only copy.
        assert_eq!(
            exec_out(&mut rt, &id, &["ls", "/rro/tmpfs"]).await,
            std::fs::read_dir(host.path().join("tmpfs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("\n")
        );

        let s = status(&mut rt, &id).await;
        let rro: Vec<(&str, bool)> = s
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.recursive_read_only))
            .collect();
        assert!(
            rro.contains(&("/rro", true)) && rro.contains(&("/ro", false)),
            "{rro:?}"
        );
        teardown(&mut rt, &pod).await;
    }
    assert_eq!(mounts_under(d.dir()), Vec::<String>::new());
    // The host's own tmpfs is still mounted and writable.
    std::fs::write(host.path().join("tmpfs/after"), "x").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_recursive_read_only_mounts_are_refused_and_leave_nothing() {
    let host = HostTree::new();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("rro-bad", &d.dir().join("logs")), "").await;
    let image = reg.image("busybox");
    let refused = |m: api::Mount| {
        let mut cc = container_config("rro-bad", &image, &["sleep", "3600"]);
        cc.mounts = vec![m];
        cc
    };

    let e = create(
        &mut rt,
        &pod,
        refused(bind(host.path(), "/mnt", false, true)),
    )
    .await
    .expect_err("recursive_read_only without readonly");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("mount /mnt: recursive_read_only needs readonly to be set too"),
        "{e:?}"
    );
    for (p, name) in [
        (
            api::MountPropagation::PropagationHostToContainer,
            "HostToContainer",
        ),
        (
            api::MountPropagation::PropagationBidirectional,
            "Bidirectional",
        ),
    ] {
        let mut m = bind(host.path(), "/mnt", true, true);
        m.propagation = p as i32;
        let e = create(&mut rt, &pod, refused(m))
            .await
            .expect_err("recursive_read_only with propagation");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(&format!(
                "mount /mnt: recursive_read_only needs private propagation, not {name}"
            )),
            "{e:?}"
        );
    }

    // A create that fails after the mount was staged (the user is not in
    // the image) takes the staging mount with it.
    let mut cc = refused(bind(host.path(), "/mnt", true, true));
    cc.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create(&mut rt, &pod, cc).await.expect_err("unknown user");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("\"ghost\""), "{e:?}");
    assert_eq!(staging_mounts(&d), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(d.state_dir.join("c"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(list_containers(&mut rt).await.is_empty());
    teardown(&mut rt, &pod).await;
}

/// A staging mount left by a crash (berthd killed between the mount and
/// the runtime's create): the next start unmounts it before removing the
/// container's directories, so nothing is deleted through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_mount_left_by_a_crash_is_unmounted_at_start() {
    let host = HostTree::new();
    std::fs::write(host.path().join("canary"), "keep me").unwrap();
    let mut d = TestDaemon::start().await;
    d.stop();
    let staged: PathBuf = d.state_dir.join(format!("c/{}/rro/0", "ab".repeat(32)));
    std::fs::create_dir_all(&staged).unwrap();
    let staged_s = staged.to_str().unwrap();
    run(
        "mount",
        &["--bind", host.path().to_str().unwrap(), staged_s],
    );
    run("mount", &["-o", "remount,bind,ro", staged_s]);
    assert_eq!(staging_mounts(&d).len(), 1);

    d.start_again().await;
    eventually(
        "the leftover staging mount to go",
        Duration::from_secs(10),
        || staging_mounts(&d).is_empty().then_some(()),
    )
    .await;
    assert!(!staged.exists());
    assert_eq!(
        std::fs::read_to_string(host.path().join("canary")).unwrap(),
        "keep me"
    );
    assert!(host.path().join("tmpfs").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policy_merge_and_strict_on_both_handlers() {
    let (d, reg, mut rt) = daemon_with(&["groups"]).await;
    let features = status_response(&mut rt).await.features;
    assert!(
        features.is_some_and(|f| f.supplemental_groups_policy),
        "{features:?}"
    );

    for handler in HANDLERS {
        let name = format!(
            "groups-{}",
            if handler.is_empty() {
                "default"
            } else {
                handler
            }
        );
        let logs = d.dir().join("logs").join(&name);
        let pod = run_pod(&mut rt, pod_config(&name, &logs), handler).await;
        // The image's /etc/group lists app (1000) in group 50000.
        for (policy, want) in [
            (
                api::SupplementalGroupsPolicy::Merge,
                vec![1000, 1234, 50000],
            ),
            (api::SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
        ] {
            let ctr = format!("{}-{}", name, policy.as_str_name().to_lowercase());
            let mut cc = container_config(
                &ctr,
                &reg.image("groups"),
                &["sh", "-c", "id -G; sleep 3600"],
            );
            cc.linux = Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    run_as_user: Some(api::Int64Value { value: 1000 }),
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = run_container(&mut rt, &pod, cc).await;
            let line = want
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ");

            let s = status(&mut rt, &id).await;
            assert_eq!(
                s.user,
                Some(api::ContainerUser {
                    linux: Some(api::LinuxContainerUser {
                        uid: 1000,
                        gid: 1000,
                        supplemental_groups: want.clone(),
                    }),
                }),
                "{handler:?} {policy:?}"
            );
            assert_eq!(exec_out(&mut rt, &id, &["id", "-G"]).await, line);
            let log = logs.join(format!("{ctr}.log"));
            let logged = eventually("the id -G line in the log", Duration::from_secs(10), || {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|t| t.ends_with('\n'))
            })
            .await;
            assert!(
                logged.trim_end().ends_with(&format!(" stdout F {line}")),
                "{handler:?} {policy:?}: {logged:?}"
            );
        }
        teardown(&mut rt, &pod).await;
    }
}
