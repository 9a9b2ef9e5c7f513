//! Host port reservations. berthd binds every host port a pod maps and
//! holds the socket while the pod is networked, like kubelet's hostport
//! manager: a port that a host process (or another pod) already uses is
//! refused up front with a clear error, and nobody can take it later.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

use berth_errdefs::{Error, ErrorKind, Result};

use crate::{PortMapping, Protocol};

enum Held {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
    /// SCTP ports are not bound (no std socket); DNAT still applies.
    Unbound,
}

#[derive(Default)]
pub struct HostPorts {
    held: Mutex<HashMap<String, Vec<Held>>>,
}

impl HostPorts {
    pub fn new() -> HostPorts {
        HostPorts::default()
    }

    /// Binds every port of one pod, or none (the error names the port).
    pub fn reserve(&self, sandbox_id: &str, ports: &[PortMapping]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let mut sockets = Vec::with_capacity(ports.len());
        for p in ports {
            // Dropping `sockets` on error releases what was bound so far.
            sockets.push(bind(p)?);
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(sandbox_id.to_string(), sockets);
        Ok(())
    }

    /// Releases one pod's ports; none held is fine.
    pub fn release(&self, sandbox_id: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(sandbox_id);
    }

    pub fn count(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.values().map(Vec::len).sum()
    }
}

fn bind(p: &PortMapping) -> Result<Held> {
    let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, p.host_port);
    let held = match p.protocol {
        Protocol::Tcp => TcpListener::bind(addr).map(Held::Tcp),
        Protocol::Udp => UdpSocket::bind(addr).map(Held::Udp),
        Protocol::Sctp => Ok(Held::Unbound),
    };
    held.map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::AddrInUse {
            ErrorKind::AlreadyExists
        } else {
            ErrorKind::InvalidArgument
        };
        Error::new(kind, format!("host port {p} cannot be used: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port: port,
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    #[test]
    fn a_taken_port_is_refused_and_nothing_is_kept() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ports = HostPorts::new();
        let err = ports.reserve("a", &[tcp(free), tcp(busy)]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{busy}/tcp")),
            "{err}"
        );
        assert_eq!(ports.count(), 0);
        // The first port was released with the failed reservation.
        TcpListener::bind(("127.0.0.1", free)).unwrap();
    }

    #[test]
    fn a_reserved_port_is_held_until_released() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ports = HostPorts::new();
        ports.reserve("a", &[tcp(port)]).unwrap();
        assert!(TcpListener::bind(("127.0.0.1", port)).is_err());
        ports.release("a");
        ports.release("a");
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
