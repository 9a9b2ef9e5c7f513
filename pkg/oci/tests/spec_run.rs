//! A spec made by `spec::build` runs under every runtime handler this host
//! offers (runc, and crun through its hybrid-host wrapper): a non-root user
//! from the image's /etc/passwd with its groups, a dropped capability, a
//! read-only rootfs, a read-only bind mount, the environment, a memory
//! limit and the default seccomp profile, each checked from inside the
//! container. `exec_process` is checked with `<runtime> exec --process`.
//! Nothing is left in the cgroup hierarchies afterwards.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_oci::spec::{self, ContainerSpec, ImageDefaults, Mount, Resources, Seccomp, UserRequest};
use berth_oci::{default_handlers, OciRuntime, RuntimeHandler};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const BUSYBOX: &str = "/usr/bin/busybox";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A busybox rootfs with a user `app` (1000, group `app`) who is also in
/// group `extra` (2000).
fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    chmod(dir, 0o755);
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    chmod(&dir.join("bin/busybox"), 0o755);
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    assert!(list.status.success());
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
}

const SCRIPT: &str = r#"
echo "uid=$(id -u)"
echo "groups=$(id -G)"
grep '^Cap' /proc/self/status
grep '^Seccomp:' /proc/self/status
if touch /probe 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi
echo "data=$(cat /data/hello.txt)"
if echo x 2>/dev/null >/data/new; then echo mount=writable; else echo mount=readonly; fi
echo "hostname=$(hostname)"
if unshare -U true 2>/dev/null; then echo unshare=allowed; else echo unshare=denied; fi
echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
env | sort
"#;

fn container_spec(rootfs: &Path, data: &Path, cgroups_path: &str) -> ContainerSpec {
    ContainerSpec {
        rootfs: rootfs.to_path_buf(),
        image: ImageDefaults {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo image cmd".into()],
            env: vec![
                "PATH=/bin".into(),
                "FROM_IMAGE=image".into(),
                "OVERRIDDEN=image".into(),
            ],
            user: "root".into(),
            ..ImageDefaults::default()
        },
        args: vec![SCRIPT.into()],
        env: vec!["FROM_CRI=cri".into(), "OVERRIDDEN=cri".into()],
        user: UserRequest {
            run_as_username: Some("app".into()),
            supplemental_groups: vec![3000],
            ..UserRequest::default()
        },
        mounts: vec![Mount {
            host_path: data.to_path_buf(),
            container_path: "/data".into(),
            readonly: true,
            ..Mount::default()
        }],
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities_drop: vec!["NET_RAW".into()],
        seccomp: Seccomp::RuntimeDefault,
        resources: Resources {
            memory_limit: Some(64 << 20),
            pids_limit: Some(64),
            ..Resources::default()
        },
        cgroups_path: cgroups_path.into(),
        hostname: Some("spec-test".into()),
        ..ContainerSpec::default()
    }
}

fn wait_stopped(runtime: &OciRuntime, id: &str) {
    let start = Instant::now();
    while runtime.state(id).unwrap().status != "stopped" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{id}: never stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `<runtime> exec --process FILE id`, as berth runs it.
fn exec(runtime: &OciRuntime, id: &str, process_file: &Path) -> String {
    let out = runtime
        .exec_command(id, process_file, &process_file.with_extension("pid"), None)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} exec: {}",
        runtime.handler().name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Deletes what the test made even when an assertion fails.
struct Cleanup {
    runtimes: Vec<(OciRuntime, String)>,
    parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (runtime, id) in &self.runtimes {
            let _ = runtime.delete(id, true);
        }
        if let Ok(cgroups) = berth_cgroups::open(Path::new(CGROUP_ROOT)) {
            let _ = cgroups.remove(&format!("/{}", self.parent));
        }
    }
}

fn cgroup_leftovers(name: &str) -> Vec<String> {
    std::fs::read_dir(CGROUP_ROOT)
        .unwrap()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{output}"))
        .trim()
}

fn check_output(name: &str, out: &str) {
    assert_eq!(line(out, "uid="), "1000", "{name}:\n{out}");
    let groups: BTreeSet<&str> = line(out, "groups=").split_whitespace().collect();
    assert_eq!(groups, ["1000", "2000", "3000"].into(), "{name}:\n{out}");
    // Default capabilities without NET_RAW bound the process; a non-root
    // process has none effective or permitted after exec.
    assert_eq!(line(out, "CapBnd:"), "00000000a80405fb", "{name}:\n{out}");
    for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(line(out, set), "0000000000000000", "{name} {set}:\n{out}");
    }
    assert_eq!(
        line(out, "Seccomp:"),
        "2",
        "{name}: seccomp filter mode:\n{out}"
    );
    assert_eq!(line(out, "rootfs="), "readonly", "{name}:\n{out}");
    assert_eq!(line(out, "data="), "from the host", "{name}:\n{out}");
    assert_eq!(line(out, "mount="), "readonly", "{name}:\n{out}");
    assert_eq!(line(out, "hostname="), "spec-test", "{name}:\n{out}");
    // unshare(2) needs CAP_SYS_ADMIN under the default profile.
    assert_eq!(line(out, "unshare="), "denied", "{name}:\n{out}");
    assert_eq!(
        line(out, "memory="),
        (64u64 << 20).to_string(),
        "{name}:\n{out}"
    );
    for var in [
        "PATH=/bin",
        "FROM_IMAGE=image",
        "FROM_CRI=cri",
        "OVERRIDDEN=cri",
        "HOSTNAME=spec-test",
    ] {
        assert!(
            out.lines().any(|l| l == var),
            "{name}: {var} missing:\n{out}"
        );
    }
    assert!(
        !out.lines().any(|l| l == "OVERRIDDEN=image"),
        "{name}:\n{out}"
    );
}

