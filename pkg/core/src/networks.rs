//! Docker's networks as the core serves them: the built-in `bridge` (the
//! node's pod network), `host` and `none`, and user networks (each a
//! bridge of its own from `berth_net::UserNetworks`) that Docker
//! containers join at create (`--network NAME`) or while running
//! (`network connect`). What is on a network is read from the sandbox
//! records (their `endpoints`), so there is no second bookkeeping to go
//! stale. Each user network answers its members' names through an
//! embedded DNS responder on its gateway (`netdns.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use berth_errdefs::{Error, ErrorKind, Result};
use berth_net::{Endpoint, JoinRequest, NewUserNetwork, UserNetworkRecord};

use crate::events::{Action, Attrs, ObjectKind};
use crate::model::{now_ns, NetworkJoin, Owner, PodConfig, SandboxRecord, SandboxState};
use crate::{new_id, volumes::is_docker_name, NetworkSettings, Shared};

crate::service_handle! {
    /// The networks service. A cheap handle.
    Networks
}

/// The built-in networks, as dockerd has them.
pub const BUILTIN_NETWORKS: [(&str, &str); 3] =
    [("bridge", "bridge"), ("host", "host"), ("none", "null")];

/// A network as `docker network inspect` needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub created_at_ns: i64,
    /// `bridge`, `host`, `none`: made by berthd, never removed.
    pub builtin: bool,
    /// The Linux bridge, for a bridge network.
    pub bridge: Option<String>,
    pub members: Vec<NetworkMember>,
}

/// A container on a network and its interface there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkMember {
    pub container_id: String,
    pub container_name: String,
    pub sandbox_id: String,
    pub endpoint: Endpoint,
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    /// `""` or `bridge`: the only driver.
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

/// A user network a new sandbox joins, resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserJoin {
    pub network_id: String,
    pub aliases: Vec<String>,
    /// Its DNS names: the container's name and short id, then aliases.
    pub names: Vec<String>,
    pub ip: Option<std::net::Ipv4Addr>,
}

/// How a new sandbox's network namespace is wired.
#[derive(Debug, Clone)]
pub(crate) enum Wiring {
    /// Only its loopback (`--network none`).
    Loopback,
    /// The node's pod network (CRI pods, Docker's `bridge`).
    Node,
    /// User networks, the first routing everything else.
    User(Vec<UserJoin>),
}

fn not_found(reference: &str) -> Error {
    Error::not_found(format!("network {reference} not found"))
}

/// The names a container answers to on a user network.
pub(crate) fn dns_names(
    container_name: &str,
    container_id: &str,
    aliases: &[String],
) -> Vec<String> {
    let mut names = vec![
        container_name.to_string(),
        container_id[..12.min(container_id.len())].to_string(),
    ];
    names.extend(aliases.iter().cloned());
    names.dedup();
    names
}

impl Networks {
    /// Every network, built-in ones first.
    pub fn list(&self) -> Vec<NetworkInfo> {
        let sandboxes = self.sandbox_records();
        let mut out: Vec<NetworkInfo> = BUILTIN_NETWORKS
            .iter()
            .map(|(name, _)| self.builtin(name, &sandboxes))
            .collect();
        out.extend(
            self.network
                .user
                .list()
                .into_iter()
                .map(|r| self.user_info(r, &sandboxes)),
        );
        out
    }

