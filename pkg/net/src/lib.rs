//! Pod networking. So far: the address management berthd owns whatever the
//! backend (netavark, CNI, netlink) — IPv4 subnets, leases persisted in the
//! metadata store so a restart never hands out an address in use, and the
//! start-up check that a pod subnet does not overlap the host's routes.

mod ipam;
mod subnet;

pub use ipam::{Ipam, Lease};
pub use subnet::{host_routes, Subnet};
