//! Image references, normalised the way kubelet and containerd expect:
//! `busybox` is `docker.io/library/busybox:latest`.
//!
//! The grammar is docker/distribution's, checked by a small hand parser:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ host "/" ] component ( "/" component )*
//! host       := ( domain | "[" ipv6 "]" ) [ ":" port ]
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 lowercase hex | "sha512:" 128 lowercase hex
//! ```
//!
//! The first path component is a registry host only when it contains `.` or
//! `:`, or is `localhost`; otherwise the name is on Docker Hub, where a
//! one-component name lives under `library/`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use berth_errdefs::{Error, Result};

/// The registry of names without a host: Docker Hub.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The old name of Docker Hub, normalised to [`DEFAULT_REGISTRY`].
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
/// Where one-component Docker Hub names live.
const OFFICIAL_NAMESPACE: &str = "library";
/// docker/distribution's limit on `registry/repository`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Path within the registry, e.g. `library/busybox`.
    pub repository: String,
    /// `latest` when the reference names neither a tag nor a digest.
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// Whether `s` is a bare image id rather than a reference: `sha256:<64 hex>`
/// or just the 64 lowercase hex digits.
pub fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    is_lower_hex(hex, 64)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn invalid(s: &str, why: impl fmt::Display) -> Error {
    Error::invalid(format!("invalid image reference {s:?}: {why}"))
}

impl Reference {
    /// Parses and normalises `s`; anything malformed is `InvalidArgument`
    /// naming the reference. A bare image id is refused: callers that accept
    /// ids check [`is_image_id`] first.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            let why = if c.is_whitespace() {
                "contains white space".to_string()
            } else {
                format!("contains the character {c:?}, which is not allowed")
            };
            return Err(invalid(s, why));
        }
        if is_lower_hex(s, 64) {
            return Err(invalid(
                s,
                "a bare 64-hex string is an image id, not a reference",
            ));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(check_digest(s, d)?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'; any ':' before that
        // belongs to the registry's port.
        let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[after_slash..].rfind(':') {
            Some(i) => {
                let at = after_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid(s, "missing repository name"));
        }
        if let Some(tag) = tag {
            check_tag(s, tag)?;
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => {
                check_host(s, first)?;
                (first, path)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        let registry = if registry == LEGACY_DEFAULT_REGISTRY {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_string()
        };
        check_repository(s, &repository)?;
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(
                s,
                format_args!("repository name longer than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}/{}:{t}", self.registry, self.repository))
    }

    /// `registry/repository@digest`.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }

    /// Whether the registry is on loopback (`localhost`, `127.0.0.0/8`,
    /// `[::1]`, any port): dockerd talks plain HTTP to those by default.
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

impl fmt::Display for Reference {
    /// `name:tag`, `name@digest` or `name:tag@digest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

/// Whether a registry `host[:port]` is on loopback: `localhost`,
/// `127.0.0.0/8` or `[::1]`, with any port.
pub fn is_loopback_host(registry: &str) -> bool {
    if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, _)) = rest.split_once(']') else {
            return false;
        };
        return v6.parse::<Ipv6Addr>().is_ok_and(|ip| {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        });
    }
    let host = registry.split_once(':').map_or(registry, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `name` lacks a registry host (`busybox`, `library/busybox`), so
/// that the configured search registries decide where it comes from.
pub fn is_short_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => !is_registry_host(first),
        None => true,
    }
}

/// docker/distribution's rule for telling a registry from a namespace.
fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `domain[:port]`, `ipv4[:port]` or `[ipv6][:port]`.
fn check_host(s: &str, host: &str) -> Result<()> {
    let port = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| {
            invalid(
                s,
                format_args!("registry host {host:?} has an unclosed '['"),
            )
        })?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(invalid(
                s,
                format_args!("registry host {host:?} is not an IPv6 address"),
            ));
        }
        match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                invalid(
                    s,
                    format_args!("registry host {host:?} has junk after the address"),
                )
            })?),
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        };
        if !name.split('.').all(label_ok) {
            return Err(invalid(s, format_args!("bad registry host name {name:?}")));
        }
        port
    };
    if let Some(port) = port {
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || port.parse::<u16>().is_err() {
            return Err(invalid(s, format_args!("bad registry port {port:?}")));
        }
    }
    Ok(())
}

