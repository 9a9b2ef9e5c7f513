//! The files every container of a pod shares: `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf`.

use std::path::Path;

use berth_errdefs::Result;

use crate::model::{DnsConfig, PodConfig};

pub(crate) const HOSTNAME: &str = "hostname";
pub(crate) const HOSTS: &str = "hosts";
pub(crate) const RESOLV: &str = "resolv.conf";

/// The hostname a pod's containers see: the one asked for, else the
/// node's (as containerd does: a pod name may be longer than the kernel's
/// 64 bytes, and kubelet sends a hostname whenever the pod spec has one).
pub(crate) fn hostname(pod: &PodConfig, host_network: bool) -> String {
    if host_network || pod.hostname.is_empty() {
        return std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
    }
    pod.hostname.clone()
}

/// Writes the three files into `dir`.
pub(crate) fn write(dir: &Path, pod: &PodConfig, hostname: &str, host_network: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(HOSTNAME), format!("{hostname}\n"))?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        )
    };
    std::fs::write(dir.join(HOSTS), hosts)?;
    let resolv = match &pod.dns {
        Some(dns) if dns != &DnsConfig::default() => resolv_conf(dns),
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(dir.join(RESOLV), resolv)?;
    Ok(())
}

/// Adds the pod's own address under its hostname to its hosts file.
pub(crate) fn add_host(dir: &Path, ip: std::net::IpAddr, hostname: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(HOSTS))?;
    f.write_all(format!("{ip}\t{hostname}\n").as_bytes())?;
    Ok(())
}

/// The pod's resolv.conf; `dns` was checked by `validate` (no value can
/// break a line).
fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_config_becomes_resolv_conf() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }
}
