//! Docker's user networks on the node: each one a Linux bridge of its own
//! (`br-<first 12 hex of its id>`, as dockerd names them) with its own
//! subnet, gateway address, address leases and firewall chains
//! (masquerade unless internal; an internal network forwards nothing in
//! or out). Records and leases live in the metadata store, so networks
//! outlive restarts; [`UserNetworks::open`] makes again what a reboot
//! removed.
//!
//! A sandbox joins a network through one veth per network: the host end
//! `vu<6 hex of the network><7 hex of the sandbox>` on the network's
//! bridge, the other end `eth0`, `eth1`… in the sandbox. Names and MACs
//! are derived, never random, so leaving needs no record.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::{Batch, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bridge::{io_err, remove_bridge_network, sysctl};
use crate::firewall::Firewall;
use crate::netlink::{link_index, Netlink};
use crate::{host_routes, Ipam, Lease, PortMapping, Subnet};

/// The store's table of user network records, by id.
const USER_NETWORKS: &str = "user_networks";
const VETH_PREFIX: &str = "vu";
/// Every user network's bridge, as an iptables interface pattern.
const USER_BRIDGES: &str = "br-+";
/// How often a create picks another automatic subnet when a concurrent
/// creator (another daemon on the node) took the one it chose.
const PICK_ATTEMPTS: usize = 4;

/// A user network as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserNetworkRecord {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    /// No masquerade and no forwarding beyond the bridge.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub created_at_ns: i64,
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct NewUserNetwork {
    pub id: String,
    pub name: String,
    /// `None`: the first free one of Docker's pools (172.17–31.0.0/16, then
    /// 192.168.x.0/20).
    pub subnet: Option<Subnet>,
    /// `None`: the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub created_at_ns: i64,
}

/// One sandbox's interface on a user network, recorded with the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub network_id: String,
    pub network_name: String,
    /// Inside the sandbox: `eth0`, `eth1`…
    pub interface: String,
    pub address: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    pub host_interface: String,
    /// `--network-alias`es.
    pub aliases: Vec<String>,
    /// Every name the network's DNS answers with this address.
    pub names: Vec<String>,
    pub ports: Vec<PortMapping>,
}

/// How a sandbox joins a network.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub sandbox_id: String,
    pub netns: std::path::PathBuf,
    pub interface: String,
    /// `--ip`; `None`: the next free address.
    pub address: Option<Ipv4Addr>,
    /// The sandbox's first network routes everything else.
    pub default_route: bool,
    pub ports: Vec<PortMapping>,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
}

struct UserNet {
    record: UserNetworkRecord,
    subnet: Subnet,
    gateway: Ipv4Addr,
    ipam: Ipam,
    firewall: Firewall,
}

/// The node's user networks.
pub struct UserNetworks {
    store: Arc<Store>,
    nets: Mutex<BTreeMap<String, Arc<UserNet>>>,
    /// Subnets never chosen automatically (the pod network's).
    avoid: Vec<Subnet>,
    /// Creates and removes one at a time: a subnet is chosen and made
    /// under it.
    changes: Mutex<()>,
}

