//! Pod networking behind one trait, [`PodNetwork`] (attach a pod's network
//! namespace, detach it, report readiness, take kubelet's pod CIDR, remove
//! orphans), with three backends:
//! - [`BridgeNetwork`] (the default): a Linux bridge, veth pairs made over
//!   in-process netlink, berthd's own IPAM, and iptables rules for
//!   masquerading and host ports (`firewall.rs`);
//! - [`netavark`]: the same bridge network made by Podman's netavark
//!   binary through its JSON contract;
//! - [`cni`]: standard CNI plugins and configs.
//!
//! Whatever the backend, berthd owns the addresses: [`Ipam`] leases IPv4
//! addresses from a [`Subnet`] and keeps them (and the bridge's CIDR) in the
//! metadata store, so a restart never hands out an address in use; a pod
//! subnet that overlaps the host's routes is refused at start.
//! [`HostPorts`] reserves host ports across pods so a taken port fails
//! before anything is made.

mod bridge;
pub mod cni;
mod firewall;
mod hostports;
mod ipam;
pub mod netavark;
mod netlink;
mod network;
mod subnet;
mod user;

pub use bridge::{
    bridge_network_rules, remove_bridge_network, veth_name, BridgeConfig, BridgeNetwork,
    POD_INTERFACE,
};
pub use hostports::HostPorts;
pub use ipam::{Ipam, Lease};
pub use network::{AttachRequest, Attachment, NotReady, PodNetwork, PortMapping, Protocol};
pub use subnet::{host_routes, Subnet};
pub use user::{
    builtin_network_id, user_bridge_name, user_veth_name, Endpoint, JoinRequest, NewUserNetwork,
    UserNetworkRecord, UserNetworks,
};
