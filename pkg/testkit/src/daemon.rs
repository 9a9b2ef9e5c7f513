//! `TestDaemon`: a real berthd in a temporary root, reached over its CRI socket.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{eventually, mounts_under, workspace_root};

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

#[derive(Default)]
pub struct TestDaemonBuilder {
    registries_conf: Option<String>,
    extra_args: Vec<String>,
}

impl TestDaemonBuilder {
    /// containers-registries.conf text for this daemon.
    pub fn registries_conf(mut self, text: &str) -> Self {
        self.registries_conf = Some(text.to_string());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    pub async fn start(self) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("temp root");
        let registries = dir.path().join("registries.conf");
        std::fs::write(&registries, self.registries_conf.unwrap_or_default())
            .expect("write registries.conf");
        let mut d = TestDaemon {
            root: dir.path().join("root"),
            state_dir: dir.path().join("run"),
            socket: dir.path().join("run/berth.sock"),
            log_path: dir.path().join("berthd.log"),
            args: self.extra_args,
            registries,
            child: None,
            dir,
        };
        d.spawn().await;
        d
    }
}

pub struct TestDaemon {
    dir: TempDir,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    log_path: PathBuf,
    registries: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
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
        let mut cmd = Command::new(berthd_bin());
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
            .args(&self.args)
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    async fn spawn(&mut self) {
        // An empty config file keeps the machine's /etc/berth out of tests.
        std::fs::write(self.dir.path().join("no-config.toml"), "").expect("config");
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
                assert!(
                    Path::new(&format!("/proc/{pid}")).exists(),
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
        let socket = self.socket.clone();
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

    /// Asserts nothing is left that a stopped berthd should have cleaned:
    /// no mounts under its directories, no work in progress in the image store.
    pub fn assert_no_leaks(&self) {
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
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

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let status = self.stop();
        if !std::thread::panicking() {
            if let Some(s) = status {
                assert!(
                    s.success(),
                    "berthd did not exit cleanly ({s}): {}",
                    self.log()
                );
            }
            assert!(!self.socket.exists(), "berthd left its socket behind");
            self.assert_no_leaks();
        }
    }
}
