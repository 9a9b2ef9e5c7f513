//! Image references, normalised the way kubelet and containerd expect:
//! `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;

use berth_errdefs::{Error, Result};

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`
    pub registry: String,
    /// Path within the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// A bare image id: `sha256:<64 hex>` or 64 hex digits.
pub fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn invalid(s: &str, why: &str) -> Error {
    Error::invalid(format!("invalid image reference {s:?}: {why}"))
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        if s.len() > 4096
            || s.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(s, "contains white space or control characters"));
        }
        if s.len() == 64 && s.bytes().all(is_lower_hex) {
            return Err(invalid(
                s,
                "a bare 64-hex string is an image id, not a reference",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(s, d)?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(s, t)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => (first.to_string(), path.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        check_host(s, &registry)?;
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(s, &repository)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest`
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// Registries on loopback are plain HTTP by default, as dockerd has it.
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with any port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `name` lacks a registry host (`busybox`, `library/busybox`), so
/// that the configured search registries decide where it comes from.
pub fn is_short_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => !is_registry_host(first),
        None => true,
    }
}

fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn check_host(s: &str, host: &str) -> Result<()> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(s, "unclosed '[' in registry host"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(s, "bad IPv6 registry address"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match host.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(invalid(s, "bad registry host name"));
        }
    }
    if let Some(p) = port {
        if p.is_empty() || p.parse::<u16>().is_err() {
            return Err(invalid(s, "bad registry port"));
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, separated by `/`.
fn check_repository(s: &str, repository: &str) -> Result<()> {
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(s, "repository name must be lowercase"));
    }
    if repository.len() > 255 {
        return Err(invalid(s, "repository name longer than 255 characters"));
    }
    for component in repository.split('/') {
        if !component_ok(component.as_bytes()) {
            return Err(invalid(
                s,
                &format!("bad repository path component {component:?}"),
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if c.is_empty() || !alnum(c[0]) || !alnum(c[c.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < c.len() {
        if alnum(c[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < c.len() && !alnum(c[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_tag(s: &str, tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(s, &format!("bad tag {tag:?}")))
    }
}

fn parse_digest(s: &str, d: &str) -> Result<String> {
    let (algo, hex) = d
        .split_once(':')
        .ok_or_else(|| invalid(s, "digest needs the form algorithm:hex"))?;
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(invalid(
                s,
                &format!("unsupported digest algorithm {algo:?}"),
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(is_lower_hex) {
        return Err(invalid(
            s,
            &format!("digest must be {len} lowercase hex digits"),
        ));
    }
    Ok(d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/img"), "docker.io/user/img:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        assert_eq!(norm("127.0.0.1:5000/a/b:v1.2"), "127.0.0.1:5000/a/b:v1.2");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        let r = Reference::parse(&format!("quay.io/a/b@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.with_digest(D), format!("quay.io/a/b@{D}"));
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:1");
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
        assert_eq!(
            norm("x/a__b.c-d---e/f"),
            "docker.io/x/a__b.c-d---e/f:latest"
        );
    }

    #[test]
    fn malformed_references_are_invalid_arguments() {
        for bad in [
            "",
            "Foo",
            "busybox:bad tag",
            "busybox:",
            "a//b",
            "a/-b",
            "a..b/c",
            "busybox@sha256:123",
            "busybox@md5:00",
            "host:99999/x",
            "UPPER/case",
            ":tag",
            "a___b",
            &"a".repeat(64).replace('a', "0"),
        ] {
            let e = Reference::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument, "{bad}");
            assert!(
                e.message.contains("invalid image reference"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn image_ids_and_loopback() {
        assert!(is_image_id(D));
        assert!(is_image_id(D.trim_start_matches("sha256:")));
        assert!(!is_image_id("busybox"));
        for host in [
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["docker.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
