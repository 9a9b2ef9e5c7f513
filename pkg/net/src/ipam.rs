//! Address management for one pod subnet. Leases are written to the
//! metadata store before an address is handed out, so a berthd restart
//! (or crash) never gives an address in use to a second pod.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::{Batch, Store};
use serde::{Deserialize, Serialize};

use crate::Subnet;

const LEASES: &str = "ipam_leases";

/// One address held by one pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub sandbox_id: String,
    pub subnet: String,
}

pub struct Ipam {
    subnet: Subnet,
    store: Arc<Store>,
    /// address → lease, for this subnet.
    leases: Mutex<BTreeMap<u32, Lease>>,
    /// Where the next search starts, so freed addresses are not reused at
    /// once (a stale ARP entry or conntrack flow could still point at them).
    next: Mutex<u32>,
    /// Addresses never handed out (a user network's own gateway).
    reserved: Vec<u32>,
}

impl Ipam {
    /// Loads the leases of `subnet` from the store.
    pub fn open(subnet: Subnet, store: Arc<Store>) -> Result<Ipam> {
        Ipam::open_reserving(subnet, store, &[])
    }

    /// Like [`open`](Ipam::open), never handing out `reserved`.
    pub fn open_reserving(
        subnet: Subnet,
        store: Arc<Store>,
        reserved: &[Ipv4Addr],
    ) -> Result<Ipam> {
        let key = subnet.to_string();
        let found = store.list_readable::<Lease>(LEASES)?;
        for (key, error) in found.moved_aside {
            tracing::error!(lease = %key, "unreadable address lease ({error}): moved aside");
        }
        let leases = found
            .records
            .into_iter()
            .filter(|(_, l)| l.subnet == key && subnet.contains(l.address))
            .map(|(_, l)| (u32::from(l.address), l))
            .collect::<BTreeMap<_, _>>();
        let start = leases
            .keys()
            .next_back()
            .map(|a| a + 1)
            .unwrap_or(subnet.pod_range().0);
        Ok(Ipam {
            subnet,
            store,
            leases: Mutex::new(leases),
            next: Mutex::new(start),
            reserved: reserved.iter().map(|a| u32::from(*a)).collect(),
        })
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The address of `sandbox_id`: its existing lease, or a new one.
    pub fn allocate(&self, sandbox_id: &str) -> Result<Ipv4Addr> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = leases.values().find(|l| l.sandbox_id == sandbox_id) {
            return Ok(l.address);
        }
        let (first, last) = self.subnet.pod_range();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let size = last - first + 1;
        let start = if (first..=last).contains(&*next) {
            *next
        } else {
            first
        };
        let free = (0..size)
            .map(|i| first + (start - first + i) % size)
            .find(|a| !leases.contains_key(a) && !self.reserved.contains(a))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!("pod subnet {} has no free address", self.subnet),
                )
            })?;
        self.record(&mut leases, sandbox_id, free)?;
        *next = free + 1;
        Ok(Ipv4Addr::from(free))
    }

    /// Leases exactly `address` (Docker's `--ip`): refused when it lies
    /// outside the subnet, is reserved, or is another sandbox's.
    pub fn claim(&self, sandbox_id: &str, address: Ipv4Addr) -> Result<Ipv4Addr> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let a = u32::from(address);
        let (first, last) = self.subnet.pod_range();
        if !(first..=last).contains(&a) || self.reserved.contains(&a) {
            return Err(Error::invalid(format!(
                "address {address} is not usable in subnet {}",
                self.subnet
            )));
        }
        match leases.get(&a) {
            Some(l) if l.sandbox_id == sandbox_id => Ok(address),
            Some(_) => Err(Error::new(
                ErrorKind::Conflict,
                format!("Address already in use: {address}"),
            )),
            None => {
                self.record(&mut leases, sandbox_id, a)?;
                Ok(address)
            }
        }
    }

    /// Stores a lease, durable before anyone can use the address.
    fn record(&self, leases: &mut BTreeMap<u32, Lease>, sandbox_id: &str, a: u32) -> Result<()> {
        let lease = Lease {
            address: Ipv4Addr::from(a),
            sandbox_id: sandbox_id.to_string(),
            subnet: self.subnet.to_string(),
        };
        self.store
            .write(Batch::new().put(LEASES, &lease_key(&lease), &lease)?)?;
        leases.insert(a, lease);
        Ok(())
    }

    /// Releases the lease of `sandbox_id`; having none is fine.
    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let held: Vec<(u32, Lease)> = leases
            .iter()
            .filter(|(_, l)| l.sandbox_id == sandbox_id)
            .map(|(a, l)| (*a, l.clone()))
            .collect();
        let mut batch = Batch::new();
        for (_, l) in &held {
            batch = batch.delete(LEASES, &lease_key(l));
        }
        self.store.write(batch)?;
        for (a, _) in held {
            leases.remove(&a);
        }
        Ok(())
    }

    pub fn leases(&self) -> Vec<Lease> {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.values().cloned().collect()
    }
}

fn lease_key(l: &Lease) -> String {
    format!("{}/{}", l.subnet, l.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &std::path::Path, subnet: &str) -> Ipam {
        let store = Arc::new(Store::open(dir).unwrap());
        Ipam::open(subnet.parse().unwrap(), store).unwrap()
    }

    #[test]
    fn allocates_skipping_gateway_and_is_idempotent_per_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.87.0.0/29");
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(
            a,
            Ipv4Addr::new(10, 87, 0, 2),
            "network and gateway skipped"
        );
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        assert_eq!(ipam.allocate("pod-b").unwrap(), Ipv4Addr::new(10, 87, 0, 3));
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        // /29: .2 to .6 are for pods (.7 is broadcast).
        let ipam = ipam(dir.path(), "10.87.0.0/29");
        for n in 0..5 {
            ipam.allocate(&format!("pod-{n}")).unwrap();
        }
        let e = ipam.allocate("one-too-many").unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert!(e.message.contains("10.87.0.0/29"), "{}", e.message);
        ipam.release("pod-2").unwrap();
        ipam.release("pod-2").unwrap();
        assert_eq!(ipam.allocate("late").unwrap(), Ipv4Addr::new(10, 87, 0, 4));
    }

    #[test]
    fn leases_survive_a_restart_and_are_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let ipam = ipam(dir.path(), "10.87.0.0/24");
            (
                ipam.allocate("pod-a").unwrap(),
                ipam.allocate("pod-b").unwrap(),
            )
        };
        let ipam = ipam(dir.path(), "10.87.0.0/24");
        assert_eq!(ipam.leases().len(), 2);
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        let c = ipam.allocate("pod-c").unwrap();
        assert!(c != a && c != b, "{c} was already leased");
        // A freed address is not reused at once.
        ipam.release("pod-a").unwrap();
        let d = ipam.allocate("pod-d").unwrap();
        assert_ne!(d, a);
    }

    #[test]
    fn leases_of_another_subnet_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        ipam(dir.path(), "10.87.0.0/24").allocate("pod-a").unwrap();
        let other = ipam(dir.path(), "10.86.0.0/24");
        assert!(other.leases().is_empty());
        assert_eq!(
            other.allocate("pod-a").unwrap(),
            Ipv4Addr::new(10, 86, 0, 2)
        );
    }
}
