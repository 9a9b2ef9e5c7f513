//! Checks on what a front door hands the core, done before anything is
//! made: values that end up in files (`/etc/hosts`, `resolv.conf`), in
//! `/proc/sys` or on the host's filesystem must be exactly what they claim.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use berth_errdefs::{Error, Result};

use crate::model::{ContainerConfig, DnsConfig, NamespaceMode, PodConfig};

/// The kernel's limit on a UTS hostname.
const MAX_HOSTNAME: usize = 64;
/// glibc reads at most this many search domains, 256 bytes in all
/// (kubelet checks the same).
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_LEN: usize = 2048;

/// Everything of a pod config that reaches the node, checked; returns the
/// config with its sysctls in canonical dotted form.
pub(crate) fn pod(mut config: PodConfig) -> Result<PodConfig> {
    if !config.hostname.is_empty() && config.namespaces.network != NamespaceMode::Node {
        hostname(&config.hostname)?;
    }
    if let Some(dns) = &config.dns {
        dns_config(dns)?;
    }
    if !config.log_directory.is_empty() {
        absolute_clean("log_directory", &config.log_directory)?;
    }
    config.sysctls = sysctls(
        &config.sysctls,
        config.namespaces.network == NamespaceMode::Node,
        config.namespaces.ipc == NamespaceMode::Node,
    )?;
    Ok(config)
}

/// What of a container config reaches the runtime as C strings: a NUL in
/// any of it would fail deep inside the runtime (as INTERNAL), so it is the
/// caller's mistake, said at once.
pub(crate) fn container(config: &ContainerConfig) -> Result<()> {
    if !config.log_path.is_empty() {
        relative_file("log_path", &config.log_path)?;
    }
    let no_nul = |what: &str, v: &str| {
        if v.contains('\0') {
            Err(Error::invalid(format!("{what} {v:?} contains a NUL byte")))
        } else {
            Ok(())
        }
    };
    for a in config.command.iter().chain(&config.args) {
        no_nul("command argument", a)?;
    }
    for (k, v) in &config.env {
        if k.is_empty() || k.contains('=') {
            return Err(Error::invalid(format!(
                "env name {k:?} must be non-empty and without '='"
            )));
        }
        no_nul("env name", k)?;
        no_nul("env value", v)?;
    }
    if !config.working_dir.is_empty() {
        no_nul("working_dir", &config.working_dir)?;
        if !config.working_dir.starts_with('/') {
            return Err(Error::invalid(format!(
                "working_dir {:?} must be an absolute path",
                config.working_dir
            )));
        }
    }
    for m in &config.mounts {
        no_nul("mount host_path", &m.host_path)?;
        no_nul("mount container_path", &m.container_path)?;
    }
    for d in &config.devices {
        no_nul("device host_path", &d.host_path)?;
        no_nul("device container_path", &d.container_path)?;
    }
    no_nul("run_as_username", &config.security.run_as_username)?;
    Ok(())
}

/// An RFC 1123 host name: dot-separated labels of letters, digits and
/// inner hyphens, at most 64 bytes (what the kernel keeps).
pub(crate) fn hostname(name: &str) -> Result<()> {
    if name.len() > MAX_HOSTNAME {
        return Err(Error::invalid(format!(
            "hostname {name:?} is {} bytes long; at most {MAX_HOSTNAME}",
            name.len()
        )));
    }
    dns_name("hostname", name)
}

