//! What the Docker API benchmarks share: a docker CLI aimed at one
//! daemon, and dockerd (Debian's docker.io) as the peer they measure
//! berthd beside, on its own data root, exec root, socket and bridge.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::rss_kib;

/// A docker CLI aimed at one daemon.
pub struct Cli {
    pub host: String,
    pub config: PathBuf,
}

impl Cli {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            // `build` takes the classic builder (the one berthd serves).
            .env("DOCKER_BUILDKIT", "0")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `args`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} against {}: {}",
            self.host,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Seconds `args` took (output discarded); it must succeed.
    pub fn time(&self, args: &[&str]) -> f64 {
        let t = Instant::now();
        let status = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run docker");
        let took = t.elapsed().as_secs_f64();
        assert!(
            status.success(),
            "docker {args:?} against {} failed",
            self.host
        );
        took
    }
}

/// dockerd from Debian's docker.io, on its own everything.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    bridge: String,
}

impl Dockerd {
    /// `registry`: the local registry's `127.0.0.1:PORT`, plain HTTP.
    pub fn start(registry: &str) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("bench-dockerd-")
            .tempdir()
            .unwrap();
        let bridge = "bdbench0".to_string();
        // Its own bridge and subnet, so it touches none of the host's.
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", "10.199.0.1/24", "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let p = |s: &str| dir.path().join(s).display().to_string();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args([
                "--data-root",
                &p("data"),
                "--exec-root",
                &p("exec"),
                "--pidfile",
                &p("pid"),
            ])
            .args([
                "-H",
                &format!("unix://{}", p("docker.sock")),
                "--config-file",
                &p("daemon.json"),
            ])
            .args([
                "--bridge",
                &bridge,
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--insecure-registry",
                registry,
            ])
            .args(["--storage-driver", "overlay2"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd (hack/bench-docker.sh installs docker.io)");
        Dockerd { child, dir, bridge }
    }

    /// A CLI aimed at this dockerd once it answers `docker info`.
    pub async fn ready_cli(&self, config: PathBuf) -> Cli {
        let socket = self.socket();
        berth_testkit::eventually("dockerd to answer", Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        })
        .await;
        let cli = Cli {
            host: format!("unix://{}", socket.display()),
            config,
        };
        berth_testkit::eventually("dockerd to be ready", Duration::from_secs(60), || {
            cli.command(&["info"])
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .await;
        cli
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn rss_kib(&self) -> u64 {
        let containerd =
            std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .map(rss_kib)
                .unwrap_or(0);
        rss_kib(self.child.id()) + containerd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: a signal to the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        // Mounts dockerd may have left (overlays, netns) under its dirs.
        let root = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}
