//! The netavark backend: wires pods with Debian's `netavark` 1.4 binary
//! (`/usr/lib/podman/netavark`) through its JSON contract, one bridge
//! network whose addresses berthd's [`Ipam`] hands out (netavark's
//! `host-local` driver with a static IP: netavark itself keeps no state).
//!
//! # The contract (netavark v1.4.0)
//!
//! `netavark --config <dir> setup|teardown <netns path>` reads the network
//! options (`NetworkOptions` in its `src/network/types.rs`) on stdin. On
//! success `setup` prints a JSON map network name → status block (the
//! interfaces it made and their addresses); `teardown` prints nothing. On
//! failure both print `{"error": "..."}` on **stdout** and exit 1; stderr
//! only carries its log lines.
//!
//! # What netavark 1.4 does and does not undo
//!
//! - A failed `setup` does not undo its own steps (bridge, veth, chains
//!   stay), so [`attach`](PodNetwork::attach) runs a teardown itself.
//! - `teardown` deletes the pod's `eth0` (its host veth goes with it), the
//!   pod's port-forward rules, and, when the bridge has no port left, the
//!   bridge and the network's chains. It leaves `NETAVARK-DN-<hash>` behind
//!   when the last pod had no port mappings: berth removes it.
//! - `teardown` of a namespace path that no longer exists fails at once
//!   (`open container netns: ... No such file or directory`) having undone
//!   nothing. berth then runs the teardown against a scratch namespace
//!   holding a stand-in `eth0`, so netavark still removes the port rules
//!   and, for the last pod, the bridge and chains; the pod's host veth is
//!   deleted by its recorded ifindex first in case the namespace lives on
//!   elsewhere.
//! - The chains shared by every netavark network (`NETAVARK_FORWARD`,
//!   `NETAVARK-HOSTPORT-*` and the jumps to them) are never removed, as
//!   with podman.
//!
//! netavark has no lock of its own (podman holds one), so every call here
//! is serialised.
//!
//! # What berth records
//!
//! `Attachment::backend_state` is `{"netavark_options": <the exact setup
//! input>, "host_veth_ifindex": N}` and `host_interface` the host veth's
//! name (learnt as the bridge port that appeared during setup). Teardown
//! uses the recorded options, else rebuilds them from the attachment, else
//! from the sandbox's address lease and netavark's DNAT rules for it.