/// RFC 1123 labels (a trailing dot, as in fully qualified names, is fine).
fn dns_name(what: &str, name: &str) -> Result<()> {
    let labels = name.strip_suffix('.').unwrap_or(name);
    let bad_label = |l: &str| {
        l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.is_empty() || labels.len() > 253 || labels.split('.').any(bad_label) {
        return Err(Error::invalid(format!(
            "{what} {name:?} is not a valid RFC 1123 name (letters, digits, '-' and '.' only)"
        )));
    }
    Ok(())
}

fn dns_config(dns: &DnsConfig) -> Result<()> {
    for s in &dns.servers {
        if s.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(format!(
                "dns server {s:?} is not an IP address"
            )));
        }
    }
    if dns.searches.len() > MAX_SEARCHES {
        return Err(Error::invalid(format!(
            "{} dns searches; at most {MAX_SEARCHES}",
            dns.searches.len()
        )));
    }
    let total: usize = dns.searches.iter().map(|s| s.len() + 1).sum();
    if total > MAX_SEARCH_LEN {
        return Err(Error::invalid(format!(
            "dns searches are {total} bytes long; at most {MAX_SEARCH_LEN}"
        )));
    }
    for s in &dns.searches {
        dns_name("dns search", s)?;
    }
    for o in &dns.options {
        // resolv.conf options are `name` or `name:value` (ndots:5, edns0).
        let ok = !o.is_empty()
            && o.len() <= 64
            && o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !ok {
            return Err(Error::invalid(format!(
                "dns option {o:?} is not a resolv.conf option (name or name:value)"
            )));
        }
    }
    Ok(())
}

/// An absolute path without NUL, `.` or `..` components.
pub(crate) fn absolute_clean(what: &str, path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    let clean = !path.contains('\0')
        && p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.split('/').skip(1).any(|s| s == ".");
    if !clean {
        return Err(Error::invalid(format!(
            "{what} {path:?} must be an absolute path without '.', '..' or NUL"
        )));
    }
    Ok(p.to_path_buf())
}

/// A path relative to a directory that stays inside it and names a file:
/// no NUL, no `.`/`..`, not empty.
pub(crate) fn relative_file(what: &str, path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    let clean = !path.is_empty()
        && !path.contains('\0')
        && !path.ends_with('/')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.split('/').any(|s| s == "." || s == "..");
    if !clean {
        return Err(Error::invalid(format!(
            "{what} {path:?} must be a relative file path without '.', '..' or NUL"
        )));
    }
    Ok(p.to_path_buf())
}

/// Where a namespaced sysctl lives, as kubelet's `sysctl/namespace.go`
/// decides: only these may be set per pod, and only when the pod has that
/// namespace of its own.
#[derive(Debug, PartialEq, Eq)]
enum SysctlNamespace {
    Net,
    Ipc,
}

fn sysctl_namespace(key: &str) -> Option<SysctlNamespace> {
    if key == "kernel.sem"
        || key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key.starts_with("fs.mqueue.")
    {
        return Some(SysctlNamespace::Ipc);
    }
    key.starts_with("net.").then_some(SysctlNamespace::Net)
}