    /// A network by full id, name, or unique id prefix (dockerd's order).
    pub fn inspect(&self, reference: &str) -> Result<NetworkInfo> {
        let all = self.list();
        if let Some(n) = all
            .iter()
            .find(|n| n.id == reference || n.name == reference)
        {
            return Ok(n.clone());
        }
        let mut by_prefix = all.iter().filter(|n| n.id.starts_with(reference));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) if !reference.is_empty() => Ok(n.clone()),
            (Some(_), Some(_)) => Err(Error::invalid(format!(
                "network {reference} is ambiguous (more than one network matches)"
            ))),
            _ => Err(not_found(reference)),
        }
    }

    /// Makes a user network (blocking work off the async workers) and its
    /// DNS responder.
    pub async fn create(&self, spec: NetworkSpec) -> Result<NetworkInfo> {
        if !matches!(spec.driver.as_str(), "" | "bridge") {
            return Err(Error::not_found(format!(
                "plugin \"{}\" not found",
                spec.driver
            )));
        }
        if spec.name.is_empty() {
            return Err(Error::invalid("a network needs a name"));
        }
        if !is_docker_name(&spec.name) {
            return Err(Error::invalid(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                spec.name
            )));
        }
        if BUILTIN_NETWORKS.iter().any(|(n, _)| *n == spec.name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("network with name {} already exists", spec.name),
            ));
        }
        let subnet = spec.subnet.as_deref().map(str::parse).transpose()?;
        let gateway = spec
            .gateway
            .as_deref()
            .map(|g| {
                g.parse()
                    .map_err(|_| Error::invalid(format!("invalid gateway address {g:?}")))
            })
            .transpose()?;
        if gateway.is_some() && subnet.is_none() {
            return Err(Error::invalid(
                "a gateway needs a subnet (--subnet) to lie in",
            ));
        }
        let new = NewUserNetwork {
            id: new_id(),
            name: spec.name,
            subnet,
            gateway,
            internal: spec.internal,
            labels: spec.labels,
            created_at_ns: now_ns(),
        };
        let core = self.clone();
        let record = tokio::task::spawn_blocking(move || core.network.user.create(new))
            .await
            .map_err(|e| Error::internal(format!("network create task: {e}")))??;
        self.start_dns(&record).await;
        self.network_event(&record.id, &record.name, Action::Create, None);
        Ok(self.user_info(record, &self.sandbox_records()))
    }

    /// Removes a user network no container is on.
    pub async fn remove(&self, reference: &str) -> Result<()> {
        let net = self.inspect(reference)?;
        if net.builtin {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{} is a pre-defined network and cannot be removed",
                    net.name
                ),
            ));
        }
        if !net.members.is_empty() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "error while removing network: network {} id {} has active endpoints",
                    net.name, net.id
                ),
            ));
        }
        self.network.dns.stop(&net.id);
        let core = self.clone();
        let id = net.id.clone();
        tokio::task::spawn_blocking(move || core.network.user.remove(&id))
            .await
            .map_err(|e| Error::internal(format!("network remove task: {e}")))??;
        self.network_event(&net.id, &net.name, Action::Destroy, None);
        Ok(())
    }

    /// Removes every user network no container is on; returns their names.
    pub async fn prune(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for net in self.list() {
            if net.builtin || !net.members.is_empty() {
                continue;
            }
            match self.remove(&net.id).await {
                Ok(()) => removed.push(net.name),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Joins a Docker container's sandbox to a user network: it gains
    /// the next free `ethN`, up and addressed, at once if it is running.
    pub async fn connect(&self, container_id: &str, join: NetworkJoin) -> Result<()> {
        let net = self.inspect(&join.network)?;
        let (entry, _, container) = self.docker_sandbox_of(container_id).await?;
        if net.builtin {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "container cannot be connected to the pre-defined network {} while it is on another",
                    net.name
                ),
            ));
        }
        let _guard = entry.lock.lock().await;
        let mut record = entry.record();
        if record.endpoints.iter().any(|e| e.network_id == net.id) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "endpoint with name {} already exists in network {}",
                    container.config.name, net.name
                ),
            ));
        }
        let netns = ready_netns(&record)?;
        let used: Vec<&str> = record
            .endpoints
            .iter()
            .map(|e| e.interface.as_str())
            .chain(record.network.as_ref().map(|a| a.interface.as_str()))
            .collect();
        let interface = (0..)
            .map(|n| format!("eth{n}"))
            .find(|i| !used.contains(&i.as_str()))
            .unwrap_or_default();
        let req = JoinRequest {
            sandbox_id: record.id.clone(),
            netns,
            interface,
            address: join.ip,
            default_route: record.network.is_none() && record.endpoints.is_empty(),
            ports: Vec::new(),
            aliases: join.aliases.clone(),
            names: dns_names(&container.config.name, &container.id, &join.aliases),
        };
        let core = self.clone();
        let net_id = net.id.clone();
        let endpoint = tokio::task::spawn_blocking(move || core.network.user.join(&net_id, &req))
            .await
            .map_err(|e| Error::internal(format!("network connect task: {e}")))??;
        record.endpoints.push(endpoint);
        if let Err(e) = self.persist_sandbox(&record) {
            let _ = self.network.user.leave(&net.id, &record.id, None);
            return Err(e);
        }
        entry.set(record);
        self.refresh_dns(&net.id);
        self.network_event(&net.id, &net.name, Action::Connect, Some(&container.id));
        Ok(())
    }

    /// Takes a Docker container off a user network: its interface goes.
    pub async fn disconnect(&self, container_id: &str, reference: &str) -> Result<()> {
        let net = self.inspect(reference)?;
        let (entry, _, container) = self.docker_sandbox_of(container_id).await?;
        let _guard = entry.lock.lock().await;
        let mut record = entry.record();
        let Some(at) = record.endpoints.iter().position(|e| e.network_id == net.id) else {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "container {} is not connected to network {}",
                    container.id, net.name
                ),
            ));
        };
        let endpoint = record.endpoints.remove(at);
        let core = self.clone();
        let (net_id, sandbox_id) = (net.id.clone(), record.id.clone());
        tokio::task::spawn_blocking(move || {
            core.network
                .user
                .leave(&net_id, &sandbox_id, Some(&endpoint))
        })
        .await
        .map_err(|e| Error::internal(format!("network disconnect task: {e}")))??;
        self.persist_sandbox(&record)?;
        entry.set(record);
        self.refresh_dns(&net.id);
        self.network_event(&net.id, &net.name, Action::Disconnect, Some(&container.id));
        Ok(())
    }

    /// dockerd's network events: the network's id, name and type, and
    /// the container for connect and disconnect.
    fn network_event(&self, id: &str, name: &str, action: Action, container: Option<&str>) {
        let mut attrs = Attrs::new().set("name", name).set("type", "bridge");
        if let Some(c) = container {
            attrs = attrs.set("container", c);
        }
        self.events.publish(ObjectKind::Network, id, action, attrs);
    }

    /// Resolves the user network a create asks for, before anything is
    /// made.
    pub(crate) fn resolve_join(
        &self,
        join: &NetworkJoin,
        container_name: &str,
        container_id: &str,
    ) -> Result<(UserJoin, std::net::Ipv4Addr)> {
        let net = self.inspect(&join.network)?;
        if net.builtin {
            return Err(Error::invalid(format!(
                "network {} is built in: use --network {}",
                net.name, net.name
            )));
        }
        let gateway = net
            .gateway
            .as_deref()
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| Error::internal(format!("network {} has no gateway", net.name)))?;
        Ok((
            UserJoin {
                network_id: net.id,
                aliases: join.aliases.clone(),
                names: dns_names(container_name, container_id, &join.aliases),
                ip: join.ip,
            },
            gateway,
        ))
    }

    /// After a rename: the container answers to its new name on its
    /// networks instead of the old one.
    pub(crate) async fn rename_member(&self, sandbox_id: &str, old: &str, new: &str) {
        let Some(entry) = self.sandbox_entry(sandbox_id) else {
            return;
        };
        let _guard = entry.lock.lock().await;
        let mut record = entry.record();
        let mut changed = false;
        for name in record.endpoints.iter_mut().flat_map(|e| e.names.iter_mut()) {
            if name == old {
                *name = new.to_string();
                changed = true;
            }
        }
        if !changed {
            return;
        }
        if let Err(e) = self.persist_sandbox(&record) {
            tracing::warn!(sandbox = %sandbox_id, "record the new DNS name: {e}");
            return;
        }
        entry.set(record);
        self.refresh_all_dns();
    }

    async fn docker_sandbox_of(
        &self,
        container_id: &str,
    ) -> Result<(
        std::sync::Arc<crate::sandbox::Entry>,
        SandboxRecord,
        crate::model::ContainerRecord,
    )> {
        let container = self.require_container(container_id)?.record();
        if container.owner != Owner::Docker {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {container_id} belongs to a Kubernetes pod: kubelet manages its network"),
            ));
        }
        let entry = self.sandbox_entry(&container.sandbox_id).ok_or_else(|| {
            Error::not_found(format!("pod sandbox {} not found", container.sandbox_id))
        })?;
        let record = entry.record();
        if record.config.name != container.id {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "container {container_id} shares the network of container {}: connect that one",
                    record.config.name
                ),
            ));
        }
        Ok((entry, record, container))
    }

    fn builtin(&self, name: &str, sandboxes: &[SandboxRecord]) -> NetworkInfo {
        let driver = BUILTIN_NETWORKS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut info = NetworkInfo {
            id: berth_net::builtin_network_id(name),
            name: name.to_string(),
            driver,
            builtin: true,
            ..Default::default()
        };
        if name == "bridge" {
            let (bridge, subnet) = match &self.config.network {
                NetworkSettings::Bridge(c) => (Some(c.bridge.clone()), Some(c.subnet)),
                NetworkSettings::Netavark { bridge, subnet, .. } => {
                    (Some(bridge.clone()), Some(*subnet))
                }
                _ => (None, None),
            };
            info.bridge = bridge;
            info.subnet = subnet.map(|s| s.to_string());
            info.gateway = subnet.map(|s| s.gateway().to_string());
            info.members = sandboxes
                .iter()
                .filter(|s| s.owner == Owner::Docker)
                .filter_map(|s| {
                    let a = s.network.as_ref()?;
                    let endpoint = Endpoint {
                        network_id: info.id.clone(),
                        network_name: "bridge".into(),
                        interface: a.interface.clone(),
                        address: a.ips.first().and_then(|ip| match ip {
                            std::net::IpAddr::V4(v4) => Some(*v4),
                            _ => None,
                        }),
                        prefix: subnet.map(|s| s.prefix()).unwrap_or(16),
                        gateway: a.gateway.and_then(|g| match g {
                            std::net::IpAddr::V4(v4) => Some(v4),
                            _ => None,
                        }),
                        host_interface: a.host_interface.clone().unwrap_or_default(),
                        ..Default::default()
                    };
                    Some(self.member(s, endpoint))
                })
                .collect();
        }
        info
    }

    fn user_info(&self, r: UserNetworkRecord, sandboxes: &[SandboxRecord]) -> NetworkInfo {
        let members = sandboxes
            .iter()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .filter(|e| e.network_id == r.id)
                    .map(|e| self.member(s, e.clone()))
            })
            .collect();
        NetworkInfo {
            id: r.id,
            name: r.name,
            driver: "bridge".into(),
            subnet: Some(r.subnet),
            gateway: Some(r.gateway),
            internal: r.internal,
            labels: r.labels,
            created_at_ns: r.created_at_ns,
            builtin: false,
            bridge: Some(r.bridge),
            members,
        }
    }

    fn member(&self, sandbox: &SandboxRecord, endpoint: Endpoint) -> NetworkMember {
        // A Docker sandbox is named by the container it was made for.
        let container_id = sandbox.config.name.clone();
        let container_name = self
            .container_entry(&container_id)
            .map(|c| c.record().config.name)
            .unwrap_or_default();
        NetworkMember {
            container_id,
            container_name,
            sandbox_id: sandbox.id.clone(),
            endpoint,
        }
    }
}

