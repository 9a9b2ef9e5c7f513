//! The pod network as the core uses it: which backend, host-port
//! reservations, and the request a backend gets for one pod.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_errdefs::{Error, Result};
use berth_net::{AttachRequest, Attachment, HostPorts, PodNetwork, PortMapping, Protocol};
use berth_store::Store;

use crate::model::{self, PodConfig, SandboxRecord};
use crate::{NetworkSettings, Sandboxes, Shared};

/// The pod network and the host ports its pods hold.
pub(crate) struct Network {
    pub backend: Option<Arc<dyn PodNetwork>>,
    pub host_ports: HostPorts,
    /// Docker's user networks.
    pub user: berth_net::UserNetworks,
    /// Their DNS responders.
    pub dns: crate::netdns::Dns,
}

impl Network {
    pub fn open(
        settings: &NetworkSettings,
        store: &Arc<Store>,
        state_dir: &Path,
    ) -> Result<Network> {
        let backend: Option<Arc<dyn PodNetwork>> = match settings {
            NetworkSettings::None => None,
            NetworkSettings::Bridge(c) => Some(Arc::new(berth_net::BridgeNetwork::open(
                c.clone(),
                store.clone(),
            )?)),
            NetworkSettings::Netavark {
                binary,
                bridge,
                subnet,
                mtu,
            } => {
                // netavark itself checks nothing: refuse an overlap up front.
                let routes = std::fs::read_to_string("/proc/net/route")?;
                subnet.check_against(&berth_net::host_routes(&routes), bridge)?;
                let ipam = Arc::new(berth_net::Ipam::open(*subnet, store.clone())?);
                Some(Arc::new(berth_net::netavark::NetavarkNetwork::new(
                    berth_net::netavark::NetavarkConfig {
                        binary: binary.clone(),
                        config_dir: state_dir.join("netavark"),
                        network_name: format!("berth-{bridge}"),
                        bridge: bridge.clone(),
                        subnet: *subnet,
                        mtu: *mtu,
                    },
                    ipam,
                )))
            }
            NetworkSettings::Cni {
                conf_dir,
                plugin_dirs,
            } => Some(Arc::new(berth_net::cni::CniNetwork::new(
                berth_net::cni::CniConfig {
                    conf_dir: conf_dir.clone(),
                    plugin_dirs: plugin_dirs.clone(),
                },
            ))),
        };
        if let Some(b) = &backend {
            tracing::info!(backend = b.name(), "pod network");
        }
        // An automatic user network subnet never takes the pod network's.
        let avoid = match settings {
            NetworkSettings::Bridge(c) => vec![c.subnet],
            NetworkSettings::Netavark { subnet, .. } => vec![*subnet],
            _ => Vec::new(),
        };
        Ok(Network {
            backend,
            host_ports: HostPorts::new(),
            user: berth_net::UserNetworks::open(store.clone(), avoid)?,
            dns: Default::default(),
        })
    }
}

/// The published port mappings as the network takes them. A mapping
/// without a host port only documents the container port: nothing to
/// forward.
pub(crate) fn port_mappings(pod: &PodConfig) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    for p in &pod.port_mappings {
        let Some(host_port) = p.host_port.filter(|port| *port != 0) else {
            continue;
        };
        if p.container_port == 0 {
            return Err(Error::invalid(
                "port mapping: container port 0 is not a port (1-65535)",
            ));
        }
        let host_ip = p.host_ip.filter(|ip| !ip.is_unspecified());
        if let Some(ip @ IpAddr::V6(_)) = host_ip {
            return Err(Error::invalid(format!(
                "port mapping: host IP {ip} is IPv6; the pod network is IPv4 only"
            )));
        }
        out.push(PortMapping {
            protocol: match p.protocol {
                model::Protocol::Tcp => Protocol::Tcp,
                model::Protocol::Udp => Protocol::Udp,
                model::Protocol::Sctp => Protocol::Sctp,
            },
            container_port: p.container_port,
            host_port,
            host_ip,
        });
    }
    Ok(out)
}

