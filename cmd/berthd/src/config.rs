//! berthd settings: built-in defaults, then `/etc/berth/config.toml` (or
//! `--config`), then flags. Every setting has a working default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_core::{CgroupDriver, NetworkSettings, MAX_STATE_DIR_LEN};
use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "berth node agent (CRI v1 runtime)")]
pub struct Flags {
    /// Config file; a missing default file is fine, a missing named one is not.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Persistent state: images, metadata.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state: sockets, locks.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The CRI socket (`unix://` prefix optional).
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<String>,
    /// containers-registries.conf v2 file.
    #[arg(long, value_name = "FILE")]
    pub registries_config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `berth_image=debug`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// The cgroup under which pods without a cgroup parent of their own go.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,
    /// The container monitor binary (default: berth-shim beside berthd).
    #[arg(long, value_name = "FILE")]
    pub shim: Option<PathBuf>,
    /// Pod network backend: bridge, netavark, cni or none.
    #[arg(long, value_name = "BACKEND")]
    pub network_backend: Option<String>,
    /// The node bridge of the bridge and netavark backends.
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// The pod subnet of the bridge and netavark backends (IPv4 CIDR).
    #[arg(long, value_name = "CIDR")]
    pub pod_subnet: Option<String>,
    /// Where the cni backend reads network configs.
    #[arg(long, value_name = "DIR")]
    pub cni_config_dir: Option<PathBuf>,
    /// Where the cni backend finds plugins (repeatable).
    #[arg(long, value_name = "DIR")]
    pub cni_plugin_dir: Vec<PathBuf>,
    /// The CRI streaming server (exec, attach, port-forward): IP:PORT,
    /// port 0 for any free one.
    #[arg(long, value_name = "ADDR")]
    pub stream_address: Option<std::net::SocketAddr>,
    /// The Docker API socket (`unix://` prefix optional); empty turns it off.
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<String>,
    /// Also serve the Docker API on TCP IP:PORT, with TLS and verified
    /// client certificates (needs the three --docker-tls* files).
    #[arg(long, value_name = "ADDR")]
    pub docker_tcp: Option<std::net::SocketAddr>,
    /// CA that client certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    pub docker_tlscacert: Option<PathBuf>,
    /// The server's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub docker_tlscert: Option<PathBuf>,
    /// The server's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub docker_tlskey: Option<PathBuf>,
    /// Serve --docker-tcp without TLS: anyone who reaches the port is root
    /// on the node. For tests on loopback only.
    #[arg(long)]
    pub docker_tcp_insecure: bool,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (default
    /// 127.0.0.1:9838); empty turns it off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<String>,
    /// Hand crun the seccomp filter compiled once (default true); false
    /// leaves the runtime to compile the profile on every create.
    #[arg(long, value_name = "BOOL")]
    pub seccomp_precompile: Option<bool>,
}

/// The `[metrics]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    address: Option<String>,
}

/// The `[docker]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerFile {
    socket: Option<String>,
    tcp: Option<std::net::SocketAddr>,
    tlscacert: Option<PathBuf>,
    tlscert: Option<PathBuf>,
    tlskey: Option<PathBuf>,
    #[serde(default)]
    tcp_insecure: bool,
}

/// Where the Docker API listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerSettings {
    /// `None`: no unix socket.
    pub socket: Option<PathBuf>,
    pub tcp: Option<DockerTcp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerTcp {
    pub address: std::net::SocketAddr,
    /// (CA, certificate, key); `None` only with the insecure flag.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// The `[network]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    backend: Option<String>,
    bridge: Option<String>,
    subnet: Option<String>,
    mtu: Option<u32>,
    netavark: Option<PathBuf>,
    cni_config_dir: Option<PathBuf>,
    cni_plugin_dirs: Option<Vec<PathBuf>>,
}

/// One extra OCI runtime handler (a RuntimeClass handler name → binary).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    /// Optional for the built-in `crun` and `runc`, whose other settings
    /// (e.g. `allowed_annotations`) a table may change alone.
    pub program: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    pub root: Option<PathBuf>,
    /// Container annotations passed to this runtime's spec: keys, or
    /// prefixes ending in `*` (containerd's `container_annotations`).
    #[serde(default)]
    pub allowed_annotations: Vec<String>,
}

