//! Pod networking. So far: the address management berthd owns whatever the
//! backend (netavark, CNI, netlink) — IPv4 subnets, leases persisted in the
//! metadata store so a restart never hands out an address in use, and the
//! start-up check that a pod subnet does not overlap the host's routes.

mod bridge;
pub mod cni;
mod firewall;
mod hostports;
mod ipam;
pub mod netavark;
mod netlink;
mod network;
mod subnet;

pub use bridge::{
    bridge_network_rules, remove_bridge_network, veth_name, BridgeConfig, BridgeNetwork,
    POD_INTERFACE,
};
pub use hostports::HostPorts;
pub use ipam::{Ipam, Lease};
pub use network::{AttachRequest, Attachment, NotReady, PodNetwork, PortMapping, Protocol};
pub use subnet::{host_routes, Subnet};