use std::collections::BTreeMap;
use std::io::{ErrorKind as IoErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use berth_errdefs::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use tracing::{debug, warn};

use crate::{AttachRequest, Attachment, Ipam, NotReady, PodNetwork, PortMapping, Subnet};

const BACKEND: &str = "netavark";
/// The interface name inside the pod.
const POD_INTERFACE: &str = "eth0";
/// netavark's firewall chains are named from this many hex digits of the
/// SHA-512 of the network name (`MAX_HASH_SIZE`).
const CHAIN_HASH_LEN: usize = 13;

/// Where and how the netavark backend runs.
#[derive(Debug, Clone)]
pub struct NetavarkConfig {
    /// The netavark binary, `/usr/lib/podman/netavark` on Debian.
    pub binary: PathBuf,
    /// berth-owned directory passed as `--config` (netavark keeps its
    /// aardvark-dns state there; DNS is off, so it stays empty).
    pub config_dir: PathBuf,
    /// The netavark network name; its firewall chains are named from it.
    pub network_name: String,
    /// The host bridge, created by netavark with the first pod.
    pub bridge: String,
    pub subnet: Subnet,
    pub mtu: Option<u32>,
}

pub struct NetavarkNetwork {
    config: NetavarkConfig,
    ipam: Arc<Ipam>,
    /// netavark's read-modify-write of iptables chains is not atomic.
    serial: Mutex<()>,
}

// ---------------------------------------------------------------------------
// netavark's input and output (the fields berth uses)

/// netavark's `NetworkOptions`: one container on some networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NetworkOptions {
    container_id: String,
    container_name: String,
    networks: BTreeMap<String, PerNetworkOptions>,
    network_info: BTreeMap<String, Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port_mappings: Option<Vec<NetavarkPort>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PerNetworkOptions {
    interface_name: String,
    static_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Network {
    name: String,
    id: String,
    driver: String,
    network_interface: String,
    subnets: Vec<NetworkSubnet>,
    ipv6_enabled: bool,
    internal: bool,
    dns_enabled: bool,
    ipam_options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NetworkSubnet {
    subnet: String,
    gateway: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NetavarkPort {
    container_port: u16,
    /// Empty: every local address.
    host_ip: String,
    host_port: u16,
    protocol: String,
    range: u16,
}

impl From<&PortMapping> for NetavarkPort {
    fn from(p: &PortMapping) -> Self {
        NetavarkPort {
            container_port: p.container_port,
            host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_port: p.host_port,
            protocol: p.protocol.as_str().to_string(),
            range: 1,
        }
    }
}

/// `setup`'s answer for one network.
#[derive(Debug, Deserialize)]
struct StatusBlock {
    #[serde(default)]
    interfaces: Option<BTreeMap<String, NetInterface>>,
}

#[derive(Debug, Deserialize)]
struct NetInterface {
    #[serde(default)]
    subnets: Option<Vec<NetAddress>>,
}

#[derive(Debug, Deserialize)]
struct NetAddress {
    /// `10.88.0.2/16`: the interface's address with the prefix length.
    ipnet: String,
}

/// netavark's failure report on stdout.
#[derive(Debug, Deserialize)]
struct NetavarkFailure {
    error: String,
}

// ---------------------------------------------------------------------------
// berth's record of one pod

/// `Attachment::backend_state`: what teardown needs, whatever the config
/// says by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PodState {
    /// The exact input `setup` was run with.
    netavark_options: NetworkOptions,
    /// The host end of the pod's veth: an ifindex is not reused soon, a
    /// `vethN` name is reused at once, so deletion goes by this.
    #[serde(default)]
    host_veth_ifindex: Option<u32>,
}

impl PodState {
    fn network(&self) -> Option<&Network> {
        self.netavark_options.network_info.values().next()
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        let per_network = self.netavark_options.networks.values().next()?;
        per_network.static_ips.first().copied()
    }

    fn interface_name(&self) -> &str {
        self.netavark_options
            .networks
            .values()
            .next()
            .map_or(POD_INTERFACE, |n| n.interface_name.as_str())
    }
}

// ---------------------------------------------------------------------------

impl NetavarkNetwork {
    pub fn new(config: NetavarkConfig, ipam: Arc<Ipam>) -> NetavarkNetwork {
        NetavarkNetwork {
            config,
            ipam,
            serial: Mutex::new(()),
        }
    }

    fn serialize(&self) -> MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The options for one pod on this backend's network.
    fn options(
        &self,
        sandbox_id: &str,
        pod_name: &str,
        ip: Ipv4Addr,
        ports: Vec<NetavarkPort>,
    ) -> NetworkOptions {
        let name = self.config.network_name.clone();
        let per_network = PerNetworkOptions {
            interface_name: POD_INTERFACE.to_string(),
            static_ips: vec![IpAddr::V4(ip)],
        };
        NetworkOptions {
            container_id: sandbox_id.to_string(),
            container_name: pod_name.to_string(),
            networks: BTreeMap::from([(name.clone(), per_network)]),
            network_info: BTreeMap::from([(name, self.network())]),
            // `None` rather than `[]`: an empty list makes netavark set
            // route_localnet on the bridge for nothing.
            port_mappings: (!ports.is_empty()).then_some(ports),
        }
    }

    fn network(&self) -> Network {
        let c = &self.config;
        let options = c
            .mtu
            .map(|mtu| BTreeMap::from([("mtu".to_string(), mtu.to_string())]))
            .unwrap_or_default();
        Network {
            name: c.network_name.clone(),
            id: network_id(&c.network_name),
            driver: "bridge".to_string(),
            network_interface: c.bridge.clone(),
            subnets: vec![NetworkSubnet {
                subnet: c.subnet.to_string(),
                gateway: IpAddr::V4(c.subnet.gateway()),
            }],
            ipv6_enabled: false,
            internal: false,
            dns_enabled: false,
            ipam_options: BTreeMap::from([("driver".to_string(), "host-local".to_string())]),
            options,
        }
    }

    /// Runs `netavark <command> <netns>` with `options` on stdin; returns
    /// its stdout, or its own error message.
    fn run(&self, command: &str, netns: &Path, options: &NetworkOptions) -> Result<String> {
        let input = serde_json::to_vec(options)
            .map_err(|e| Error::internal(format!("encode netavark options: {e}")))?;
        std::fs::create_dir_all(&self.config.config_dir).map_err(|e| {
            Error::from(e).context(format!(
                "create netavark config dir {}",
                self.config.config_dir.display()
            ))
        })?;
        let started = Instant::now();
        let mut child = Command::new(&self.config.binary)
            .arg("--config")
            .arg(&self.config.config_dir)
            .arg(command)
            .arg(netns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("run {}: {e}", self.config.binary.display()),
                )
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A netavark that fails before reading closes the pipe: its exit
            // status and message tell why.
            if let Err(e) = stdin.write_all(&input) {
                if e.kind() != IoErrorKind::BrokenPipe {
                    return Err(Error::from(e).context("write netavark options"));
                }
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|e| Error::from(e).context("wait for netavark"))?;
        debug!(
            command,
            netns = %netns.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "netavark ran"
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(Error::internal(failure_message(
            &stdout,
            &stderr,
            output.status,
        )))
    }

    /// Runs `setup` and checks that netavark gave `eth0` the address.
    fn setup(&self, netns: &Path, options: &NetworkOptions, ip: Ipv4Addr) -> Result<()> {
        let status = self.run("setup", netns, options)?;
        check_status(&status, &self.config.network_name, ip)
    }

    /// Undoes a failed setup. Returns the error to report: netavark's, and
    /// whether the lease could be released.
    fn roll_back(&self, sandbox_id: &str, state: &PodState, netns: &Path, cause: Error) -> Error {
        let cause = cause.context(format!("netavark setup of sandbox {sandbox_id}"));
        if let Err(e) = self.undo(sandbox_id, state, Some(netns)) {
            // Rules may still point at the address: keep it out of use
            // until a detach succeeds.
            return Error::new(
                cause.kind,
                format!("{cause}; rollback incomplete, address lease kept until detach: {e}"),
            );
        }
        match self.ipam.release(sandbox_id) {
            Ok(()) => cause,
            Err(e) => Error::new(
                cause.kind,
                format!("{cause}; releasing the address lease failed: {e}"),
            ),
        }
    }

    /// Removes everything netavark made for the pod. Errors only when
    /// something is left behind.
    fn undo(&self, sandbox_id: &str, state: &PodState, netns: Option<&Path>) -> Result<()> {
        let mut reported = Vec::new();
        let in_pod = match netns.filter(|p| p.exists()) {
            Some(path) => self.run("teardown", path, &state.netavark_options).err(),
            None => Some(Error::not_found("the pod network namespace is gone")),
        };
        if let Some(e) = in_pod {
            debug!(sandbox_id, error = %e, "netavark teardown in the pod namespace failed; using a scratch namespace");
            reported.push(e.message);
            reported.extend(self.teardown_without_pod_netns(state));
        }
        let bridge = state.network().map_or(self.config.bridge.as_str(), |n| {
            n.network_interface.as_str()
        });
        let network_name = state
            .network()
            .map_or(self.config.network_name.as_str(), |n| n.name.as_str());
        let Some(rules) = iptables_save() else {
            return Ok(());
        };
        if !link_exists(bridge) {
            remove_stale_dnat_chain(&rules, network_name);
        }
        let leftovers = leftovers(state, bridge, &rules);
        if leftovers.is_empty() {
            return Ok(());
        }
        let netavark_said = if reported.is_empty() {
            "netavark reported success".to_string()
        } else {
            reported.join("; ")
        };
        Err(Error::internal(format!(
            "netavark teardown of sandbox {sandbox_id} left {} behind ({netavark_said})",
            leftovers.join(", ")
        )))
    }

    /// The pod's namespace is gone (or has no `eth0` any more): delete its
    /// host veth if the namespace lives on elsewhere, then let netavark
    /// tear down against a scratch namespace with a stand-in `eth0`, so it
    /// removes the port rules and, when the bridge is empty, the bridge and
    /// the network's chains.
    fn teardown_without_pod_netns(&self, state: &PodState) -> Vec<String> {
        let mut errors = Vec::new();
        if let (Some(ifindex), Some(network)) = (state.host_veth_ifindex, state.network()) {
            if let Err(e) = remove_host_veth(&network.network_interface, ifindex) {
                errors.push(e.message);
            }
        }
        let torn_down = ScratchNetns::with_interface(state.interface_name())
            .and_then(|scratch| self.run("teardown", scratch.path(), &state.netavark_options));
        if let Err(e) = torn_down {
            errors.push(e.message);
        }
        errors
    }

    /// What to tear down for `sandbox_id`: the recorded options, else
    /// options rebuilt from the attachment, else from the address lease
    /// and the port rules netavark made for that address.
    fn pod_state(&self, sandbox_id: &str, attachment: Option<&Attachment>) -> Option<PodState> {
        if let Some(recorded) = attachment.and_then(|a| a.backend_state.as_ref()) {
            match serde_json::from_value::<PodState>(recorded.clone()) {
                Ok(state) => return Some(state),
                Err(e) => warn!(sandbox_id, error = %e, "unreadable netavark state; rebuilding it"),
            }
        }
        let recorded_ip = attachment.and_then(|a| {
            a.ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) if self.config.subnet.contains(*v4) => Some(*v4),
                _ => None,
            })
        });
        if let (Some(a), Some(ip)) = (attachment, recorded_ip) {
            let ports = a.ports.iter().map(NetavarkPort::from).collect();
            return Some(self.rebuilt_state(sandbox_id, ip, ports));
        }
        let leased = self
            .ipam
            .leases()
            .into_iter()
            .find(|l| l.sandbox_id == sandbox_id)?
            .address;
        let dnat_chain = dnat_chain(&self.config.network_name);
        let ports = iptables_save()
            .map(|rules| ports_from_rules(&rules, &dnat_chain, leased))
            .unwrap_or_default();
        Some(self.rebuilt_state(sandbox_id, leased, ports))
    }

    fn rebuilt_state(&self, sandbox_id: &str, ip: Ipv4Addr, ports: Vec<NetavarkPort>) -> PodState {
        PodState {
            netavark_options: self.options(sandbox_id, "", ip, ports),
            host_veth_ifindex: None,
        }
    }
}

impl PodNetwork for NetavarkNetwork {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn ready(&self) -> std::result::Result<(), NotReady> {
        if is_executable(&self.config.binary) {
            return Ok(());
        }
        Err(NotReady {
            reason: "NetworkPluginNotReady".to_string(),
            message: format!(
                "netavark binary {} is missing or not executable (install the netavark package)",
                self.config.binary.display()
            ),
        })
    }

    fn attach(&self, req: &AttachRequest) -> Result<Attachment> {
        let _serial = self.serialize();
        let ip = self.ipam.allocate(&req.sandbox_id)?;
        let ports = req.ports.iter().map(NetavarkPort::from).collect();
        let options = self.options(&req.sandbox_id, &req.pod_name, ip, ports);
        let ports_before = bridge_ports(&self.config.bridge);
        let outcome = self.setup(&req.netns, &options, ip);
        // Learnt on failure too: a half-made veth must go.
        let host_veth = new_bridge_port(&ports_before, &bridge_ports(&self.config.bridge));
        let state = PodState {
            netavark_options: options,
            host_veth_ifindex: host_veth.as_ref().map(|(_, ifindex)| *ifindex),
        };
        if let Err(e) = outcome {
            return Err(self.roll_back(&req.sandbox_id, &state, &req.netns, e));
        }
        let backend_state = match serde_json::to_value(&state) {
            Ok(v) => v,
            Err(e) => {
                let e = Error::internal(format!("encode netavark state: {e}"));
                return Err(self.roll_back(&req.sandbox_id, &state, &req.netns, e));
            }
        };
        Ok(Attachment {
            backend: BACKEND.to_string(),
            interface: POD_INTERFACE.to_string(),
            ips: vec![IpAddr::V4(ip)],
            gateway: Some(IpAddr::V4(self.config.subnet.gateway())),
            host_interface: host_veth.map(|(name, _)| name),
            ports: req.ports.clone(),
            backend_state: Some(backend_state),
        })
    }

    fn detach(
        &self,
        sandbox_id: &str,
        netns: Option<&Path>,
        attachment: Option<&Attachment>,
    ) -> Result<()> {
        let _serial = self.serialize();
        if let Some(state) = self.pod_state(sandbox_id, attachment) {
            self.undo(sandbox_id, &state, netns)?;
        }
        self.ipam.release(sandbox_id)
    }

    /// Tears down every leased address whose sandbox has no record: their
    /// port rules are found by address; their veths went with their
    /// namespaces (or are unknown without a record).
    fn remove_orphans(&self, live_sandboxes: &[String]) -> Result<()> {
        let orphans: Vec<String> = self
            .ipam
            .leases()
            .into_iter()
            .map(|l| l.sandbox_id)
            .filter(|id| !live_sandboxes.contains(id))
            .collect();
        for sandbox_id in orphans {
            self.detach(&sandbox_id, None, None)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// netavark's output and naming

/// netavark's own message: the JSON error on stdout, else stderr.
fn failure_message(stdout: &str, stderr: &str, status: std::process::ExitStatus) -> String {
    if let Ok(f) = serde_json::from_str::<NetavarkFailure>(stdout.trim()) {
        return f.error.trim_end().to_string();
    }
    let text = [stdout.trim(), stderr.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        format!("netavark failed ({status}) without a message")
    } else {
        text
    }
}

/// Checks the status block: `eth0` on `network` has address `ip`.
fn check_status(stdout: &str, network: &str, ip: Ipv4Addr) -> Result<()> {
    let statuses: BTreeMap<String, StatusBlock> =
        serde_json::from_str(stdout.trim()).map_err(|e| {
            Error::internal(format!("unreadable netavark setup output {stdout:?}: {e}"))
        })?;
    let addresses = statuses
        .get(network)
        .and_then(|s| s.interfaces.as_ref())
        .and_then(|i| i.get(POD_INTERFACE))
        .and_then(|i| i.subnets.as_ref());
    let wanted = format!("{ip}/");
    if addresses.is_some_and(|a| a.iter().any(|a| a.ipnet.starts_with(&wanted))) {
        return Ok(());
    }
    Err(Error::internal(format!(
        "netavark set up no {POD_INTERFACE} with {ip} on network {network}: {}",
        stdout.trim()
    )))
}

/// A stable 64-hex network id (podman makes a random one; berth needs the
/// same one after a restart).
fn network_id(name: &str) -> String {
    hex(&Sha256::digest(name.as_bytes()))
}

/// netavark's per-network port-forward chain, `NETAVARK-DN-<hash>`.
fn dnat_chain(network_name: &str) -> String {
    let hash = hex(&Sha512::digest(network_name.as_bytes())).to_uppercase();
    format!("NETAVARK-DN-{}", &hash[..CHAIN_HASH_LEN])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------
// host links (sysfs reads; deletion with `ip`)

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The ports of `bridge`: name and ifindex.
fn bridge_ports(bridge: &str) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
    else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.clone(), ifindex(&name)?))
        })
        .collect()
}

