//! The host's resolvers, read from resolv.conf.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// The host's resolvers from resolv.conf text (`nameserver` lines, port
/// 53, in order, without repeats).
///
/// Loopback resolvers (systemd-resolved's 127.0.0.53, a local dnsmasq on
/// 127.0.0.1 or ::1) and the unspecified address (which glibc reads as
/// "this host") are skipped: the host's loopback is not a container's, so
/// such an address is unreachable wherever the forwarding ends up running
/// in a container's namespace, or is handed to a container as its own
/// resolver (dockerd drops them from containers' resolv.conf for the same
/// reason). Link-local IPv6 servers with a named zone (`fe80::1%eth0`)
/// are skipped too: the zone names a host interface.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_server) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// One `nameserver` value as a reachable upstream, or `None`.
fn parse_server(word: &str) -> Option<SocketAddr> {
    let (host, zone) = match word.split_once('%') {
        Some((host, zone)) => (host, Some(zone)),
        None => (word, None),
    };
    let ip: IpAddr = host.parse().ok()?;
    if ip.is_loopback() || ip.is_unspecified() {
        return None;
    }
    match (ip, zone) {
        (IpAddr::V6(v6), Some(zone)) => {
            let scope: u32 = zone.parse().ok()?;
            Some(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, scope)))
        }
        (IpAddr::V4(_), Some(_)) => None,
        (ip, None) => Some(SocketAddr::new(ip, 53)),
    }
}

/// The host's resolvers: `/etc/resolv.conf`'s, or, when that names only
/// loopback ones (systemd-resolved's stub), the servers behind the stub
/// from `/run/systemd/resolve/resolv.conf`. Empty if neither names any:
/// the responder then answers SERVFAIL for names it does not know.
pub fn host_upstreams() -> Vec<SocketAddr> {
    ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| upstreams_from_resolv_conf(&text))
        .find(|servers| !servers.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_in_order_without_loopback_or_repeats() {
        let text = "\
# generated
search example.com
nameserver 10.255.255.53
nameserver 127.0.0.53
nameserver ::1
nameserver 0.0.0.0
; comment
nameserver 2001:db8::53
nameserver 10.255.255.53
nameserver   192.0.2.1   # trailing words ignored
nameserver fe80::1%eth0
nameserver fe80::2%3
nameserver not-an-address
nameserver
options ndots:5
";
        let got = upstreams_from_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "10.255.255.53:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 53, 0, 3)),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn only_loopback_gives_none() {
        assert!(upstreams_from_resolv_conf("nameserver 127.0.0.53\noptions edns0\n").is_empty());
        assert!(upstreams_from_resolv_conf("").is_empty());
    }
}
