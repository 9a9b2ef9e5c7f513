//! `POST /containers/create`: Docker's create JSON (see run-d.txt and
//! run-p.txt in the reference traces) into the core's `StandaloneSpec`.

use std::collections::BTreeMap;

use berth_core::{
    ContainerConfig, Core, ErrorKind, MountConfig, NamespaceMode, NetworkMode, PodConfig,
    PortMapping, Propagation, Protocol, Resources, RestartPolicy, SeccompConfig, StandaloneSpec,
};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::http::{json, Body};
use crate::mounts::MountBody;
use crate::view;
use crate::volumes::{NamedVolume, VolumeMounts};

/// A string or a list of strings (Docker's `StrSlice`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub hostname: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrSlice>,
    pub entrypoint: Option<StrSlice>,
    pub image: String,
    pub working_dir: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    /// `-v /path`: anonymous volumes, by target.
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
}

/// `--network-alias`, `--ip`: the endpoint settings per network.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, crate::networks::EndpointConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub network_mode: String,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub auto_remove: bool,
    pub memory: i64,
    pub memory_swap: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
    pub pids_limit: Option<i64>,
    pub privileged: bool,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub readonly_rootfs: bool,
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub restart_policy: Option<RestartPolicyBody>,
    pub volumes_from: Option<Vec<String>>,
    pub mounts: Option<Vec<MountBody>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyBody {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// `HostConfig.RestartPolicy` as the core's policy, refused in dockerd's
/// words.
pub fn restart_policy(body: Option<&RestartPolicyBody>) -> ApiResult<RestartPolicy> {
    let Some(b) = body else {
        return Ok(RestartPolicy::No);
    };
    let invalid = |why: &str| ApiError::bad_request(format!("invalid restart policy: {why}"));
    if b.maximum_retry_count != 0 && b.name != "on-failure" {
        return Err(invalid(
            "maximum retry count can only be used with 'on-failure'",
        ));
    }
    match b.name.as_str() {
        "" | "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => match u32::try_from(b.maximum_retry_count) {
            Ok(max_retries) => Ok(RestartPolicy::OnFailure { max_retries }),
            Err(_) => Err(invalid("maximum retry count cannot be negative")),
        },
        other => Err(invalid(&format!(
            "unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// The CPU period `NanoCpus` is expressed in (dockerd's).
const CPU_PERIOD_US: i64 = 100_000;

/// `POST /containers/create?name=`.
pub async fn create(
    core: &Core,
    name: Option<&str>,
    body: CreateBody,
) -> ApiResult<Response<Body>> {
    let name = match name.map(|n| n.strip_prefix('/').unwrap_or(n)) {
        Some(n) if !n.is_empty() => {
            check_name(n)?;
            n.to_string()
        }
        _ => generated_name(core),
    };
    if body.image.is_empty() {
        return Err(ApiError::bad_request(
            "config cannot be empty in order to create a container",
        ));
    }
    if core.images().status(&body.image)?.is_none() {
        return Err(crate::images::missing_image(core, &body.image));
    }
    if let Ok(holder) = view::find(core, &name) {
        if holder.name == name {
            return Err(name_in_use(&name, &holder.record.id));
        }
    }
    let image_volumes = core
        .images()
        .status(&body.image)?
        .map(|i| i.config.volumes)
        .unwrap_or_default();
    let mut volumes = VolumeMounts {
        mounts: Vec::new(),
        made: Vec::new(),
    };
    let spec = standalone_spec(core, name.clone(), body, &image_volumes, &mut volumes);
    let made = match spec {
        Ok(spec) => core.containers().create_standalone(spec).await,
        Err(e) => {
            volumes.undo(core);
            return Err(e);
        }
    };
    if made.is_err() {
        volumes.undo(core);
    }
    let id = made.map_err(|e| match e.kind {
        ErrorKind::AlreadyExists => {
            let holder = e.message.rsplit(' ').next().unwrap_or_default();
            name_in_use(&name, holder)
        }
        _ => e.into(),
    })?;
    Ok(json(
        StatusCode::CREATED,
        &json!({ "Id": id, "Warnings": [] }),
    ))
}

/// dockerd's 409 for a name in use.
pub fn name_in_use(name: &str, holder: &str) -> ApiError {
    ApiError::conflict(format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
    ))
}

/// A container's name must follow dockerd's rule.
pub fn check_name(name: &str) -> ApiResult<()> {
    match berth_core::is_docker_name(name) {
        true => Ok(()),
        false => Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))),
    }
}

/// A free `adjective_noun` name, as dockerd makes them.
fn generated_name(core: &Core) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "eager", "fond", "happy", "keen", "lucid", "merry", "nifty", "quiet",
        "sharp", "tender", "vivid", "witty", "zen",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "turing", "wozniak",
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let taken = |n: &str| view::find(core, n).is_ok_and(|v| v.name == n);
    for attempt in 0.. {
        let n = seed.wrapping_add(attempt * 7919);
        let mut name = format!("{}_{}", LEFT[n % LEFT.len()], RIGHT[(n / 31) % RIGHT.len()]);
        if attempt >= LEFT.len() * RIGHT.len() {
            name = format!("{name}{attempt}");
        }
        if !taken(&name) {
            return name;
        }
    }
    unreachable!("an endless search ends with a free name")
}

