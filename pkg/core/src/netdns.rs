//! The embedded DNS responders of user networks: one per network on its
//! gateway address, port 53, in the host's network namespace, answering
//! its members' names and forwarding the rest to the host's resolvers.
//! Containers on a user network name the gateway in their resolv.conf
//! (dockerd uses 127.0.0.11 inside the container; the gateway is what
//! netavark's aardvark-dns does, and needs no rule in the container).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use berth_errdefs::Result;

/// The responders, by network id.
#[derive(Default)]
pub(crate) struct Dns {
    nets: Mutex<HashMap<String, NetDns>>,
}

#[derive(Default)]
struct NetDns {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl Dns {
    pub async fn start(
        &self,
        network_id: &str,
        _gateway: IpAddr,
        entries: BTreeMap<String, Vec<IpAddr>>,
    ) -> Result<()> {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        nets.insert(network_id.to_string(), NetDns { names: entries });
        Ok(())
    }

    pub fn update(&self, network_id: &str, entries: BTreeMap<String, Vec<IpAddr>>) {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nets.get_mut(network_id) {
            n.names = entries;
        }
    }

    pub fn stop(&self, network_id: &str) {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        nets.remove(network_id);
    }
}
