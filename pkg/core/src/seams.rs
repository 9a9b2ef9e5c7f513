//! The seams between the core and the host: the OCI runtime driver, the
//! monitor launcher, the metadata store and the cgroup manager. The real
//! parts are chosen by [`Parts::real`] from the config; tests pass fakes
//! to [`crate::Core::with_parts`], so the state machine, idempotence,
//! owner filtering, events and recovery are tested without root.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use berth_cgroups::Cgroups;
use berth_errdefs::Result;
use berth_oci::{OciRuntime, RuntimeHandler};
use berth_store::{Batch, Store};

use crate::monitor::{self, Exit, SpawnRequest};
use crate::CoreConfig;

/// Drives one OCI runtime binary (crun, runc) for the containers of its
/// handler. Running the container is the monitor's job ([`Monitors::start`]).
pub trait RuntimeDriver: Send + Sync {
    fn handler(&self) -> &RuntimeHandler;
    fn kill(&self, id: &str, signal: &str) -> Result<()>;
    /// Deletes the container; `force` kills a running one first. A
    /// container the runtime does not know is NotFound.
    fn delete(&self, id: &str, force: bool) -> Result<()>;
    /// Applies `linux.resources` from a JSON file.
    fn update(&self, id: &str, resources_file: &Path) -> Result<()>;
    fn pause(&self, id: &str) -> Result<()>;
    fn resume(&self, id: &str) -> Result<()>;
    /// Host pids of the container's processes.
    fn ps(&self, id: &str) -> Result<Vec<u32>>;
    /// The command that runs the process in `process_file` in the
    /// container, writing its pid to `pid_file`.
    fn exec_command(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Result<std::process::Command>;
}

impl RuntimeDriver for OciRuntime {
    fn handler(&self) -> &RuntimeHandler {
        OciRuntime::handler(self)
    }
    fn kill(&self, id: &str, signal: &str) -> Result<()> {
        OciRuntime::kill(self, id, signal)
    }
    fn delete(&self, id: &str, force: bool) -> Result<()> {
        OciRuntime::delete(self, id, force)
    }
    fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        OciRuntime::update(self, id, resources_file)
    }
    fn pause(&self, id: &str) -> Result<()> {
        OciRuntime::pause(self, id)
    }
    fn resume(&self, id: &str) -> Result<()> {
        OciRuntime::resume(self, id)
    }
    fn ps(&self, id: &str) -> Result<Vec<u32>> {
        OciRuntime::ps(self, id)
    }
    fn exec_command(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Result<std::process::Command> {
        OciRuntime::exec_command(self, id, process_file, pid_file, console_socket)
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts and follows the per-container monitors (`berth-shim`), which
/// run the container through the runtime's `run`, hold its stdio and
/// record its exit in the container's state dir.
pub trait Monitors: Send + Sync {
    /// Starts a monitor, ready to run the container; returns its pid.
    /// Blocking.
    fn spawn(&self, req: &SpawnRequest) -> Result<u32>;
    /// Has the monitor in `dir` run its container; returns the init's
    /// pid. Blocking.
    fn start(&self, dir: &Path, id: &str) -> Result<u32>;
    /// The pid of the monitor of container `id` recorded in `dir`, if that
    /// monitor still runs.
    fn live(&self, dir: &Path, id: &str) -> Option<u32>;
    /// Whether `pid` is still the monitor of container `id`.
    fn is_alive(&self, pid: u32, id: &str) -> bool;
    /// Resolves once monitor `pid` has exited.
    fn wait_exit(&self, pid: u32) -> BoxFuture<Result<()>>;
    /// The exit the monitor recorded in `dir`.
    fn read_exit(&self, dir: &Path) -> Option<Exit>;
    /// One control command (`reopen-log`, `resize C R`, `cancel`: end a
    /// container that never started, recorded as killed). Blocking.
    fn control(&self, dir: &Path, id: &str, command: &str) -> Result<()>;
}

/// The real monitor: `berth-shim` processes.
struct ShimMonitors {
    /// berthd's own `cgroup.procs` (the monitors start in its cgroup).
    own_cgroup_procs: Option<PathBuf>,
}

impl Monitors for ShimMonitors {
    fn spawn(&self, req: &SpawnRequest) -> Result<u32> {
        monitor::spawn(req, self.own_cgroup_procs.as_deref())
    }
    fn start(&self, dir: &Path, id: &str) -> Result<u32> {
        monitor::start(dir, id)
    }
    fn live(&self, dir: &Path, id: &str) -> Option<u32> {
        monitor::live_monitor(dir, id)
    }
    fn is_alive(&self, pid: u32, id: &str) -> bool {
        monitor::is_monitor(pid, id)
    }
    fn wait_exit(&self, pid: u32) -> BoxFuture<Result<()>> {
        Box::pin(monitor::wait_exit(pid))
    }
    fn read_exit(&self, dir: &Path) -> Option<Exit> {
        monitor::read_exit(dir)
    }
    fn control(&self, dir: &Path, id: &str, command: &str) -> Result<()> {
        monitor::control(dir, id, command)
    }
}

/// The core's records (sandboxes, containers): crash-safe, written in
/// batches that commit whole.
pub trait MetaStore: Send + Sync {
    fn write(&self, batch: Batch) -> Result<()>;
    /// Every record of `table`, undecoded: the core decodes them, so one
    /// record it cannot read does not hide the others.
    fn list_raw(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Moves an unreadable record out of `table`, keeping its bytes for
    /// an admin to look at.
    fn move_aside(&self, table: &str, key: &str) -> Result<()>;
}

impl MetaStore for Store {
    fn write(&self, batch: Batch) -> Result<()> {
        Store::write(self, batch)
    }
    fn list_raw(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Store::list_raw(self, table)
    }
    fn move_aside(&self, table: &str, key: &str) -> Result<()> {
        Store::move_aside(self, table, key)
    }
}

/// The host's parts the core works through.
pub struct Parts {
    pub store: Arc<dyn MetaStore>,
    /// The store the leaf services (images, IPAM) keep their tables in.
    pub leaf_store: Arc<Store>,
    /// By handler name; `""` is the default handler.
    pub runtimes: BTreeMap<String, Arc<dyn RuntimeDriver>>,
    pub monitors: Arc<dyn Monitors>,
    pub cgroups: Box<dyn Cgroups>,
}

impl Parts {
    /// The real parts: redb under the root, the configured runtime
    /// binaries, `berth-shim`, and the cgroup hierarchy at
    /// `config.cgroup_fs`.
    pub fn real(config: &CoreConfig) -> Result<Parts> {
        let store = Arc::new(Store::open(&config.root)?);
        Ok(Parts {
            store: store.clone(),
            leaf_store: store,
            runtimes: config
                .handlers
                .iter()
                .map(|h| {
                    let driver: Arc<dyn RuntimeDriver> = Arc::new(OciRuntime::new(h.clone()));
                    (h.name.clone(), driver)
                })
                .collect(),
            monitors: Arc::new(ShimMonitors {
                own_cgroup_procs: berth_cgroups::own_procs_file(&config.cgroup_fs),
            }),
            cgroups: berth_cgroups::open(&config.cgroup_fs)?,
        })
    }
}