/// The config file, all fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct File {
    root: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    cri_socket: Option<String>,
    registries_config: Option<PathBuf>,
    cgroup_driver: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    cgroup_root: Option<String>,
    shim: Option<PathBuf>,
    /// The handler used when a pod names none (default: crun, else runc).
    default_runtime: Option<String>,
    #[serde(default)]
    runtimes: std::collections::BTreeMap<String, RuntimeFile>,
    #[serde(default)]
    network: NetworkFile,
    stream_address: Option<std::net::SocketAddr>,
    /// When set, pods' log directories must lie under it (kubelet's is
    /// `/var/log/pods`).
    log_root: Option<PathBuf>,
    /// When set, Localhost seccomp profiles must lie under it.
    seccomp_profile_root: Option<PathBuf>,
    /// RuntimeDefault seccomp for containers that ask for none.
    #[serde(default)]
    seccomp_default: bool,
    /// Seccomp filters compiled once and handed to crun (default true).
    precompile_seccomp: Option<bool>,
    /// `[image_limits]`: caps on registry answers and unpacked sizes.
    #[serde(default)]
    image_limits: berth_image::limits::Limits,
    #[serde(default)]
    docker: DockerFile,
    #[serde(default)]
    metrics: MetricsFile,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub cri_socket: PathBuf,
    pub registries_config: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub log_level: String,
    pub json_logs: bool,
    pub cgroup_root: String,
    pub shim: PathBuf,
    pub default_runtime: Option<String>,
    pub runtimes: std::collections::BTreeMap<String, RuntimeFile>,
    pub network: NetworkSettings,
    pub stream_address: std::net::SocketAddr,
    pub log_root: Option<PathBuf>,
    pub seccomp_profile_root: Option<PathBuf>,
    pub image_limits: berth_image::limits::Limits,
    pub seccomp_default: bool,
    pub precompile_seccomp: bool,
    pub docker: DockerSettings,
    /// Where `/metrics` is served; `None`: not at all.
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn resolve(flags: Flags) -> Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => File::default(),
        };
        let network = network_settings(&flags_network(&flags), file.network)?;
        let docker_flags = flags_docker(&flags);

        let root = flags
            .root
            .or(file.root)
            .unwrap_or_else(|| "/var/lib/berth".into());
        let state_dir = flags
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| "/run/berth".into());
        let docker = docker_settings(&docker_flags, file.docker, &state_dir)?;
        let cri_socket = flags
            .cri_socket
            .or(file.cri_socket)
            .map(|s| PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s)))
            .unwrap_or_else(|| state_dir.join("berth.sock"));
        let cgroup_driver = match file.cgroup_driver.as_deref() {
            None | Some("cgroupfs") => CgroupDriver::Cgroupfs,
            Some("systemd") => CgroupDriver::Systemd,
            Some(other) => bail!("cgroup_driver {other:?} is not one of cgroupfs, systemd"),
        };
        let log_format = flags
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log format {other:?} is not one of text, json"),
        };
        for (name, p) in [("root", &root), ("state dir", &state_dir)] {
            if !p.is_absolute() {
                bail!("{name} {} must be an absolute path", p.display());
            }
        }
        // Here, not only in the core: before berthd makes and locks the dirs.
        let state_len = state_dir.as_os_str().len();
        if state_len > MAX_STATE_DIR_LEN {
            bail!(
                "state dir {} is {state_len} bytes long; at most {MAX_STATE_DIR_LEN} leave room for the monitors' unix sockets",
                state_dir.display()
            );
        }
        let cgroup_root = flags
            .cgroup_root
            .or(file.cgroup_root)
            .unwrap_or_else(|| "/berth".into());
        if !cgroup_root.starts_with('/') || cgroup_root.split('/').any(|p| p == "..") {
            bail!("cgroup root {cgroup_root:?} must be an absolute cgroup path");
        }
        let shim = match flags.shim.or(file.shim) {
            Some(p) => p,
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("berth-shim")))
                .filter(|p| p.exists())
                .unwrap_or_else(|| "/usr/local/bin/berth-shim".into()),
        };
        // Loopback by default: the API server reaches it through kubelet's
        // proxy, and the URLs carry single-use tokens.
        let stream_address = flags
            .stream_address
            .or(file.stream_address)
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let metrics_address = metrics_address(flags.metrics_address.or(file.metrics.address))?;
        for (name, dir) in [
            ("log_root", &file.log_root),
            ("seccomp_profile_root", &file.seccomp_profile_root),
        ] {
            if let Some(dir) = dir.as_ref().filter(|d| !d.is_absolute()) {
                bail!("{name} {} must be an absolute path", dir.display());
            }
        }
        let limits = &file.image_limits;
        if limits.max_metadata_bytes == 0
            || limits.max_layer_bytes == 0
            || limits.max_image_bytes == 0
        {
            bail!("image_limits must be positive (0 would refuse every pull)");
        }
        Ok(Config {
            docker,
            metrics_address,
            image_limits: file.image_limits,
            seccomp_default: file.seccomp_default,
            precompile_seccomp: flags
                .seccomp_precompile
                .or(file.precompile_seccomp)
                .unwrap_or(true),
            log_root: file.log_root,
            seccomp_profile_root: file.seccomp_profile_root,
            stream_address,
            network,
            cgroup_root,
            shim,
            default_runtime: file.default_runtime,
            runtimes: file.runtimes,
            root,
            state_dir,
            cri_socket,
            registries_config: flags
                .registries_config
                .or(file.registries_config)
                .unwrap_or_else(|| "/etc/containers/registries.conf".into()),
            cgroup_driver,
            log_level: flags
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            json_logs,
        })
    }
}

