//! CRI messages ↔ core model. Pure translation: no runtime logic.

use std::collections::{BTreeMap, HashMap};

use berth_core::model as m;
use berth_errdefs::Error;
use k8s_cri::v1 as api;

fn btree(h: &HashMap<String, String>) -> BTreeMap<String, String> {
    h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn hash(b: &BTreeMap<String, String>) -> HashMap<String, String> {
    b.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn namespace_mode(v: i32) -> m::NamespaceMode {
    match api::NamespaceMode::try_from(v) {
        Ok(api::NamespaceMode::Container) => m::NamespaceMode::Container,
        Ok(api::NamespaceMode::Node) => m::NamespaceMode::Node,
        Ok(api::NamespaceMode::Target) => m::NamespaceMode::Target,
        _ => m::NamespaceMode::Pod,
    }
}

fn namespace_mode_out(v: m::NamespaceMode) -> i32 {
    (match v {
        m::NamespaceMode::Pod => api::NamespaceMode::Pod,
        m::NamespaceMode::Container => api::NamespaceMode::Container,
        m::NamespaceMode::Node => api::NamespaceMode::Node,
        m::NamespaceMode::Target => api::NamespaceMode::Target,
    }) as i32
}

fn id_mappings(maps: &[api::IdMapping]) -> Vec<m::IdMapping> {
    maps.iter()
        .map(|i| m::IdMapping {
            container_id: i.container_id,
            host_id: i.host_id,
            length: i.length,
        })
        .collect()
}

fn id_mappings_out(maps: &[m::IdMapping]) -> Vec<api::IdMapping> {
    maps.iter()
        .map(|i| api::IdMapping {
            container_id: i.container_id,
            host_id: i.host_id,
            length: i.length,
        })
        .collect()
}

fn user_namespace(u: &api::UserNamespace) -> m::UserNamespace {
    m::UserNamespace {
        mode: namespace_mode(u.mode),
        uids: id_mappings(&u.uids),
        gids: id_mappings(&u.gids),
    }
}

fn namespaces(o: Option<&api::NamespaceOption>) -> m::NamespaceOptions {
    match o {
        Some(o) => m::NamespaceOptions {
            network: namespace_mode(o.network),
            pid: namespace_mode(o.pid),
            ipc: namespace_mode(o.ipc),
            target_id: o.target_id.clone(),
            user: o.userns_options.as_ref().map(user_namespace),
        },
        // kubelet always sends options; without them everything is POD
        // (CRI's zero value), the pid namespace included.
        None => m::NamespaceOptions::default(),
    }
}

fn namespaces_out(o: &m::NamespaceOptions) -> api::NamespaceOption {
    api::NamespaceOption {
        network: namespace_mode_out(o.network),
        pid: namespace_mode_out(o.pid),
        ipc: namespace_mode_out(o.ipc),
        target_id: o.target_id.clone(),
        userns_options: o.user.as_ref().map(|u| api::UserNamespace {
            mode: namespace_mode_out(u.mode),
            uids: id_mappings_out(&u.uids),
            gids: id_mappings_out(&u.gids),
        }),
    }
}

pub fn resources(r: &api::LinuxContainerResources) -> m::Resources {
    m::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        unified: btree(&r.unified),
        // Docker's only.
        pids_limit: 0,
    }
}

fn resources_out(r: &m::Resources) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(k, v)| api::HugepageLimit {
                page_size: k.clone(),
                limit: *v,
            })
            .collect(),
        unified: hash(&r.unified),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

/// CRI's port mapping in the core's types: 0 is "no host port", "" is
/// "every address"; anything else must be a port or an address.
fn port_mapping(p: api::PortMapping) -> Result<m::PortMapping, Error> {
    let protocol = match api::Protocol::try_from(p.protocol) {
        Ok(api::Protocol::Tcp) => m::Protocol::Tcp,
        Ok(api::Protocol::Udp) => m::Protocol::Udp,
        Ok(api::Protocol::Sctp) => m::Protocol::Sctp,
        Err(_) => {
            return Err(Error::invalid(format!(
                "port mapping: unknown protocol {} (TCP, UDP, SCTP)",
                p.protocol
            )))
        }
    };
    // 0 means something only for the host port (none).
    let port = |n: i32, what: &str, zero: bool| {
        u16::try_from(n)
            .ok()
            .filter(|p| zero || *p != 0)
            .ok_or_else(|| {
                Error::invalid(format!("port mapping: {what} {n} is not a port (1-65535)"))
            })
    };
    let host_ip = match p.host_ip.as_str() {
        "" => None,
        ip => Some(ip.parse().map_err(|_| {
            Error::invalid(format!("port mapping: host IP {ip:?} is not an IP address"))
        })?),
    };
    Ok(m::PortMapping {
        protocol,
        container_port: port(p.container_port, "container port", false)?,
        host_port: Some(port(p.host_port, "host port", true)?).filter(|p| *p != 0),
        host_ip,
    })
}

/// A Kubernetes pod's sandbox request: the name and the Kubernetes
/// metadata kubelet sends, then the rest.
pub fn pod_config(
    c: api::PodSandboxConfig,
    runtime_handler: String,
) -> Result<m::PodConfig, Error> {
    let meta = c.metadata.unwrap_or_default();
    let linux = c.linux.unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    Ok(m::PodConfig {
        name: meta.name,
        kubernetes: Some(m::PodMetadata {
            namespace: meta.namespace,
            uid: meta.uid,
            attempt: meta.attempt,
        }),
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns: c.dns_config.map(|d| m::DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(port_mapping)
            .collect::<Result<_, _>>()?,
        labels: btree(&c.labels),
        annotations: btree(&c.annotations),
        cgroup_parent: linux.cgroup_parent,
        sysctls: btree(&linux.sysctls),
        namespaces: namespaces(sec.namespace_options.as_ref()),
        privileged: sec.privileged,
        overhead: linux.overhead.as_ref().map(resources),
        resources: linux.resources.as_ref().map(resources),
        runtime_handler,
    })
}

fn seccomp(p: Option<&api::SecurityProfile>) -> m::SeccompConfig {
    use api::security_profile::ProfileType;
    match p {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::Unconfined) => m::SeccompConfig::Unconfined,
            Ok(ProfileType::Localhost) => m::SeccompConfig::Localhost(p.localhost_ref.clone()),
            _ => m::SeccompConfig::RuntimeDefault,
        },
        // Nil means unconfined (CRI); kubelet's SeccompDefault sends
        // RuntimeDefault explicitly. The node may still apply a default.
        None => m::SeccompConfig::Unset,
    }
}