/// The network namespace of a ready sandbox.
fn ready_netns(record: &SandboxRecord) -> Result<std::path::PathBuf> {
    match (&record.namespaces.net, record.state) {
        (Some(ns), SandboxState::Ready) => Ok(ns.clone()),
        _ => Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "container {} has no network namespace of its own to connect (host network, or stopped sandbox)",
                record.config.name
            ),
        )),
    }
}

impl Shared {
    pub(crate) fn sandbox_records(&self) -> Vec<SandboxRecord> {
        self.objects()
            .sandboxes
            .values()
            .map(|e| e.record())
            .collect()
    }

    /// Joins a new sandbox to its user networks; the first one carries
    /// its published ports and default route. Blocking. On error the
    /// caller's cleanup (`detach_network`) takes back what was made.
    pub(crate) fn join_user_networks(
        &self,
        id: &str,
        netns: &Path,
        pod: &PodConfig,
        joins: &[UserJoin],
    ) -> Result<Vec<Endpoint>> {
        let ports = crate::network::port_mappings(pod)?;
        self.network.host_ports.reserve(id, &ports)?;
        let mut endpoints = Vec::new();
        for (n, join) in joins.iter().enumerate() {
            let req = JoinRequest {
                sandbox_id: id.to_string(),
                netns: netns.to_path_buf(),
                interface: format!("eth{n}"),
                address: join.ip,
                default_route: n == 0,
                ports: if n == 0 { ports.clone() } else { Vec::new() },
                aliases: join.aliases.clone(),
                names: join.names.clone(),
            };
            endpoints.push(self.network.user.join(&join.network_id, &req)?);
        }
        Ok(endpoints)
    }

