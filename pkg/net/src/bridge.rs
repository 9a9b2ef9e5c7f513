//! The default backend: a node bridge with one veth per pod, made with
//! in-process netlink, addresses from berthd's own IPAM, and iptables for
//! masquerading and host ports.
//!
//! Why not netavark by default: its binary costs about 60 ms per pod on
//! this kind of machine, against about 7 ms for the same links made with
//! `ip -batch` (docs/dev/architecture.md, "Pod network"); the netlink path here stays within the floor.
//! netavark remains a backend (`network.backend = "netavark"`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::{Batch, Store};

use crate::firewall::Firewall;
use crate::netlink::{link_index, Netlink};
use crate::{host_routes, AttachRequest, Attachment, Ipam, NotReady, PodNetwork, Subnet};

/// The interface name inside every pod.
pub const POD_INTERFACE: &str = "eth0";
/// Host ends of pod veths: `ve-` and the first 12 hex digits of the id.
const VETH_PREFIX: &str = "ve-";
const SETTINGS: &str = "network_settings";

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub bridge: String,
    pub subnet: Subnet,
    pub mtu: Option<u32>,
}

struct Active {
    subnet: Subnet,
    ipam: Ipam,
}

pub struct BridgeNetwork {
    bridge: String,
    mtu: Option<u32>,
    store: Arc<Store>,
    firewall: Firewall,
    active: Mutex<Active>,
}

/// The host end of a pod's veth.
pub fn veth_name(sandbox_id: &str) -> String {
    let short: String = sandbox_id.chars().take(12).collect();
    format!("{VETH_PREFIX}{short}")
}

pub(crate) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::from(e).context(what)
}

impl BridgeNetwork {
    /// Checks the subnet against the host's routes, then makes (or adopts)
    /// the bridge, its address and the network's firewall rules. The pod
    /// CIDR kubelet set earlier, if any, wins over the configured subnet.
    pub fn open(config: BridgeConfig, store: Arc<Store>) -> Result<BridgeNetwork> {
        if config.bridge.is_empty() || config.bridge.len() > 15 {
            return Err(Error::invalid(format!(
                "bridge name {:?} must be 1 to 15 characters",
                config.bridge
            )));
        }
        let subnet = match store.get::<String>(SETTINGS, &cidr_key(&config.bridge))? {
            Some(cidr) => cidr.parse()?,
            None => config.subnet,
        };
        let net = BridgeNetwork {
            firewall: Firewall::new(&config.bridge),
            bridge: config.bridge,
            mtu: config.mtu,
            active: Mutex::new(Active {
                subnet,
                ipam: Ipam::open(subnet, store.clone())?,
            }),
            store,
        };
        net.set_up_node(subnet)?;
        Ok(net)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn subnet(&self) -> Subnet {
        self.active().subnet
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_up_node(&self, subnet: Subnet) -> Result<()> {
        let routes =
            fs::read_to_string("/proc/net/route").map_err(io_err("read /proc/net/route"))?;
        subnet.check_against(&host_routes(&routes), &self.bridge)?;
        let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
        let index = nl
            .create_bridge(&self.bridge, self.mtu)
            .map_err(io_err(format!("create bridge {}", self.bridge)))?;
        nl.add_address(index, subnet.gateway(), subnet.prefix())
            .map_err(io_err(format!("address bridge {}", self.bridge)))?;
        // Pods reach beyond the node only with forwarding on; host ports on
        // 127.0.0.1 need loopback sources routable to the bridge.
        sysctl("net/ipv4/ip_forward", "1")?;
        sysctl(
            &format!("net/ipv4/conf/{}/route_localnet", self.bridge),
            "1",
        )?;
        self.firewall.ensure(subnet)
    }

    fn bridge_index(&self) -> Result<u32> {
        match link_index(&self.bridge) {
            Ok(i) => Ok(i),
            // Someone deleted the bridge: make it again rather than fail.
            Err(_) => {
                let subnet = self.subnet();
                self.set_up_node(subnet)?;
                link_index(&self.bridge).map_err(io_err(format!("find bridge {}", self.bridge)))
            }
        }
    }

    fn wire(&self, req: &AttachRequest, ip: Ipv4Addr, subnet: Subnet) -> Result<()> {
        let master = self.bridge_index()?;
        let netns = fs::File::open(&req.netns)
            .map_err(io_err(format!("open netns {}", req.netns.display())))?;
        let host = veth_name(&req.sandbox_id);
        let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
        let mut made = nl.create_veth(
            &host,
            POD_INTERFACE,
            netns.as_raw_fd(),
            master,
            self.mtu,
            None,
        );
        if made.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EEXIST) {
            // Left by a crash before this pod's record was stored.
            nl.delete_link(&host)
                .map_err(io_err(format!("delete stale {host}")))?;
            made = nl.create_veth(
                &host,
                POD_INTERFACE,
                netns.as_raw_fd(),
                master,
                self.mtu,
                None,
            );
        }
        made.map_err(io_err(format!("create veth {host}")))?;
        let (prefix, gateway) = (subnet.prefix(), subnet.gateway());
        berth_ns::in_netns(&req.netns, move || -> std::io::Result<()> {
            let mut nl = Netlink::open()?;
            let index = link_index(POD_INTERFACE)?;
            nl.add_address(index, ip, prefix)?;
            nl.set_up(index)?;
            nl.add_default_route(index, gateway)
        })?
        .map_err(io_err(format!("configure {POD_INTERFACE} in the pod")))?;
        let ports: Vec<_> = req.ports.clone();
        self.firewall.add_ports(&req.sandbox_id, ip, &ports)
    }

    /// Every pod veth on the bridge, by name.
    fn pod_veths(&self) -> Result<Vec<String>> {
        let Ok(master) = link_index(&self.bridge) else {
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

    /// What this network still holds on the node: pod veths, host-port
    /// rules and leases. Empty once every pod is detached.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let mut out = self.pod_veths()?;
        out.extend(
            self.firewall
                .sandboxes_with_ports()?
                .into_iter()
                .map(|id| format!("host-port rules of {id}")),
        );
        out.extend(
            self.active()
                .ipam
                .leases()
                .into_iter()
                .map(|l| format!("lease {} of {}", l.address, l.sandbox_id)),
        );
        Ok(out)
    }
}

/// Removes a bridge network from the node: its links and firewall chains.
/// Never called by berthd in normal operation (the network outlives
/// restarts); tests and uninstalls call it.
pub fn remove_bridge_network(bridge: &str) -> Result<()> {
    Firewall::new(bridge).remove_network()?;
    let mut nl = Netlink::open().map_err(io_err("open netlink"))?;
    nl.delete_link(bridge)
        .map_err(io_err(format!("delete bridge {bridge}")))
}

/// The firewall rules of a bridge network (leak checks).
pub fn bridge_network_rules(bridge: &str) -> Result<Vec<String>> {
    Firewall::new(bridge).rules()
}

fn cidr_key(bridge: &str) -> String {
    format!("pod_cidr/{bridge}")
}

pub(crate) fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    fs::write(&path, value).map_err(io_err(format!("set sysctl {key}={value}")))
}

impl PodNetwork for BridgeNetwork {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn ready(&self) -> std::result::Result<(), NotReady> {
        // A missing bridge is made again on the next attach; a netlink
        // socket that cannot open means no pod can be networked.
        Netlink::open().map(|_| ()).map_err(|e| NotReady {
            reason: "NetlinkUnavailable".into(),
            message: format!("cannot open a netlink socket: {e}"),
        })
    }

