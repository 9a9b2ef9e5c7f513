//! A running container's network counters, per interface of its network
//! namespace (read through its init process's `/proc/<pid>/net/dev`).

use berth_errdefs::{Error, ErrorKind, Result};

use crate::model::ContainerState;
use crate::Containers;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

impl Containers {
    /// The counters of each interface but loopback in the container's
    /// network namespace.
    pub fn network_stats(&self, id: &str) -> Result<Vec<InterfaceStats>> {
        let record = self.status(id)?;
        if record.state != ContainerState::Running || record.pid == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            ));
        }
        net_dev_of(record.pid)
    }
}

impl crate::Sandboxes {
    /// The counters of each interface but loopback in the pod's network
    /// namespace, read through a running container of the pod; none for
    /// a host-network pod or one with nothing running.
    pub fn network_stats(&self, id: &str) -> Result<Vec<InterfaceStats>> {
        let pod = self.status(id)?;
        if pod.network.is_none() {
            return Ok(Vec::new());
        }
        let running = crate::Containers::new(self.shared()).list(&crate::model::ContainerFilter {
            sandbox_id: id.to_string(),
            owner: Some(pod.owner),
            ..Default::default()
        });
        Ok(running
            .iter()
            .filter(|r| r.state == ContainerState::Running && r.pid != 0)
            .find_map(|r| net_dev_of(r.pid).ok())
            .unwrap_or_default())
    }
}

/// The interfaces but loopback of the network namespace `pid` is in.
pub(crate) fn net_dev_of(pid: u32) -> Result<Vec<InterfaceStats>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
    Ok(parse_net_dev(&text))
}

fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (name != "lo" && n.len() >= 12).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_parses_and_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
                    eth0:    1128      14    0    1    0     0          0         0       90       1    0    0    0     0       0          0\n";
        let s = parse_net_dev(text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "eth0");
        assert_eq!(
            (s[0].rx_bytes, s[0].rx_packets, s[0].rx_dropped),
            (1128, 14, 1)
        );
        assert_eq!((s[0].tx_bytes, s[0].tx_packets), (90, 1));
    }
}
