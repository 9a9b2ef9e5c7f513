//! Builds the OCI runtime spec (`config.json`) of a container from what the
//! core asks for (`ContainerSpec`) and the image's config (`ImageDefaults`),
//! merged the way Kubernetes defines it.
//!
//! The types here are the contract with `berth-core`; they carry no CRI or
//! Docker wire types.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the image's config contributes (OCI image config `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid` (names resolved in the rootfs).
    pub user: String,
    pub stop_signal: String,
}

/// How one namespace of the container is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The host's own namespace (no entry in the spec).
    Host,
    /// A new namespace for this container alone.
    Private,
    /// Join the namespace pinned at this path (the pod's).
    Join(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub network: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    pub pid: Namespace,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            network: Namespace::Private,
            ipc: Namespace::Private,
            uts: Namespace::Private,
            pid: Namespace::Private,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `rprivate` (CRI PROPAGATION_PRIVATE).
    #[default]
    Private,
    /// `rslave` (CRI PROPAGATION_HOST_TO_CONTAINER).
    HostToContainer,
    /// `rshared` (CRI PROPAGATION_BIDIRECTIONAL).
    Bidirectional,
}

/// A bind mount from the host (CRI `Mount`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
}

/// A device node from the host (CRI `Device`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub host_path: PathBuf,
    pub container_path: String,
    /// cgroup permissions: some of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// The built-in default profile (Docker's allow-list).
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile file on the host (OCI `linux.seccomp` JSON).
    Localhost(PathBuf),
}

/// Who the process runs as. Fields left `None` fall back to the image's
/// `user`, then to root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    pub run_as_user: Option<u32>,
    /// Resolved in the rootfs's `/etc/passwd`.
    pub run_as_username: Option<String>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
}

/// Limits in OCI units (CRI `LinuxContainerResources`). `None`/0 = unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit: Option<i64>,
    pub memory_swap_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Page size (`2MB`, `1GB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 files (`memory.high` → value).
    pub unified: BTreeMap<String, String>,
    pub oom_score_adj: Option<i32>,
}

/// Everything the core decides about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The mounted rootfs (overlayfs, made by the core).
    pub rootfs: PathBuf,
    pub image: ImageDefaults,
    /// CRI `command` (replaces the image entrypoint when set).
    pub command: Vec<String>,
    /// CRI `args` (replaces the image cmd when set).
    pub args: Vec<String>,
    /// `KEY=value`, applied over the image's env.
    pub env: Vec<String>,
    /// Replaces the image's working dir when non-empty.
    pub working_dir: String,
    pub tty: bool,
    pub stdin: bool,
    pub user: UserRequest,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    /// Capability names with or without `CAP_`, any case; `ALL` allowed.
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `None`: the default masked/read-only paths; `Some(vec![])`: none.
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub seccomp: Seccomp,
    pub apparmor_profile: Option<String>,
    pub resources: Resources,
    pub namespaces: Namespaces,
    /// Absolute cgroup path (`/kubepods/pod-x/ctr`) or, with the systemd
    /// driver, `slice:prefix:name`.
    pub cgroups_path: String,
    pub sysctls: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Set only when the container has its own UTS namespace.
    pub hostname: Option<String>,
}