pub fn container_config(c: api::ContainerConfig) -> m::ContainerConfig {
    let meta = c.metadata.unwrap_or_default();
    let linux = c.linux.unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    let caps = sec.capabilities.clone().unwrap_or_default();
    m::ContainerConfig {
        name: meta.name,
        attempt: meta.attempt,
        image: c.image.map(|i| i.image).unwrap_or_default(),
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        env: c.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts: c
            .mounts
            .into_iter()
            .map(|mnt| m::MountConfig {
                container_path: mnt.container_path,
                host_path: mnt.host_path,
                readonly: mnt.readonly,
                propagation: match api::MountPropagation::try_from(mnt.propagation) {
                    Ok(api::MountPropagation::PropagationHostToContainer) => {
                        m::Propagation::HostToContainer
                    }
                    Ok(api::MountPropagation::PropagationBidirectional) => {
                        m::Propagation::Bidirectional
                    }
                    _ => m::Propagation::Private,
                },
                recursive_readonly: mnt.recursive_read_only,
                ..Default::default()
            })
            .collect(),
        devices: c
            .devices
            .into_iter()
            .map(|d| m::DeviceConfig {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        labels: btree(&c.labels),
        annotations: btree(&c.annotations),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux.resources.as_ref().map(resources).unwrap_or_default(),
        security: m::SecurityConfig {
            capabilities_add: caps.add_capabilities,
            capabilities_drop: caps.drop_capabilities,
            privileged: sec.privileged,
            namespaces: namespaces(sec.namespace_options.as_ref()),
            run_as_user: sec.run_as_user.map(|v| v.value),
            run_as_group: sec.run_as_group.map(|v| v.value),
            run_as_username: sec.run_as_username,
            readonly_rootfs: sec.readonly_rootfs,
            supplemental_groups: sec.supplemental_groups,
            supplemental_groups_policy: match api::SupplementalGroupsPolicy::try_from(
                sec.supplemental_groups_policy,
            ) {
                Ok(api::SupplementalGroupsPolicy::Strict) => m::SupplementalGroupsPolicy::Strict,
                _ => m::SupplementalGroupsPolicy::Merge,
            },
            no_new_privs: sec.no_new_privs,
            masked_paths: sec.masked_paths,
            readonly_paths: sec.readonly_paths,
            seccomp: seccomp(sec.seccomp.as_ref()),
            apparmor: sec.apparmor.map(|a| a.localhost_ref).unwrap_or_default(),
        },
    }
}

fn pod_metadata(c: &m::PodConfig) -> api::PodSandboxMetadata {
    let k = c.kubernetes.clone().unwrap_or_default();
    api::PodSandboxMetadata {
        name: c.name.clone(),
        uid: k.uid,
        namespace: k.namespace,
        attempt: k.attempt,
    }
}

pub fn sandbox_state(s: m::SandboxState) -> i32 {
    (match s {
        m::SandboxState::Ready => api::PodSandboxState::SandboxReady,
        m::SandboxState::NotReady => api::PodSandboxState::SandboxNotready,
    }) as i32
}

pub fn sandbox_state_in(v: i32) -> m::SandboxState {
    match api::PodSandboxState::try_from(v) {
        Ok(api::PodSandboxState::SandboxNotready) => m::SandboxState::NotReady,
        _ => m::SandboxState::Ready,
    }
}

pub fn sandbox(r: &m::SandboxRecord) -> api::PodSandbox {
    api::PodSandbox {
        id: r.id.clone(),
        metadata: Some(pod_metadata(&r.config)),
        state: sandbox_state(r.state),
        created_at: r.created_at_ns,
        labels: hash(&r.config.labels),
        annotations: hash(&r.config.annotations),
        runtime_handler: r.config.runtime_handler.clone(),
    }
}

/// The pod's IPs, primary first (none for host network or once stopped).
fn sandbox_network(r: &m::SandboxRecord) -> api::PodSandboxNetworkStatus {
    let mut ips = r
        .network
        .iter()
        .flat_map(|n| n.ips.iter())
        .map(|ip| ip.to_string());
    api::PodSandboxNetworkStatus {
        ip: ips.next().unwrap_or_default(),
        additional_ips: ips.map(|ip| api::PodIp { ip }).collect(),
    }
}

pub fn sandbox_status(r: &m::SandboxRecord) -> api::PodSandboxStatus {
    api::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(pod_metadata(&r.config)),
        state: sandbox_state(r.state),
        created_at: r.created_at_ns,
        network: Some(sandbox_network(r)),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace {
                options: Some(namespaces_out(&r.config.namespaces)),
            }),
        }),
        labels: hash(&r.config.labels),
        annotations: hash(&r.config.annotations),
        runtime_handler: r.config.runtime_handler.clone(),
    }
}

pub fn container_state(s: m::ContainerState) -> i32 {
    (match s {
        m::ContainerState::Created => api::ContainerState::ContainerCreated,
        m::ContainerState::Running => api::ContainerState::ContainerRunning,
        m::ContainerState::Exited => api::ContainerState::ContainerExited,
        m::ContainerState::Unknown => api::ContainerState::ContainerUnknown,
    }) as i32
}

