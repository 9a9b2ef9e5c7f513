//! A spec made by `spec::build` runs under every runtime handler this host
//! offers (runc, and crun through its hybrid-host wrapper): a non-root user
//! from the image's /etc/passwd with its groups, a dropped capability, the
//! environment, a memory limit and the default seccomp profile, each checked
//! from inside the container. `exec_process` is checked with `<runtime> exec
//! --process`.
//!
//! The security settings are probed as root in the container, whom nothing
//! but the setting itself stops, and each denial is checked for its own
//! reason (EROFS, a /dev/null bind, EPERM from seccomp) against a control
//! container without the setting where the same probe succeeds.
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
echo "data=$(cat /data/hello.txt)"
echo "hostname=$(hostname)"
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
    assert_eq!(line(out, "data="), "from the host", "{name}:\n{out}");
    assert_eq!(line(out, "hostname="), "spec-test", "{name}:\n{out}");
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

/// Fails unless the test runs as root: CI does, and a test that returned
/// early would pass without checking anything.
fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "needs root: run the suite as root");
}

/// What each test starts from: a busybox rootfs, a host directory with a
/// file, and this host's handlers, crun and runc.
struct Setup {
    // First, so that it runs before the files go when a test fails.
    cleanup: Cleanup,
    work: tempfile::TempDir,
    rootfs: PathBuf,
    data: PathBuf,
    handlers: Vec<RuntimeHandler>,
}

