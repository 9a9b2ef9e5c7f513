//! Runtime handlers: the CRI `runtime_handler` (a RuntimeClass) names one.

use std::path::{Path, PathBuf};

use berth_cgroups::Mode;

/// How to invoke one OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandler {
    /// The RuntimeClass handler name; `""` is the default handler.
    pub name: String,
    /// The program to execute (the runtime, or a wrapper in front of it).
    pub program: PathBuf,
    /// Arguments placed before the runtime's own global flags.
    pub argv_prefix: Vec<String>,
    /// The runtime's state directory (`--root`).
    pub root: PathBuf,
    /// Run the runtime in a private mount namespace of its own whose
    /// `/sys/fs/cgroup/unified` is an empty tmpfs: crun 1.8 refuses hosts
    /// with the hybrid cgroup layout otherwise. See [`hide_cgroup2`].
    pub hide_cgroup2: bool,
    /// Container annotations passed into the OCI spec, as containerd's
    /// `container_annotations`: exact keys, or prefixes ending in `*`.
    /// Empty by default: runtimes read knobs from annotations (crun's
    /// `run.oci.*`), which a CRI client must not set at will.
    pub allowed_annotations: Vec<String>,
}

impl RuntimeHandler {
    /// Whether the runtime loads a precompiled seccomp filter from
    /// `run.oci.seccomp_bpf_data` (crun does; runc compiles the spec's
    /// profile on every create).
    pub fn takes_seccomp_bpf(&self) -> bool {
        self.program.file_name() == Some(std::ffi::OsStr::new("crun"))
    }

    /// Whether the annotation `key` may reach this runtime's spec.
    pub fn allows_annotation(&self, key: &str) -> bool {
        self.allowed_annotations
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == p,
            })
    }
}

/// Gives the calling process a mount namespace of its own and hides the
/// empty cgroup v2 tree of a hybrid host under a tmpfs there (that one mount
/// made private first, so the tmpfs never reaches the host). Meant for a child between
/// fork and exec (`pre_exec`), or for berth-shim's equivalent: the host's
/// hierarchies are untouched.
///
/// # Safety
/// Only async-signal-safe calls are made, but it changes the mount
/// namespace of the calling process: call it in a freshly forked child.
pub unsafe fn hide_cgroup2() -> std::io::Result<()> {
    // SAFETY: plain syscalls with static, NUL-terminated strings.
    let ok = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            // Only the hidden mount turns private, so the tmpfs stays in
            // this namespace while every other mount keeps its propagation
            // (bidirectional and host-to-container mounts need it).
            && libc::mount(
                std::ptr::null(),
                c"/sys/fs/cgroup/unified".as_ptr(),
                std::ptr::null(),
                libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/sys/fs/cgroup/unified".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn find(binary: &str) -> Option<PathBuf> {
    [
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
    ]
    .iter()
    .map(|d| Path::new(d).join(binary))
    .find(|p| p.is_file())
}

/// The handlers this host can offer: `crun` (wrapped on hybrid hosts) and
/// `runc` when installed, each with a state root under `state_dir`; the
/// default handler `""` is crun when present, else runc.
pub fn default_handlers(mode: Mode, state_dir: &Path) -> Vec<RuntimeHandler> {
    let mut out = Vec::new();
    if let Some(crun) = find("crun") {
        let root = state_dir.join("crun");
        out.push(RuntimeHandler {
            name: "crun".into(),
            program: crun,
            argv_prefix: Vec::new(),
            root,
            hide_cgroup2: mode == Mode::Hybrid,
            allowed_annotations: Vec::new(),
        });
    }
    if let Some(runc) = find("runc") {
        out.push(RuntimeHandler {
            name: "runc".into(),
            program: runc,
            argv_prefix: Vec::new(),
            root: state_dir.join("runc"),
            hide_cgroup2: false,
            allowed_annotations: Vec::new(),
        });
    }
    if let Some(first) = out.first() {
        out.insert(
            0,
            RuntimeHandler {
                name: String::new(),
                ..first.clone()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_annotations_pass() {
        let mut h = default_handlers(Mode::Hybrid, Path::new("/run/berth-test"))
            .into_iter()
            .next()
            .expect("crun or runc is installed");
        assert!(!h.allows_annotation("run.oci.seccomp.receiver"));
        h.allowed_annotations = vec!["cdi.k8s.io/*".into(), "io.example.exact".into()];
        assert!(h.allows_annotation("cdi.k8s.io/gpu"));
        assert!(h.allows_annotation("io.example.exact"));
        assert!(!h.allows_annotation("io.example.exactly"));
        assert!(!h.allows_annotation("run.oci.seccomp.receiver"));
    }

    #[test]
    fn crun_hides_cgroup2_only_on_hybrid_hosts() {
        let dir = Path::new("/run/berth-test");
        let hybrid = default_handlers(Mode::Hybrid, dir);
        let legacy = default_handlers(Mode::Unified, dir);
        // Without crun nothing below would be checked.
        let crun = hybrid
            .iter()
            .find(|h| h.name == "crun")
            .expect("crun not installed: hack/install-deps.sh installs it");
        assert!(crun.program.ends_with("crun"));
        assert!(crun.hide_cgroup2 && crun.argv_prefix.is_empty());
        let plain = legacy.iter().find(|h| h.name == "crun").unwrap();
        assert!(!plain.hide_cgroup2);
        assert_eq!(hybrid[0].name, "", "crun is the default handler");
        assert_eq!(hybrid[0].program, crun.program);
        let runc = hybrid
            .iter()
            .find(|h| h.name == "runc")
            .expect("runc not installed: hack/install-deps.sh installs it");
        assert!(!runc.hide_cgroup2, "runc runs on hybrid hosts as they are");
        for h in &hybrid {
            assert!(h.root.starts_with(dir));
        }
    }
}
