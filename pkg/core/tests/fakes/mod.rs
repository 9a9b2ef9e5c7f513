//! Fakes for the core's seams (`src/seams.rs`), so that its state machine,
//! idempotence, owners, events and recovery are tested without root: an
//! in-memory store, a fake node (the OCI runtime and the container
//! monitors over one table of made-up containers) and cgroups that only
//! remember. [`World`] puts them together under a temporary directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_cgroups::{Cgroups, Mode, Resources as CgroupResources, Stats};
use berth_core::*;
use berth_errdefs::Result;
use berth_oci::RuntimeHandler;
use berth_store::Batch;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The metadata store.

/// Tables of raw records in memory. Writes commit whole or not at all; a
/// test can make the next writes fail and can plant unreadable bytes.
#[derive(Default)]
pub struct FakeStore {
    tables: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    aside: Mutex<Vec<(String, String)>>,
    failing_writes: AtomicUsize,
    writes: AtomicUsize,
}

impl FakeStore {
    pub fn put<T: Serialize>(&self, table: &str, key: &str, record: &T) {
        self.put_raw(table, key, serde_json::to_vec(record).unwrap());
    }

    /// Plants bytes as they are, readable or not.
    pub fn put_raw(&self, table: &str, key: &str, bytes: Vec<u8>) {
        lock(&self.tables)
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), bytes);
    }

    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Option<T> {
        let tables = lock(&self.tables);
        let bytes = tables.get(table)?.get(key)?;
        Some(serde_json::from_slice(bytes).expect("a record the core wrote decodes"))
    }

    pub fn keys(&self, table: &str) -> Vec<String> {
        lock(&self.tables)
            .get(table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The next `n` writes fail (and change nothing).
    pub fn fail_next_writes(&self, n: usize) {
        self.failing_writes.store(n, Ordering::SeqCst);
    }

    /// `(table, key)` of every record moved aside, in order.
    pub fn moved_aside(&self) -> Vec<(String, String)> {
        lock(&self.aside).clone()
    }

    /// Writes that committed.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

pub const INJECTED_STORE_FAILURE: &str = "injected store write failure";

impl MetaStore for FakeStore {
    fn write(&self, batch: Batch) -> Result<()> {
        let failing = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Error::internal(INJECTED_STORE_FAILURE));
        }
        let mut tables = lock(&self.tables);
        for (table, key, value) in batch.writes() {
            let t = tables.entry(table.to_string()).or_default();
            match value {
                Some(bytes) => t.insert(key.to_string(), bytes.to_vec()),
                None => t.remove(key),
            };
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn list_raw(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(lock(&self.tables)
            .get(table)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn move_aside(&self, table: &str, key: &str) -> Result<()> {
        let removed = lock(&self.tables)
            .get_mut(table)
            .and_then(|t| t.remove(key));
        if removed.is_none() {
            return Err(Error::not_found(format!("{table}/{key} not found")));
        }
        lock(&self.aside).push((table.to_string(), key.to_string()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The runtime and the monitors.

/// Made-up pids above the kernel's largest `pid_max`: nothing real has them.
const FIRST_PID: u32 = 5_000_000;

/// The containers, shared with the futures of `wait_exit`.
#[derive(Default)]
struct Table {
    containers: Mutex<HashMap<String, FakeContainer>>,
    /// Bumped on every exit; `wait_exit` waits on it.
    changed: watch::Sender<u64>,
}

impl Table {
    fn pid_alive(&self, pid: u32) -> bool {
        lock(&self.containers)
            .values()
            .any(|c| c.shim_pid == pid && c.alive)
    }
}

struct FakeContainer {
    shim_pid: u32,
    init_pid: u32,
    /// Its monitor (and so its process) still runs.
    alive: bool,
    /// What the monitor recorded when it exited (`None`: nothing).
    exit: Option<Exit>,
    /// The runtime deleted it: runtime verbs find nothing.
    deleted: bool,
}

/// One node's containers as the OCI runtime and the monitors see them:
/// implements both [`RuntimeDriver`] and [`Monitors`] over one table, so a
/// signal sent through the runtime ends the process the monitor follows.
/// Every call is logged (`"verb id [args]"`); a test can make a verb fail.
pub struct FakeNode {
    handler: RuntimeHandler,
    table: Arc<Table>,
    next_pid: AtomicU32,
    calls: Mutex<Vec<String>>,
    failing: Mutex<HashMap<&'static str, ErrorKind>>,
}

impl Default for FakeNode {
    fn default() -> Self {
        FakeNode {
            handler: RuntimeHandler {
                name: String::new(),
                program: "/fake/crun".into(),
                argv_prefix: Vec::new(),
                root: "/fake/run/crun".into(),
                hide_cgroup2: false,
                allowed_annotations: Vec::new(),
            },
            table: Arc::default(),
            next_pid: AtomicU32::new(FIRST_PID),
            calls: Mutex::default(),
            failing: Mutex::default(),
        }
    }
}

pub fn injected_failure(verb: &str) -> String {
    format!("injected failure of {verb}")
}

impl FakeNode {
    /// A container whose monitor runs (as one that outlived berthd);
    /// returns the monitor's pid.
    pub fn add_live(&self, id: &str) -> u32 {
        self.add(id, true, None)
    }

    /// A container whose monitor is gone, having recorded `exit` (or nothing).
    pub fn add_dead(&self, id: &str, exit: Option<Exit>) -> u32 {
        self.add(id, false, exit)
    }

    fn add(&self, id: &str, alive: bool, exit: Option<Exit>) -> u32 {
        let shim_pid = self.next_pid.fetch_add(2, Ordering::SeqCst);
        let c = FakeContainer {
            shim_pid,
            init_pid: shim_pid + 1,
            alive,
            exit,
            deleted: false,
        };
        lock(&self.table.containers).insert(id.to_string(), c);
        shim_pid
    }

    /// The container exits with `code`; its monitor records that and exits.
    /// Returns the recorded finish time.
    pub fn exit(&self, id: &str, code: i32) -> i64 {
        let finished_at_ns = now_ns();
        self.end(
            id,
            Some(Exit {
                exit_code: code,
                finished_at_ns,
            }),
        );
        finished_at_ns
    }

    /// The monitor dies without recording an exit.
    pub fn vanish(&self, id: &str) {
        self.end(id, None);
    }

    fn end(&self, id: &str, exit: Option<Exit>) {
        {
            let mut containers = lock(&self.table.containers);
            let c = containers
                .get_mut(id)
                .unwrap_or_else(|| panic!("no fake container {id}"));
            assert!(c.alive, "fake container {id} has exited already");
            c.alive = false;
            c.exit = exit;
        }
        // After the table's lock is released: waiters read the table.
        self.table.changed.send_modify(|n| *n += 1);
    }

    /// Whether the runtime still has the container (not deleted).
    pub fn runtime_knows(&self, id: &str) -> bool {
        self.known(id).is_ok()
    }

    pub fn is_running(&self, id: &str) -> bool {
        lock(&self.table.containers)
            .get(id)
            .is_some_and(|c| c.alive)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The calls that start with `prefix` (`"kill c1"`).
    pub fn calls_to(&self, prefix: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    /// The next call of `verb` (`"start"`, `"kill"`, `"spawn"`…) fails with `kind`.
    pub fn fail_next(&self, verb: &'static str, kind: ErrorKind) {
        lock(&self.failing).insert(verb, kind);
    }

    fn call(&self, verb: &'static str, what: String) -> Result<()> {
        lock(&self.calls).push(format!("{verb} {what}"));
        match lock(&self.failing).remove(verb) {
            Some(kind) => Err(Error::new(kind, injected_failure(verb))),
            None => Ok(()),
        }
    }

    fn known(&self, id: &str) -> Result<()> {
        match lock(&self.table.containers)
            .get(id)
            .is_some_and(|c| !c.deleted)
        {
            true => Ok(()),
            false => Err(Error::not_found(format!("container {id} does not exist"))),
        }
    }
}

/// `KILL`, `TERM` or a number, as the core sends them.
fn signal_number(signal: &str) -> i32 {
    match signal {
        "KILL" => 9,
        "TERM" => 15,
        n => n.parse().expect("a signal name or number"),
    }
}

impl RuntimeDriver for FakeNode {
    fn handler(&self) -> &RuntimeHandler {
        &self.handler
    }
    /// Every signal ends the process, as the shell's default action would.
    fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.call("kill", format!("{id} {signal}"))?;
        self.known(id)?;
        if !self.is_running(id) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} is not running"),
            ));
        }
        self.exit(id, 128 + signal_number(signal));
        Ok(())
    }
    fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.call("delete", format!("{id} force={force}"))?;
        self.known(id)?;
        if self.is_running(id) {
            assert!(force, "delete of running {id} without force");
            self.exit(id, 137);
        }
        if let Some(c) = lock(&self.table.containers).get_mut(id) {
            c.deleted = true;
        }
        Ok(())
    }
    fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        let json = std::fs::read_to_string(resources_file).expect("the resources file");
        self.call("update", format!("{id} {json}"))?;
        self.known(id)
    }
    fn pause(&self, id: &str) -> Result<()> {
        self.call("pause", id.to_string())
    }
    fn resume(&self, id: &str) -> Result<()> {
        self.call("resume", id.to_string())
    }
    fn ps(&self, id: &str) -> Result<Vec<u32>> {
        self.call("ps", id.to_string())?;
        let containers = lock(&self.table.containers);
        Ok(containers
            .get(id)
            .filter(|c| c.alive)
            .map(|c| vec![c.init_pid])
            .unwrap_or_default())
    }
    fn exec_command(
        &self,
        id: &str,
        _process_file: &Path,
        _pid_file: &Path,
        _console_socket: Option<&Path>,
    ) -> Result<std::process::Command> {
        self.call("exec", id.to_string())?;
        Ok(std::process::Command::new("/bin/true"))
    }
}

/// The container id of a monitor's state dir (`<state>/c/<id>`).
fn dir_id(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

impl Monitors for FakeNode {
    fn spawn(&self, req: &SpawnRequest) -> Result<u32> {
        self.call("spawn", req.id.to_string())?;
        // As berth-shim does: its files live there.
        std::fs::create_dir_all(req.dir)?;
        Ok(self.add_live(req.id))
    }
    fn start(&self, dir: &Path, id: &str) -> Result<u32> {
        assert_eq!(dir_id(dir), id, "the monitor dir of {id}");
        self.call("start", id.to_string())?;
        self.known(id)?;
        let containers = lock(&self.table.containers);
        Ok(containers.get(id).map_or(0, |c| c.init_pid))
    }
    fn live(&self, dir: &Path, id: &str) -> Option<u32> {
        assert_eq!(dir_id(dir), id, "the monitor dir of {id}");
        let containers = lock(&self.table.containers);
        containers.get(id).filter(|c| c.alive).map(|c| c.shim_pid)
    }
    fn is_alive(&self, pid: u32, id: &str) -> bool {
        let containers = lock(&self.table.containers);
        containers
            .get(id)
            .is_some_and(|c| c.shim_pid == pid && c.alive)
    }
    fn wait_exit(&self, pid: u32) -> BoxFuture<Result<()>> {
        let table = self.table.clone();
        let mut changed = table.changed.subscribe();
        Box::pin(async move {
            changed
                .wait_for(|_| !table.pid_alive(pid))
                .await
                .map(drop)
                .map_err(|e| Error::internal(format!("fake node gone: {e}")))
        })
    }
    fn read_exit(&self, dir: &Path) -> Option<Exit> {
        lock(&self.table.containers)
            .get(&dir_id(dir))
            .and_then(|c| c.exit)
    }
    fn control(&self, dir: &Path, id: &str, command: &str) -> Result<()> {
        assert_eq!(dir_id(dir), id, "the monitor dir of {id}");
        self.call("control", format!("{id} {command}"))?;
        match self.is_running(id) {
            // The monitor records the never-started container as killed.
            true if command == "cancel" => {
                self.exit(id, 137);
                Ok(())
            }
            true => Ok(()),
            false => Err(Error::not_found(format!("monitor of {id} is gone"))),
        }
    }
}

impl FakeNode {
    pub fn new() -> Arc<FakeNode> {
        Arc::new(FakeNode::default())
    }
}

// ---------------------------------------------------------------------------
// Cgroups.

#[derive(Default)]
struct CgroupState {
    existing: BTreeSet<String>,
    log: Vec<String>,
    oom_kills: HashMap<String, u64>,
}

/// Cgroups that only remember: `create`, `apply` and `remove` are logged
/// (`"create /path"`), `exists` answers from the set made so far.
#[derive(Clone, Default)]
pub struct FakeCgroups(Arc<Mutex<CgroupState>>);

impl FakeCgroups {
    /// A cgroup that exists already (kubelet's pod cgroup).
    pub fn add(&self, path: &str) {
        lock(&self.0).existing.insert(path.to_string());
    }
    pub fn existing(&self) -> BTreeSet<String> {
        lock(&self.0).existing.clone()
    }
    pub fn log(&self) -> Vec<String> {
        lock(&self.0).log.clone()
    }
    /// The kernel's OOM killer killed `n` processes in `path`.
    pub fn set_oom_kills(&self, path: &str, n: u64) {
        lock(&self.0).oom_kills.insert(path.to_string(), n);
    }
}

impl Cgroups for FakeCgroups {
    fn mode(&self) -> Mode {
        Mode::Unified
    }
    fn create(&self, path: &str) -> Result<()> {
        let mut s = lock(&self.0);
        s.log.push(format!("create {path}"));
        s.existing.insert(path.to_string());
        Ok(())
    }
    fn apply(&self, path: &str, resources: &CgroupResources) -> Result<()> {
        let mut s = lock(&self.0);
        s.log.push(format!("apply {path} {resources:?}"));
        match s.existing.contains(path) {
            true => Ok(()),
            false => Err(Error::not_found(format!("cgroup {path} does not exist"))),
        }
    }
    fn add_process(&self, _path: &str, _pid: u32) -> Result<()> {
        Ok(())
    }
    fn processes(&self, _path: &str) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    fn stats(&self, path: &str) -> Result<Stats> {
        let oom_kills = lock(&self.0).oom_kills.get(path).copied().unwrap_or(0);
        Ok(Stats {
            oom_kills,
            ..Default::default()
        })
    }
    fn remove(&self, path: &str) -> Result<()> {
        let mut s = lock(&self.0);
        s.log.push(format!("remove {path}"));
        s.existing.remove(path);
        Ok(())
    }
    fn exists(&self, path: &str) -> bool {
        lock(&self.0).existing.contains(path)
    }
}

// ---------------------------------------------------------------------------
// A node made of fakes.

pub const CGROUP_ROOT: &str = "/berth-test";

/// The fakes under one temporary root, and cores opened on them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub store: Arc<FakeStore>,
    pub node: Arc<FakeNode>,
    pub cgroups: FakeCgroups,
    leaf: Arc<berth_store::Store>,
}

impl World {
    pub fn new() -> World {
        // In /tmp whatever TMPDIR says: the core refuses a state dir too
        // long for the monitors' socket paths (27 bytes).
        let dir = tempfile::Builder::new()
            .prefix("berth")
            .tempdir_in("/tmp")
            .expect("a temporary directory in /tmp");
        let leaf = Arc::new(berth_store::Store::open(&dir.path().join("root")).unwrap());
        World {
            dir,
            store: Arc::default(),
            node: FakeNode::new(),
            cgroups: FakeCgroups::default(),
            leaf,
        }
    }

    pub fn config(&self) -> CoreConfig {
        let base = self.dir.path();
        CoreConfig {
            root: base.join("root"),
            state_dir: base.join("state"),
            registries: Default::default(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            handlers: vec![self.node.handler.clone()],
            shim: "/fake/berth-shim".into(),
            cgroup_root: CGROUP_ROOT.into(),
            cgroup_fs: "/fake/sys/fs/cgroup".into(),
            network: NetworkSettings::None,
            log_root: None,
            seccomp_profile_root: None,
            seccomp_default: false,
            precompile_seccomp: true,
            image_limits: Default::default(),
        }
    }

    /// Opens a core on the fakes: recovery runs over what the store holds.
    pub fn open(&self) -> Core {
        self.open_recording(Arc::new(NoRecorder))
    }

    /// [`World::open`], recording into `metrics`.
    pub fn open_recording(&self, metrics: Arc<dyn Recorder>) -> Core {
        let runtime: Arc<dyn RuntimeDriver> = self.node.clone();
        let parts = Parts {
            store: self.store.clone(),
            leaf_store: self.leaf.clone(),
            runtimes: BTreeMap::from([(String::new(), runtime)]),
            monitors: self.node.clone(),
            cgroups: Box::new(self.cgroups.clone()),
        };
        Core::with_parts_recording(self.config(), parts, metrics).expect("a core on fakes opens")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Names in `dir` (empty if it does not exist).
    pub fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a sandbox as a core before this one left it: ready, its
    /// namespaces the node's.
    pub fn seed_sandbox(&self, id: &str, owner: Owner, name: &str) -> SandboxRecord {
        let record = SandboxRecord {
            id: id.to_string(),
            owner,
            config: pod_config(owner, name),
            state: SandboxState::Ready,
            created_at_ns: now_ns(),
            cgroup_parent: format!("{CGROUP_ROOT}/{id}"),
            ..Default::default()
        };
        self.store.put(SANDBOXES, id, &record);
        record
    }

    /// Records a container of `pod` in `state`, with a fake process: alive
    /// if the state is live, else gone after exiting 0.
    pub fn seed_container(
        &self,
        id: &str,
        pod: &SandboxRecord,
        state: ContainerState,
    ) -> ContainerRecord {
        let shim_pid = match state.is_live() {
            true => self.node.add_live(id),
            false => self.node.add_dead(id, None),
        };
        let mut record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: pod.id.clone(),
            owner: pod.owner,
            config: ContainerConfig {
                name: format!("ctr-{id}"),
                image: "example.com/app:1".into(),
                ..Default::default()
            },
            image_id: "sha256:0123".into(),
            state,
            created_at_ns: now_ns(),
            shim_pid,
            pid: shim_pid + 1,
            cgroups_path: format!("{}/{id}", pod.cgroup_parent),
            stop_signal: 15,
            ..Default::default()
        };
        if state.has_exited() {
            record.finished_at_ns = now_ns();
            record.reason = "Completed".into();
        }
        // The monitor's state dir, which it made.
        std::fs::create_dir_all(self.dir.path().join("state/c").join(id)).unwrap();
        self.store.put(CONTAINERS, id, &record);
        record
    }
}

/// The core's table names (records are JSON under the object's id).
pub const SANDBOXES: &str = "sandboxes";
pub const CONTAINERS: &str = "containers";

/// A pod that needs no root: the node's network, ipc and pid namespaces
/// (nothing to pin, no /dev/shm tmpfs), no pod network. A Kubernetes pod
/// carries its namespace and uid.
pub fn pod_config(owner: Owner, name: &str) -> PodConfig {
    PodConfig {
        name: name.to_string(),
        kubernetes: (owner == Owner::Kubernetes).then(|| PodMetadata {
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        namespaces: NamespaceOptions {
            network: NamespaceMode::Node,
            pid: NamespaceMode::Node,
            ipc: NamespaceMode::Node,
            ..Default::default()
        },
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Events and waiting.

/// The CRI-level kinds of the core's container and sandbox events, as
/// these tests compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One event about a sandbox or container, with the sandbox it names.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub sandbox_id: String,
    pub kind: EventKind,
    /// The bus's own event.
    pub raw: Arc<berth_core::events::Event>,
}

impl Event {
    fn from_bus(raw: Arc<berth_core::events::Event>) -> Option<Event> {
        let kind = match raw.action {
            Action::Create => EventKind::Created,
            Action::Start => EventKind::Started,
            Action::Die { .. } | Action::Stop => EventKind::Stopped,
            Action::Destroy => EventKind::Deleted,
            _ => return None,
        };
        let sandbox_id = match raw.kind {
            ObjectKind::Sandbox => raw.id.clone(),
            ObjectKind::Container => raw.attributes.get(attr::SANDBOX_ID)?.clone(),
            _ => return None,
        };
        Some(Event {
            id: raw.id.clone(),
            sandbox_id,
            kind,
            raw,
        })
    }
}

/// The core's events as a test reads them. The one place that knows how
/// to subscribe and receive.
pub struct Events(Subscription);

pub fn subscribe(core: &Core) -> Events {
    Events(core.events().subscribe(None))
}

const DEADLINE: Duration = Duration::from_secs(10);

impl Events {
    /// The kinds of the next `n` events about object `id` (others are
    /// skipped), with the sandbox each named.
    pub async fn next_about(&mut self, id: &str, n: usize) -> Vec<(EventKind, String)> {
        let mut out = Vec::new();
        for e in self.next_among(&[id], n).await {
            out.push((e.kind, e.sandbox_id));
        }
        out
    }

    /// The next `n` events about any of `ids`, in order.
    pub async fn next_among(&mut self, ids: &[&str], n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while out.len() < n {
            let received = tokio::time::timeout_at(deadline, self.0.next())
                .await
                .unwrap_or_else(|_| panic!("events about {ids:?}: only {out:?} in time"))
                .expect("the event stream");
            let Received::Event(raw) = received else {
                panic!("a test subscriber lagged");
            };
            if let Some(event) = Event::from_bus(raw) {
                if ids.contains(&event.id.as_str()) {
                    out.push(event);
                }
            }
        }
        out
    }

    /// The kinds of every event about `id` received so far, without waiting.
    pub fn pending_about(&mut self, id: &str) -> Vec<EventKind> {
        let mut out = Vec::new();
        while let Some(received) = self.0.try_next() {
            if let Received::Event(raw) = received {
                if let Some(event) = Event::from_bus(raw).filter(|e| e.id == id) {
                    out.push(event.kind);
                }
            }
        }
        out
    }
}

/// Polls `done` until it holds, failing after a deadline.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Holding a thread at a log line.

/// A thread that logs `message` about container `container` waits there
/// until the gate is released (or 10 s pass): a deterministic pause
/// between two steps of the core that no seam separates.
pub struct LogGate {
    message: &'static str,
    container: String,
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    reached: std::sync::atomic::AtomicBool,
}

static GATES: Mutex<Vec<Arc<LogGate>>> = Mutex::new(Vec::new());

/// Installs a gate (and, the first time, the process-wide subscriber that
/// honours gates). Only for multi-thread runtimes: the held worker hands
/// its tasks over (`block_in_place`).
pub fn hold_log(message: &'static str, container: &str) -> Arc<LogGate> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(GateSubscriber)
            .expect("no other global subscriber in this test binary")
    });
    let gate = Arc::new(LogGate {
        message,
        container: container.to_string(),
        open: Mutex::new(false),
        opened: std::sync::Condvar::new(),
        reached: Default::default(),
    });
    lock(&GATES).push(gate.clone());
    gate
}

impl LogGate {
    pub fn release(&self) {
        *lock(&self.open) = true;
        self.opened.notify_all();
    }
    /// Whether a thread came to the line.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::SeqCst)
    }
    fn wait(&self) {
        self.reached.store(true, Ordering::SeqCst);
        let open = lock(&self.open);
        let _ = self
            .opened
            .wait_timeout_while(open, DEADLINE, |open| !*open)
            .unwrap_or_else(|p| p.into_inner());
    }
}

impl Drop for LogGate {
    fn drop(&mut self) {
        *lock(&self.open) = true;
        self.opened.notify_all();
    }
}

struct GateSubscriber;

#[derive(Default)]
struct Fields {
    message: String,
    container: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "container" => self.container = format!("{value:?}"),
            _ => {}
        }
    }
}

impl tracing::Subscriber for GateSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let gate = lock(&GATES)
            .iter()
            .find(|g| g.message == fields.message && g.container == fields.container)
            .cloned();
        if let Some(gate) = gate {
            tokio::task::block_in_place(|| gate.wait());
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
