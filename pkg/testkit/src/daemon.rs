//! `TestDaemon`: a real berthd in a temporary root, reached over its CRI socket.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{eventually, mounts_under, workspace_root, TestNetwork};

/// A gRPC channel over a CRI unix socket (berthd's, or another runtime's).
pub async fn unix_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}

/// The berthd binary `cargo build` made; tests never build it themselves.
pub fn berthd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTHD_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/berthd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin berthd` first (hack/test.sh does)",
        bin.display()
    );
    bin
}

/// The monitor binary beside berthd.
pub fn shim_bin() -> PathBuf {
    berthd_bin().with_file_name("berth-shim")
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchies mounted here (v1 controllers, named ones, or v2).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// Cgroup directories under `cgroup` (relative path) in any hierarchy.
pub fn cgroups_under(cgroup: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in hierarchies() {
        let mut stack = vec![h.join(cgroup.trim_start_matches('/'))];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    out.push(e.path());
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A process's state letter (`R`, `S`, `Z`...), `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..."; comm may hold spaces, so split at ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// `berth-pause` processes (pod pid namespaces) whose parent is `ppid`.
pub fn pauses_of(ppid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ..."; comm may hold spaces, so split at ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let parent = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            head.ends_with("(berth-pause") && parent == Some(ppid)
        })
        .collect()
}

/// A loopback address with a port nothing listens on now.
fn free_loopback_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

static NEXT_CGROUP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Default)]
pub struct TestDaemonBuilder {
    registries_conf: Option<String>,
    network: Option<TestNetwork>,
    extra_args: Vec<String>,
    berthd: Option<PathBuf>,
    config_toml: String,
}

impl TestDaemonBuilder {
    /// containers-registries.conf text for this daemon.
    pub fn registries_conf(mut self, text: &str) -> Self {
        self.registries_conf = Some(text.to_string());
        self
    }

    /// A network picked by the test (to write a CNI config for it first).
    pub fn network(mut self, network: TestNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// berthd's config file text (empty by default).
    pub fn config_toml(mut self, text: &str) -> Self {
        self.config_toml = text.to_string();
        self
    }

    /// Another berthd binary (its berth-shim beside it), e.g. an older
    /// build for a benchmark to compare with; default [`berthd_bin`].
    pub fn berthd(mut self, bin: &Path) -> Self {
        self.berthd = Some(bin.to_path_buf());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    pub async fn start(self) -> TestDaemon {
        let mut d = self.build();
        d.spawn().await;
        d
    }

    /// Starts berthd expecting it to refuse to start: returns its log.
    pub fn start_failure(self) -> String {
        let d = self.build();
        std::fs::write(d.dir.path().join("no-config.toml"), &d.config_toml).expect("config");
        let mut child = d
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berthd");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait berthd").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("berthd started although it should have refused");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("berthd output");
        assert!(!out.status.success(), "berthd exited 0");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn build(self) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("temp root");
        let registries = dir.path().join("registries.conf");
        std::fs::write(&registries, self.registries_conf.unwrap_or_default())
            .expect("write registries.conf");
        let n = NEXT_CGROUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TestDaemon {
            cgroup_root: format!("/berth-test-{}-{n}", std::process::id()),
            network: self.network.unwrap_or_else(|| TestNetwork::pick(n)),
            root: dir.path().join("root"),
            state_dir: dir.path().join("run"),
            socket: dir.path().join("run/berth.sock"),
            log_path: dir.path().join("berthd.log"),
            metrics_address: free_loopback_address(),
            args: self.extra_args,
            config_toml: self.config_toml,
            registries,
            child: None,
            berthd: self.berthd.unwrap_or_else(berthd_bin),
            dir,
        }
    }
}

pub struct TestDaemon {
    dir: TempDir,
    /// The cgroup this daemon puts pods under; removed on drop.
    pub cgroup_root: String,
    /// The bridge and subnet this daemon's pods get; removed on drop.
    pub network: TestNetwork,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    log_path: PathBuf,
    registries: PathBuf,
    /// Where this daemon serves `/metrics` (a port free when it was built,
    /// so parallel daemons do not fight over berthd's default one), unless
    /// the test passes `--metrics-address` itself.
    pub metrics_address: std::net::SocketAddr,
    args: Vec<String>,
    /// The config file's text, written at every start.
    config_toml: String,
    child: Option<Child>,
    /// The binary it runs; the monitor is the berth-shim beside it.
    berthd: PathBuf,
}

impl TestDaemon {
    pub fn builder() -> TestDaemonBuilder {
        TestDaemonBuilder::default()
    }

    pub async fn start() -> TestDaemon {
        Self::builder().start().await
    }