/// The network flags, as a `[network]` table that overrides the file's.
fn flags_network(flags: &Flags) -> NetworkFile {
    NetworkFile {
        backend: flags.network_backend.clone(),
        bridge: flags.bridge.clone(),
        subnet: flags.pod_subnet.clone(),
        cni_config_dir: flags.cni_config_dir.clone(),
        cni_plugin_dirs: (!flags.cni_plugin_dir.is_empty()).then(|| flags.cni_plugin_dir.clone()),
        ..NetworkFile::default()
    }
}

/// The Docker flags, as a `[docker]` table that overrides the file's.
fn flags_docker(flags: &Flags) -> DockerFile {
    DockerFile {
        socket: flags.docker_socket.clone(),
        tcp: flags.docker_tcp,
        tlscacert: flags.docker_tlscacert.clone(),
        tlscert: flags.docker_tlscert.clone(),
        tlskey: flags.docker_tlskey.clone(),
        tcp_insecure: flags.docker_tcp_insecure,
    }
}

/// `--metrics-address` or `[metrics] address`: IP:PORT, the default when
/// unset, off when empty.
fn metrics_address(given: Option<String>) -> Result<Option<std::net::SocketAddr>> {
    let address = given.unwrap_or_else(|| berth_metrics::DEFAULT_ADDRESS.to_string());
    if address.is_empty() {
        return Ok(None);
    }
    address.parse().map(Some).with_context(|| {
        format!("metrics address {address:?} is not IP:PORT (empty turns metrics off)")
    })
}

/// The socket defaults to `<state-dir>/docker.sock`; TCP needs TLS with
/// client verification, or the explicit insecure flag.
fn docker_settings(
    flags: &DockerFile,
    file: DockerFile,
    state_dir: &Path,
) -> Result<DockerSettings> {
    let socket = match flags.socket.clone().or(file.socket) {
        None => Some(state_dir.join("docker.sock")),
        Some(s) if s.is_empty() => None,
        Some(s) => Some(PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s))),
    };
    let insecure = flags.tcp_insecure || file.tcp_insecure;
    let tls = [
        flags.tlscacert.clone().or(file.tlscacert),
        flags.tlscert.clone().or(file.tlscert),
        flags.tlskey.clone().or(file.tlskey),
    ];
    let tcp = match flags.tcp.or(file.tcp) {
        None => None,
        Some(address) => Some(DockerTcp {
            address,
            tls: match tls {
                [Some(ca), Some(cert), Some(key)] => Some((ca, cert, key)),
                [None, None, None] if insecure => None,
                [None, None, None] => bail!(
                    "refusing the Docker API on plain TCP {address}: give --docker-tlscacert, --docker-tlscert and --docker-tlskey (clients must present a certificate signed by the CA), or --docker-tcp-insecure to serve it to anyone who can reach the port"
                ),
                _ => bail!(
                    "--docker-tlscacert, --docker-tlscert and --docker-tlskey go together: give all three"
                ),
            },
        }),
    };
    Ok(DockerSettings { socket, tcp })
}

fn network_settings(flags: &NetworkFile, file: NetworkFile) -> Result<NetworkSettings> {
    let backend = flags
        .backend
        .clone()
        .or(file.backend)
        .unwrap_or_else(|| "bridge".into());
    let bridge = flags
        .bridge
        .clone()
        .or(file.bridge)
        .unwrap_or_else(|| "berth0".into());
    // 10.87/16: not Podman's 10.88/16, so both can live on one node.
    let subnet_text = flags
        .subnet
        .clone()
        .or(file.subnet)
        .unwrap_or_else(|| "10.87.0.0/16".into());
    let subnet = || -> Result<berth_net::Subnet> {
        subnet_text
            .parse()
            .map_err(|e: berth_core::Error| anyhow::anyhow!("pod subnet: {e}"))
    };
    Ok(match backend.as_str() {
        "none" => NetworkSettings::None,
        "bridge" => NetworkSettings::Bridge(berth_net::BridgeConfig {
            bridge,
            subnet: subnet()?,
            mtu: file.mtu,
        }),
        "netavark" => NetworkSettings::Netavark {
            binary: file
                .netavark
                .unwrap_or_else(|| "/usr/lib/podman/netavark".into()),
            bridge,
            subnet: subnet()?,
            mtu: file.mtu,
        },
        "cni" => NetworkSettings::Cni {
            conf_dir: flags
                .cni_config_dir
                .clone()
                .or(file.cni_config_dir)
                .unwrap_or_else(|| "/etc/cni/net.d".into()),
            plugin_dirs: flags
                .cni_plugin_dirs
                .clone()
                .or(file.cni_plugin_dirs)
                .unwrap_or_else(|| vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()]),
        },
        other => bail!("network backend {other:?} is not one of bridge, netavark, cni, none"),
    })
}

