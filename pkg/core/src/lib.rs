//! The runtime core. Front doors (CRI, Docker, metrics) translate their wire
//! types into calls on the services of [`Core`] and back; nothing here
//! knows gRPC or JSON wire formats.
//!
//! Services (each a cheap handle over one shared state, [`Shared`]):
//! - [`Sandboxes`] (`sandbox.rs`): pod sandboxes, their namespaces,
//!   cgroup parent, pod files and network; port-forward.
//! - [`Containers`] (`container.rs`, `exec.rs`, `attach.rs`, `stats.rs`):
//!   containers under their monitors, exec, attach, stats.
//! - [`Node`] (`node.rs`): readiness, runtime handlers and their features,
//!   the pod CIDR.
//! - the event bus and the image facade (`events.rs`, `images.rs`).
//!
//! The parts that touch the host sit behind the seams in `seams.rs`
//! (runtime driver, monitor launcher, metadata store, cgroups), chosen by
//! [`Core::open`] from the config or passed to [`Core::with_parts`].
//!
//! Files (see docs/dev/architecture.md):
//! ```text
//! <root>/pods/<sandbox id>/{hostname,hosts,resolv.conf}
//! <root>/containers/<id>/{upper,work}          the writable layer
//! <root>/containers/<id>/bundle/{config.json,rootfs}
//! <state>/pods/<sandbox id>/ns/{net,ipc,uts,pid} pinned namespaces
//! <state>/pods/<sandbox id>/shm                 the pod's /dev/shm tmpfs
//! <state>/pods/<sandbox id>/ns/user             a pod's user namespace (KEP-127)
//! <state>/c/<id>/                               the monitor's files and sockets
//! <state>/c/<id>/rro/<n>                        recursive read-only copies (until create returns)
//! <state>/u/<id>/rootfs                         the rootfs of a container in a user namespace
//! <root>/containers/<id>/{layers,views}/<n>     its idmapped layers and volumes
//! ```

/// A service: a cheap, cloneable handle on the shared state, whose verbs
/// reach the state's helpers through `Deref`.
macro_rules! service_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            shared: std::sync::Arc<crate::Shared>,
        }

        impl std::ops::Deref for $name {
            type Target = crate::Shared;
            fn deref(&self) -> &crate::Shared {
                &self.shared
            }
        }

        impl $name {
            pub(crate) fn new(shared: std::sync::Arc<crate::Shared>) -> $name {
                $name { shared }
            }
        }
    };
}
pub(crate) use service_handle;

mod archive;
mod attach;
mod build;
mod changes;
mod container;
pub mod events;
mod exec;
mod idmap;
mod image_io;
mod images;
mod local_driver;
mod logs;
pub mod metrics;
pub mod model;
mod monitor;
mod netdns;
mod netstats;
mod network;
mod networks;
mod node;
mod pause;
mod podfiles;
mod pty;
mod recovery;
mod restart;
mod revive;
mod rootfs;
mod sandbox;
mod seams;
mod spawn;
mod standalone;
mod stats;
mod usage;
mod usage_series;
mod validate;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use berth_cgroups::Cgroups;
use berth_errdefs::Result;
use berth_image::registries::RegistriesConfig;
use berth_image::service::ImageService;
use berth_oci::RuntimeHandler;

pub use archive::PathStat;
pub use attach::{AttachOutput, AttachReader, AttachWriter, Attached};
pub use berth_errdefs::{Error, ErrorKind};
pub use berth_net::{builtin_network_id, Endpoint};
pub use build::{check_build_platform, BuildEvent, BuildRequest, BuildResult};
pub use changes::{Change, ChangeKind};
pub use container::Containers;
pub use events::{attr, Action, Attrs, EventBus, ObjectKind, Received, Subscription};
pub use exec::{ExecOutput, ExecPid, ExecProcess, ExecSpec};
pub use image_io::{ImageChanges, LoadedImage, NewImage, SaveSet};
pub use images::{
    Credentials, HistoryEntry, ImageConfig, ImageFsInfo, ImageInfo, ImageLayer, ImageUsers, Images,
    LayerProgress, Platform, PruneReport, PrunedImage, PullProgress, PullRequest, PullResult,
    PushLayerProgress, PushProgress, PushResult, QualifiedName, Secret,
};
pub use logs::{LogEntry, LogOptions, LogReader, LogStream};
pub use metrics::{Census, NoRecorder, PullFailure, PullOutcome, Recorder, Service};
pub use model::*;
pub use monitor::{Exit, SpawnRequest};
pub use netstats::InterfaceStats;
pub use networks::{NetworkInfo, NetworkMember, NetworkSpec, Networks, BUILTIN_NETWORKS};
pub use node::Node;
pub use pty::Pty;
pub use sandbox::Sandboxes;
pub use seams::{BoxFuture, MetaStore, Monitors, Parts, RuntimeDriver};
pub use standalone::{parse_signal, signal_name};
pub use usage::{CgroupStats, ContainerUsage, PodUsage, Usage, UsageLabels, USAGE_MAX_AGE};
pub use usage_series::{usage_descriptors, SeriesDescriptor, SeriesKind, UsageFamily, UsageSeries};
pub use volumes::{is_docker_name, Volume, VolumeRecord, VolumeSpec, Volumes};

