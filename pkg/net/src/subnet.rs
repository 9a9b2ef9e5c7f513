//! IPv4 subnets and the host routes a pod subnet must not overlap.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use berth_errdefs::{Error, Result};

/// An IPv4 network, `10.87.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: u32,
    prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet> {
        if prefix > 30 {
            return Err(Error::invalid(format!(
                "subnet {addr}/{prefix} is too small for pods: at most /30"
            )));
        }
        let network = u32::from(addr) & mask(prefix);
        if network != u32::from(addr) {
            return Err(Error::invalid(format!(
                "{addr}/{prefix} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(network)
            )));
        }
        Ok(Subnet { network, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    /// The bridge's own address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network | !mask(self.prefix))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == self.network
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        self.network & mask(shorter) == other.network & mask(shorter)
    }

    /// Addresses pods may get: all but the network, gateway and broadcast.
    pub(crate) fn pod_range(&self) -> (u32, u32) {
        (self.network + 2, u32::from(self.broadcast()) - 1)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subnet> {
        let bad = || Error::invalid(format!("{s:?} is not an IPv4 subnet like 10.87.0.0/16"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Subnet::new(addr, prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The host's IPv4 routes other than the default route, from the text of
/// `/proc/net/route` (little-endian hex fields), with their interfaces.
pub fn host_routes(proc_net_route: &str) -> Vec<(String, Subnet)> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the in-memory (network order) bytes as a
            // host-order number.
            let (dest, mask) = (
                u32::from_be_bytes(dest.to_ne_bytes()),
                u32::from_be_bytes(mask.to_ne_bytes()),
            );
            let prefix = mask.count_ones() as u8;
            if prefix == 0 {
                return None;
            }
            let subnet = Subnet::new(Ipv4Addr::from(dest & mask), prefix.min(30)).ok()?;
            Some((f.first()?.to_string(), subnet))
        })
        .collect()
}

impl Subnet {
    /// Refuses a pod subnet that overlaps a host route (other than the
    /// bridge's own, `own_interface`), naming the route.
    pub fn check_against(&self, routes: &[(String, Subnet)], own_interface: &str) -> Result<()> {
        match routes
            .iter()
            .find(|(iface, r)| iface != own_interface && self.overlaps(r))
        {
            Some((iface, r)) => Err(Error::invalid(format!(
                "pod subnet {self} overlaps the host route {r} on {iface}; choose another subnet"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_and_bounds() {
        let s: Subnet = "10.87.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "10.87.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 87, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 87, 255, 255));
        assert!(s.contains(Ipv4Addr::new(10, 87, 3, 4)));
        assert!(!s.contains(Ipv4Addr::new(10, 88, 0, 1)));
        for bad in ["10.87.0.0", "10.87.0.0/33", "x/16", "10.87.0.0/31"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let e = "10.87.0.1/16".parse::<Subnet>().unwrap_err();
        assert!(
            e.message.contains("did you mean 10.87.0.0/16"),
            "{}",
            e.message
        );
    }

    #[test]
    fn overlaps() {
        let a: Subnet = "10.87.0.0/16".parse().unwrap();
        assert!(a.overlaps(&"10.87.5.0/24".parse().unwrap()));
        assert!(a.overlaps(&"10.0.0.0/8".parse().unwrap()));
        assert!(!a.overlaps(&"10.88.0.0/16".parse().unwrap()));
    }

    #[test]
    fn host_routes_are_read_and_checked() {
        // 10.0.2.0/24 on eth0, 172.17.0.0/16 on docker0, the default route.
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = host_routes(table);
        assert_eq!(
            routes,
            vec![
                ("eth0".to_string(), "10.0.2.0/24".parse().unwrap()),
                ("docker0".to_string(), "172.17.0.0/16".parse().unwrap())
            ]
        );
        let pods: Subnet = "10.0.0.0/16".parse().unwrap();
        let e = pods.check_against(&routes, "berth0").unwrap_err();
        assert!(e.message.contains("10.0.2.0/24 on eth0"), "{}", e.message);
        let ok: Subnet = "10.87.0.0/16".parse().unwrap();
        ok.check_against(&routes, "berth0").unwrap();
        // The bridge's own route is not a conflict.
        let own = vec![("berth0".to_string(), ok)];
        ok.check_against(&own, "berth0").unwrap();
    }

    #[test]
    fn this_hosts_routes_parse() {
        if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
            for (iface, r) in host_routes(&t) {
                assert!(!iface.is_empty() && r.prefix() > 0);
            }
        }
    }
}