fn read_file(path: &Path) -> Result<File> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("berthd").chain(args.iter().copied()))
    }

    #[test]
    fn flags_override_file_and_socket_follows_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "root = \"/file/root\"\nstate_dir = \"/file/run\"\n").unwrap();
        let c = Config::resolve(flags(&[
            "--config",
            cfg.to_str().unwrap(),
            "--root",
            "/flag/root",
        ]))
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/flag/root"));
        assert_eq!(c.cri_socket, PathBuf::from("/file/run/berth.sock"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "rooot = \"/x\"\n").unwrap();
        let e = Config::resolve(flags(&["--config", cfg.to_str().unwrap()])).unwrap_err();
        assert!(format!("{e:#}").contains("rooot"), "{e:#}");
        assert!(Config::resolve(flags(&["--root", "relative"])).is_err());
    }

    #[test]
    fn docker_listens_on_its_socket_and_tcp_needs_tls() {
        let c = Config::resolve(flags(&["--state-dir", "/s"])).unwrap();
        assert_eq!(c.docker.socket, Some(PathBuf::from("/s/docker.sock")));
        assert_eq!(c.docker.tcp, None);
        let off = Config::resolve(flags(&["--docker-socket", ""])).unwrap();
        assert_eq!(off.docker.socket, None);
        let e = Config::resolve(flags(&["--docker-tcp", "127.0.0.1:2376"])).unwrap_err();
        assert!(
            format!("{e:#}").contains("refusing the Docker API on plain TCP"),
            "{e:#}"
        );
        let e = Config::resolve(flags(&[
            "--docker-tcp",
            "127.0.0.1:2376",
            "--docker-tlscert",
            "/c",
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("go together"), "{e:#}");
        let insecure = Config::resolve(flags(&[
            "--docker-tcp",
            "127.0.0.1:2375",
            "--docker-tcp-insecure",
        ]))
        .unwrap();
        assert_eq!(insecure.docker.tcp.unwrap().tls, None);
    }

    #[test]
    fn metrics_default_to_loopback_and_empty_turns_them_off() {
        let c = Config::resolve(flags(&[])).unwrap();
        assert_eq!(c.metrics_address, Some("127.0.0.1:9838".parse().unwrap()));
        let off = Config::resolve(flags(&["--metrics-address", ""])).unwrap();
        assert_eq!(off.metrics_address, None);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[metrics]\naddress = \"0.0.0.0:19838\"\n").unwrap();
        let file = Config::resolve(flags(&["--config", cfg.to_str().unwrap()])).unwrap();
        assert_eq!(file.metrics_address, Some("0.0.0.0:19838".parse().unwrap()));
        let e = Config::resolve(flags(&["--metrics-address", "localhost"])).unwrap_err();
        assert!(format!("{e:#}").contains("is not IP:PORT"), "{e:#}");
    }

    #[test]
    fn seccomp_precompile_is_on_unless_file_or_flag_says_off() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "precompile_seccomp = false\n").unwrap();
        let cfg = cfg.to_str().unwrap();
        assert!(Config::resolve(flags(&[])).unwrap().precompile_seccomp);
        assert!(
            !Config::resolve(flags(&["--config", cfg]))
                .unwrap()
                .precompile_seccomp
        );
        let on = Config::resolve(flags(&["--config", cfg, "--seccomp-precompile", "true"]));
        assert!(on.unwrap().precompile_seccomp);
        let off = Config::resolve(flags(&["--seccomp-precompile", "false"]));
        assert!(!off.unwrap().precompile_seccomp);
    }

    #[test]
    fn the_example_config_is_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/config.toml");
        let c = Config::resolve(flags(&["--config", example])).unwrap();
        assert_eq!(c.cgroup_root, "/berth");
        assert!(c.runtimes.is_empty());
        assert_eq!(c.metrics_address, Some("127.0.0.1:9838".parse().unwrap()));
    }
}