/// The cgroup driver kubelet must match (CRI `RuntimeConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// The longest state dir whose monitor sockets (`<state>/c/<64 hex>/console.sock`)
/// still fit in a unix socket address (107 bytes).
pub const MAX_STATE_DIR_LEN: usize = 107 - "/c/".len() - 64 - "/console.sock".len();

/// Settings the core needs, resolved by the daemon from its config file and flags.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Persistent state (`/var/lib/berth`).
    pub root: PathBuf,
    /// Runtime state (`/run/berth`).
    pub state_dir: PathBuf,
    pub registries: RegistriesConfig,
    pub cgroup_driver: CgroupDriver,
    /// Runtime handlers by name; `""` is the default.
    pub handlers: Vec<RuntimeHandler>,
    /// The monitor binary (`berth-shim`).
    pub shim: PathBuf,
    /// The cgroup under which pods without a parent of their own go.
    pub cgroup_root: String,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_fs: PathBuf,
    pub network: NetworkSettings,
    /// When set, pods' log directories must lie under it.
    pub log_root: Option<PathBuf>,
    /// When set, Localhost seccomp profiles must lie under it (kubelet's
    /// is `/var/lib/kubelet/seccomp`).
    pub seccomp_profile_root: Option<PathBuf>,
    /// Apply RuntimeDefault to containers that ask for no seccomp profile
    /// (kubelet's SeccompDefault, node-wide). Off: nil means unconfined.
    pub seccomp_default: bool,
    /// Hand runtimes that take it (crun) the seccomp filter compiled once
    /// as BPF; off, the runtime compiles the spec's profile on every create.
    pub precompile_seccomp: bool,
    /// Caps on what a registry may make berthd read and unpack.
    pub image_limits: berth_image::limits::Limits,
}

/// Which pod network backend, with its settings.
#[derive(Debug, Clone)]
pub enum NetworkSettings {
    /// Pods get only their loopback (NetworkReady stays false).
    None,
    /// The built-in bridge: netlink veths, berthd's IPAM, iptables.
    Bridge(berth_net::BridgeConfig),
    /// The same bridge network made by the netavark binary.
    Netavark {
        binary: PathBuf,
        bridge: String,
        subnet: berth_net::Subnet,
        mtu: Option<u32>,
    },
    /// Standard CNI plugins and configs.
    Cni {
        conf_dir: PathBuf,
        plugin_dirs: Vec<PathBuf>,
    },
}

/// One readiness condition, as CRI `Status` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: ConditionKind,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    RuntimeReady,
    NetworkReady,
}

/// Live objects, by id, and the names reserved for them.
#[derive(Default)]
pub(crate) struct Objects {
    pub sandboxes: BTreeMap<String, Arc<sandbox::Entry>>,
    pub containers: BTreeMap<String, Arc<container::Entry>>,
    /// `pod/<full name>` or `ctr/<full name>` → id.
    pub names: HashMap<String, String>,
}

/// The one runtime core: a handle on the services every front door calls.
/// Cheap to clone.
#[derive(Clone)]
pub struct Core {
    shared: Arc<Shared>,
}

/// What the services share: the config, the host's parts behind their
/// seams, and the live objects. Opaque outside the core: the services
/// are its API.
pub struct Shared {
    pub(crate) images: Images,
    pub(crate) config: CoreConfig,
    pub(crate) store: Arc<dyn MetaStore>,
    pub(crate) runtimes: BTreeMap<String, Arc<dyn RuntimeDriver>>,
    pub(crate) cgroups: Box<dyn Cgroups>,
    pub(crate) monitors: Arc<dyn Monitors>,
    objects: Mutex<Objects>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    pub(crate) network: network::Network,
    /// Records recovery could not read (and moved aside).
    pub(crate) unreadable_records: std::sync::atomic::AtomicU64,
    /// Seccomp profiles compiled once, for runtimes that take BPF.
    pub(crate) seccomp_bpf: berth_oci::seccomp_bpf::BpfCache,
    /// Where figures go (`metrics.rs`); [`NoRecorder`] unless the daemon
    /// gives an exporter.
    pub(crate) metrics: Arc<dyn Recorder>,
    /// The last usage snapshot (`usage.rs`).
    pub(crate) usage_cache: usage::UsageCache,
}