fn ifindex(name: &str) -> Option<u32> {
    let path = Path::new("/sys/class/net").join(name).join("ifindex");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The one port that appeared; calls are serialised, so it is the pod's.
fn new_bridge_port(before: &[(String, u32)], after: &[(String, u32)]) -> Option<(String, u32)> {
    let mut added = after.iter().filter(|p| !before.contains(p));
    match (added.next(), added.next()) {
        (Some(port), None) => Some(port.clone()),
        _ => None,
    }
}

/// Deletes the veth with `ifindex` if it is still a port of `bridge`
/// (the pod's namespace outlived its pin, or the kernel has not finished
/// destroying it).
fn remove_host_veth(bridge: &str, ifindex: u32) -> Result<()> {
    let Some((name, _)) = bridge_ports(bridge)
        .into_iter()
        .find(|(_, i)| *i == ifindex)
    else {
        return Ok(());
    };
    let output = Command::new("ip")
        .args(["link", "delete", "dev", &name])
        .output()
        .map_err(|e| Error::from(e).context("run ip link delete"))?;
    if output.status.success() || !bridge_ports(bridge).iter().any(|(_, i)| *i == ifindex) {
        return Ok(());
    }
    Err(Error::internal(format!(
        "delete host veth {name}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

// ---------------------------------------------------------------------------
// iptables: what netavark left, read back from `iptables-save`

fn iptables_save() -> Option<String> {
    match Command::new("iptables-save").output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            warn!(stderr = %String::from_utf8_lossy(&o.stderr).trim(), "iptables-save failed");
            None
        }
        Err(e) => {
            warn!(error = %e, "cannot run iptables-save");
            None
        }
    }
}

/// Whether an iptables-save rule names `ip` (`-d ip/32`, `ip:port`, …).
fn rule_mentions_ip(rule: &str, ip: IpAddr) -> bool {
    let ip = ip.to_string();
    rule.split_whitespace().any(|token| {
        token
            .strip_prefix(&ip)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('/'))
    })
}

/// The pod's remains: its host veth, and rules naming its address or id.
fn leftovers(state: &PodState, bridge: &str, rules: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(ifindex) = state.host_veth_ifindex {
        if bridge_ports(bridge).iter().any(|(_, i)| *i == ifindex) {
            found.push(format!("host veth with ifindex {ifindex}"));
        }
    }
    let id_comment = format!("id: {}\"", state.netavark_options.container_id);
    let pod_ip = state.pod_ip();
    found.extend(
        rules
            .lines()
            .filter(|l| l.starts_with("-A "))
            .filter(|l| l.contains(&id_comment) || pod_ip.is_some_and(|ip| rule_mentions_ip(l, ip)))
            .map(|l| format!("iptables rule {l:?}")),
    );
    found
}

/// netavark keeps `NETAVARK-DN-<hash>` when the network's last pod had no
/// port mappings; once the bridge is gone it is unused, and `-X` refuses a
/// chain that still has rules or references.
fn remove_stale_dnat_chain(rules: &str, network_name: &str) {
    let chain = dnat_chain(network_name);
    if !rules.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
        return;
    }
    match Command::new("iptables")
        .args(["-w", "-t", "nat", "-X", &chain])
        .output()
    {
        Ok(o) if o.status.success() => debug!(chain, "removed netavark's empty chain"),
        Ok(o) => {
            warn!(chain, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "cannot remove chain")
        }
        Err(e) => warn!(chain, error = %e, "cannot run iptables"),
    }
}

/// The port mappings netavark made for `ip`, from its DNAT rules
/// (`-A <chain> [-d <host ip>/32] -p tcp ... --dport 8080 -j DNAT
/// --to-destination <ip>:80`): teardown needs them to find the rules.
fn ports_from_rules(rules: &str, dnat_chain: &str, ip: Ipv4Addr) -> Vec<NetavarkPort> {
    let prefix = format!("-A {dnat_chain} ");
    rules
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| dnat_port(l, ip))
        .collect()
}