#[test]
fn built_specs_run_under_each_runtime() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} (busybox-static) is not installed");
        return;
    }
    let mode = berth_cgroups::detect(Path::new(CGROUP_ROOT)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "from the host\n").unwrap();
    chmod(work.path(), 0o755);
    chmod(&data, 0o755);

    let handlers: Vec<RuntimeHandler> = default_handlers(mode, &work.path().join("state"))
        .into_iter()
        .filter(|h| !h.name.is_empty())
        .collect();
    assert!(
        handlers.iter().any(|h| h.name == "runc"),
        "runc is installed by hack/install-deps.sh: {handlers:?}"
    );
    let parent = format!("berth-spec-test-{}", std::process::id());
    let mut cleanup = Cleanup {
        runtimes: Vec::new(),
        parent: parent.clone(),
    };

    for handler in handlers {
        let name = handler.name.clone();
        let runtime = OciRuntime::new(handler.clone());

        // A one-shot container that reports what it sees.
        let bundle: PathBuf = work.path().join(format!("bundle-{name}"));
        std::fs::create_dir(&bundle).unwrap();
        let spec = spec::build(&container_spec(
            &rootfs,
            &data,
            &format!("/{parent}/{name}"),
        ))
        .unwrap_or_else(|e| panic!("{name}: build: {e}"));
        spec::write_bundle_config(&spec, &bundle).unwrap();
        let id = format!("berth-spec-{}-{name}", std::process::id());
        let out_path = bundle.join("output");
        let out = std::fs::File::create(&out_path).unwrap();
        cleanup
            .runtimes
            .push((OciRuntime::new(handler.clone()), id.clone()));
        runtime
            .create(
                &id,
                &bundle,
                &bundle.join("pid"),
                Stdio::from(out.try_clone().unwrap()),
                Stdio::from(out),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{name} create: {e}: {}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                )
            });
        runtime.start(&id).unwrap();
        wait_stopped(&runtime, &id);
        let output = std::fs::read_to_string(&out_path).unwrap();
        eprintln!("--- {name} ---\n{output}");
        check_output(&name, &output);
        assert!(!data.join("new").exists());
        runtime.delete(&id, false).unwrap();

        // A long-running container, and a process exec'd into it.
        let bundle = work.path().join(format!("bundle-{name}-exec"));
        std::fs::create_dir(&bundle).unwrap();
        let mut long = container_spec(&rootfs, &data, &format!("/{parent}/{name}-exec"));
        long.args = vec!["exec sleep 30".into()];
        let spec = spec::build(&long).unwrap();
        spec::write_bundle_config(&spec, &bundle).unwrap();
        let id = format!("berth-spec-{}-{name}-exec", std::process::id());
        cleanup
            .runtimes
            .push((OciRuntime::new(handler.clone()), id.clone()));
        runtime
            .create(
                &id,
                &bundle,
                &bundle.join("pid"),
                Stdio::null(),
                Stdio::null(),
            )
            .unwrap();
        runtime.start(&id).unwrap();
        let process = spec::exec_process(
            &spec,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo uid=$(id -u) cwd=$(pwd) var=$FROM_CRI; grep ^CapBnd /proc/self/status".into(),
            ],
            false,
        );
        let process_file = bundle.join("exec.json");
        std::fs::write(&process_file, serde_json::to_vec(&process).unwrap()).unwrap();
        let said = exec(&runtime, &id, &process_file);
        assert!(said.contains("uid=1000 cwd=/ var=cri"), "{name}: {said}");
        assert_eq!(line(&said, "CapBnd:"), "00000000a80405fb", "{name}: {said}");
        eprintln!("{name}: ran the spec and an exec in it");
        runtime.kill(&id, "KILL").unwrap();
        wait_stopped(&runtime, &id);
        runtime.delete(&id, false).unwrap();
    }

    drop(cleanup);
    assert!(
        cgroup_leftovers(&parent).is_empty(),
        "{:?}",
        cgroup_leftovers(&parent)
    );
}