    fn attach(&self, req: &AttachRequest) -> Result<Attachment> {
        let (ip, subnet) = {
            let active = self.active();
            (active.ipam.allocate(&req.sandbox_id)?, active.subnet)
        };
        if let Err(e) = self.wire(req, ip, subnet) {
            if let Err(undo) = self.detach(&req.sandbox_id, Some(&req.netns), None) {
                tracing::warn!(sandbox = %req.sandbox_id, "undo failed network setup: {undo}");
            }
            return Err(e.context("pod network"));
        }
        Ok(Attachment {
            backend: self.name().into(),
            interface: POD_INTERFACE.into(),
            ips: vec![IpAddr::V4(ip)],
            gateway: Some(IpAddr::V4(subnet.gateway())),
            host_interface: Some(veth_name(&req.sandbox_id)),
            ports: req.ports.clone(),
            backend_state: None,
        })
    }

    fn detach(
        &self,
        sandbox_id: &str,
        _netns: Option<&Path>,
        attachment: Option<&Attachment>,
    ) -> Result<()> {
        // Without a record we cannot know whether there were host ports.
        if attachment.is_none_or(|a| !a.ports.is_empty()) {
            self.firewall.remove_ports(sandbox_id)?;
        }
        // Deleting the host end removes the pod end too. Do it before the
        // namespace goes: namespace teardown is asynchronous in the kernel.
        let host = veth_name(sandbox_id);
        Netlink::open()
            .and_then(|mut nl| nl.delete_link(&host))
            .map_err(io_err(format!("delete veth {host}")))?;
        self.active().ipam.release(sandbox_id)
    }