fn standalone_spec(
    core: &Core,
    name: String,
    body: CreateBody,
    image_volumes: &[String],
    volumes: &mut VolumeMounts,
) -> ApiResult<StandaloneSpec> {
    let host = body.host_config.unwrap_or_default();
    let endpoints = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref());
    let network = network_mode(core, &host.network_mode, endpoints)?;
    let env = body
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let mut mounts = Vec::new();
    for b in host.binds.as_deref().unwrap_or_default() {
        let (source, mount) = bind(b)?;
        match source.starts_with('/') {
            true => mounts.push(mount),
            false => volumes.named(
                core,
                NamedVolume {
                    name: &source,
                    target: &mount.container_path,
                    readonly: mount.readonly,
                    no_copy: mount.no_copy,
                    ..Default::default()
                },
            )?,
        }
    }
    let given = host.mounts.as_deref().unwrap_or_default();
    crate::mounts::add_mounts(core, given, &mut mounts, volumes)?;
    if let Some(tmpfs) = &host.tmpfs {
        crate::mounts::add_tmpfs(tmpfs, &mut mounts)?;
    }
    for from in host.volumes_from.as_deref().unwrap_or_default() {
        mounts.extend(volumes_from(core, from)?);
    }
    let anonymous = body
        .volumes
        .iter()
        .flat_map(|v| v.keys())
        .map(String::as_str);
    for target in anonymous.chain(image_volumes.iter().map(String::as_str)) {
        volumes.anonymous(core, target, &mounts)?;
    }
    mounts.append(&mut volumes.mounts);
    let (run_as_user, run_as_group, run_as_username) = user(&body.user)?;
    let mut container = ContainerConfig {
        name,
        image: body.image,
        command: body.entrypoint.map(StrSlice::into_vec).unwrap_or_default(),
        args: body.cmd.map(StrSlice::into_vec).unwrap_or_default(),
        working_dir: body.working_dir,
        env,
        mounts,
        labels: body.labels.unwrap_or_default(),
        stdin: body.open_stdin,
        stdin_once: body.stdin_once,
        tty: body.tty,
        resources: resources(&host)?,
        ..Default::default()
    };
    let sec = &mut container.security;
    sec.privileged = host.privileged;
    sec.readonly_rootfs = host.readonly_rootfs;
    sec.capabilities_add = capabilities(host.cap_add.clone());
    sec.capabilities_drop = capabilities(host.cap_drop.clone());
    sec.run_as_user = run_as_user;
    sec.run_as_group = run_as_group;
    sec.run_as_username = run_as_username;
    // Each Docker container has its own pid namespace, and dockerd's
    // default seccomp profile unless privileged.
    sec.namespaces.pid = NamespaceMode::Container;
    if !host.privileged {
        sec.seccomp = SeccompConfig::RuntimeDefault;
    }
    let dns = (host.dns.is_some() || host.dns_search.is_some() || host.dns_options.is_some()).then(
        || berth_core::DnsConfig {
            servers: host.dns.unwrap_or_default(),
            searches: host.dns_search.unwrap_or_default(),
            options: host.dns_options.unwrap_or_default(),
        },
    );
    let pod = PodConfig {
        hostname: body.hostname,
        dns,
        port_mappings: port_mappings(host.port_bindings.unwrap_or_default())?,
        namespaces: berth_core::NamespaceOptions {
            pid: NamespaceMode::Container,
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(StandaloneSpec {
        container,
        pod,
        network,
        auto_remove: host.auto_remove,
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout_s: body.stop_timeout,
        restart_policy: restart_policy(host.restart_policy.as_ref())?,
    })
}

fn network_mode(
    core: &Core,
    mode: &str,
    endpoints: Option<&BTreeMap<String, crate::networks::EndpointConfig>>,
) -> ApiResult<NetworkMode> {
    match mode {
        "" | "default" | "bridge" => Ok(NetworkMode::Default),
        "host" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        other => match other.strip_prefix("container:") {
            Some(reference) => Ok(NetworkMode::Container(
                view::find(core, reference)?.record.id,
            )),
            None => Ok(NetworkMode::User(crate::networks::network_join(
                other,
                endpoints.and_then(|e| e.get(other)),
            )?)),
        },
    }
}

/// `src:dst[:ro|rw]`: a host path bound into the container.
/// A `Binds` entry: its source (a host path, or a volume's name) and
/// the mount (a host bind; the caller swaps in a volume's directory).
fn bind(spec: &str) -> ApiResult<(String, MountConfig)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid volume specification: '{spec}'"
            )))
        }
    };
    let mut mount = MountConfig {
        host_path: src.to_string(),
        container_path: dst.to_string(),
        ..Default::default()
    };
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => mount.readonly = true,
            "nocopy" => mount.no_copy = true,
            "shared" | "rshared" => mount.propagation = Propagation::Bidirectional,
            "slave" | "rslave" => mount.propagation = Propagation::HostToContainer,
            "rw" | "z" | "Z" | "rprivate" | "private" => {}
            _ => return Err(ApiError::bad_request(format!("invalid mode: {m}"))),
        }
    }
    Ok((src.to_string(), mount))
}