/// Path components separated by `/`, each
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_repository(s: &str, repository: &str) -> Result<()> {
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(s, "repository name must be lowercase"));
    }
    for component in repository.split('/') {
        if !component_ok(component.as_bytes()) {
            return Err(invalid(
                s,
                format_args!("bad repository path component {component:?}"),
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
        // A separator between alphanumerics: '.', '_', '__' or '-'+.
        let start = i;
        while !alnum(c[i]) {
            i += 1; // the last byte is alphanumeric, so this stops in bounds
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
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(s, format_args!("bad tag {tag:?}")))
    }
}

fn check_digest(s: &str, digest: &str) -> Result<String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid(s, format_args!("digest {digest:?} is not algorithm:hex")))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(invalid(
                s,
                format_args!("unsupported digest algorithm {algorithm:?}"),
            ))
        }
    };
    if !is_lower_hex(hex, len) {
        return Err(invalid(
            s,
            format_args!("a {algorithm} digest is {len} lowercase hex digits"),
        ));
    }
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> String {
        format!("sha256:{HEX}")
    }

    fn norm(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn refused(s: &str) -> String {
        let e = Reference::parse(s).expect_err(s);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{s:?}: {e}");
        assert!(
            e.message
                .starts_with(&format!("invalid image reference {s:?}: ")),
            "names the reference: {}",
            e.message
        );
        e.message
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/img"), "docker.io/user/img:latest");
        assert_eq!(norm("user/sub/img:v1"), "docker.io/user/sub/img:v1");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            norm("index.docker.io/user/img"),
            "docker.io/user/img:latest"
        );
        // Only index.docker.io is an alias of Docker Hub.
        assert_eq!(
            norm("registry-1.docker.io/busybox"),
            "registry-1.docker.io/busybox:latest"
        );
    }

    #[test]
    fn the_first_component_is_a_host_only_with_a_dot_a_colon_or_localhost() {
        assert_eq!(parts("quay.io/a/b").0, "quay.io");
        assert_eq!(parts("myhost:5000/a").0, "myhost:5000");
        assert_eq!(parts("localhost/a").0, "localhost");
        assert_eq!(parts("localhost:5000/a").0, "localhost:5000");
        let (reg, repo, ..) = parts("myhost/a");
        assert_eq!((reg.as_str(), repo.as_str()), ("docker.io", "myhost/a"));
        // Without a slash, "localhost:5000" is the image localhost, tag 5000.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
        // Single components on other registries get no library/ prefix.
        assert_eq!(parts("quay.io/busybox").1, "busybox");
    }

    #[test]
    fn short_names_have_no_registry_host() {
        for short in [
            "busybox",
            "busybox:1",
            "library/busybox",
            "user/img:v1",
            "a/b/c",
        ] {
            assert!(is_short_name(short), "{short}");
        }
        for long in [
            "docker.io/busybox",
            "localhost/x",
            "localhost:5000/x",
            "quay.io/a/b",
            "[::1]:5000/x",
            "myhost:5000/x",
        ] {
            assert!(!is_short_name(long), "{long}");
        }
    }

    #[test]
    fn hosts_ports_and_ip_addresses() {
        assert_eq!(norm("127.0.0.1:5000/a/b:v1.2"), "127.0.0.1:5000/a/b:v1.2");
        assert_eq!(norm("10.1.2.3/x"), "10.1.2.3/x:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(norm("[fe80::1]/x"), "[fe80::1]/x:latest");
        assert_eq!(
            norm("My-Registry.Example.com/x"),
            "My-Registry.Example.com/x:latest"
        );
        assert_eq!(norm("a.b.c.d.e:1/x/y/z"), "a.b.c.d.e:1/x/y/z:latest");
    }

    #[test]
    fn tags_and_digests() {
        let d = digest();
        let (_, _, tag, dig) = parts(&format!("quay.io/a/b@{d}"));
        assert_eq!(tag, None, "no default tag with a digest");
        assert_eq!(dig.as_deref(), Some(d.as_str()));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );

        let r = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{d}"));

        let sha512 = format!("sha512:{}", HEX.repeat(2));
        assert_eq!(parts(&format!("x/y@{sha512}")).3.unwrap(), sha512);

        assert_eq!(parts("x:_under").2.as_deref(), Some("_under"));
        assert_eq!(parts("x:V1.2-rc_3").2.as_deref(), Some("V1.2-rc_3"));
        let longest = "t".repeat(128);
        assert_eq!(parts(&format!("x:{longest}")).2.unwrap(), longest);
        // A tag that looks like a port is still a tag after a '/'.
        assert_eq!(norm("host:5000/img:5000"), "host:5000/img:5000");
    }

    #[test]
    fn name_tagged_with_digest_and_display() {
        let d = digest();
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(
            r.tagged().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(r.with_digest(&d), format!("docker.io/library/busybox@{d}"));
        assert_eq!(format!("{r}"), "docker.io/library/busybox:latest");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");

        let r = Reference::parse(&format!("localhost:5000/a/b@{d}")).unwrap();
        assert_eq!(r.tagged(), None);
        assert_eq!(r.to_string(), format!("localhost:5000/a/b@{d}"));
        assert_eq!(r.name(), "localhost:5000/a/b");

        let r: Reference = "quay.io/x:1".parse().unwrap();
        assert_eq!(r.tagged().as_deref(), Some("quay.io/x:1"));
    }

    #[test]
    fn normalised_output_parses_back_to_itself() {
        let d = digest();
        for s in [
            "busybox".to_string(),
            "user/img:v1".to_string(),
            format!("quay.io/a/b:t@{d}"),
            format!("[::1]:5000/x@{d}"),
            "localhost/a".to_string(),
        ] {
            let once = Reference::parse(&s).unwrap();
            let twice = Reference::parse(&once.to_string()).unwrap();
            assert_eq!(once, twice, "{s}");
        }
    }

    #[test]
    fn repository_components_follow_the_grammar() {
        assert_eq!(
            norm("x/a__b.c-d---e/f"),
            "docker.io/x/a__b.c-d---e/f:latest"
        );
        assert_eq!(norm("a_b"), "docker.io/library/a_b:latest");
        assert_eq!(norm("a.b-c"), "docker.io/library/a.b-c:latest");
        assert_eq!(norm("0/1"), "docker.io/0/1:latest");
        for bad in [
            "a___b", "a..b", "a._b", "-a", "a-", "_a", "a_", ".a", "x/a/", "x//a", "a/b_", "ä",
            "a+b", "a%b",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn uppercase_repositories_are_refused_with_a_clear_message() {
        assert_eq!(
            refused("Foo"),
            "invalid image reference \"Foo\": repository name must be lowercase"
        );
        // Not a host (no '.', ':' or localhost), so part of the repository.
        refused("UPPER/case");
        refused("quay.io/Org/img");
    }

    #[test]
    fn malformed_references_are_invalid_arguments() {
        let long_name = format!("quay.io/{}", "a".repeat(250));
        for bad in [
            "",
            " ",
            "busybox ",
            " busybox",
            "busy box",
            "Not A Reference",
            "busybox:bad tag",
            "busybox\t",
            "busybox\n",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "busybox:a/b",
            ":tag",
            "@sha256:0",
            "busybox::tag",
            "::",
            "/busybox",
            "busybox/",
            "a//b",
            "a/-b",
            "a..b/c",
            ".host/x",
            "host-.com/x",
            "host:/x",
            ":5000/x",
            "host:99999/x",
            "host:+80/x",
            "host:8a/x",
            "[::1/x",
            "[::1]x/y",
            "[zz::1]/x",
            "busybox@sha256:123",
            "busybox@sha256",
            "busybox@md5:00",
            "busybox@SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox@",
            "busybox@@x",
            &long_name,
        ] {
            refused(bad);
        }
        let long_tag = format!("x:{}", "t".repeat(129));
        refused(&long_tag);
        assert!(refused("busybox:bad tag").contains("white space"));
        assert!(refused("busybox@sha256:123").contains("64 lowercase hex"));
        assert!(refused("host:99999/x").contains("port"));
    }

    #[test]
    fn a_bare_image_id_is_not_a_reference() {
        let e = refused(HEX);
        assert!(e.contains("image id"), "{e}");
        assert!(is_image_id(HEX));
        assert!(is_image_id(&digest()));
        assert!(!is_image_id(&format!("sha512:{HEX}")));
        assert!(!is_image_id(&HEX.to_uppercase()));
        assert!(!is_image_id(&HEX[1..]));
        assert!(!is_image_id("busybox"));
        assert!(!is_image_id("sha256:"));
        // 63 or 65 hex digits are an ordinary (odd) repository name.
        assert!(Reference::parse(&HEX[1..]).is_ok());
    }

    #[test]
    fn loopback_registries() {
        for host in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5000",
            "[0:0:0:0:0:0:0:1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "128.0.0.1",
            "[::2]:5000",
            "[::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(Reference::parse("localhost:5000/x")
            .unwrap()
            .is_loopback_registry());
        assert!(Reference::parse("127.0.0.1/x")
            .unwrap()
            .is_loopback_registry());
        assert!(Reference::parse("[::1]:5000/x")
            .unwrap()
            .is_loopback_registry());
        assert!(!Reference::parse("busybox").unwrap().is_loopback_registry());
        assert!(
            !Reference::parse("localhost")
                .unwrap()
                .is_loopback_registry(),
            "an image name"
        );
    }
}
