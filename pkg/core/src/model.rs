//! The runtime model: what a front door asks for (`PodConfig`,
//! `ContainerConfig`) and what the core records (`SandboxRecord`,
//! `ContainerRecord`). Records are persisted as JSON in the store, so every
//! field has a serde default and old records keep loading.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which front door made an object. CRI lists only `Kubernetes` objects, so
/// kubelet never sees (or garbage-collects) what an admin made with docker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    #[default]
    Kubernetes,
    Docker,
}

impl Owner {
    /// As events' `io.berth.owner` attribute spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Kubernetes => "kubernetes",
            Owner::Docker => "docker",
        }
    }
}

/// How a pod (or container) gets one namespace (CRI `NamespaceMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// Shared by the pod's containers.
    #[default]
    Pod,
    /// One per container.
    Container,
    /// The node's own.
    Node,
    /// Another container's (pid only).
    Target,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    /// The container whose pid namespace `Target` joins.
    pub target_id: String,
    /// CRI `userns_options`; `None` (as `Node`): the node's.
    pub user: Option<UserNamespace>,
}

/// One range of a user namespace's id map (CRI `IDMapping`): `length` ids
/// from `container_id` inside are `host_id`... on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// CRI `UserNamespace`: `Pod` (a user namespace of the pod's own with
/// these maps) or `Node` (none); `Container` and `Target` are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserNamespace {
    pub mode: NamespaceMode,
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A transport protocol of a port mapping (records keep CRI's spelling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP", alias = "")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Lower case, as Docker writes it (`80/tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A container port and, when it is published, the host port that
/// forwards to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// `None`: the mapping only documents the container port.
    #[serde(with = "zero_is_none")]
    pub host_port: Option<u16>,
    /// `None`: every host address.
    #[serde(with = "empty_is_none")]
    pub host_ip: Option<std::net::IpAddr>,
}

/// Records written before ports were typed spell "unset" as 0.
mod zero_is_none {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(v.unwrap_or(0))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        Ok(Some(u16::deserialize(d)?).filter(|p| *p != 0))
    }
}

/// Records written before addresses were typed spell "unset" as "".
mod empty_is_none {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;
    pub fn serialize<S: Serializer>(v: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.map(|ip| ip.to_string()).unwrap_or_default())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "" => Ok(None),
            ip => ip.parse().map(Some).map_err(D::Error::custom),
        }
    }
}

/// Limits in OCI units (CRI `LinuxContainerResources`); 0/empty = unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub memory_swap_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Page size (`2MB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    pub unified: BTreeMap<String, String>,
    /// Docker's `--pids-limit` (CRI has none; the pod's cgroup bounds it).
    pub pids_limit: i64,
}

/// Kubernetes' identity of a pod (CRI `PodSandboxMetadata` besides the
/// name), for the sandboxes kubelet makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMetadata {
    pub namespace: String,
    pub uid: String,
    #[serde(default)]
    pub attempt: u32,
}

/// What a sandbox asks for: a pod's (CRI `PodSandboxConfig`) or the one
/// a Docker container gets of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodConfig {
    /// The pod's name (Kubernetes: `metadata.name`; Docker: the
    /// container's name).
    pub name: String,
    /// Set for the sandboxes of Kubernetes pods (stored beside the name,
    /// as records always kept them).
    #[serde(flatten)]
    pub kubernetes: Option<PodMetadata>,
    pub hostname: String,
    /// Directory for the pod's container logs.
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub namespaces: NamespaceOptions,
    pub privileged: bool,
    pub overhead: Option<Resources>,
    pub resources: Option<Resources>,
    pub runtime_handler: String,
}