impl Core {
    /// Opens the store and the services under `config.root` with the
    /// host's real parts, reloads every sandbox and container, reconnects
    /// to live monitors and cleans up what no record owns. Must run inside
    /// a tokio runtime.
    pub fn open(config: CoreConfig) -> Result<Core> {
        Core::open_recording(config, Arc::new(NoRecorder))
    }

    /// Like [`Core::open`], recording into `metrics`.
    pub fn open_recording(config: CoreConfig, metrics: Arc<dyn Recorder>) -> Result<Core> {
        check_state_dir(&config)?;
        make_private_dirs(&config)?;
        let parts = Parts::real(&config)?;
        Core::with_parts_recording(config, parts, metrics)
    }

    /// Like [`Core::open`], with the host's parts given (tests pass fakes).
    pub fn with_parts(config: CoreConfig, parts: Parts) -> Result<Core> {
        Core::with_parts_recording(config, parts, Arc::new(NoRecorder))
    }

    /// Like [`Core::with_parts`], recording into `metrics`.
    pub fn with_parts_recording(
        config: CoreConfig,
        parts: Parts,
        metrics: Arc<dyn Recorder>,
    ) -> Result<Core> {
        check_state_dir(&config)?;
        make_private_dirs(&config)?;
        let leaf_images = Arc::new(ImageService::open_with_limits(
            &config.root.join("images"),
            parts.leaf_store.clone(),
            config.registries.clone(),
            config.image_limits,
        )?);
        let events = Arc::new(EventBus::default());
        let seccomp_bpf =
            berth_oci::seccomp_bpf::BpfCache::new(Some(config.state_dir.join("seccomp")));
        let network =
            network::Network::open(&config.network, &parts.leaf_store, &config.state_dir)?;
        let shared = Arc::new_cyclic(|me| Shared {
            images: Images::new(
                leaf_images,
                Arc::new(ContainerUsers(me.clone())),
                events.clone(),
            )
            .recording(metrics.clone()),
            config,
            store: parts.store,
            runtimes: parts.runtimes,
            cgroups: parts.cgroups,
            monitors: parts.monitors,
            objects: Mutex::default(),
            events,
            cpu_samples: Mutex::default(),
            seccomp_bpf,
            network,
            unreadable_records: Default::default(),
            metrics,
            usage_cache: Default::default(),
        });
        shared.recover()?;
        Ok(Core { shared })
    }

    pub fn sandboxes(&self) -> Sandboxes {
        Sandboxes::new(self.shared.clone())
    }

    pub fn containers(&self) -> Containers {
        Containers::new(self.shared.clone())
    }

    pub fn node(&self) -> Node {
        Node::new(self.shared.clone())
    }

    pub fn networks(&self) -> Networks {
        Networks::new(self.shared.clone())
    }

    pub fn volumes(&self) -> Volumes {
        Volumes::new(self.shared.clone())
    }

    /// The image service.
    pub fn images(&self) -> &Images {
        &self.shared.images
    }

    /// Where the core records its figures; front doors record theirs
    /// (operations answered) through the same one.
    pub fn recorder(&self) -> &Arc<dyn Recorder> {
        &self.shared.metrics
    }

    /// How many sandboxes and containers are in each state, by owner: for
    /// gauges read at scrape time. Holds the objects' lock only to copy
    /// the handles, never across a record's own lock.
    pub fn census(&self) -> Census {
        let (sandboxes, containers) = {
            let objects = self.shared.objects();
            (
                objects.sandboxes.values().cloned().collect::<Vec<_>>(),
                objects.containers.values().cloned().collect::<Vec<_>>(),
            )
        };
        Census {
            sandboxes: metrics::census_rows(
                &SandboxState::ALL,
                sandboxes.iter().map(|e| e.state_and_owner()),
            ),
            containers: metrics::census_rows(
                &ContainerState::ALL,
                containers.iter().map(|e| e.state_and_owner()),
            ),
        }
    }

    /// The event bus: what happened to sandboxes, containers and images,
    /// for any number of subscribers (`subscribe(since)`).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }
}

/// Which container uses an image, for the image service's removal check.
struct ContainerUsers(Weak<Shared>);

impl ImageUsers for ContainerUsers {
    fn user_of(&self, image_id: &str) -> Option<String> {
        let shared = self.0.upgrade()?;
        let objects = shared.objects();
        objects
            .containers
            .values()
            .map(|c| c.record())
            .find(|c| c.image_id == image_id)
            .map(|c| c.id)
    }
}