/// kubelet's conversion of a `/`-separated name to the dotted form: `/` and
/// `.` swap (`net/ipv4/conf/eth0.100/forwarding` is
/// `net.ipv4.conf.eth0/100.forwarding`).
fn dotted(key: &str) -> String {
    if !key.contains('/') {
        return key.to_string();
    }
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

fn sysctls(
    given: &BTreeMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (key, value) in given {
        let name = dotted(key);
        // Each dotted part becomes one /proc/sys path component: none may
        // climb out of it or hide another path.
        let parts_ok = name.split('.').all(|p| {
            !p.is_empty()
                && p != ".."
                && !p.starts_with("..")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/'))
                && !p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        });
        if !parts_ok {
            return Err(Error::invalid(format!(
                "sysctl {key:?} is not a valid name"
            )));
        }
        match sysctl_namespace(&name) {
            None => {
                return Err(Error::invalid(format!(
                    "sysctl {key:?} is not namespaced: only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* may be set for a pod"
                )))
            }
            Some(SysctlNamespace::Net) if host_network => {
                return Err(Error::invalid(format!(
                    "sysctl {key:?} needs the pod's own network namespace; this pod uses the host's"
                )))
            }
            Some(SysctlNamespace::Ipc) if host_ipc => {
                return Err(Error::invalid(format!(
                    "sysctl {key:?} needs the pod's own IPC namespace; this pod uses the host's"
                )))
            }
            Some(_) => {}
        }
        if value.contains(['\n', '\0']) {
            return Err(Error::invalid(format!(
                "sysctl {key:?} has a value with a newline or NUL"
            )));
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hostnames_are_rfc1123() {
        for ok in ["web-0", "a.b.c", "A1", &"a".repeat(63)] {
            hostname(ok).unwrap();
        }
        for bad in [
            "evil\n10.0.0.1 bank.example",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "",
            "a b",
            &"a".repeat(65),
        ] {
            let e = hostname(bad).unwrap_err();
            assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn dns_searches_and_options_cannot_inject_lines() {
        let ok = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local.".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        dns_config(&ok).unwrap();
        let search = DnsConfig {
            searches: vec!["x\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(dns_config(&search)
            .unwrap_err()
            .message
            .contains("dns search"));
        let option = DnsConfig {
            options: vec!["ndots:1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(dns_config(&option)
            .unwrap_err()
            .message
            .contains("dns option"));
        let many = DnsConfig {
            searches: vec!["a".into(); 33],
            ..Default::default()
        };
        assert!(dns_config(&many).is_err());
    }

    #[test]
    fn only_namespaced_sysctls_pass_in_dotted_form() {
        let got = sysctls(
            &map(&[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net/ipv4/conf/eth0.100/forwarding", "1"),
                ("kernel.shm_rmid_forced", "1"),
                ("kernel.sem", "250 32000 32 128"),
                ("fs.mqueue.msg_max", "20"),
            ]),
            false,
            false,
        )
        .unwrap();
        assert!(got.contains_key("net.ipv4.conf.eth0/100.forwarding"));
        assert_eq!(got.len(), 5);
        for bad in [
            "kernel.panic",
            "net/ipv4/../../kernel/panic",
            "net.ipv4..x",
            "net.ipv4.conf.../x",
            "vm.overcommit_memory",
            "net.ipv4.ip_forward\n",
        ] {
            let e = sysctls(&map(&[(bad, "1")]), false, false).unwrap_err();
            assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument, "{bad:?}");
        }
        let e = sysctls(&map(&[("net.core.somaxconn", "1")]), true, false).unwrap_err();
        assert!(e.message.contains("network namespace"), "{}", e.message);
        let e = sysctls(&map(&[("kernel.shmmax", "1")]), false, true).unwrap_err();
        assert!(e.message.contains("IPC namespace"), "{}", e.message);
    }

    #[test]
    fn nul_bytes_and_bad_env_names_are_refused() {
        let ok = ContainerConfig {
            command: vec!["sh".into()],
            env: vec![("A".into(), "b=c".into())],
            working_dir: "/tmp".into(),
            ..Default::default()
        };
        container(&ok).unwrap();
        type Change = fn(&mut ContainerConfig);
        let cases: [(&str, Change); 5] = [
            ("command argument", |c| c.args = vec!["a\0b".into()]),
            ("env name", |c| c.env = vec![("A=B".into(), "x".into())]),
            ("env value", |c| c.env = vec![("A".into(), "x\0".into())]),
            ("working_dir", |c| c.working_dir = "relative".into()),
            ("mount host_path", |c| {
                c.mounts = vec![crate::model::MountConfig {
                    host_path: "/a\0".into(),
                    ..Default::default()
                }]
            }),
        ];
        for (what, change) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = container(&c).unwrap_err();
            assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument, "{what}");
            assert!(e.message.contains(what), "{what}: {}", e.message);
        }
    }

    #[test]
    fn paths_are_checked_for_nul_dots_and_escapes() {
        absolute_clean("log_directory", "/var/log/pods/x").unwrap();
        for bad in ["relative", "/a/../etc", "/a/./b", "/a\0b"] {
            assert!(absolute_clean("log_directory", bad).is_err(), "{bad:?}");
        }
        relative_file("log_path", "c/0.log").unwrap();
        for bad in [".", "", "a/../../x", "/abs", "a\0b", "dir/", "./x"] {
            let e = relative_file("log_path", bad).unwrap_err();
            assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument, "{bad:?}");
        }
    }
}