pub fn container_state_in(v: i32) -> m::ContainerState {
    match api::ContainerState::try_from(v) {
        Ok(api::ContainerState::ContainerRunning) => m::ContainerState::Running,
        Ok(api::ContainerState::ContainerExited) => m::ContainerState::Exited,
        Ok(api::ContainerState::ContainerUnknown) => m::ContainerState::Unknown,
        _ => m::ContainerState::Created,
    }
}

fn container_metadata(r: &m::ContainerRecord) -> api::ContainerMetadata {
    api::ContainerMetadata {
        name: r.config.name.clone(),
        attempt: r.config.attempt,
    }
}

fn image_spec(r: &m::ContainerRecord) -> api::ImageSpec {
    api::ImageSpec {
        image: r.image_id.clone(),
        user_specified_image: r.config.image.clone(),
        ..Default::default()
    }
}

pub fn container(r: &m::ContainerRecord) -> api::Container {
    api::Container {
        id: r.id.clone(),
        pod_sandbox_id: r.sandbox_id.clone(),
        metadata: Some(container_metadata(r)),
        image: Some(image_spec(r)),
        image_ref: r.image_id.clone(),
        state: container_state(r.state),
        created_at: r.created_at_ns,
        labels: hash(&r.config.labels),
        annotations: hash(&r.config.annotations),
        image_id: r.image_id.clone(),
    }
}

pub fn container_status(r: &m::ContainerRecord) -> api::ContainerStatus {
    api::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(container_metadata(r)),
        state: container_state(r.state),
        created_at: r.created_at_ns,
        started_at: r.started_at_ns,
        finished_at: r.finished_at_ns,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: hash(&r.config.labels),
        annotations: hash(&r.config.annotations),
        mounts: r
            .config
            .mounts
            .iter()
            .map(|mnt| api::Mount {
                container_path: mnt.container_path.clone(),
                host_path: mnt.host_path.clone(),
                readonly: mnt.readonly,
                propagation: (match mnt.propagation {
                    m::Propagation::Private => api::MountPropagation::PropagationPrivate,
                    m::Propagation::HostToContainer => {
                        api::MountPropagation::PropagationHostToContainer
                    }
                    m::Propagation::Bidirectional => {
                        api::MountPropagation::PropagationBidirectional
                    }
                }) as i32,
                recursive_read_only: mnt.recursive_readonly,
                ..Default::default()
            })
            .collect(),
        log_path: r.log_path.display().to_string(),
        resources: Some(api::ContainerResources {
            linux: Some(resources_out(&r.config.resources)),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: r.user.as_ref().map(|u| api::ContainerUser {
            linux: Some(api::LinuxContainerUser {
                uid: u.uid.into(),
                gid: u.gid.into(),
                supplemental_groups: u.supplemental_groups.iter().map(|&g| g.into()).collect(),
            }),
        }),
    }
}

fn value(v: u64) -> Option<api::UInt64Value> {
    Some(api::UInt64Value { value: v })
}

pub fn container_stats(s: &m::ContainerStats, r: &m::ContainerRecord) -> api::ContainerStats {
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: r.id.clone(),
            metadata: Some(container_metadata(r)),
            labels: hash(&r.config.labels),
            annotations: hash(&r.config.annotations),
        }),
        cpu: Some(api::CpuUsage {
            timestamp: s.timestamp_ns,
            usage_core_nano_seconds: value(s.cpu_usage_ns),
            usage_nano_cores: value(s.cpu_nano_cores),
        }),
        memory: Some(api::MemoryUsage {
            timestamp: s.timestamp_ns,
            working_set_bytes: value(s.memory_working_set_bytes),
            usage_bytes: value(s.memory_usage_bytes),
            rss_bytes: value(s.memory_rss_bytes),
            ..Default::default()
        }),
        writable_layer: Some(api::FilesystemUsage {
            timestamp: s.timestamp_ns,
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: s.writable_layer_mountpoint.display().to_string(),
            }),
            used_bytes: value(s.writable_layer_bytes),
            inodes_used: value(s.writable_layer_inodes),
        }),
        swap: None,
    }
}

/// A pod's stats: the sum of its containers' plus each of them.
pub fn pod_stats(
    pod: &m::SandboxRecord,
    containers: &[(m::ContainerStats, m::ContainerRecord)],
    interfaces: &[berth_core::InterfaceStats],
) -> api::PodSandboxStats {
    let now = berth_core_now();
    let sum = |f: fn(&m::ContainerStats) -> u64| containers.iter().map(|(s, _)| f(s)).sum();
    api::PodSandboxStats {
        attributes: Some(api::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(pod_metadata(&pod.config)),
            labels: hash(&pod.config.labels),
            annotations: hash(&pod.config.annotations),
        }),
        linux: Some(api::LinuxPodSandboxStats {
            cpu: Some(api::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(sum(|s| s.cpu_usage_ns)),
                usage_nano_cores: value(sum(|s| s.cpu_nano_cores)),
            }),
            memory: Some(api::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(sum(|s| s.memory_working_set_bytes)),
                usage_bytes: value(sum(|s| s.memory_usage_bytes)),
                rss_bytes: value(sum(|s| s.memory_rss_bytes)),
                ..Default::default()
            }),
            network: network_usage(now, interfaces),
            process: Some(api::ProcessUsage {
                timestamp: now,
                process_count: value(sum(|s| s.pids)),
            }),
            containers: containers
                .iter()
                .map(|(s, r)| container_stats(s, r))
                .collect(),
        }),
        windows: None,
    }
}

/// The pod's interfaces, `eth0` (else the first) as the default one.
fn network_usage(now: i64, interfaces: &[berth_core::InterfaceStats]) -> Option<api::NetworkUsage> {
    let usage = |i: &berth_core::InterfaceStats| api::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    };
    let default = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .or(interfaces.first())?;
    Some(api::NetworkUsage {
        timestamp: now,
        default_interface: Some(usage(default)),
        interfaces: interfaces.iter().map(usage).collect(),
    })
}