    /// The command line this daemon runs with.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.berthd);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cri-socket")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--registries-config")
            .arg(&self.registries)
            .arg("--config")
            .arg(self.dir.path().join("no-config.toml"))
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--shim")
            .arg(self.berthd.with_file_name("berth-shim"));
        // The daemon's own network unless the test names another.
        let given = |flag: &str| self.args.iter().any(|a| a == flag);
        if !given("--bridge") {
            cmd.arg("--bridge").arg(&self.network.bridge);
        }
        if !given("--pod-subnet") {
            cmd.arg("--pod-subnet").arg(self.network.subnet.to_string());
        }
        if !given("--metrics-address") {
            cmd.arg("--metrics-address")
                .arg(self.metrics_address.to_string());
        }
        cmd.args(&self.args).env("RUST_BACKTRACE", "1");
        cmd
    }

    async fn spawn(&mut self) {
        // A config file of the test's own keeps the machine's /etc/berth out.
        std::fs::write(self.dir.path().join("no-config.toml"), &self.config_toml).expect("config");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let socket = self.socket.clone();
        let pid = self.pid();
        eventually(
            "berthd to serve its CRI socket",
            Duration::from_secs(20),
            || {
                // Our own child lingers as a zombie until reaped: its state
                // tells that it exited.
                assert!(
                    process_state(pid).is_some_and(|s| s != 'Z'),
                    "berthd exited early: {}",
                    self.log()
                );
                std::os::unix::net::UnixStream::connect(&socket).ok()
            },
        )
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn channel(&self) -> Channel {
        unix_channel(&self.socket).await
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        for _ in 0..500 {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Starts berthd again on the same root and state dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Starts berthd again after a SIGKILL (the socket file is left behind).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "berthd is still running");
        self.spawn().await;
    }

    /// The pod addresses leased in the store (read while berthd is stopped).
    pub fn leases(&self) -> Vec<String> {
        match berth_store::Store::open(&self.root) {
            Ok(store) => store
                .list::<serde_json::Value>("ipam_leases")
                .unwrap_or_default()
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The temporary directory holding root, state dir and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Asserts nothing is left that a stopped berthd should have cleaned:
    /// no mounts (rootfs, shm, namespace pins) under its directories, no
    /// monitor or pause process, no cgroup under its cgroup root, no
    /// container or pod directories, no work in progress in the image store.
    pub fn assert_no_leaks(&self) {
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        let procs: Vec<u32> = processes_mentioning(&self.dir.path().display().to_string())
            .into_iter()
            .filter(|p| Some(*p) != self.child.as_ref().map(|c| c.id()))
            .collect();
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let pauses = pauses_of(self.pid());
        assert!(pauses.is_empty(), "pause processes left behind: {pauses:?}");
        let cgroups = cgroups_under(&self.cgroup_root);
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        let veths = self.network.veths();
        assert!(veths.is_empty(), "pod veths left behind: {veths:?}");
        let rules = self.network.pod_rules();
        assert!(rules.is_empty(), "host-port rules left behind: {rules:?}");
        if self.child.is_none() {
            let leases = self.leases();
            assert!(leases.is_empty(), "IPAM leases left behind: {leases:?}");
        }
        for dir in [
            self.root.join("containers"),
            self.root.join("pods"),
            self.state_dir.join("c"),
            self.state_dir.join("pods"),
        ] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
        }
        let tmp = self.root.join("images/tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            let left: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            assert!(
                left.is_empty(),
                "image work left in {}: {left:?}",
                tmp.display()
            );
        }
    }
}

impl TestDaemon {
    /// After a failed test: kill what the daemon started, unmount and
    /// remove its cgroups, so one failure does not leak onto the machine.
    fn scrub(&self) {
        for h in hierarchies() {
            let dir = h.join(self.cgroup_root.trim_start_matches('/'));
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: signalling a process in this test's own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    }
                }
            }
        }
        for pid in processes_mentioning(&self.dir.path().display().to_string()) {
            // SAFETY: a monitor or pause process of this test's daemon.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        self.remove_cgroup_root();
        let _ = berth_net::remove_bridge_network(&self.network.bridge);
    }

    /// Removes the cgroup root (deepest first) in every hierarchy.
    fn remove_cgroup_root(&self) {
        let mut dirs = cgroups_under(&self.cgroup_root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for h in hierarchies() {
            dirs.push(h.join(self.cgroup_root.trim_start_matches('/')));
        }
        for d in dirs {
            for _ in 0..100 {
                match std::fs::remove_dir(&d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // Pause processes are berthd's children: look before it exits.
        let pauses = pauses_of(self.pid());
        let status = self.stop();
        if !pauses.is_empty() && !std::thread::panicking() {
            for p in &pauses {
                // SAFETY: a pause process this test's berthd started.
                unsafe { libc::kill(*p as i32, libc::SIGKILL) };
            }
            self.scrub();
            panic!("pause processes left behind: {pauses:?}");
        }
        if std::thread::panicking() {
            self.scrub();
            return;
        }
        {
            if let Some(s) = status {
                assert!(
                    s.success(),
                    "berthd did not exit cleanly ({s}): {}",
                    self.log()
                );
            }
            assert!(!self.socket.exists(), "berthd left its socket behind");
            let leaks =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.assert_no_leaks()));
            if let Err(panic) = leaks {
                self.scrub();
                std::panic::resume_unwind(panic);
            }
            self.remove_cgroup_root();
            self.network.remove();
        }
    }
}
