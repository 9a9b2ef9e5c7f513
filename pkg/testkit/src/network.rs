//! Each test daemon's own pod network: a bridge name and an IPv4 subnet
//! nobody else on the machine uses, and the checks that it left nothing.

use std::process::Command;

use berth_net::{host_routes, Subnet};

/// A bridge name and subnet for one test daemon.
#[derive(Debug, Clone)]
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: Subnet,
}

impl TestNetwork {
    /// `n` distinguishes daemons of one test process; the subnet is a /24
    /// in 10.214.0.0/16 that no host route overlaps (never 10.88/16).
    pub fn pick(n: u32) -> TestNetwork {
        let pid = std::process::id();
        let routes = host_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
        let subnet = (0..250u32)
            .map(|i| (pid.wrapping_mul(7) + n * 37 + i) % 250)
            .map(|x| Subnet::new(std::net::Ipv4Addr::new(10, 214, x as u8, 0), 24))
            .filter_map(Result::ok)
            .find(|s| routes.iter().all(|(_, r)| !r.overlaps(s)))
            .expect("a free /24 in 10.214.0.0/16");
        TestNetwork {
            bridge: format!("bt{pid}x{n}"),
            subnet,
        }
    }

    /// Pod veths still on the bridge.
    pub fn veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Firewall rules that name a pod (host ports) or this network.
    pub fn pod_rules(&self) -> Vec<String> {
        berth_net::bridge_network_rules(&self.bridge)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.contains("berth:"))
            .collect()
    }

    /// Removes the bridge and its chains (berthd keeps them across
    /// restarts on purpose), then checks nothing of it is left.
    pub fn remove(&self) {
        if let Err(e) = berth_net::remove_bridge_network(&self.bridge) {
            panic!("remove test network {}: {e}", self.bridge);
        }
        let rules = berth_net::bridge_network_rules(&self.bridge).unwrap_or_default();
        assert!(rules.is_empty(), "firewall rules left behind: {rules:?}");
        let link = Command::new("ip")
            .args(["link", "show", &self.bridge])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(!link, "bridge {} left behind", self.bridge);
    }
}