impl PodConfig {
    /// The sandbox's unique name: kubelet's `name_namespace_uid_attempt`
    /// for a Kubernetes pod, else its name.
    pub fn full_name(&self) -> String {
        match &self.kubernetes {
            Some(k) => format!("{}_{}_{}_{}", self.name, k.namespace, k.uid, k.attempt),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountConfig {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Submounts of the host path read-only too (needs `readonly` and
    /// private propagation).
    pub recursive_readonly: bool,
    /// A tmpfs of its own with these options (`size=64m`, `mode=1770`)
    /// rather than a bind of `host_path`.
    pub tmpfs: Option<Vec<String>>,
    /// A volume mounted without Docker's copy-up of the image's content
    /// (`volume-nocopy`).
    pub no_copy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceConfig {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

/// CRI `SupplementalGroupsPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupplementalGroupsPolicy {
    /// The requested groups plus the user's groups in the image's /etc/group.
    #[default]
    Merge,
    /// Only the requested groups (and the primary one).
    Strict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompConfig {
    /// No profile asked for: unconfined, as the CRI defines it, unless the
    /// node's `seccomp_default` says RuntimeDefault.
    #[default]
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub privileged: bool,
    pub namespaces: NamespaceOptions,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// Empty: the defaults.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompConfig,
    pub apparmor: String,
}

/// What a container asks for (CRI `ContainerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    /// The image as the caller named it.
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountConfig>,
    pub devices: Vec<DeviceConfig>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: Resources,
    pub security: SecurityConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    #[default]
    Ready,
    NotReady,
}

impl SandboxState {
    /// New containers go only into a ready sandbox.
    pub fn check_accepts_containers(self, id: &str) -> berth_errdefs::Result<()> {
        match self {
            SandboxState::Ready => Ok(()),
            SandboxState::NotReady => Err(berth_errdefs::Error::new(
                berth_errdefs::ErrorKind::FailedPrecondition,
                format!("pod sandbox {id} is not ready (it was stopped); create a new one"),
            )),
        }
    }
}

/// The pod's pinned namespaces and files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    pub pause_pid: Option<u32>,
    /// The pod's user namespace, owner of the others.
    pub user: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxRecord {
    pub id: String,
    pub owner: Owner,
    pub config: PodConfig,
    pub state: SandboxState,
    pub created_at_ns: i64,
    pub namespaces: SandboxNamespaces,
    /// The absolute cgroupfs parent of the pod's containers.
    pub cgroup_parent: String,
    /// Whether berth made the parent (and so removes it with the pod).
    pub owns_cgroup_parent: bool,
    /// A tmpfs for /dev/shm shared by the pod's containers.
    pub shm: Option<PathBuf>,
    /// The pod's network while it is attached (none for host network).
    pub network: Option<berth_net::Attachment>,
    /// Made without a network (Docker's `--network none`): what a
    /// sandbox made again after a reboot follows.
    pub no_network: bool,
    /// A Docker sandbox's interfaces on user networks, first made first.
    pub endpoints: Vec<berth_net::Endpoint>,
    /// The user-network interfaces a node reboot took (recovery moves
    /// `endpoints` here): a sandbox made again after the reboot joins
    /// the same networks with the same addresses and names.
    pub lost_endpoints: Vec<berth_net::Endpoint>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    #[default]
    Created,
    Running,
    Exited,
    Unknown,
}

/// The container state machine: created → running → exited. A container
/// whose monitor left no exit status is exited too, with code 255 and
/// reason `Unknown`; `Unknown` the state is only ever read from a record
/// (an older berthd's, or a future one's) and counts as exited. Each verb
/// checks its transition here.
impl ContainerState {
    /// Its process exists (made by the runtime, maybe not started).
    pub fn is_live(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Running)
    }

    /// Its process is gone and that is recorded.
    pub fn has_exited(self) -> bool {
        !self.is_live()
    }

    pub fn check_start(self, id: &str) -> berth_errdefs::Result<()> {
        match self {
            ContainerState::Created => Ok(()),
            other => Err(precondition(format!(
                "container {id} is {other:?}, not created: it cannot be started"
            ))),
        }
    }

    /// Exec, attach, resize and log reopening need a running container.
    pub fn check_running(self, id: &str) -> berth_errdefs::Result<()> {
        match self {
            ContainerState::Running => Ok(()),
            _ => Err(precondition(format!("container {id} is not running"))),
        }
    }

    pub fn check_update(self, id: &str) -> berth_errdefs::Result<()> {
        match self.is_live() {
            true => Ok(()),
            false => Err(precondition(format!(
                "container {id} is not running: its resources cannot change"
            ))),
        }
    }
}

fn precondition(message: String) -> berth_errdefs::Error {
    berth_errdefs::Error::new(berth_errdefs::ErrorKind::FailedPrecondition, message)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub owner: Owner,
    pub config: ContainerConfig,
    pub image_id: String,
    /// The image's name as resolved at create time (`registry/repo:tag`).
    pub image_ref: String,
    pub state: ContainerState,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Absolute log path, empty when the pod has no log directory.
    pub log_path: PathBuf,
    pub shim_pid: u32,
    pub pid: u32,
    pub cgroups_path: String,
    pub runtime_handler: String,
    pub stop_signal: i32,
    /// Who the first process runs as, resolved at create time (`None`
    /// in records made before berth recorded it).
    pub user: Option<ContainerUser>,
    /// The first process's command line as resolved against the image's
    /// entrypoint and cmd (empty in records made before berth kept it).
    pub process_args: Vec<String>,
    /// Docker's `--rm`: the core removes the container (and its sandbox)
    /// once it has exited.
    pub auto_remove: bool,
    /// Docker's `--stop-timeout`: seconds a stop waits by default.
    pub stop_timeout_s: Option<i64>,
    /// Frozen by `docker pause` (the runtime's cgroup freezer); still
    /// running as far as CRI and the state machine go.
    pub paused: bool,
    /// Docker's `--restart`.
    pub restart_policy: RestartPolicy,
    /// How many times the policy has started it again.
    pub restart_count: u32,
    /// Stopped by a stop or kill that asked for it (`docker stop`): no
    /// policy starts it again until it is started by hand.
    pub stopped_by_user: bool,
    /// The wait before the policy's next start (doubling back-off).
    pub restart_delay_ms: u64,
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    /// Again after a non-zero exit, at most `max_retries` times (0: no
    /// limit).
    OnFailure {
        max_retries: u32,
    },
}

/// How a Docker container gets its network (`HostConfig.NetworkMode`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The node's default network (the one pods use; Docker's `bridge`).
    #[default]
    Default,
    /// The node's network namespace.
    Host,
    /// A network namespace with only its loopback.
    None,
    /// Another container's sandbox (`container:<id>`), shared with it.
    Container(String),
    /// A user network (`--network NAME`), by name or id.
    User(NetworkJoin),
}

/// How a container joins a user network (`--network`, `network connect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkJoin {
    /// The network's name, id or id prefix.
    pub network: String,
    /// `--network-alias`: more names its DNS answers for the container.
    pub aliases: Vec<String>,
    /// `--ip`; `None`: the next free address.
    pub ip: Option<std::net::Ipv4Addr>,
}

/// A container without a Kubernetes pod (Docker's): made with a sandbox
/// of its own, or in another container's for [`NetworkMode::Container`].
#[derive(Debug, Clone, Default)]
pub struct StandaloneSpec {
    pub container: ContainerConfig,
    /// The sandbox's settings: hostname, DNS, port mappings, labels,
    /// runtime handler, cgroup parent. Its name, Kubernetes metadata, log
    /// directory and network namespace mode are the core's to set.
    pub pod: PodConfig,
    pub network: NetworkMode,
    pub auto_remove: bool,
    /// Overrides the image's `StopSignal` (a name or a number).
    pub stop_signal: Option<String>,
    /// Docker's `StopTimeout`, kept for the front door's default.
    pub stop_timeout_s: Option<i64>,
    pub restart_policy: RestartPolicy,
}

/// What [`crate::Containers::wait`] waits for (Docker's `condition`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once if it is not running, else at its exit.
    #[default]
    NotRunning,
    /// The next exit, even if it has exited already.
    NextExit,
    /// Its removal.
    Removed,
}

/// The identity a container's first process gets (CRI `ContainerUser`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted; includes `gid`.
    pub supplemental_groups: Vec<u32>,
}

/// Filters for listings; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Only this owner's; `None`: every owner's.
    pub owner: Option<Owner>,
    pub id: String,
    pub state: Option<SandboxState>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// Only this owner's; `None`: every owner's.
    pub owner: Option<Owner>,
    pub id: String,
    pub sandbox_id: String,
    pub state: Option<ContainerState>,
    pub labels: BTreeMap<String, String>,
}

/// Usage of one container, from its cgroup and writable layer.
#[derive(Debug, Clone, Default)]
pub struct ContainerStats {
    pub id: String,
    pub sandbox_id: String,
    pub timestamp_ns: i64,
    pub cpu_usage_ns: u64,
    /// The parts of `cpu_usage_ns` in user mode and in the kernel (0 where
    /// the kernel does not split it).
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Average over the time since the previous sample (0 on the first).
    pub cpu_nano_cores: u64,
    pub memory_working_set_bytes: u64,
    pub memory_usage_bytes: u64,
    pub memory_rss_bytes: u64,
    pub writable_layer_bytes: u64,
    pub writable_layer_inodes: u64,
    pub writable_layer_mountpoint: PathBuf,
    pub pids: u64,
}

pub(crate) fn labels_match(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