fn berth_core_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod userns_tests {
    use super::*;

    #[test]
    fn user_namespace_options_go_in_and_come_back_in_the_pod_status() {
        let map = api::IdMapping {
            host_id: 100_000,
            container_id: 0,
            length: 65_536,
        };
        let options = api::NamespaceOption {
            userns_options: Some(api::UserNamespace {
                mode: api::NamespaceMode::Pod as i32,
                uids: vec![map],
                gids: vec![api::IdMapping {
                    host_id: 200_000,
                    ..map
                }],
            }),
            ..Default::default()
        };
        let config = pod_config(
            api::PodSandboxConfig {
                linux: Some(api::LinuxPodSandboxConfig {
                    security_context: Some(api::LinuxSandboxSecurityContext {
                        namespace_options: Some(options.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            String::new(),
        )
        .expect("a valid pod config");
        let user = config.namespaces.user.clone().expect("user namespace");
        assert_eq!(user.mode, m::NamespaceMode::Pod);
        assert_eq!(user.uids[0].host_id, 100_000);
        assert_eq!(user.gids[0].host_id, 200_000);
        let status = sandbox_status(&m::SandboxRecord {
            config,
            ..Default::default()
        });
        let back = status.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(back.userns_options, options.userns_options);
        // No options: none reported (the node's).
        assert_eq!(
            namespaces_out(&m::NamespaceOptions::default()).userns_options,
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;

    fn kv(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn bkv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        btree(&kv(pairs))
    }

    fn cri_resources() -> api::LinuxContainerResources {
        api::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            oom_score_adj: -997,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![api::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: kv(&[("memory.high", "50000000")]),
        }
    }

    fn pod_with_ports(ports: Vec<api::PortMapping>) -> Result<m::PodConfig, Error> {
        pod_config(
            api::PodSandboxConfig {
                port_mappings: ports,
                ..Default::default()
            },
            String::new(),
        )
    }

    fn tcp(container_port: i32, host_port: i32, host_ip: &str) -> api::PortMapping {
        api::PortMapping {
            protocol: api::Protocol::Tcp as i32,
            container_port,
            host_port,
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn a_pod_config_keeps_every_field_kubelet_sends() {
        let c = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: "web".into(),
                uid: "u-1".into(),
                namespace: "prod".into(),
                attempt: 3,
            }),
            hostname: "web-0".into(),
            log_directory: "/var/log/pods/prod_web_u-1".into(),
            dns_config: Some(api::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["prod.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: kv(&[("app", "web")]),
            annotations: kv(&[("note", "x=y")]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/burstable/podu_1".into(),
                sysctls: kv(&[("net.ipv4.ip_forward", "1")]),
                overhead: Some(api::LinuxContainerResources {
                    cpu_shares: 10,
                    ..Default::default()
                }),
                resources: Some(cri_resources()),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    privileged: true,
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Node as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let p = pod_config(c, "runc".into()).expect("a valid pod config");
        assert_eq!(p.name, "web");
        assert_eq!(
            p.kubernetes,
            Some(m::PodMetadata {
                namespace: "prod".into(),
                uid: "u-1".into(),
                attempt: 3,
            })
        );
        assert_eq!(p.full_name(), "web_prod_u-1_3");
        assert_eq!(p.hostname, "web-0");
        assert_eq!(p.log_directory, "/var/log/pods/prod_web_u-1");
        assert_eq!(
            p.dns,
            Some(m::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["prod.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            })
        );
        assert_eq!(p.labels, bkv(&[("app", "web")]));
        assert_eq!(p.annotations, bkv(&[("note", "x=y")]));
        assert_eq!(p.cgroup_parent, "/kubepods/burstable/podu_1");
        assert_eq!(p.sysctls, bkv(&[("net.ipv4.ip_forward", "1")]));
        assert!(p.privileged);
        assert_eq!(p.namespaces.network, m::NamespaceMode::Node);
        assert_eq!(p.namespaces.pid, m::NamespaceMode::Container);
        assert_eq!(p.namespaces.ipc, m::NamespaceMode::Node);
        assert_eq!(p.namespaces.user, None);
        assert_eq!(p.overhead.map(|o| o.cpu_shares), Some(10));
        assert_eq!(p.resources, Some(resources(&cri_resources())));
        assert_eq!(p.runtime_handler, "runc");
    }

    #[test]
    fn an_empty_pod_config_is_all_defaults_not_guesses() {
        let p = pod_config(api::PodSandboxConfig::default(), String::new()).unwrap();
        // Metadata is carried even when empty: the core refuses it, naming
        // what is missing, rather than the front door inventing any.
        assert_eq!(p.kubernetes, Some(m::PodMetadata::default()));
        assert_eq!(p.name, "");
        assert_eq!(p.dns, None);
        assert_eq!(p.cgroup_parent, "");
        assert_eq!(p.overhead, None);
        assert_eq!(p.resources, None);
        assert!(p.port_mappings.is_empty() && p.labels.is_empty() && p.sysctls.is_empty());
        assert!(!p.privileged);
        // No namespace options: everything is the pod's (CRI's zero value).
        assert_eq!(p.namespaces, m::NamespaceOptions::default());
        assert_eq!(p.namespaces.pid, m::NamespaceMode::Pod);
    }

    #[test]
    fn namespace_modes_map_both_ways_and_unknown_values_are_the_pods() {
        let all = [
            (api::NamespaceMode::Pod, m::NamespaceMode::Pod),
            (api::NamespaceMode::Container, m::NamespaceMode::Container),
            (api::NamespaceMode::Node, m::NamespaceMode::Node),
            (api::NamespaceMode::Target, m::NamespaceMode::Target),
        ];
        for (cri, core) in all {
            assert_eq!(namespace_mode(cri as i32), core, "{cri:?}");
            assert_eq!(namespace_mode_out(core), cri as i32, "{core:?}");
        }
        assert_eq!(namespace_mode(99), m::NamespaceMode::Pod);
        assert_eq!(namespace_mode(-1), m::NamespaceMode::Pod);
        let o = api::NamespaceOption {
            network: api::NamespaceMode::Node as i32,
            pid: api::NamespaceMode::Target as i32,
            ipc: api::NamespaceMode::Container as i32,
            target_id: "abc".into(),
            userns_options: None,
        };
        assert_eq!(namespaces_out(&namespaces(Some(&o))), o);
    }

    #[test]
    fn resources_round_trip_and_zero_stays_unset() {
        let r = resources(&cri_resources());
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 512);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.memory_swap_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, -997);
        assert_eq!(
            (r.cpuset_cpus.as_str(), r.cpuset_mems.as_str()),
            ("0-1", "0")
        );
        assert_eq!(r.hugepage_limits, BTreeMap::from([("2MB".into(), 4 << 20)]));
        assert_eq!(r.unified, bkv(&[("memory.high", "50000000")]));
        assert_eq!(resources_out(&r), cri_resources());
        let zero = resources(&api::LinuxContainerResources::default());
        assert_eq!(zero, m::Resources::default());
        assert_eq!(
            resources_out(&zero),
            api::LinuxContainerResources::default()
        );
    }

    #[test]
    fn port_mappings_keep_protocol_ports_and_address() {
        let p = pod_with_ports(vec![
            tcp(80, 8080, "127.0.0.1"),
            api::PortMapping {
                protocol: api::Protocol::Udp as i32,
                container_port: 53,
                host_port: 0,
                host_ip: String::new(),
            },
            api::PortMapping {
                protocol: api::Protocol::Sctp as i32,
                container_port: 65535,
                host_port: 65535,
                host_ip: "::1".into(),
            },
        ])
        .unwrap();
        assert_eq!(
            p.port_mappings,
            vec![
                m::PortMapping {
                    protocol: m::Protocol::Tcp,
                    container_port: 80,
                    host_port: Some(8080),
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                },
                // Host port 0: not published; "" : every address.
                m::PortMapping {
                    protocol: m::Protocol::Udp,
                    container_port: 53,
                    host_port: None,
                    host_ip: None,
                },
                m::PortMapping {
                    protocol: m::Protocol::Sctp,
                    container_port: 65535,
                    host_port: Some(65535),
                    host_ip: Some("::1".parse().unwrap()),
                },
            ]
        );
    }

    #[test]
    fn bad_port_mappings_are_refused_naming_the_value() {
        let cases = [
            (
                api::PortMapping {
                    protocol: 7,
                    ..tcp(80, 0, "")
                },
                "port mapping: unknown protocol 7 (TCP, UDP, SCTP)",
            ),
            (
                tcp(70000, 0, ""),
                "port mapping: container port 70000 is not a port (1-65535)",
            ),
            (
                tcp(-1, 0, ""),
                "port mapping: container port -1 is not a port (1-65535)",
            ),
            (
                tcp(0, 8080, ""),
                "port mapping: container port 0 is not a port (1-65535)",
            ),
            (
                tcp(80, 65536, ""),
                "port mapping: host port 65536 is not a port (1-65535)",
            ),
            (
                tcp(80, -80, ""),
                "port mapping: host port -80 is not a port (1-65535)",
            ),
            (
                tcp(80, 8080, "localhost"),
                "port mapping: host IP \"localhost\" is not an IP address",
            ),
        ];
        for (mapping, want) in cases {
            let e = pod_with_ports(vec![tcp(81, 0, ""), mapping.clone()])
                .expect_err(&format!("{mapping:?} should be refused"));
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{mapping:?}");
            assert_eq!(e.message, want);
        }
    }

    fn security(s: api::LinuxContainerSecurityContext) -> m::SecurityConfig {
        container_config(api::ContainerConfig {
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(s),
                ..Default::default()
            }),
            ..Default::default()
        })
        .security
    }

    #[test]
    fn a_container_config_keeps_every_field() {
        let c = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            image: Some(api::ImageSpec {
                image: "registry.example/app:1".into(),
                ..Default::default()
            }),
            command: vec!["/bin/app".into()],
            args: vec!["--flag".into(), "".into()],
            working_dir: "/srv".into(),
            envs: vec![
                api::KeyValue {
                    key: "B".into(),
                    value: "2".into(),
                },
                api::KeyValue {
                    key: "A".into(),
                    value: "".into(),
                },
            ],
            devices: vec![api::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            labels: kv(&[("io.kubernetes.container.name", "app")]),
            annotations: kv(&[("a", "b")]),
            log_path: "app/2.log".into(),
            stdin: true,
            stdin_once: true,
            tty: true,
            linux: Some(api::LinuxContainerConfig {
                resources: Some(cri_resources()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = container_config(c);
        assert_eq!((m.name.as_str(), m.attempt), ("app", 2));
        assert_eq!(m.image, "registry.example/app:1");
        assert_eq!(m.command, ["/bin/app"]);
        assert_eq!(m.args, ["--flag", ""]);
        assert_eq!(m.working_dir, "/srv");
        // Order kept: later entries override earlier ones in the spec.
        assert_eq!(
            m.env,
            [("B".into(), "2".into()), ("A".into(), String::new())]
        );
        assert_eq!(
            m.devices,
            [m::DeviceConfig {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }]
        );
        assert_eq!(m.labels, bkv(&[("io.kubernetes.container.name", "app")]));
        assert_eq!(m.annotations, bkv(&[("a", "b")]));
        assert_eq!(m.log_path, "app/2.log");
        assert!(m.stdin && m.stdin_once && m.tty);
        assert_eq!(m.resources, resources(&cri_resources()));

        let empty = container_config(api::ContainerConfig::default());
        assert_eq!(empty, m::ContainerConfig::default());
    }

    #[test]
    fn mount_propagation_maps_each_mode_and_unknown_is_private() {
        let mount = |propagation: i32| api::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            propagation,
            recursive_read_only: true,
            ..Default::default()
        };
        let cases = [
            (
                api::MountPropagation::PropagationPrivate as i32,
                m::Propagation::Private,
            ),
            (
                api::MountPropagation::PropagationHostToContainer as i32,
                m::Propagation::HostToContainer,
            ),
            (
                api::MountPropagation::PropagationBidirectional as i32,
                m::Propagation::Bidirectional,
            ),
            (42, m::Propagation::Private),
        ];
        for (cri, want) in cases {
            let c = container_config(api::ContainerConfig {
                mounts: vec![mount(cri)],
                ..Default::default()
            });
            assert_eq!(
                c.mounts,
                [m::MountConfig {
                    container_path: "/data".into(),
                    host_path: "/srv/data".into(),
                    readonly: true,
                    propagation: want,
                    recursive_readonly: true,
                    ..Default::default()
                }],
                "{cri}"
            );
            // And back out in the status, as the same CRI value (unknown
            // ones were stored as private).
            let status = container_status(&m::ContainerRecord {
                config: c,
                ..Default::default()
            });
            let back = status.mounts[0].propagation;
            assert_eq!(propagation_in(back), want, "{cri}");
            assert!(status.mounts[0].readonly && status.mounts[0].recursive_read_only);
        }
    }

    /// The core propagation a CRI value stands for (for round trips).
    fn propagation_in(v: i32) -> m::Propagation {
        container_config(api::ContainerConfig {
            mounts: vec![api::Mount {
                propagation: v,
                ..Default::default()
            }],
            ..Default::default()
        })
        .mounts[0]
            .propagation
    }

    #[test]
    fn security_context_fields_and_unset_versus_zero() {
        let s = security(api::LinuxContainerSecurityContext {
            capabilities: Some(api::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            privileged: true,
            namespace_options: Some(api::NamespaceOption {
                pid: api::NamespaceMode::Target as i32,
                target_id: "ctr-1".into(),
                ..Default::default()
            }),
            run_as_user: Some(api::Int64Value { value: 0 }),
            run_as_group: Some(api::Int64Value { value: 1000 }),
            run_as_username: "nobody".into(),
            readonly_rootfs: true,
            supplemental_groups: vec![5, 6],
            supplemental_groups_policy: api::SupplementalGroupsPolicy::Strict as i32,
            no_new_privs: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            apparmor: Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "k8s-apparmor-example".into(),
            }),
            ..Default::default()
        });
        assert_eq!(s.capabilities_add, ["NET_ADMIN"]);
        assert_eq!(s.capabilities_drop, ["ALL"]);
        assert!(s.privileged && s.readonly_rootfs && s.no_new_privs);
        assert_eq!(s.namespaces.pid, m::NamespaceMode::Target);
        assert_eq!(s.namespaces.target_id, "ctr-1");
        // uid 0 asked for is not "unset".
        assert_eq!(s.run_as_user, Some(0));
        assert_eq!(s.run_as_group, Some(1000));
        assert_eq!(s.run_as_username, "nobody");
        assert_eq!(s.supplemental_groups, [5, 6]);
        assert_eq!(
            s.supplemental_groups_policy,
            m::SupplementalGroupsPolicy::Strict
        );
        assert_eq!(s.masked_paths, ["/proc/kcore"]);
        assert_eq!(s.readonly_paths, ["/proc/sys"]);
        assert_eq!(s.apparmor, "k8s-apparmor-example");

        let unset = security(api::LinuxContainerSecurityContext::default());
        assert_eq!(unset.run_as_user, None);
        assert_eq!(unset.run_as_group, None);
        assert_eq!(
            unset.supplemental_groups_policy,
            m::SupplementalGroupsPolicy::Merge
        );
        assert_eq!(unset.apparmor, "");
        assert_eq!(unset.seccomp, m::SeccompConfig::Unset);
        let unknown_policy = security(api::LinuxContainerSecurityContext {
            supplemental_groups_policy: 9,
            ..Default::default()
        });
        assert_eq!(
            unknown_policy.supplemental_groups_policy,
            m::SupplementalGroupsPolicy::Merge
        );
    }

    #[test]
    fn seccomp_profiles_map_each_variant() {
        use api::security_profile::ProfileType;
        let with = |profile_type: i32, localhost_ref: &str| {
            security(api::LinuxContainerSecurityContext {
                seccomp: Some(api::SecurityProfile {
                    profile_type,
                    localhost_ref: localhost_ref.into(),
                }),
                ..Default::default()
            })
            .seccomp
        };
        assert_eq!(
            with(ProfileType::RuntimeDefault as i32, ""),
            m::SeccompConfig::RuntimeDefault
        );
        assert_eq!(
            with(ProfileType::Unconfined as i32, "ignored"),
            m::SeccompConfig::Unconfined
        );
        assert_eq!(
            with(ProfileType::Localhost as i32, "profiles/audit.json"),
            m::SeccompConfig::Localhost("profiles/audit.json".into())
        );
        // A type this build does not know: the safe default, not unconfined.
        assert_eq!(with(17, ""), m::SeccompConfig::RuntimeDefault);
        // Nil: unset (unconfined unless the node says otherwise).
        assert_eq!(seccomp(None), m::SeccompConfig::Unset);
    }

    #[test]
    fn sandbox_and_container_states_map_both_ways() {
        for (core, cri) in [
            (m::SandboxState::Ready, api::PodSandboxState::SandboxReady),
            (
                m::SandboxState::NotReady,
                api::PodSandboxState::SandboxNotready,
            ),
        ] {
            assert_eq!(sandbox_state(core), cri as i32);
            assert_eq!(sandbox_state_in(cri as i32), core);
        }
        for (core, cri) in [
            (
                m::ContainerState::Created,
                api::ContainerState::ContainerCreated,
            ),
            (
                m::ContainerState::Running,
                api::ContainerState::ContainerRunning,
            ),
            (
                m::ContainerState::Exited,
                api::ContainerState::ContainerExited,
            ),
            (
                m::ContainerState::Unknown,
                api::ContainerState::ContainerUnknown,
            ),
        ] {
            assert_eq!(container_state(core), cri as i32);
            assert_eq!(container_state_in(cri as i32), core);
        }
    }

    fn sandbox_record(network: serde_json::Value) -> m::SandboxRecord {
        let mut r: m::SandboxRecord =
            serde_json::from_value(serde_json::json!({ "network": network }))
                .expect("a sandbox record");
        r.id = "pod-1".into();
        r.state = m::SandboxState::NotReady;
        r.created_at_ns = 1_700_000_000_123_456_789;
        r.config = m::PodConfig {
            name: "web".into(),
            kubernetes: Some(m::PodMetadata {
                namespace: "prod".into(),
                uid: "u-1".into(),
                attempt: 1,
            }),
            labels: bkv(&[("app", "web")]),
            annotations: bkv(&[("a", "b")]),
            runtime_handler: "runc".into(),
            namespaces: m::NamespaceOptions {
                network: m::NamespaceMode::Pod,
                pid: m::NamespaceMode::Container,
                ipc: m::NamespaceMode::Node,
                ..Default::default()
            },
            ..Default::default()
        };
        r
    }

    #[test]
    fn sandbox_records_become_cri_pods_and_statuses() {
        let r = sandbox_record(serde_json::json!({ "ips": ["10.87.0.7", "fd00::7"] }));
        let meta = api::PodSandboxMetadata {
            name: "web".into(),
            uid: "u-1".into(),
            namespace: "prod".into(),
            attempt: 1,
        };
        let pod = sandbox(&r);
        assert_eq!(pod.id, "pod-1");
        assert_eq!(pod.metadata.as_ref(), Some(&meta));
        assert_eq!(pod.state, api::PodSandboxState::SandboxNotready as i32);
        assert_eq!(pod.created_at, 1_700_000_000_123_456_789);
        assert_eq!(pod.labels, kv(&[("app", "web")]));
        assert_eq!(pod.annotations, kv(&[("a", "b")]));
        assert_eq!(pod.runtime_handler, "runc");

        let s = sandbox_status(&r);
        assert_eq!(s.id, "pod-1");
        assert_eq!(s.metadata, Some(meta));
        assert_eq!(s.state, pod.state);
        assert_eq!(s.created_at, pod.created_at);
        assert_eq!((s.labels, s.annotations), (pod.labels, pod.annotations));
        assert_eq!(s.runtime_handler, "runc");
        // Primary first, the rest as additional IPs.
        let net = s.network.expect("network status");
        assert_eq!(net.ip, "10.87.0.7");
        assert_eq!(
            net.additional_ips,
            [api::PodIp {
                ip: "fd00::7".into()
            }]
        );
        let ns = s.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, api::NamespaceMode::Node as i32);
    }

    #[test]
    fn a_detached_or_docker_sandbox_reports_no_ip_and_empty_kubernetes_metadata() {
        let mut r = sandbox_record(serde_json::Value::Null);
        r.config.kubernetes = None;
        let s = sandbox_status(&r);
        let net = s.network.expect("network status is always present");
        assert_eq!(net.ip, "");
        assert!(net.additional_ips.is_empty());
        let meta = s.metadata.unwrap();
        assert_eq!(meta.name, "web");
        assert_eq!((meta.uid.as_str(), meta.namespace.as_str()), ("", ""));
        // An attachment without addresses (a backend that gave none).
        let r = sandbox_record(serde_json::json!({ "ips": [] }));
        assert_eq!(sandbox_status(&r).network.unwrap().ip, "");
    }

    fn container_record() -> m::ContainerRecord {
        m::ContainerRecord {
            id: "ctr-1".into(),
            sandbox_id: "pod-1".into(),
            config: m::ContainerConfig {
                name: "app".into(),
                attempt: 4,
                image: "busybox".into(),
                labels: bkv(&[("l", "1")]),
                annotations: bkv(&[("a", "2")]),
                resources: resources(&cri_resources()),
                ..Default::default()
            },
            image_id: "sha256:abc".into(),
            image_ref: "docker.io/library/busybox:latest".into(),
            state: m::ContainerState::Exited,
            created_at_ns: 10,
            started_at_ns: 20,
            finished_at_ns: 30,
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: "out of memory".into(),
            log_path: "/var/log/pods/x/app/4.log".into(),
            ..Default::default()
        }
    }

    #[test]
    fn container_records_become_cri_containers_and_statuses() {
        let r = container_record();
        let c = container(&r);
        assert_eq!(
            (c.id.as_str(), c.pod_sandbox_id.as_str()),
            ("ctr-1", "pod-1")
        );
        assert_eq!(
            c.metadata,
            Some(api::ContainerMetadata {
                name: "app".into(),
                attempt: 4
            })
        );
        let image = c.image.unwrap();
        assert_eq!(image.image, "sha256:abc");
        assert_eq!(image.user_specified_image, "busybox");
        assert_eq!(
            (c.image_ref.as_str(), c.image_id.as_str()),
            ("sha256:abc", "sha256:abc")
        );
        assert_eq!(c.state, api::ContainerState::ContainerExited as i32);
        assert_eq!(c.created_at, 10);
        assert_eq!(c.labels, kv(&[("l", "1")]));
        assert_eq!(c.annotations, kv(&[("a", "2")]));

        let s = container_status(&r);
        assert_eq!(s.id, "ctr-1");
        assert_eq!(s.state, api::ContainerState::ContainerExited as i32);
        assert_eq!((s.created_at, s.started_at, s.finished_at), (10, 20, 30));
        assert_eq!(s.exit_code, 137);
        assert_eq!(
            (s.reason.as_str(), s.message.as_str()),
            ("OOMKilled", "out of memory")
        );
        assert_eq!(s.image_ref, "docker.io/library/busybox:latest");
        assert_eq!(s.image_id, "sha256:abc");
        assert_eq!(s.log_path, "/var/log/pods/x/app/4.log");
        assert_eq!(s.resources.unwrap().linux.unwrap(), cri_resources());
        assert_eq!(s.user, None, "no user recorded: none reported");
        assert!(s.mounts.is_empty());
    }

    #[test]
    fn the_resolved_user_is_reported_with_its_groups() {
        let mut r = container_record();
        r.user = Some(m::ContainerUser {
            uid: 1000,
            gid: 100,
            supplemental_groups: vec![10, 100],
        });
        let user = container_status(&r).user.unwrap().linux.unwrap();
        assert_eq!((user.uid, user.gid), (1000, 100));
        assert_eq!(user.supplemental_groups, [10, 100]);
        r.user = Some(m::ContainerUser::default());
        let root = container_status(&r).user.unwrap().linux.unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }

    fn stats(cpu_ns: u64, cores: u64, rss: u64, pids: u64) -> m::ContainerStats {
        m::ContainerStats {
            id: "ctr-1".into(),
            sandbox_id: "pod-1".into(),
            timestamp_ns: 1_000,
            cpu_usage_ns: cpu_ns,
            cpu_user_ns: cpu_ns / 2,
            cpu_system_ns: cpu_ns / 2,
            cpu_nano_cores: cores,
            memory_working_set_bytes: rss * 2,
            memory_usage_bytes: rss * 3,
            memory_rss_bytes: rss,
            writable_layer_bytes: 4096,
            writable_layer_inodes: 3,
            writable_layer_mountpoint: "/var/lib/berth/containers/ctr-1/upper".into(),
            pids,
        }
    }

    #[test]
    fn container_stats_fill_every_field_with_one_timestamp() {
        let s = container_stats(&stats(5_000, 250_000_000, 1 << 20, 3), &container_record());
        let attrs = s.attributes.unwrap();
        assert_eq!(attrs.id, "ctr-1");
        assert_eq!(attrs.metadata.unwrap().name, "app");
        assert_eq!(attrs.labels, kv(&[("l", "1")]));
        assert_eq!(attrs.annotations, kv(&[("a", "2")]));
        let cpu = s.cpu.unwrap();
        assert_eq!(cpu.timestamp, 1_000);
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 5_000);
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 250_000_000);
        let mem = s.memory.unwrap();
        assert_eq!(mem.timestamp, 1_000);
        assert_eq!(mem.rss_bytes.unwrap().value, 1 << 20);
        assert_eq!(mem.working_set_bytes.unwrap().value, 2 << 20);
        assert_eq!(mem.usage_bytes.unwrap().value, 3 << 20);
        let fs = s.writable_layer.unwrap();
        assert_eq!(fs.timestamp, 1_000);
        assert_eq!(
            fs.fs_id.unwrap().mountpoint,
            "/var/lib/berth/containers/ctr-1/upper"
        );
        assert_eq!(fs.used_bytes.unwrap().value, 4096);
        assert_eq!(fs.inodes_used.unwrap().value, 3);
        assert_eq!(s.swap, None);
        // Zero is reported as a zero value, not left out.
        let idle = container_stats(&m::ContainerStats::default(), &container_record());
        assert_eq!(
            idle.cpu.unwrap().usage_nano_cores,
            Some(api::UInt64Value { value: 0 })
        );
    }

    #[test]
    fn pod_stats_sum_the_containers_and_list_each() {
        let pod = sandbox_record(serde_json::Value::Null);
        let mut other = container_record();
        other.id = "ctr-2".into();
        let containers = [
            (stats(100, 10, 1_000, 3), container_record()),
            (stats(200, 20, 2_000, 1), other),
        ];
        let before = berth_core_now();
        let s = pod_stats(&pod, &containers, &[]);
        let attrs = s.attributes.unwrap();
        assert_eq!(attrs.id, "pod-1");
        assert_eq!(attrs.metadata.unwrap().uid, "u-1");
        assert_eq!(attrs.labels, kv(&[("app", "web")]));
        let linux = s.linux.unwrap();
        let cpu = linux.cpu.unwrap();
        assert!(cpu.timestamp >= before);
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 300);
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 30);
        let mem = linux.memory.unwrap();
        assert_eq!(mem.rss_bytes.unwrap().value, 3_000);
        assert_eq!(mem.working_set_bytes.unwrap().value, 6_000);
        assert_eq!(mem.usage_bytes.unwrap().value, 9_000);
        assert_eq!(linux.process.unwrap().process_count.unwrap().value, 4);
        let ids: Vec<_> = linux
            .containers
            .iter()
            .map(|c| c.attributes.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(ids, ["ctr-1", "ctr-2"]);
        assert_eq!(linux.network, None);
        assert_eq!(s.windows, None);

        let empty = pod_stats(&pod, &[], &[]).linux.unwrap();
        assert_eq!(empty.process.unwrap().process_count.unwrap().value, 0);
        assert!(empty.containers.is_empty());
    }

    #[test]
    fn pod_network_defaults_to_eth0() {
        let pod = sandbox_record(serde_json::Value::Null);
        let interface = |name: &str, rx_bytes| berth_core::InterfaceStats {
            name: name.into(),
            rx_bytes,
            tx_errors: 2,
            ..Default::default()
        };
        let s = pod_stats(&pod, &[], &[interface("net1", 5), interface("eth0", 7)]);
        let network = s.linux.unwrap().network.unwrap();
        let default = network.default_interface.unwrap();
        assert_eq!(default.name, "eth0");
        assert_eq!(default.rx_bytes.unwrap().value, 7);
        assert_eq!(default.tx_errors.unwrap().value, 2);
        assert_eq!(network.interfaces.len(), 2);
    }
}