fn check_state_dir(config: &CoreConfig) -> Result<()> {
    let state_len = config.state_dir.as_os_str().len();
    if state_len > MAX_STATE_DIR_LEN {
        return Err(Error::invalid(format!(
            "state dir {} is {state_len} bytes long; at most {MAX_STATE_DIR_LEN} leave room for the monitors' unix sockets",
            config.state_dir.display()
        )));
    }
    Ok(())
}

impl Shared {
    /// Publishes what happened to a sandbox: its name, owner and labels.
    pub(crate) fn sandbox_event(&self, record: &SandboxRecord, action: Action) {
        let attrs = Attrs::new()
            .name(record.config.full_name())
            .set(attr::OWNER, record.owner.as_str())
            .labels(&record.config.labels);
        self.events
            .publish(ObjectKind::Sandbox, &record.id, action, attrs);
    }

    /// Publishes what happened to a container: its name, image, sandbox,
    /// owner and labels.
    pub(crate) fn container_event(&self, record: &ContainerRecord, action: Action) {
        self.container_event_with(record, action, Attrs::new());
    }

    /// Like [`Shared::container_event`], with more attributes (`oldName`).
    pub(crate) fn container_event_with(
        &self,
        record: &ContainerRecord,
        action: Action,
        attrs: Attrs,
    ) {
        let attrs = attrs
            .name(record.config.name.clone())
            .image(record.image_ref.clone())
            .sandbox_id(record.sandbox_id.clone())
            .set(attr::OWNER, record.owner.as_str())
            .labels(&record.config.labels);
        self.events
            .publish(ObjectKind::Container, &record.id, action, attrs);
    }

    pub(crate) fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn runtime(&self, handler: &str) -> Result<Arc<dyn RuntimeDriver>> {
        self.runtimes.get(handler).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "unknown runtime handler {handler:?} (configured: {})",
                self.runtimes
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Reserves a unique name for `id`; a taken name names its holder.
    pub(crate) fn reserve_name(&self, key: &str, id: &str) -> Result<()> {
        let mut objects = self.objects();
        if let Some(holder) = objects.names.get(key) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "name {:?} is reserved for {holder}",
                    key.split_once('/').map(|(_, n)| n).unwrap_or(key)
                ),
            ));
        }
        objects.names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub(crate) fn release_name(&self, key: &str, id: &str) {
        let mut objects = self.objects();
        if objects.names.get(key).is_some_and(|h| h == id) {
            objects.names.remove(key);
        }
    }

    pub(crate) fn pod_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("pods").join(id)
    }
    pub(crate) fn pod_state_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(id)
    }
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }
    /// Short on purpose: the monitor's sockets live here, and a unix
    /// socket path must fit in 107 bytes (see `MAX_STATE_DIR_LEN`).
    pub(crate) fn container_state_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("c").join(id)
    }

    /// A pod's log directory must lie under the configured log root, if any.
    pub(crate) fn check_log_directory(&self, dir: &str) -> Result<()> {
        match &self.config.log_root {
            Some(root) if !dir.is_empty() && !Path::new(dir).starts_with(root) => {
                Err(Error::invalid(format!(
                    "log_directory {dir:?} is outside the log root {}",
                    root.display()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// berthd's directories, closed to other host users (containerd's
/// CVE-2021-41103: layers keep setuid files and device nodes, and bundles
/// hold containers' env). The two roots are 0711 so that a group given the
/// 0660 CRI socket can reach it; everything under them is 0700.
fn make_private_dirs(config: &CoreConfig) -> Result<()> {
    berth_store::private_dir(&config.root, 0o711)?;
    berth_store::private_dir(&config.state_dir, 0o711)?;
    for dir in [
        config.root.join("containers"),
        config.root.join("pods"),
        config.state_dir.join("pods"),
        config.state_dir.join("c"),
        config.state_dir.join("x"),
        config.state_dir.join("runtimes"),
        config.state_dir.join("seccomp"),
    ] {
        berth_store::private_dir(&dir, 0o700)?;
    }
    Ok(())
}

/// Runs `work` to its end on a task of its own: a caller that stops
/// waiting (a gRPC deadline, a closed connection) drops only the wait,
/// never half of a change to the node.
pub(crate) async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::internal(format!("core task: {e}")))?
}

/// An object that another call removed meanwhile needs no more work.
pub(crate) fn gone_is_done(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A fresh 64-hex-digit id.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    // getrandom cannot fail on Linux ≥ 3.17 for ≤ 256 bytes.
    // SAFETY: writes at most bytes.len() bytes into our buffer.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hands back to the kernel the heap pages the allocator holds free:
/// after a burst (a pull, a scrape) glibc keeps them, and idle RSS with
/// them.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