/// `--volumes-from name[:ro|rw]`: the other container's mounts, read-only
/// if asked (else as they are).
fn volumes_from(core: &Core, spec: &str) -> ApiResult<Vec<MountConfig>> {
    let (name, mode) = spec.split_once(':').unwrap_or((spec, ""));
    let readonly = match mode {
        "" => None,
        "ro" => Some(true),
        "rw" => Some(false),
        _ => return Err(ApiError::bad_request(format!("invalid mode: {mode}"))),
    };
    let from = view::find(core, name)?;
    Ok(from
        .record
        .config
        .mounts
        .iter()
        .map(|m| MountConfig {
            readonly: readonly.unwrap_or(m.readonly),
            ..m.clone()
        })
        .collect())
}

/// `uid[:gid]` or `name[:gid]`.
fn user(spec: &str) -> ApiResult<(Option<i64>, Option<i64>, String)> {
    if spec.is_empty() {
        return Ok((None, None, String::new()));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let group = match g {
        None => None,
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "unable to find group {g}: only numeric groups are supported"
            ))
        })?),
    };
    Ok(match u.parse::<i64>() {
        Ok(uid) => (Some(uid), group, String::new()),
        Err(_) => (None, group, u.to_string()),
    })
}

/// `CAP_NET_ADMIN` and `NET_ADMIN` alike, as the runtime builder takes them.
fn capabilities(caps: Option<Vec<String>>) -> Vec<String> {
    caps.unwrap_or_default()
        .into_iter()
        .map(|c| {
            let upper = c.to_ascii_uppercase();
            upper
                .strip_prefix("CAP_")
                .map(str::to_string)
                .unwrap_or(upper)
        })
        .collect()
}