    /// The names a user network's DNS answers, from the sandbox records.
    pub(crate) fn dns_entries(&self, network_id: &str) -> BTreeMap<String, Vec<std::net::IpAddr>> {
        let mut names: BTreeMap<String, Vec<std::net::IpAddr>> = BTreeMap::new();
        for s in self.sandbox_records() {
            for e in s.endpoints.iter().filter(|e| e.network_id == network_id) {
                let Some(ip) = e.address else { continue };
                for name in &e.names {
                    names
                        .entry(name.to_ascii_lowercase())
                        .or_default()
                        .push(std::net::IpAddr::V4(ip));
                }
            }
        }
        names
    }

    /// Brings every user network's DNS answers up to date.
    pub(crate) fn refresh_all_dns(&self) {
        for r in self.network.user.list() {
            self.refresh_dns(&r.id);
        }
    }

    /// Brings a network's DNS answers up to date with its members.
    pub(crate) fn refresh_dns(&self, network_id: &str) {
        let entries = self.dns_entries(network_id);
        self.network.dns.update(network_id, entries);
    }

    /// At start: a responder for every user network, off the caller.
    pub(crate) fn start_all_dns(self: &std::sync::Arc<Self>) {
        for record in self.network.user.list() {
            let me = self.clone();
            tokio::spawn(async move { me.start_dns(&record).await });
        }
    }

    /// Starts a user network's DNS responder on its gateway, port 53.
    pub(crate) async fn start_dns(&self, record: &UserNetworkRecord) {
        let Ok(gateway) = record.gateway.parse::<std::net::IpAddr>() else {
            return;
        };
        let entries = self.dns_entries(&record.id);
        if let Err(e) = self.network.dns.start(&record.id, gateway, entries).await {
            tracing::warn!(network = %record.name, "start the DNS responder: {e}");
        }
    }
}