fn dnat_port(rule: &str, ip: Ipv4Addr) -> Option<NetavarkPort> {
    let tokens: Vec<&str> = rule.split_whitespace().collect();
    let value = |flag: &str| {
        let at = tokens.iter().position(|t| *t == flag)?;
        tokens.get(at + 1).copied()
    };
    let target = value("--to-destination")?;
    let container_port = target.strip_prefix(&format!("{ip}:"))?.parse().ok()?;
    Some(NetavarkPort {
        container_port,
        host_ip: value("-d")
            .map(|d| d.trim_end_matches("/32").to_string())
            .unwrap_or_default(),
        host_port: value("--dport")?.parse().ok()?,
        protocol: value("-p")?.to_string(),
        range: 1,
    })
}

// ---------------------------------------------------------------------------
// scratch namespace

/// An empty network namespace with a veth pair whose one end is named like
/// the pod's interface, alive as long as this value: netavark's teardown
/// needs a namespace to open and an interface to delete before it gets to
/// the bridge and the firewall.
struct ScratchNetns {
    path: PathBuf,
    release: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScratchNetns {
    fn with_interface(interface: &str) -> Result<ScratchNetns> {
        let (made_tx, made_rx) = mpsc::channel::<Result<PathBuf>>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let interface = interface.to_string();
        let thread = std::thread::Builder::new()
            .name("berth-scratch-netns".into())
            .spawn(move || {
                let made = enter_new_netns().and_then(|path| {
                    add_veth_pair(&interface)?;
                    Ok(path)
                });
                let holding = made.is_ok();
                let _ = made_tx.send(made);
                if holding {
                    // The namespace lives until the sender is dropped.
                    let _ = release_rx.recv();
                }
            })
            .map_err(|e| Error::from(e).context("spawn scratch netns thread"))?;
        let made = made_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::internal("scratch netns thread died")));
        let path = match made {
            Ok(path) => path,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        Ok(ScratchNetns {
            path,
            release: Some(release_tx),
            thread: Some(thread),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves this thread into a new network namespace; returns a path other
/// processes can open it by.
fn enter_new_netns() -> Result<PathBuf> {
    // SAFETY: affects the calling thread only (CLONE_NEWNET is per thread).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context("unshare scratch netns"));
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    Ok(PathBuf::from(format!(
        "/proc/{}/task/{tid}/ns/net",
        std::process::id()
    )))
}

/// Runs `ip` from this thread, so in its namespace (children inherit the
/// namespaces of the thread that spawns them).
fn add_veth_pair(interface: &str) -> Result<()> {
    let output = Command::new("ip")
        .args(["link", "add", interface, "type", "veth", "peer", "name"])
        .arg(format!("{interface}-peer"))
        .output()
        .map_err(|e| Error::from(e).context("run ip link add in scratch netns"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::internal(format!(
        "add veth {interface} in scratch netns: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;
    use berth_store::Store;
    use std::process::Output;
    use std::time::Duration;

    const NETAVARK: &str = "/usr/lib/podman/netavark";

    /// One test's network: a bridge, subnet, network name and host port of
    /// its own (from the pid and the test's number), pods pinned under a
    /// tempdir, and a clean-up of all of it on drop, pass or fail.
    /// netavark 1.4 takes no lock on the chains every network shares
    /// (`NETAVARK-HOSTPORT-*`), and the tests' sandbox ids repeat across
    /// tests: one test at a time, as one berthd serialises its own calls.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    struct Fixture {
        _serial: std::sync::MutexGuard<'static, ()>,
        n: u32,
        dir: tempfile::TempDir,
        ipam: Arc<Ipam>,
        config: NetavarkConfig,
        net: NetavarkNetwork,
        pods: Vec<PathBuf>,
    }

    impl Fixture {
        fn new(n: u32) -> Fixture {
            let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
            let pid = std::process::id();
            let dir = tempfile::tempdir().unwrap();
            let subnet: Subnet = format!("10.212.{}.0/24", (pid % 50) * 5 + n - 1)
                .parse()
                .unwrap();
            let bridge = format!("bnav{}t{n}", pid % 10000);
            let routes = crate::host_routes(&std::fs::read_to_string("/proc/net/route").unwrap());
            subnet
                .check_against(&routes, &bridge)
                .expect("test subnet is free");
            let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
            let ipam = Arc::new(Ipam::open(subnet, store).unwrap());
            let config = NetavarkConfig {
                binary: PathBuf::from(NETAVARK),
                config_dir: dir.path().join("netavark"),
                network_name: format!("berth-test-{pid}-{n}"),
                bridge,
                subnet,
                mtu: None,
            };
            let net = NetavarkNetwork::new(config.clone(), ipam.clone());
            Fixture {
                _serial: serial,
                n,
                dir,
                ipam,
                config,
                net,
                pods: Vec::new(),
            }
        }

        fn bridge(&self) -> &str {
            &self.config.bridge
        }

        /// A host port no other test (or test process) uses.
        fn port(&self, k: u16) -> u16 {
            20000 + (std::process::id() % 2000) as u16 * 10 + self.n as u16 * 2 + k
        }

        fn pin(&mut self, pod: &str) -> PathBuf {
            let dir = self.dir.path().join("pods").join(pod);
            let netns = berth_ns::pin_netns(&dir).unwrap();
            self.pods.push(dir);
            netns
        }

        fn unpin(&mut self, pod: &str) {
            let dir = self.dir.path().join("pods").join(pod);
            berth_ns::unpin(&dir).unwrap();
            self.pods.retain(|d| *d != dir);
        }

        fn request(&self, pod: &str, netns: &Path, ports: Vec<PortMapping>) -> AttachRequest {
            AttachRequest {
                sandbox_id: sandbox(pod),
                netns: netns.to_path_buf(),
                pod_name: pod.to_string(),
                pod_namespace: "default".to_string(),
                pod_uid: format!("uid-{pod}"),
                ports,
            }
        }

        fn leased(&self, pod: &str) -> bool {
            self.ipam
                .leases()
                .iter()
                .any(|l| l.sandbox_id == sandbox(pod))
        }

        /// Whether a line of `ip`/`iptables-save` output is about this
        /// test's network.
        fn mentions(&self, line: &str) -> bool {
            let hash = dnat_chain(&self.config.network_name).replace("NETAVARK-DN-", "");
            // A /24: its addresses are the tokens starting `a.b.c.`.
            let [a, b, c, _] = self.config.subnet.network().octets();
            let net_prefix = format!("{a}.{b}.{c}.");
            line.contains(self.bridge())
                || line.contains(&hash)
                || line
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .any(|t| t.starts_with(&net_prefix))
        }

        /// Lines of `ip link`, `ip route` and `iptables-save` about this
        /// test's network: none once every pod is detached.
        fn host_mentions(&self) -> Vec<String> {
            let mut text = command_stdout("ip", &["-o", "link"]);
            text += &command_stdout("ip", &["route"]);
            text += &iptables_save().unwrap_or_default();
            text.lines()
                .filter(|l| self.mentions(l))
                .map(str::to_string)
                .collect()
        }

        /// A netavark whose iptables refuses rules for `port`, as iptables
        /// refuses a bad mapping: after the bridge, veth and network chains
        /// exist.
        fn refusing_netavark(&self, port: u16) -> PathBuf {
            let bin = self.dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let real = find_in_path("iptables");
            let iptables = format!(
                "#!/bin/sh\ncase \" $* \" in\n  *\" -A \"*\"--dport {port} \"*|*\" -I \"*\"--dport {port} \"*)\n    echo \"port {port} refused by test\" >&2; exit 2;;\nesac\nexec {} \"$@\"\n",
                real.display()
            );
            let netavark = format!(
                "#!/bin/sh\nPATH={}:$PATH exec {NETAVARK} \"$@\"\n",
                bin.display()
            );
            for (name, text) in [("iptables", iptables), ("netavark", netavark)] {
                let path = bin.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            bin.join("netavark")
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for dir in std::mem::take(&mut self.pods) {
                let _ = berth_ns::unpin(&dir);
            }
            if link_exists(self.bridge()) {
                let _ = Command::new("ip")
                    .args(["link", "delete", "dev", self.bridge()])
                    .status();
            }
            self.remove_test_rules();
        }
    }

    impl Fixture {
        /// Deletes this test's rules and chains only (never a whole table).
        fn remove_test_rules(&self) {
            let Some(save) = iptables_save() else { return };
            let mut script = String::new();
            let mut table = "";
            for line in save.lines() {
                if let Some(t) = line.strip_prefix('*') {
                    table = t;
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    if self.mentions(line) {
                        script += &format!("*{table}\n-D {rule}\nCOMMIT\n");
                    }
                }
            }
            if !script.is_empty() {
                let mut child = Command::new("iptables-restore")
                    .arg("--noflush")
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
                let _ = child.wait();
            }
            let dn = dnat_chain(&self.config.network_name);
            for chain in [dn.clone(), dn.replace("-DN-", "-")] {
                if save.contains(&format!(":{chain} ")) {
                    let _ = Command::new("iptables")
                        .args(["-w", "-t", "nat", "-X", &chain])
                        .output();
                }
            }
        }
    }

    fn sandbox(pod: &str) -> String {
        format!("sb-{pod}-{}", std::process::id())
    }

    fn loopback_port(host_port: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            container_port: 8080,
            host_port,
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    fn command_stdout(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn find_in_path(program: &str) -> PathBuf {
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/sbin"])
            .map(|d| Path::new(d).join(program))
            .find(|p| is_executable(p))
            .unwrap_or_else(|| panic!("{program} not found"))
    }

    /// Runs a program inside the network namespace at `netns`.
    fn run_in(netns: &Path, program: &str, args: &[&str]) -> Output {
        let program = program.to_string();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        berth_ns::in_netns(netns, move || Command::new(program).args(args).output())
            .unwrap()
            .unwrap()
    }

    fn text(out: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn ipv4(a: &Attachment) -> String {
        a.ips[0].to_string()
    }

    fn iptables_lines_with(needle: &str) -> Vec<String> {
        iptables_save()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn two_pods_get_addresses_talk_and_leave_nothing_behind() {
        let mut fx = Fixture::new(1);
        fx.config.mtu = Some(1400);
        fx.net = NetavarkNetwork::new(fx.config.clone(), fx.ipam.clone());
        let (a_ns, b_ns) = (fx.pin("a"), fx.pin("b"));
        let port = fx.port(0);
        let mapping = loopback_port(port);

        let started = Instant::now();
        let a = fx
            .net
            .attach(&fx.request("a", &a_ns, vec![mapping]))
            .unwrap();
        let first_setup = started.elapsed();
        let started = Instant::now();
        let b = fx.net.attach(&fx.request("b", &b_ns, vec![])).unwrap();
        let second_setup = started.elapsed();

        let gateway = fx.config.subnet.gateway();
        for (att, ports) in [(&a, vec![mapping]), (&b, vec![])] {
            assert_eq!(
                (att.backend.as_str(), att.interface.as_str()),
                ("netavark", "eth0")
            );
            assert_eq!(att.gateway, Some(IpAddr::V4(gateway)));
            assert_eq!(att.ports, ports);
            let IpAddr::V4(ip) = att.ips[0] else {
                panic!("{att:?}")
            };
            assert!(fx.config.subnet.contains(ip), "{ip} outside the subnet");
            let host = att.host_interface.as_deref().expect("host veth learnt");
            assert!(
                bridge_ports(fx.bridge())
                    .iter()
                    .any(|(name, _)| name == host),
                "{host} is not a port of {}",
                fx.bridge()
            );
        }
        assert_ne!(a.ips, b.ips);

        for (ns, att) in [(&a_ns, &a), (&b_ns, &b)] {
            let out = run_in(ns, "ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
            let want = format!("inet {}/24", ipv4(att));
            assert!(text(&out).contains(&want), "{}", text(&out));
            let link = text(&run_in(ns, "ip", &["-o", "link", "show", "dev", "eth0"]));
            assert!(link.contains("mtu 1400"), "{link}");
        }
        let bridge_addr = command_stdout("ip", &["-o", "-4", "addr", "show", "dev", fx.bridge()]);
        assert!(
            bridge_addr.contains(&format!("inet {gateway}/24")),
            "{bridge_addr}"
        );

        let ping = run_in(&a_ns, "/bin/busybox", &["ping", "-c1", "-W2", &ipv4(&b)]);
        assert!(ping.status.success(), "a cannot ping b: {}", text(&ping));

        let dport = format!("--dport {port} ");
        assert!(
            !iptables_lines_with(&dport).is_empty(),
            "no rule for port {port}"
        );
        assert!(!iptables_lines_with(&format!("{}:8080", ipv4(&a))).is_empty());

        let started = Instant::now();
        fx.net.detach(&sandbox("a"), Some(&a_ns), Some(&a)).unwrap();
        let teardown_not_last = started.elapsed();
        assert!(link_exists(fx.bridge()), "the bridge stays while b uses it");
        let started = Instant::now();
        fx.net.detach(&sandbox("b"), Some(&b_ns), Some(&b)).unwrap();
        let teardown_last = started.elapsed();

        // netavark removes the bridge and the network's chains with the
        // last pod; berth the port-forward chain netavark keeps when that
        // pod had no ports.
        assert!(!link_exists(fx.bridge()), "bridge left behind");
        assert!(iptables_lines_with(dport.trim_end()).is_empty());
        assert_eq!(fx.host_mentions(), Vec::<String>::new());
        assert!(fx.ipam.leases().is_empty(), "{:?}", fx.ipam.leases());

        eprintln!(
            "netavark timings: first setup (bridge + chains) {:.1} ms, second setup {:.1} ms, \
             teardown {:.1} ms, last teardown (bridge + chains) {:.1} ms",
            ms(first_setup),
            ms(second_setup),
            ms(teardown_not_last),
            ms(teardown_last)
        );
    }

    #[test]
    fn a_failed_attach_leaves_nothing_and_reports_netavarks_message() {
        let mut fx = Fixture::new(2);

        let missing = fx.dir.path().join("no-such-netns");
        let e = fx
            .net
            .attach(&fx.request("lost", &missing, vec![]))
            .unwrap_err();
        assert!(
            e.message.contains("invalid namespace path"),
            "{}",
            e.message
        );
        assert!(!fx.leased("lost"));
        assert!(!link_exists(fx.bridge()));

        // Refused after netavark made the bridge, the veth and the chains.
        let refused = fx.port(0);
        let config = NetavarkConfig {
            binary: fx.refusing_netavark(refused),
            ..fx.config.clone()
        };
        let net = NetavarkNetwork::new(config, fx.ipam.clone());
        let ns = fx.pin("refused");
        let e = net
            .attach(&fx.request("refused", &ns, vec![loopback_port(refused)]))
            .unwrap_err();
        // netavark failed at the firewall, after the bridge and veth.
        let refusal = format!("port {refused} refused by test");
        assert!(
            e.message.contains("unable to append rule") && e.message.contains(&refusal),
            "{}",
            e.message
        );
        eprintln!("refused attach: {}", e.message);
        assert!(!fx.leased("refused"), "lease kept: {:?}", fx.ipam.leases());
        let eth0 = run_in(&ns, "ip", &["link", "show", "dev", "eth0"]);
        assert!(!eth0.status.success(), "eth0 left: {}", text(&eth0));
        assert!(!link_exists(fx.bridge()), "bridge left behind");
        assert_eq!(fx.host_mentions(), Vec::<String>::new());

        // The same pod then attaches and detaches normally.
        let att = fx.net.attach(&fx.request("refused", &ns, vec![])).unwrap();
        fx.net
            .detach(&sandbox("refused"), Some(&ns), Some(&att))
            .unwrap();
        assert_eq!(fx.host_mentions(), Vec::<String>::new());
    }

    #[test]
    fn detach_after_the_namespace_is_gone_cleans_up_and_is_idempotent() {
        let mut fx = Fixture::new(3);
        let (a_ns, b_ns) = (fx.pin("a"), fx.pin("b"));
        let port = fx.port(0);
        let a = fx
            .net
            .attach(&fx.request("a", &a_ns, vec![loopback_port(port)]))
            .unwrap();
        let b = fx.net.attach(&fx.request("b", &b_ns, vec![])).unwrap();
        let a_veth = a.host_interface.clone().unwrap();

        // a's namespace outlives its pin (as a leaked mount copy would make
        // it): its veth stays on the bridge until berth deletes it.
        let held = std::fs::File::open(&a_ns).unwrap();
        fx.unpin("a");
        assert!(!a_ns.exists());
        assert!(bridge_ports(fx.bridge()).iter().any(|p| p.0 == a_veth));
        fx.net.detach(&sandbox("a"), Some(&a_ns), Some(&a)).unwrap();
        let ports: Vec<String> = bridge_ports(fx.bridge()).into_iter().map(|p| p.0).collect();
        assert_eq!(
            ports,
            vec![b.host_interface.clone().unwrap()],
            "a's {a_veth} left"
        );
        assert!(iptables_lines_with(&format!("--dport {port}")).is_empty());
        let a_ip = a.ips[0];
        let rules = iptables_save().unwrap();
        assert!(!rules.lines().any(|l| rule_mentions_ip(l, a_ip)), "{rules}");
        assert!(!fx.leased("a") && fx.leased("b"));
        drop(held);
        fx.net.detach(&sandbox("a"), Some(&a_ns), Some(&a)).unwrap();

        // b is untouched.
        let gw = fx.config.subnet.gateway().to_string();
        let ping = run_in(&b_ns, "/bin/busybox", &["ping", "-c1", "-W2", &gw]);
        assert!(ping.status.success(), "{}", text(&ping));

        // b's namespace is destroyed outright; the last pod takes the
        // bridge and chains with it.
        fx.unpin("b");
        fx.net.detach(&sandbox("b"), Some(&b_ns), Some(&b)).unwrap();
        fx.net.detach(&sandbox("b"), Some(&b_ns), Some(&b)).unwrap();
        assert!(!link_exists(fx.bridge()), "bridge left behind");
        assert_eq!(fx.host_mentions(), Vec::<String>::new());
        assert!(fx.ipam.leases().is_empty());
    }

    #[test]
    fn ready_names_a_missing_or_unusable_binary() {
        let fx = Fixture::new(4);
        assert_eq!(fx.net.name(), "netavark");
        assert_eq!(fx.net.ready(), Ok(()));

        let missing = fx.dir.path().join("no-netavark");
        let not_executable = fx.dir.path().join("netavark.txt");
        std::fs::write(&not_executable, "").unwrap();
        for binary in [missing, not_executable] {
            let config = NetavarkConfig {
                binary: binary.clone(),
                ..fx.config.clone()
            };
            let net = NetavarkNetwork::new(config, fx.ipam.clone());
            let e = net.ready().unwrap_err();
            assert_eq!(e.reason, "NetworkPluginNotReady");
            assert!(
                e.message.contains(&binary.display().to_string()),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn detach_without_a_record_finds_the_address_and_ports_itself() {
        let mut fx = Fixture::new(5);
        let (a_ns, b_ns) = (fx.pin("a"), fx.pin("b"));
        let (a_port, b_port) = (fx.port(0), fx.port(1));
        fx.net
            .attach(&fx.request("a", &a_ns, vec![loopback_port(a_port)]))
            .unwrap();

        // A crash lost a's record; its namespace is still there.
        fx.net.detach(&sandbox("a"), Some(&a_ns), None).unwrap();
        assert!(!link_exists(fx.bridge()), "bridge left behind");
        assert_eq!(fx.host_mentions(), Vec::<String>::new());
        assert!(!fx.leased("a"));

        // b's record and namespace are both gone by the time berthd starts.
        fx.net
            .attach(&fx.request("b", &b_ns, vec![loopback_port(b_port)]))
            .unwrap();
        fx.unpin("b");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !bridge_ports(fx.bridge()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!iptables_lines_with(&format!("--dport {b_port} ")).is_empty());
        fx.net.remove_orphans(&[]).unwrap();
        assert!(!link_exists(fx.bridge()), "bridge left behind");
        assert_eq!(fx.host_mentions(), Vec::<String>::new());
        assert!(fx.ipam.leases().is_empty());
    }

    #[test]
    fn dnat_rules_give_back_the_port_mappings() {
        let rules = "\
-A NETAVARK-DN-X -s 10.9.0.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 4000 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-DN-X -d 127.0.0.1/32 -p tcp -m tcp --dport 4000 -j DNAT --to-destination 10.9.0.2:8080
-A NETAVARK-DN-X -p udp -m udp --dport 53 -j DNAT --to-destination 10.9.0.2:5353
-A NETAVARK-DN-X -p udp -m udp --dport 54 -j DNAT --to-destination 10.9.0.22:53
-A NETAVARK-DN-Y -p udp -m udp --dport 55 -j DNAT --to-destination 10.9.0.2:53
";
        let ports = ports_from_rules(rules, "NETAVARK-DN-X", Ipv4Addr::new(10, 9, 0, 2));
        let port = |host_ip: &str, host_port, container_port, protocol: &str| NetavarkPort {
            container_port,
            host_ip: host_ip.to_string(),
            host_port,
            protocol: protocol.to_string(),
            range: 1,
        };
        assert_eq!(
            ports,
            vec![
                port("127.0.0.1", 4000, 8080, "tcp"),
                port("", 53, 5353, "udp")
            ]
        );
        assert!(rule_mentions_ip(
            "-A X -d 10.9.0.2/32 -j ACCEPT",
            "10.9.0.2".parse().unwrap()
        ));
        assert!(!rule_mentions_ip(
            "-A X -d 10.9.0.22/32 -j ACCEPT",
            "10.9.0.2".parse().unwrap()
        ));
    }

    #[test]
    fn netavark_errors_and_names() {
        let status = Command::new("false").status().unwrap();
        assert_eq!(
            failure_message("{\"error\":\"create bridge: boom\\n\"}\n", "", status),
            "create bridge: boom"
        );
        assert_eq!(failure_message("", "panicked\n", status), "panicked");
        assert!(failure_message("", "", status).contains("without a message"));
        assert_eq!(network_id("podman").len(), 64);
        // podman's default network's chains are NETAVARK-1D8721804F16F.
        assert_eq!(dnat_chain("podman"), "NETAVARK-DN-1D8721804F16F");
    }
}