impl Setup {
    /// `tag` names the test's parent cgroup and containers.
    fn new(tag: &str) -> Setup {
        require_root();
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} not installed: hack/install-deps.sh installs busybox-static"
        );
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
        for runtime in ["crun", "runc"] {
            assert!(
                handlers.iter().any(|h| h.name == runtime),
                "{runtime} not installed: hack/install-deps.sh installs it: {handlers:?}"
            );
        }
        Setup {
            cleanup: Cleanup {
                runtimes: Vec::new(),
                parent: format!("berth-spec-{tag}-{}", std::process::id()),
            },
            work,
            rootfs,
            data,
            handlers,
        }
    }

    /// A host directory for the test, made once.
    fn host_dir(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// The base spec of a container `name` (its own cgroup).
    fn spec(&self, name: &str) -> ContainerSpec {
        let cgroups_path = format!("/{}/{name}", self.cleanup.parent);
        container_spec(&self.rootfs, &self.data, &cgroups_path)
    }

    /// Runs `spec` under `handler` as container `name` until it exits;
    /// returns what it printed.
    fn run_to_end(&mut self, handler: &RuntimeHandler, name: &str, spec: &ContainerSpec) -> String {
        let runtime = OciRuntime::new(handler.clone());
        let bundle = self.host_dir(&format!("bundle-{name}"));
        let built = spec::build(spec).unwrap_or_else(|e| panic!("{name}: build: {e}"));
        spec::write_bundle_config(&built, &bundle).unwrap();
        let id = format!("berth-spec-{}-{name}", std::process::id());
        let out_path = bundle.join("output");
        let out = std::fs::File::create(&out_path).unwrap();
        self.cleanup
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
        runtime.delete(&id, false).unwrap();
        let output = std::fs::read_to_string(&out_path).unwrap();
        eprintln!("--- {name} ---\n{output}");
        output
    }

    /// Deletes what the test made and checks no cgroup is left.
    fn finish(self) {
        let parent = self.cleanup.parent.clone();
        drop(self.cleanup);
        let left = cgroup_leftovers(&parent);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn built_specs_run_under_each_runtime() {
    let mut setup = Setup::new("run");
    for handler in setup.handlers.clone() {
        let name = handler.name.clone();
        let runtime = OciRuntime::new(handler.clone());

        // A one-shot container that reports what it sees.
        let spec = setup.spec(&name);
        let output = setup.run_to_end(&handler, &name, &spec);
        check_output(&name, &output);

        // A long-running container, and a process exec'd into it.
        let bundle = setup.host_dir(&format!("bundle-{name}-exec"));
        let mut long = setup.spec(&format!("{name}-exec"));
        long.args = vec!["exec sleep 30".into()];
        let spec = spec::build(&long).unwrap();
        spec::write_bundle_config(&spec, &bundle).unwrap();
        let id = format!("berth-spec-{}-{name}-exec", std::process::id());
        setup
            .cleanup
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
            &spec::ExecOptions::default(),
        )
        .unwrap();
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
    setup.finish();
}

/// Probes run as root in the container, whom file permissions do not stop:
/// each prints `name=ok` or `name=failed: <the error>`. `/proc/timer_list`
/// and `/sys/firmware` stand for the masked file and directory
/// (`/proc/kcore` is missing on kernels without it, and is then not masked).
const ROOT_PROBES: &str = r#"
probe() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name=ok"; else echo "$name=failed: $out"; fi; }
echo "uid=$(id -u)"
grep '^Seccomp:' /proc/self/status
probe rootfs touch /probe
probe tmpfs touch /dev/shm/probe
probe mount sh -c 'echo x >/data/new'
probe scratch sh -c 'echo x >/scratch/new'
probe sysctl sh -c 'echo spec-test >/proc/sys/kernel/hostname'
echo "timer_list=$(stat -c %t:%T /proc/timer_list) $(wc -c </proc/timer_list)"
echo "firmware=$(ls -A /sys/firmware | wc -l)"
probe unshare unshare -U true
rm -f /probe /data/new /scratch/new 2>/dev/null
true
"#;

/// A root container running [`ROOT_PROBES`], with `/data` read-only and
/// `/scratch` writable.
fn root_probe_spec(base: ContainerSpec, scratch: &Path) -> ContainerSpec {
    let mut spec = ContainerSpec {
        args: vec![ROOT_PROBES.into()],
        user: UserRequest {
            run_as_user: Some(0),
            ..UserRequest::default()
        },
        ..base
    };
    spec.mounts.push(Mount {
        host_path: scratch.to_path_buf(),
        container_path: "/scratch".into(),
        readonly: false,
        ..Mount::default()
    });
    spec
}

/// The probe `name` failed, with `reason` in its error.
fn denied(out: &str, who: &str, name: &str, reason: &str) {
    let said = line(out, &format!("{name}="));
    assert!(
        said.starts_with("failed:") && said.contains(reason),
        "{who}: {name} should fail with {reason:?}, got {said:?}:\n{out}"
    );
}

fn allowed(out: &str, who: &str, name: &str) {
    assert_eq!(
        line(out, &format!("{name}=")),
        "ok",
        "{who}: {name}:\n{out}"
    );
}

#[test]
fn security_settings_stop_root_for_their_own_reason() {
    let mut setup = Setup::new("sec");
    let firmware_on_host = std::fs::read_dir("/sys/firmware").unwrap().count();
    assert!(
        firmware_on_host > 0,
        "this host's /sys/firmware is empty, so masking it shows nothing"
    );
    let scratch = setup.host_dir("scratch");
    let writable_data = setup.host_dir("writable-data");
    chmod(&scratch, 0o755);
    chmod(&writable_data, 0o755);
    for handler in setup.handlers.clone() {
        let name = handler.name.clone();

        // The defaults, a read-only rootfs and a read-only /data.
        let who = format!("{name}-confined");
        let spec = root_probe_spec(setup.spec(&who), &scratch);
        let out = setup.run_to_end(&handler, &who, &spec);
        assert_eq!(line(&out, "uid="), "0", "{who}:\n{out}");
        assert_eq!(line(&out, "Seccomp:"), "2", "{who}: filter mode:\n{out}");
        denied(&out, &who, "rootfs", "Read-only file system");
        allowed(&out, &who, "tmpfs");
        denied(&out, &who, "mount", "Read-only file system");
        allowed(&out, &who, "scratch");
        denied(&out, &who, "sysctl", "Read-only file system");
        // A masked file is /dev/null (char 1:3) and reads empty; a masked
        // directory is an empty tmpfs.
        assert_eq!(line(&out, "timer_list="), "1:3 0", "{who}:\n{out}");
        assert_eq!(line(&out, "firmware="), "0", "{who}:\n{out}");
        // unshare(2) needs CAP_SYS_ADMIN under the default profile, whose
        // default action is EPERM.
        denied(&out, &who, "unshare", "Operation not permitted");
        assert!(!setup.data.join("new").exists());

        // The control: the same root process without those settings gets
        // through every probe.
        let who = format!("{name}-control");
        let mut spec = root_probe_spec(setup.spec(&who), &scratch);
        spec.readonly_rootfs = false;
        spec.mounts[0].host_path = writable_data.clone();
        spec.mounts[0].readonly = false;
        spec.seccomp = Seccomp::Unconfined;
        spec.masked_paths = Some(Vec::new());
        spec.readonly_paths = Some(Vec::new());
        let out = setup.run_to_end(&handler, &who, &spec);
        assert_eq!(line(&out, "uid="), "0", "{who}:\n{out}");
        assert_eq!(line(&out, "Seccomp:"), "0", "{who}:\n{out}");
        for probe in ["rootfs", "tmpfs", "mount", "scratch", "sysctl", "unshare"] {
            allowed(&out, &who, probe);
        }
        let timer_list = line(&out, "timer_list=");
        assert!(
            !timer_list.starts_with("1:3") && !timer_list.ends_with(" 0"),
            "{who}: /proc/timer_list unmasked: {timer_list}"
        );
        assert_eq!(
            line(&out, "firmware="),
            firmware_on_host.to_string(),
            "{who}:\n{out}"
        );
    }
    setup.finish();
}
