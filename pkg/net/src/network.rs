//! The `PodNetwork` interface every backend implements (the built-in
//! bridge, the netavark binary, CNI plugins), and the types it speaks.
//!
//! berthd owns the network namespace (pinned by `berth-ns`), the per-pod
//! record (an [`Attachment`] stored with the sandbox) and, for the bridge
//! and netavark backends, the addresses (`Ipam`). A backend only wires an
//! existing namespace to the node and undoes that.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_errdefs::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The lower-case name iptables, netavark and CNI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host port forwarded to a pod port (CRI `PortMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    /// `None`: every local address of the node.
    pub host_ip: Option<IpAddr>,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:{}/{}", self.host_port, self.protocol),
            None => write!(f, "{}/{}", self.host_port, self.protocol),
        }
    }
}

/// What a backend needs to wire one pod.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub sandbox_id: String,
    /// The pinned network namespace (a bind mount of `/proc/.../ns/net`).
    pub netns: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub ports: Vec<PortMapping>,
}

/// One pod's network, as recorded with its sandbox so that teardown works
/// after a restart. Serialised into the store: every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attachment {
    /// The backend that made it (`bridge`, `netavark`, `cni`).
    pub backend: String,
    /// The interface inside the pod, `eth0`.
    pub interface: String,
    /// The pod's addresses, primary first.
    pub ips: Vec<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// The host end of the pod's veth, when the backend knows it.
    pub host_interface: Option<String>,
    pub ports: Vec<PortMapping>,
    /// Whatever else the backend needs to undo it (CNI: the network config
    /// and result it was added with). Opaque to everyone else.
    pub backend_state: Option<serde_json::Value>,
}

/// Why pods cannot be networked now (CRI `NetworkReady=false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// A CamelCase reason, e.g. `NetworkPluginNotReady`.
    pub reason: String,
    pub message: String,
}

/// A way of giving pods a network. Methods block (they run processes or
/// netlink requests): call them from `spawn_blocking`.
pub trait PodNetwork: Send + Sync {
    /// `bridge`, `netavark` or `cni`.
    fn name(&self) -> &'static str;

    /// Whether pods can be networked; checked on every CRI `Status`.
    fn ready(&self) -> std::result::Result<(), NotReady>;

    /// Wires the namespace at `req.netns`: all of it, or nothing (a failed
    /// attach undoes its own steps before returning the error).
    fn attach(&self, req: &AttachRequest) -> Result<Attachment>;

    /// Undoes [`attach`](PodNetwork::attach). Idempotent: missing parts are
    /// fine, and it works with no attachment record (a crash between attach
    /// and the record being stored) and with the namespace already gone.
    fn detach(
        &self,
        sandbox_id: &str,
        netns: Option<&Path>,
        attachment: Option<&Attachment>,
    ) -> Result<()>;

    /// Called once at start with the ids of every sandbox that has a record:
    /// removes what the backend finds on the node for any other sandbox.
    fn remove_orphans(&self, live_sandboxes: &[String]) -> Result<()> {
        let _ = live_sandboxes;
        Ok(())
    }

    /// kubelet's pod CIDR (CRI `UpdateRuntimeConfig`). Backends that take
    /// their range from elsewhere ignore it.
    fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        let _ = cidr;
        Ok(())
    }
}