    fn remove_orphans(&self, live: &[String]) -> Result<()> {
        let is_live = |id: &str| live.iter().any(|l| l == id);
        for veth in self.pod_veths()? {
            let short = &veth[VETH_PREFIX.len()..];
            if !live.iter().any(|id| id.starts_with(short)) {
                tracing::info!(veth = %veth, "removing an orphaned pod veth");
                Netlink::open()
                    .and_then(|mut nl| nl.delete_link(&veth))
                    .map_err(io_err(format!("delete veth {veth}")))?;
            }
        }
        for id in self.firewall.sandboxes_with_ports()? {
            if !is_live(&id) {
                tracing::info!(sandbox = %id, "removing orphaned host-port rules");
                self.firewall.remove_ports(&id)?;
            }
        }
        let leases = self.active().ipam.leases();
        for lease in leases {
            if !is_live(&lease.sandbox_id) {
                tracing::info!(sandbox = %lease.sandbox_id, address = %lease.address, "releasing an orphaned lease");
                self.active().ipam.release(&lease.sandbox_id)?;
            }
        }
        Ok(())
    }

    /// Adopts kubelet's pod CIDR. The bridge is re-addressed only while no
    /// pod is attached: moving live pods would break them.
    fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        let cidr = cidr.trim();
        if cidr.is_empty() {
            return Ok(());
        }
        let subnet: Subnet = cidr.parse()?;
        let mut active = self.active();
        if active.subnet == subnet {
            return Ok(());
        }
        let attached = active.ipam.leases().len();
        if attached > 0 {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "cannot move the pod network from {} to {subnet} with {attached} pod(s) attached; drain the node first",
                    active.subnet
                ),
            ));
        }
        remove_bridge_network(&self.bridge)?;
        self.set_up_node(subnet)?;
        self.store.write(Batch::new().put(
            SETTINGS,
            &cidr_key(&self.bridge),
            &subnet.to_string(),
        )?)?;
        *active = Active {
            subnet,
            ipam: Ipam::open(subnet, self.store.clone())?,
        };
        tracing::info!(bridge = %self.bridge, %subnet, "pod CIDR set by kubelet");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Protocol};
    use std::process::Command;
    use std::time::{Duration, Instant};

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

    /// A subnet in 10.213/16 that no host route uses.
    fn free_subnet(salt: u32) -> Subnet {
        let routes = host_routes(&fs::read_to_string("/proc/net/route").unwrap());
        (0..200u32)
            .map(|i| (std::process::id() + salt + i) % 200)
            .map(|i| Subnet::new(Ipv4Addr::new(10, 213, i as u8, 0), 24).unwrap())
            .find(|s| routes.iter().all(|(_, r)| !r.overlaps(s)))
            .unwrap()
    }

    fn run_in(netns: &Path, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(args)
            .output()
            .unwrap()
    }

    fn request(id: &str, pod: &Pod, ports: Vec<PortMapping>) -> AttachRequest {
        AttachRequest {
            sandbox_id: id.into(),
            netns: pod.netns.clone(),
            pod_name: "p".into(),
            pod_namespace: "default".into(),
            pod_uid: "u".into(),
            ports,
        }
    }

    #[test]
    fn pods_reach_each_other_and_host_ports_and_leave_nothing() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let bridge = format!("bbr{}", std::process::id() % 100000);
        let subnet = free_subnet(0);
        let net = BridgeNetwork::open(
            BridgeConfig {
                bridge: bridge.clone(),
                subnet,
                mtu: None,
            },
            store,
        )
        .unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (a, b) = (pod(), pod());
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mapping = PortMapping {
                protocol: Protocol::Tcp,
                container_port: 8080,
                host_port: port,
                host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            };
            let id_a = format!("{:0<64}", "a1");
            let id_b = format!("{:0<64}", "b2");
            let att_a = net.attach(&request(&id_a, &a, vec![mapping])).unwrap();
            let att_b = net.attach(&request(&id_b, &b, vec![])).unwrap();
            let (ip_a, ip_b) = (att_a.ips[0], att_b.ips[0]);
            assert_ne!(ip_a, ip_b);
            for ip in [ip_a, ip_b] {
                let IpAddr::V4(v4) = ip else { panic!() };
                assert!(subnet.contains(v4));
            }
            let ping = run_in(
                &a.netns,
                &["/bin/busybox", "ping", "-c1", "-W2", &ip_b.to_string()],
            );
            assert!(ping.status.success(), "pod to pod: {ping:?}");
            let ping = Command::new("/bin/busybox")
                .args(["ping", "-c1", "-W2", &ip_a.to_string()])
                .output()
                .unwrap();
            assert!(ping.status.success(), "host to pod: {ping:?}");

            // A server in pod a answers on 127.0.0.1:<port> of the host.
            let www = tempfile::tempdir().unwrap();
            fs::write(www.path().join("index.html"), "hello from a\n").unwrap();
            let mut httpd = Command::new("nsenter")
                .arg(format!("--net={}", a.netns.display()))
                .args(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h"])
                .arg(www.path())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}/");
            let deadline = Instant::now() + Duration::from_secs(5);
            let body = loop {
                let out = Command::new("curl")
                    .args(["-sf", "--max-time", "2", &url])
                    .output()
                    .unwrap();
                if out.status.success() || Instant::now() > deadline {
                    break String::from_utf8_lossy(&out.stdout).into_owned();
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let _ = httpd.kill();
            let _ = httpd.wait();
            assert_eq!(body, "hello from a\n");

            net.detach(&id_a, Some(&a.netns), Some(&att_a)).unwrap();
            net.detach(&id_b, None, None).unwrap();
            net.detach(&id_b, None, None).unwrap();
            assert_eq!(net.leftovers().unwrap(), Vec::<String>::new());
        }));
        remove_bridge_network(&bridge).unwrap();
        assert_eq!(bridge_network_rules(&bridge).unwrap(), Vec::<String>::new());
        assert!(link_index(&bridge).is_err());
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    /// Pod traffic to a network beyond the node leaves with the node's
    /// address: the server in an "outside" namespace, joined to the host by
    /// a veth and a /30 of its own, has no route back to the pod subnet.
    #[test]
    fn outbound_traffic_is_masqueraded() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let bridge = format!("bbm{}", std::process::id() % 100000);
        let net = BridgeNetwork::open(
            BridgeConfig {
                bridge: bridge.clone(),
                subnet: free_subnet(50),
                mtu: None,
            },
            store,
        )
        .unwrap();
        let outside = pod();
        let link = format!("bmo{}", std::process::id() % 100000);
        let x = free_subnet(150).network().octets()[2];
        let (host_ip, outside_ip) = (format!("10.215.{x}.1"), format!("10.215.{x}.2"));
        let sh = |cmd: String| {
            let st = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
            assert!(st.success(), "{cmd}");
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sh(format!(
                "ip link add {link} type veth peer name o0 netns {ns} && ip addr add {host_ip}/30 dev {link} && ip link set {link} up && nsenter --net={ns} sh -c 'ip addr add {outside_ip}/30 dev o0 && ip link set o0 up'",
                ns = outside.netns.display()
            ));
            let p = pod();
            let id = format!("{:0<64}", "e5");
            net.attach(&request(&id, &p, vec![])).unwrap();
            // The server prints the peer address of its one connection.
            let mut server = Command::new("nsenter")
                .arg(format!("--net={}", outside.netns.display()))
                .args(["python3", "-c", "import socket; s=socket.socket(); s.bind(('0.0.0.0', 9000)); s.listen(); print('ready', flush=True); c, a = s.accept(); print(a[0], flush=True)"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            let client = run_in(&p.netns, &["python3", "-c", &format!("import socket; socket.create_connection(('{outside_ip}', 9000), timeout=5).close()")]);
            assert!(client.status.success(), "pod to outside: {client:?}");
            line.clear();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            let _ = server.wait();
            assert_eq!(line.trim(), host_ip, "the server saw the node, not the pod");
            net.detach(&id, None, None).unwrap();
        }));
        let _ = Command::new("ip").args(["link", "del", &link]).status();
        remove_bridge_network(&bridge).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    #[test]
    fn a_failed_attach_leaves_nothing_and_orphans_are_removed() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let bridge = format!("bbo{}", std::process::id() % 100000);
        let net = BridgeNetwork::open(
            BridgeConfig {
                bridge: bridge.clone(),
                subnet: free_subnet(100),
                mtu: None,
            },
            store,
        )
        .unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let p = pod();
            let mut req = request(&format!("{:0<64}", "c3"), &p, vec![]);
            req.netns = p.dir.path().join("no-such-netns");
            let e = net.attach(&req).unwrap_err();
            assert!(e.to_string().contains("netns"), "{e}");
            assert_eq!(net.leftovers().unwrap(), Vec::<String>::new());
            // An attach whose record was never stored (a crash) is an orphan.
            let orphan = format!("{:0<64}", "d4");
            net.attach(&request(&orphan, &p, vec![])).unwrap();
            assert_eq!(net.leftovers().unwrap().len(), 2, "veth and lease");
            net.remove_orphans(&["other".into()]).unwrap();
            assert_eq!(net.leftovers().unwrap(), Vec::<String>::new());
        }));
        remove_bridge_network(&bridge).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