impl Shared {
    /// Wires a new pod's namespace: host ports first (a taken port fails
    /// before anything is made), then the backend. Blocking.
    pub(crate) fn attach_network(
        &self,
        id: &str,
        netns: &Path,
        pod: &PodConfig,
    ) -> Result<Option<Attachment>> {
        let Some(backend) = &self.network.backend else {
            return Ok(None);
        };
        let ports = port_mappings(pod)?;
        self.network.host_ports.reserve(id, &ports)?;
        let attached = backend.attach(&AttachRequest {
            sandbox_id: id.to_string(),
            netns: netns.to_path_buf(),
            pod_name: pod.name.clone(),
            pod_namespace: pod
                .kubernetes
                .as_ref()
                .map(|k| k.namespace.clone())
                .unwrap_or_default(),
            pod_uid: pod
                .kubernetes
                .as_ref()
                .map(|k| k.uid.clone())
                .unwrap_or_default(),
            ports,
        });
        if attached.is_err() {
            self.network.host_ports.release(id);
        }
        attached.map(Some)
    }

    /// Undoes [`attach_network`]. Idempotent; works without a record and
    /// after the namespace is gone. Blocking.
    pub(crate) fn detach_network(
        &self,
        id: &str,
        netns: Option<&PathBuf>,
        attachment: Option<&Attachment>,
    ) -> Result<()> {
        if let Some(backend) = &self.network.backend {
            if let Some(a) = attachment.filter(|a| a.backend != backend.name()) {
                tracing::warn!(sandbox = %id, made_by = %a.backend, now = backend.name(),
                    "the pod was networked by another backend; detaching with the current one");
            }
            let netns = netns.map(PathBuf::as_path).filter(|p| p.exists());
            backend.detach(id, netns, attachment)?;
        }
        // User networks need no record: their leases name the sandbox.
        self.network.user.leave_all(id)?;
        self.network.host_ports.release(id);
        Ok(())
    }

    /// At start: re-reserves the host ports of networked pods and lets the
    /// backend remove what belongs to no pod.
    pub(crate) fn recover_network(&self, sandboxes: &[SandboxRecord]) -> Result<()> {
        let with_endpoints: Vec<String> = sandboxes
            .iter()
            .filter(|r| !r.endpoints.is_empty())
            .map(|r| r.id.clone())
            .collect();
        for r in sandboxes.iter().filter(|r| !r.endpoints.is_empty()) {
            let ports = r.endpoints[0].ports.clone();
            if let Err(e) = self.network.host_ports.reserve(&r.id, &ports) {
                tracing::warn!(sandbox = %r.id, "re-reserve host ports: {e}");
            }
        }
        self.network.user.remove_orphans(&with_endpoints)?;
        let Some(backend) = &self.network.backend else {
            return Ok(());
        };
        let mut live = Vec::new();
        for r in sandboxes.iter().filter(|r| r.network.is_some()) {
            live.push(r.id.clone());
            let ports = r
                .network
                .as_ref()
                .map(|a| a.ports.clone())
                .unwrap_or_default();
            if let Err(e) = self.network.host_ports.reserve(&r.id, &ports) {
                tracing::warn!(sandbox = %r.id, "re-reserve host ports: {e}");
            }
        }
        backend.remove_orphans(&live)
    }
}

impl Sandboxes {
    /// Connects to `port` on the pod's own loopback, inside its network
    /// namespace (CRI `PortForward`), as kubelet's port-forward expects.
    pub async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<tokio::net::TcpStream> {
        let (_, record) = self.ready_sandbox(sandbox_id)?;
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let connect = move || std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT);
        let netns = record.namespaces.net.clone();
        let connected = tokio::task::spawn_blocking(move || match netns {
            // A socket keeps the namespace it was made in: connect there.
            Some(ns) => berth_ns::in_netns(&ns, connect),
            None => Ok(connect()),
        })
        .await
        .map_err(|e| Error::internal(format!("port-forward task: {e}")))??;
        let stream = connected.map_err(|e| {
            Error::new(
                berth_errdefs::ErrorKind::Unavailable,
                format!("connect to port {port} in pod sandbox {sandbox_id}: {e}"),
            )
        })?;
        stream.set_nonblocking(true)?;
        Ok(tokio::net::TcpStream::from_std(stream)?)
    }
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
