//! containerd (the distribution's, `apt-get install containerd`) on a root,
//! state dir, socket and CRI settings of its own, for the pod benchmark to
//! drive through the same CRI client as berthd. Its pods get a CNI bridge
//! of their own (host-local IPAM, no masquerade), its sandbox image is the
//! test registry's `pause`, and it is stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_testkit::{eventually, mounts_under, TestNetwork};
use tempfile::TempDir;

pub struct Containerd {
    dir: TempDir,
    child: Child,
    network: TestNetwork,
    /// The cgroup parent its pods are put under; removed when dropped.
    pub cgroup: String,
    pub socket: PathBuf,
    pub version: String,
}

impl Containerd {
    /// Starts containerd pulling from `registry` (plain HTTP) with
    /// `sandbox_image` as its pause image.
    pub async fn start(registry: &str, sandbox_image: &str) -> Containerd {
        let version = Command::new("containerd")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .expect("containerd is installed (hack/bench-pods.sh installs it)");
        let dir = tempfile::Builder::new()
            .prefix("berth-ctd-")
            .tempdir_in("/var/tmp")
            .expect("containerd dir");
        let network = TestNetwork::pick(77);
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni")).unwrap();
        std::fs::write(
            d.join("cni/10-bench.conflist"),
            cni_conflist(&network, &d.join("ipam")),
        )
        .unwrap();
        let socket = d.join("c.sock");
        std::fs::write(
            d.join("config.toml"),
            config_toml(d, &socket, registry, sandbox_image),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            dir,
            child,
            network,
            cgroup: format!("/berth-bench-ctd-{}", std::process::id()),
            socket,
            version,
        };
        let pid = c.pid();
        eventually(
            "containerd to serve its socket",
            Duration::from_secs(30),
            || {
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "));
                assert!(alive, "containerd exited early: {}", c.log());
                std::os::unix::net::UnixStream::connect(&c.socket).ok()
            },
        )
        .await;
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd's log:\n{}", self.log());
        }
        // SAFETY: a signal to our own child, by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let mut left = mounts_under(self.dir.path());
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        crate::floor::remove_cgroup_dirs(&self.cgroup);
        let _ = Command::new("ip")
            .args(["link", "del", &self.network.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn cni_conflist(network: &TestNetwork, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "berth-bench",
        "plugins": [{
            "type": "bridge",
            "bridge": network.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": network.subnet.to_string() }]],
                "dataDir": ipam_dir,
            },
        }],
    })
    .to_string()
}

fn config_toml(dir: &Path, socket: &Path, registry: &str, sandbox_image: &str) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    disable_tcp_service = true
    # This host refuses a lower oom_score_adj than containerd's own (the
    # pause container's default is -998).
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
      endpoint = ["http://{registry}"]
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
"#
    )
}