/// The id of a built-in network (`bridge`, `host`, `none`): the same on
/// every start.
pub fn builtin_network_id(name: &str) -> String {
    let digest = Sha256::digest(format!("berth builtin network {name}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host end of a sandbox's veth on a network.
pub fn user_veth_name(network_id: &str, sandbox_id: &str) -> String {
    let net: String = network_id.chars().take(6).collect();
    let sandbox: String = sandbox_id.chars().take(7).collect();
    format!("{VETH_PREFIX}{net}{sandbox}")
}

/// dockerd's bridge name for a network.
pub fn user_bridge_name(network_id: &str) -> String {
    let short: String = network_id.chars().take(12).collect();
    format!("br-{short}")
}

/// The MAC of an address, as dockerd derived them: `02:42` and the address.
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Docker's default address pools, in the order it takes them.
fn pool() -> impl Iterator<Item = Subnet> {
    let b = (17..=31u8).filter_map(|x| Subnet::new(Ipv4Addr::new(172, x, 0, 0), 16).ok());
    let c = (0..16u8).filter_map(|x| Subnet::new(Ipv4Addr::new(192, 168, x * 16, 0), 20).ok());
    b.chain(c)
}

fn routes() -> Result<Vec<(String, Subnet)>> {
    let table = fs::read_to_string("/proc/net/route").map_err(io_err("read /proc/net/route"))?;
    Ok(host_routes(&table))
}

impl UserNet {
    fn from_record(record: UserNetworkRecord, store: &Arc<Store>) -> Result<UserNet> {
        let subnet: Subnet = record.subnet.parse()?;
        let gateway: Ipv4Addr = record.gateway.parse().map_err(|_| {
            Error::invalid(format!(
                "gateway {:?} is not an IPv4 address",
                record.gateway
            ))
        })?;
        Ok(UserNet {
            ipam: Ipam::open_reserving(subnet, store.clone(), &[gateway])?,
            firewall: Firewall::new(&record.bridge),
            subnet,
            gateway,
            record,
        })
    }

    /// Makes (or adopts) the bridge, its address and its rules.
    fn set_up(&self) -> Result<()> {
        let bridge = &self.record.bridge;
        let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
        let index = nl
            .create_bridge(bridge, None)
            .map_err(io_err(format!("create bridge {bridge}")))?;
        nl.add_address(index, self.gateway, self.subnet.prefix())
            .map_err(io_err(format!("address bridge {bridge}")))?;
        if !self.record.internal {
            sysctl("net/ipv4/ip_forward", "1")?;
        }
        // Host ports on 127.0.0.1 need loopback sources routable to the bridge.
        sysctl(&format!("net/ipv4/conf/{bridge}/route_localnet"), "1")?;
        self.firewall
            .ensure_with(self.subnet, !self.record.internal, Some(USER_BRIDGES))
    }

    fn bridge_index(&self) -> Result<u32> {
        match link_index(&self.record.bridge) {
            Ok(i) => Ok(i),
            Err(_) => {
                self.set_up()?;
                link_index(&self.record.bridge)
                    .map_err(io_err(format!("find bridge {}", self.record.bridge)))
            }
        }
    }

    fn wire(&self, req: &JoinRequest, ip: Ipv4Addr) -> Result<[u8; 6]> {
        let master = self.bridge_index()?;
        let netns = fs::File::open(&req.netns)
            .map_err(io_err(format!("open netns {}", req.netns.display())))?;
        let host = user_veth_name(&self.record.id, &req.sandbox_id);
        let mac = mac_of(ip);
        let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
        let fd = netns.as_raw_fd();
        let mut made = nl.create_veth(&host, &req.interface, fd, master, None, Some(mac));
        if made.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EEXIST) {
            // Left by a crash before the endpoint was recorded.
            nl.delete_link(&host)
                .map_err(io_err(format!("delete stale {host}")))?;
            made = nl.create_veth(&host, &req.interface, fd, master, None, Some(mac));
        }
        made.map_err(io_err(format!("create veth {host}")))?;
        let (prefix, gateway, ifname) = (self.subnet.prefix(), self.gateway, req.interface.clone());
        let default_route = req.default_route;
        berth_ns::in_netns(&req.netns, move || -> std::io::Result<()> {
            let mut nl = Netlink::open()?;
            let index = link_index(&ifname)?;
            nl.add_address(index, ip, prefix)?;
            nl.set_up(index)?;
            if default_route {
                nl.add_default_route(index, gateway)?;
            }
            Ok(())
        })?
        .map_err(io_err(format!(
            "configure {} in the sandbox",
            req.interface
        )))?;
        self.firewall.add_ports(&req.sandbox_id, ip, &req.ports)?;
        Ok(mac)
    }

    fn leave(&self, sandbox_id: &str, ports_known_empty: bool) -> Result<()> {
        if !ports_known_empty {
            self.firewall.remove_ports(sandbox_id)?;
        }
        let host = user_veth_name(&self.record.id, sandbox_id);
        Netlink::open()
            .and_then(|mut nl| nl.delete_link(&host))
            .map_err(io_err(format!("delete veth {host}")))?;
        self.ipam.release(sandbox_id)
    }

    fn veths(&self) -> Result<Vec<String>> {
        let Ok(master) = link_index(&self.record.bridge) else {
            return Ok(Vec::new());
        };
        let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
        Ok(nl
            .links()
            .map_err(io_err("list links"))?
            .into_iter()
            .filter(|l| l.master == Some(master) && l.name.starts_with(VETH_PREFIX))
            .map(|l| l.name)
            .collect())
    }
}

impl UserNetworks {
    /// Loads the recorded networks and makes again, for each, whatever of
    /// its bridge and rules is missing (after a reboot: all of it). A
    /// network that cannot be set up is kept and logged: its next join
    /// tries again.
    pub fn open(store: Arc<Store>, avoid: Vec<Subnet>) -> Result<UserNetworks> {
        let found = store.list_readable::<UserNetworkRecord>(USER_NETWORKS)?;
        for (key, error) in found.moved_aside {
            tracing::error!(network = %key, "unreadable user network record ({error}): moved aside");
        }
        let mut nets = BTreeMap::new();
        for (_, record) in found.records {
            let net = UserNet::from_record(record, &store)?;
            if let Err(e) = net.set_up() {
                tracing::error!(network = %net.record.name, "set up user network: {e}");
            }
            nets.insert(net.record.id.clone(), Arc::new(net));
        }
        Ok(UserNetworks {
            store,
            nets: Mutex::new(nets),
            avoid,
            changes: Mutex::new(()),
        })
    }

    fn nets(&self) -> MutexGuard<'_, BTreeMap<String, Arc<UserNet>>> {
        self.nets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn net(&self, id: &str) -> Result<Arc<UserNet>> {
        self.nets()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("network {id} not found")))
    }

    pub fn list(&self) -> Vec<UserNetworkRecord> {
        self.nets().values().map(|n| n.record.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<UserNetworkRecord> {
        self.nets().get(id).map(|n| n.record.clone())
    }

    /// The addresses leased on a network.
    pub fn leases(&self, id: &str) -> Vec<Lease> {
        self.nets()
            .get(id)
            .map(|n| n.ipam.leases())
            .unwrap_or_default()
    }

    /// Makes a network: all of it or nothing. A name in use is
    /// AlreadyExists; a subnet that overlaps another network or a host
    /// route is Conflict naming it.
    pub fn create(&self, new: NewUserNetwork) -> Result<UserNetworkRecord> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if self.nets().values().any(|n| n.record.name == new.name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("network with name {} already exists", new.name),
            ));
        }
        let bridge = user_bridge_name(&new.id);
        let mut taken: Vec<Subnet> = Vec::new();
        for _ in 0..PICK_ATTEMPTS {
            let subnet = match new.subnet {
                Some(s) => {
                    self.check_free(s, &bridge)?;
                    s
                }
                None => self.pick(&taken, &bridge)?,
            };
            let gateway = new.gateway.unwrap_or(subnet.gateway());
            if !subnet.contains(gateway)
                || gateway == subnet.network()
                || gateway == subnet.broadcast()
            {
                return Err(Error::invalid(format!(
                    "gateway {gateway} is not a host address of subnet {subnet}"
                )));
            }
            let record = UserNetworkRecord {
                id: new.id.clone(),
                name: new.name.clone(),
                bridge: bridge.clone(),
                subnet: subnet.to_string(),
                gateway: gateway.to_string(),
                internal: new.internal,
                labels: new.labels.clone(),
                created_at_ns: new.created_at_ns,
            };
            let net = UserNet::from_record(record, &self.store)?;
            let made = net.set_up().and_then(|()| {
                // Another creator on the node may have addressed a bridge
                // in the same range since the check: pick again then.
                self.check_routes(subnet, &bridge)
            });
            if let Err(e) = made {
                let _ = remove_bridge_network(&bridge);
                if new.subnet.is_none() && e.kind == ErrorKind::Conflict {
                    taken.push(subnet);
                    continue;
                }
                return Err(e);
            }
            if let Err(e) =
                self.store
                    .write(Batch::new().put(USER_NETWORKS, &net.record.id, &net.record)?)
            {
                let _ = remove_bridge_network(&bridge);
                return Err(e);
            }
            let record = net.record.clone();
            self.nets().insert(record.id.clone(), Arc::new(net));
            tracing::info!(network = %record.name, subnet = %record.subnet, bridge = %bridge, "user network made");
            return Ok(record);
        }
        Err(Error::new(
            ErrorKind::ResourceExhausted,
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network",
        ))
    }

    /// The first pool subnet that overlaps nothing.
    fn pick(&self, taken: &[Subnet], bridge: &str) -> Result<Subnet> {
        pool()
            .filter(|s| !taken.iter().chain(&self.avoid).any(|t| t.overlaps(s)))
            .find(|s| self.check_free(*s, bridge).is_ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network",
                )
            })
    }

    fn check_free(&self, subnet: Subnet, bridge: &str) -> Result<()> {
        if let Some(other) = self.nets().values().find(|n| n.subnet.overlaps(&subnet)) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "Pool overlaps with other one on this address space: subnet {subnet} overlaps network {} ({})",
                    other.record.name, other.subnet
                ),
            ));
        }
        self.check_routes(subnet, bridge)
    }

    fn check_routes(&self, subnet: Subnet, bridge: &str) -> Result<()> {
        match routes()?
            .into_iter()
            .find(|(iface, r)| iface != bridge && subnet.overlaps(r))
        {
            Some((iface, r)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("subnet {subnet} overlaps the host route {r} on {iface}"),
            )),
            None => Ok(()),
        }
    }

    /// Removes a network's bridge, rules, leases and record. The caller
    /// has checked that no sandbox is on it.
    pub fn remove(&self, id: &str) -> Result<()> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let net = self.net(id)?;
        for lease in net.ipam.leases() {
            net.leave(&lease.sandbox_id, false)?;
        }
        remove_bridge_network(&net.record.bridge)?;
        self.store.write(Batch::new().delete(USER_NETWORKS, id))?;
        self.nets().remove(id);
        tracing::info!(network = %net.record.name, "user network removed");
        Ok(())
    }

    /// Joins a sandbox's namespace to a network: all of it, or nothing.
    pub fn join(&self, network_id: &str, req: &JoinRequest) -> Result<Endpoint> {
        let net = self.net(network_id)?;
        let ip = match req.address {
            Some(a) => net.ipam.claim(&req.sandbox_id, a)?,
            None => net.ipam.allocate(&req.sandbox_id)?,
        };
        let mac = match net.wire(req, ip) {
            Ok(mac) => mac,
            Err(e) => {
                if let Err(undo) = net.leave(&req.sandbox_id, req.ports.is_empty()) {
                    tracing::warn!(sandbox = %req.sandbox_id, "undo a failed join: {undo}");
                }
                return Err(e.context(format!("join network {}", net.record.name)));
            }
        };
        Ok(Endpoint {
            network_id: net.record.id.clone(),
            network_name: net.record.name.clone(),
            interface: req.interface.clone(),
            address: Some(ip),
            prefix: net.subnet.prefix(),
            gateway: Some(net.gateway),
            mac: mac_string(mac),
            host_interface: user_veth_name(&net.record.id, &req.sandbox_id),
            aliases: req.aliases.clone(),
            names: req.names.clone(),
            ports: req.ports.clone(),
        })
    }

    /// Takes a sandbox off a network. Idempotent.
    pub fn leave(
        &self,
        network_id: &str,
        sandbox_id: &str,
        endpoint: Option<&Endpoint>,
    ) -> Result<()> {
        let net = self.net(network_id)?;
        net.leave(sandbox_id, endpoint.is_some_and(|e| e.ports.is_empty()))
    }

    /// Takes a sandbox off every network it holds an address on (no
    /// record needed: a half-made sandbox is cleaned up too).
    pub fn leave_all(&self, sandbox_id: &str) -> Result<()> {
        let nets: Vec<Arc<UserNet>> = self.nets().values().cloned().collect();
        for net in nets {
            if net.ipam.leases().iter().any(|l| l.sandbox_id == sandbox_id) {
                net.leave(sandbox_id, false)?;
            }
        }
        Ok(())
    }

    /// At start: releases what sandboxes without a record hold.
    pub fn remove_orphans(&self, live: &[String]) -> Result<()> {
        let nets: Vec<Arc<UserNet>> = self.nets().values().cloned().collect();
        for net in nets {
            for lease in net.ipam.leases() {
                if !live.contains(&lease.sandbox_id) {
                    tracing::info!(sandbox = %lease.sandbox_id, network = %net.record.name, "releasing an orphaned user network lease");
                    net.leave(&lease.sandbox_id, false)?;
                }
            }
            for veth in net.veths()? {
                let short = &veth[VETH_PREFIX.len() + 6..];
                if !live.iter().any(|id| id.starts_with(short)) {
                    Netlink::open()
                        .and_then(|mut nl| nl.delete_link(&veth))
                        .map_err(io_err(format!("delete veth {veth}")))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge_network_rules;
    use std::process::Command;

    /// A /24 in 10.216/16 that no host route uses.
    fn free_subnet(salt: u32) -> Subnet {
        let routes = routes().unwrap();
        (0..200u32)
            .map(|i| (std::process::id() + salt + i) % 200)
            .map(|i| Subnet::new(Ipv4Addr::new(10, 216, i as u8, 0), 24).unwrap())
            .find(|s| routes.iter().all(|(_, r)| !r.overlaps(s)))
            .unwrap()
    }

    fn new_net(name: &str, subnet: Option<Subnet>, internal: bool) -> NewUserNetwork {
        let digest = Sha256::digest(format!("{name}{}", std::process::id()).as_bytes());
        NewUserNetwork {
            id: digest.iter().map(|b| format!("{b:02x}")).collect(),
            name: name.into(),
            subnet,
            internal,
            ..Default::default()
        }
    }

    struct Pod {
        dir: tempfile::TempDir,
        netns: std::path::PathBuf,
    }

    fn pod() -> Pod {
        let dir = tempfile::tempdir().unwrap();
        let netns = berth_ns::pin_netns(&dir.path().join("ns")).unwrap();
        Pod { netns, dir }
    }

    impl Drop for Pod {
        fn drop(&mut self) {
            let _ = berth_ns::unpin(&self.dir.path().join("ns"));
        }
    }

    fn join(id: &str, pod: &Pod, interface: &str) -> JoinRequest {
        JoinRequest {
            sandbox_id: id.into(),
            netns: pod.netns.clone(),
            interface: interface.into(),
            default_route: interface == "eth0",
            names: vec![id.into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_network_is_made_joined_left_and_removed_without_leftovers() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let nets = UserNetworks::open(store.clone(), Vec::new()).unwrap();
        let subnet = free_subnet(0);
        let made = nets.create(new_net("t1", Some(subnet), false)).unwrap();
        let bridge = made.bridge.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(bridge, user_bridge_name(&made.id));
            assert_eq!(made.gateway, subnet.gateway().to_string());
            // The same name again, or an overlapping subnet: refused, nothing made.
            let dup = nets.create(new_net("t1", None, false)).unwrap_err();
            assert_eq!(dup.kind, ErrorKind::AlreadyExists);
            assert_eq!(dup.message, "network with name t1 already exists");
            let overlap = nets.create(new_net("t2", Some(subnet), false)).unwrap_err();
            assert_eq!(overlap.kind, ErrorKind::Conflict);
            assert!(
                overlap.message.contains("overlaps network t1"),
                "{}",
                overlap.message
            );
            assert_eq!(nets.list().len(), 1);

            let (a, b) = (pod(), pod());
            let ea = nets.join(&made.id, &join("a1sandbox", &a, "eth0")).unwrap();
            let eb = nets.join(&made.id, &join("b2sandbox", &b, "eth0")).unwrap();
            let ip_b = eb.address.unwrap();
            assert!(subnet.contains(ea.address.unwrap()) && subnet.contains(ip_b));
            assert_eq!(eb.mac, mac_string(mac_of(ip_b)));
            let ping = Command::new("nsenter")
                .arg(format!("--net={}", a.netns.display()))
                .args(["/bin/busybox", "ping", "-c1", "-W2", &ip_b.to_string()])
                .output()
                .unwrap();
            assert!(ping.status.success(), "a to b: {ping:?}");

            // Records and leases survive a reopen; a missing bridge (a
            // reboot) is made again.
            remove_bridge_network(&bridge).unwrap();
            let reopened = UserNetworks::open(store.clone(), Vec::new()).unwrap();
            assert_eq!(reopened.list(), vec![made.clone()]);
            assert_eq!(reopened.leases(&made.id).len(), 2);
            assert!(link_index(&bridge).is_ok(), "bridge made again");

            reopened.leave(&made.id, "a1sandbox", Some(&ea)).unwrap();
            reopened.leave_all("b2sandbox").unwrap();
            reopened.leave_all("b2sandbox").unwrap();
            assert!(reopened.leases(&made.id).is_empty());
            reopened.remove(&made.id).unwrap();
            assert!(reopened.list().is_empty());
            assert!(link_index(&bridge).is_err(), "bridge left");
            assert_eq!(bridge_network_rules(&bridge).unwrap(), Vec::<String>::new());
            let fresh = UserNetworks::open(store.clone(), Vec::new()).unwrap();
            assert!(fresh.list().is_empty(), "record left");
        }));
        let _ = remove_bridge_network(&bridge);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    #[test]
    fn an_internal_network_masquerades_and_forwards_nothing_out() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let nets = UserNetworks::open(store, Vec::new()).unwrap();
        let subnet = free_subnet(100);
        let made = nets.create(new_net("inner", Some(subnet), true)).unwrap();
        let rules = bridge_network_rules(&made.bridge).unwrap();
        let _ = nets.remove(&made.id);
        let _ = remove_bridge_network(&made.bridge);
        assert!(made.internal);
        assert!(
            !rules
                .iter()
                .any(|r| r.contains("MASQUERADE") && r.contains(&subnet.to_string())),
            "{rules:?}"
        );
        let bridge = &made.bridge;
        for want in [
            format!("-i {bridge} -j DROP"),
            format!("-o {bridge} -j DROP"),
        ] {
            assert!(
                rules.iter().any(|r| r.contains(&want)),
                "{want} in {rules:?}"
            );
        }
    }

    #[test]
    fn automatic_subnets_come_from_dockers_pools_and_skip_what_is_taken() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        // Everything in 172.16/12 avoided: the 192.168 pools are next.
        let avoid = vec![Subnet::new(Ipv4Addr::new(172, 16, 0, 0), 12).unwrap()];
        let nets = UserNetworks::open(store, avoid).unwrap();
        let first = pool().find(|s| s.network().octets()[0] == 192).unwrap();
        let picked = nets.pick(&[first], "none").unwrap();
        assert_eq!(picked.network().octets()[..2], [192, 168]);
        assert_ne!(picked, first, "a taken subnet is skipped");
        assert_eq!(picked.prefix(), 20);
        assert!(pool().all(|s| !s.overlaps(&Subnet::new(Ipv4Addr::new(10, 88, 0, 0), 16).unwrap())));
    }
}
