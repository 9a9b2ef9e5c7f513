//! The embedded DNS responders of user networks: one per network on its
//! gateway address, port 53, in the host's network namespace, answering
//! its members' names (container name, short id, aliases) and forwarding
//! the rest to the host's resolvers. Containers on a user network name
//! the gateway in their resolv.conf. dockerd answers on 127.0.0.11
//! inside each container (a socket and NAT rules per container); the
//! gateway, as netavark's aardvark-dns does, needs nothing in the
//! container and one socket per network.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use berth_dns::{Records, Responder};
use berth_errdefs::Result;

/// The responders, by network id.
#[derive(Default)]
pub(crate) struct Dns {
    nets: Mutex<HashMap<String, NetDns>>,
}

struct NetDns {
    records: Records,
    /// The names set in `records`, to remove those that went.
    names: Vec<String>,
    _responder: Responder,
}

fn apply(
    records: &Records,
    old: &[String],
    entries: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<String> {
    for name in old.iter().filter(|n| !entries.contains_key(*n)) {
        records.remove(name);
    }
    for (name, addrs) in entries {
        records.set(name, addrs.clone());
    }
    entries.keys().cloned().collect()
}

impl Dns {
    /// Starts (or restarts) a network's responder on `gateway:53`.
    pub async fn start(
        &self,
        network_id: &str,
        gateway: IpAddr,
        entries: BTreeMap<String, Vec<IpAddr>>,
    ) -> Result<()> {
        // A restart closes the old sockets before binding the new ones.
        self.stop(network_id);
        let records = Records::default();
        let names = apply(&records, &[], &entries);
        let responder = Responder::start(
            SocketAddr::new(gateway, 53),
            records.clone(),
            berth_dns::host_upstreams(),
        )
        .await?;
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        nets.insert(
            network_id.to_string(),
            NetDns {
                records,
                names,
                _responder: responder,
            },
        );
        Ok(())
    }

    /// Sets the names a network answers.
    pub fn update(&self, network_id: &str, entries: BTreeMap<String, Vec<IpAddr>>) {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nets.get_mut(network_id) {
            n.names = apply(&n.records, &n.names, &entries);
        }
    }

    /// Stops a network's responder (dropping it closes its sockets).
    pub fn stop(&self, network_id: &str) {
        let gone = self
            .nets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(network_id);
        drop(gone);
    }
}