pub fn resources(h: &HostConfig) -> ApiResult<Resources> {
    if h.nano_cpus > 0 && (h.cpu_quota > 0 || h.cpu_period > 0) {
        return Err(ApiError::bad_request(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    let (cpu_quota, cpu_period) = match h.nano_cpus {
        n if n > 0 => (n * CPU_PERIOD_US / 1_000_000_000, CPU_PERIOD_US),
        _ => (h.cpu_quota, h.cpu_period),
    };
    Ok(Resources {
        cpu_shares: h.cpu_shares,
        cpu_quota,
        cpu_period,
        memory_limit_in_bytes: h.memory,
        memory_swap_limit_in_bytes: h.memory_swap.max(0),
        // 0 and -1 are unlimited.
        pids_limit: h.pids_limit.unwrap_or(0).max(0),
        ..Default::default()
    })
}

/// `{"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}`.
fn port_mappings(
    bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
) -> ApiResult<Vec<PortMapping>> {
    let mut out = Vec::new();
    for (key, list) in bindings {
        let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
        let bad = || ApiError::bad_request(format!("invalid port specification: \"{key}\""));
        let container_port: u16 = port.parse().map_err(|_| bad())?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => return Err(bad()),
        };
        for b in list.unwrap_or_default() {
            let host_ip = match b.host_ip.as_str() {
                "" => None,
                ip => Some(
                    ip.parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid IP address: {ip}")))?,
                ),
            };
            let host_port = match b.host_port.as_str() {
                // `-p 80`: Docker picks a free host port.
                "" | "0" => ephemeral_port(host_ip, protocol)?,
                p => p.parse::<u16>().map_err(|_| {
                    ApiError::bad_request(format!("invalid port specification: \"{p}\""))
                })?,
            };
            let host_port = Some(host_port);
            out.push(PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip,
            });
        }
    }
    Ok(out)
}

/// A host port free now on `ip` (all addresses if none), chosen by the
/// kernel from its ephemeral range, as dockerd's allocator does from
/// the same range.
fn ephemeral_port(ip: Option<std::net::IpAddr>, protocol: Protocol) -> ApiResult<u16> {
    let ip = ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, 0);
    let port = match protocol {
        Protocol::Udp => std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        _ => std::net::TcpListener::bind(addr).and_then(|s| s.local_addr()),
    };
    port.map(|a| a.port())
        .map_err(|e| ApiError::internal(format!("choose a free host port on {ip}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockerds_rule() {
        assert!(check_name("web-1.a_b").is_ok());
        for bad in ["-web", "a", "we/b", "w b"] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("Invalid container name"), "{e:?}");
        }
    }

    #[test]
    fn binds_ports_users_and_cpus_convert() {
        let (src, m) = bind("/srv:/data:ro").unwrap();
        assert!(m.readonly && src == "/srv" && m.container_path == "/data");
        let (src, m) = bind("vol:/data").unwrap();
        assert!(
            !m.readonly && src == "vol",
            "a named volume's name comes back"
        );
        assert!(bind("a:b:c:d").is_err());
        let ports = port_mappings(BTreeMap::from([(
            "80/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "8080".into(),
            }]),
        )]))
        .unwrap();
        assert_eq!(ports[0].container_port, 80);
        assert_eq!(ports[0].host_port, Some(8080));
        assert_eq!(ports[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            user("1000:50").unwrap(),
            (Some(1000), Some(50), String::new())
        );
        assert_eq!(user("app").unwrap(), (None, None, "app".to_string()));
        let r = resources(&HostConfig {
            nano_cpus: 1_500_000_000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((r.cpu_quota, r.cpu_period), (150_000, 100_000));
        assert_eq!(
            capabilities(Some(vec!["cap_net_admin".into()])),
            ["NET_ADMIN"]
        );
    }
}
