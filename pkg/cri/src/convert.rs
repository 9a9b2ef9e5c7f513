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
    let port = |n: i32, what: &str| {
        u16::try_from(n).map_err(|_| {
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
        container_port: port(p.container_port, "container port")?,
        host_port: Some(port(p.host_port, "host port")?).filter(|p| *p != 0),
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
            network: None,
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

fn berth_core_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn event_type(k: m::EventKind) -> i32 {
    (match k {
        m::EventKind::Created => api::ContainerEventType::ContainerCreatedEvent,
        m::EventKind::Started => api::ContainerEventType::ContainerStartedEvent,
        m::EventKind::Stopped => api::ContainerEventType::ContainerStoppedEvent,
        m::EventKind::Deleted => api::ContainerEventType::ContainerDeletedEvent,
    }) as i32
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
