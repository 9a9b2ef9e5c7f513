//! Registry settings in the containers-registries.conf v2 format that CRI-O
//! and Podman users already know (`/etc/containers/registries.conf`):
//!
//! ```toml
//! unqualified-search-registries = ["docker.io"]
//!
//! [[registry]]
//! prefix = "example.com/foo"          # optional; defaults to location
//! location = "internal.mirror:5000/foo"
//! insecure = false
//! blocked = false
//! mirror-by-digest-only = false
//!
//! [[registry.mirror]]
//! location = "127.0.0.1:5000/foo"
//! insecure = true
//! pull-from-mirror = "all"            # or "digest-only", "tag-only"
//! ```
//!
//! The `[[registry]]` whose prefix is the longest match of an image name (at
//! a `/` boundary, or `*.domain` for a host's subdomains) says where to pull
//! it from: its mirrors in order, then its location, each with the matched
//! prefix replaced. A short name (no registry host, e.g. `busybox`) is
//! tried at each of the `unqualified-search-registries` in turn. The older v1
//! tables (`[registries.search]`,
//! `[registries.insecure]`, `[registries.block]`) are read too. Keys this
//! node agent has no use for (`short-name-mode`, `[aliases]`, …) are ignored.

use std::collections::HashSet;
use std::path::Path;

use berth_errdefs::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::reference::{is_loopback_host, is_short_name, Reference};

/// Parsed registries.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistriesConfig {
    /// Registries (`host[:port]`) tried in order for names without a host;
    /// `["docker.io"]` unless the file says otherwise, which is what kubelet
    /// expects of a short name.
    pub unqualified_search_registries: Vec<String>,
    /// The `[[registry]]` tables, validated and normalised.
    pub registries: Vec<Registry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// What image names it applies to: `host[:port][/path]` matched at a
    /// path-component boundary, or `*.domain` for any subdomain's host.
    /// Defaults to `location`.
    pub prefix: String,
    /// What replaces the matched prefix. Empty for a wildcard prefix, which
    /// keeps the image's own host.
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    /// Use the mirrors only for pulls by digest.
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// `pull-from-mirror`: which pulls a mirror serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// One place to try for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`; Docker Hub stays `docker.io`.
    pub registry: String,
    /// Repository path within that registry.
    pub repository: String,
    /// Plain HTTP and unverified TLS are allowed.
    pub insecure: bool,
    pub is_mirror: bool,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            unqualified_search_registries: default_search(),
            registries: Vec::new(),
        }
    }
}

fn default_search() -> Vec<String> {
    vec![crate::reference::DEFAULT_REGISTRY.to_string()]
}

// The file as written, before validation.

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawConfig {
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// The v1 format's tables.
    registries: Option<RawV1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// Where a config came from, for error messages.
fn origin_prefix(origin: Option<&Path>) -> String {
    match origin {
        Some(p) => format!("invalid registries config {}", p.display()),
        None => "invalid registries config".to_string(),
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A location or prefix without trailing slashes; no URL schemes.
fn normalise_location(what: &str, value: &str) -> std::result::Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    if trimmed.contains("://") {
        return Err(format!(
            "{what} {value:?} has a URL scheme; write host[:port][/path] (use insecure = true for plain HTTP)"
        ));
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{what} {value:?} contains white space"));
    }
    Ok(trimmed.to_string())
}

impl Registry {
    fn is_wildcard(&self) -> bool {
        self.prefix.starts_with("*.")
    }

    /// How many bytes of `name` (`registry/repository`) the prefix covers,
    /// if it matches: at a path boundary, or the whole host for a wildcard.
    fn match_len(&self, name: &str) -> Option<usize> {
        if let Some(domain) = self.prefix.strip_prefix('*') {
            // domain is ".example.com"
            let host = name.split('/').next().unwrap_or_default();
            let hostname = host_without_port(host);
            let hit = hostname.len() > domain.len()
                && hostname.is_char_boundary(hostname.len() - domain.len())
                && hostname[hostname.len() - domain.len()..].eq_ignore_ascii_case(domain);
            return hit.then_some(host.len());
        }
        let rest = name.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(self.prefix.len())
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

impl RegistriesConfig {
    /// Reads a registries.conf file; a missing one means the defaults. A
    /// malformed one is `InvalidArgument` naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_from(&text, Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(Error::from(e).context(format!("read registries config {}", path.display())))
            }
        }
    }

    /// Parses registries.conf text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_from(text, None)
    }

    fn parse_from(text: &str, origin: Option<&Path>) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line}, column {column}: ")
                }
                None => String::new(),
            };
            Error::invalid(format!(
                "{}: {at}{}",
                origin_prefix(origin),
                e.message().trim().replace('\n', "; ")
            ))
        })?;
        Self::from_raw(raw)
            .map_err(|why| Error::invalid(format!("{}: {why}", origin_prefix(origin))))
    }

    fn from_raw(raw: RawConfig) -> std::result::Result<Self, String> {
        let mut search = raw.unqualified_search_registries;
        let mut raw_registries = raw.registry;
        if let Some(v1) = raw.registries {
            if search.is_some() || !raw_registries.is_empty() {
                return Err(
                    "mixes the v1 [registries.*] tables with the v2 format; use one".to_string(),
                );
            }
            search = v1.search.map(|l| l.registries);
            let insecure = v1.insecure.map(|l| l.registries).unwrap_or_default();
            let blocked = v1.block.map(|l| l.registries).unwrap_or_default();
            let mut seen = HashSet::new();
            for host in insecure.iter().chain(&blocked) {
                if !seen.insert(host) {
                    continue;
                }
                raw_registries.push(RawRegistry {
                    prefix: None,
                    location: Some(host.clone()),
                    insecure: insecure.contains(host),
                    blocked: blocked.contains(host),
                    mirror_by_digest_only: false,
                    mirror: Vec::new(),
                });
            }
        }

        let mut registries = Vec::with_capacity(raw_registries.len());
        let mut prefixes = HashSet::new();
        for r in raw_registries {
            let registry = Self::registry_from_raw(r)?;
            if !prefixes.insert(registry.prefix.clone()) {
                return Err(format!(
                    "registry prefix {:?} is defined more than once",
                    registry.prefix
                ));
            }
            registries.push(registry);
        }
        let search = search.unwrap_or_else(default_search);
        for host in &search {
            // Exactly a registry host: it must survive as one in a reference.
            let ok = !host.contains('/')
                && Reference::parse(&format!("{host}/x"))
                    .is_ok_and(|r| r.registry == *host || host == "index.docker.io");
            if !ok {
                return Err(format!(
                    "unqualified-search-registries entry {host:?} is not a registry host[:port]"
                ));
            }
        }
        Ok(RegistriesConfig {
            unqualified_search_registries: search,
            registries,
        })
    }

    fn registry_from_raw(r: RawRegistry) -> std::result::Result<Registry, String> {
        let location = normalise_location("location", r.location.as_deref().unwrap_or(""))?;
        let prefix = match r.prefix.as_deref() {
            Some(p) if !p.is_empty() => normalise_location("prefix", p)?,
            _ => location.clone(),
        };
        if prefix.is_empty() {
            return Err("a [[registry]] needs a prefix or a location".to_string());
        }
        let location = if let Some(domain) = prefix.strip_prefix("*.") {
            if domain.is_empty() || domain.contains(['*', '/', ':', '[']) {
                return Err(format!(
                    "wildcard prefix {prefix:?} must be *.domain, with no path or port"
                ));
            }
            if !location.is_empty() {
                return Err(format!(
                    "wildcard prefix {prefix:?} cannot have a location: it keeps the image's own host"
                ));
            }
            location
        } else {
            if prefix.contains('*') {
                return Err(format!(
                    "prefix {prefix:?}: a wildcard is only allowed as a leading \"*.\""
                ));
            }
            let path = prefix.split_once('/').map_or("", |(_, path)| path);
            if path.contains([':', '@']) {
                return Err(format!(
                    "prefix {prefix:?}: prefixes with a tag or digest are not supported"
                ));
            }
            if location.is_empty() {
                prefix.clone()
            } else {
                location
            }
        };
        let mut mirrors = Vec::with_capacity(r.mirror.len());
        for m in r.mirror {
            let location =
                normalise_location("mirror location", m.location.as_deref().unwrap_or(""))?;
            if location.is_empty() {
                return Err(format!("a mirror of registry {prefix:?} has no location"));
            }
            let pull_from_mirror = match m.pull_from_mirror.as_deref() {
                None | Some("") | Some("all") => PullFromMirror::All,
                Some("digest-only") => PullFromMirror::DigestOnly,
                Some("tag-only") => PullFromMirror::TagOnly,
                Some(other) => {
                    return Err(format!(
                        "mirror {location:?}: pull-from-mirror {other:?} is not one of \"all\", \"digest-only\", \"tag-only\""
                    ))
                }
            };
            mirrors.push(Mirror {
                location,
                insecure: m.insecure,
                pull_from_mirror,
            });
        }
        Ok(Registry {
            prefix,
            location,
            insecure: r.insecure,
            blocked: r.blocked,
            mirror_by_digest_only: r.mirror_by_digest_only,
            mirrors,
        })
    }

    /// The fully qualified references `name` stands for, in the order to
    /// try them: a short name (`busybox`, `user/app:1`, no registry host)
    /// at each unqualified-search registry, anything else just itself.
    /// A malformed name is `InvalidArgument` naming it; a short name with no
    /// search registries configured is `FailedPrecondition`.
    pub fn candidates(&self, name: &str) -> Result<Vec<Reference>> {
        let parsed = Reference::parse(name)?;
        if !is_short_name(name) {
            return Ok(vec![parsed]);
        }
        if self.unqualified_search_registries.is_empty() {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "short image name {name:?} cannot be resolved: the registries config lists no unqualified-search-registries"
                ),
            ));
        }
        let mut out: Vec<Reference> = Vec::with_capacity(self.unqualified_search_registries.len());
        for host in &self.unqualified_search_registries {
            let r = Reference::parse(&format!("{host}/{name}"))?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The `[[registry]]` that applies to `name` (`registry/repository`):
    /// the longest match; at equal length an exact prefix beats a wildcard,
    /// and a longer wildcard beats a shorter one.
    fn find(&self, name: &str) -> Option<(&Registry, usize)> {
        self.registries
            .iter()
            .filter_map(|r| r.match_len(name).map(|n| (r, n)))
            .max_by_key(|(r, n)| (*n, !r.is_wildcard(), r.prefix.len()))
    }

    /// Where to pull `reference` (a normalised [`Reference`]) from, in
    /// order: each mirror that serves this kind of pull, then the primary
    /// location. A blocked registry is `PermissionDenied` naming it.
    ///
    /// An endpoint is insecure if its own table says so, if its host is on
    /// loopback (as dockerd has it), or if the `[[registry]]` table that
    /// matches the endpoint's own location says so — so a mirror host
    /// declared insecure once is insecure wherever it is used.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>> {
        let name = reference.name();
        let Some((entry, matched)) = self.find(&name) else {
            return Ok(vec![Endpoint {
                insecure: self.location_insecure(&name),
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                is_mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "pull of {:?} refused: registry {:?} is blocked in the registries config",
                    reference.to_string(),
                    entry.prefix
                ),
            ));
        }
        let remainder = &name[matched..];
        let by_digest = reference.digest.is_some();
        let mut out = Vec::with_capacity(entry.mirrors.len() + 1);
        for m in &entry.mirrors {
            let serves = if entry.mirror_by_digest_only {
                by_digest
            } else {
                match m.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                }
            };
            if serves {
                let full = format!("{}{remainder}", m.location);
                out.push(self.endpoint(&name, full, m.insecure, true)?);
            }
        }
        let primary = if entry.location.is_empty() {
            name.clone()
        } else {
            format!("{}{remainder}", entry.location)
        };
        out.push(self.endpoint(&name, primary, entry.insecure, false)?);
        Ok(out)
    }

    fn endpoint(
        &self,
        name: &str,
        full: String,
        insecure: bool,
        is_mirror: bool,
    ) -> Result<Endpoint> {
        let (registry, repository) = match full.split_once('/') {
            Some((registry, repository)) if !registry.is_empty() && !repository.is_empty() => {
                (registry, repository)
            }
            _ => {
                return Err(Error::invalid(format!(
                    "registries config rewrites {name:?} to {full:?}, which names no repository"
                )))
            }
        };
        Ok(Endpoint {
            insecure: insecure || self.location_insecure(&full),
            registry: registry.to_string(),
            repository: repository.to_string(),
            is_mirror,
        })
    }

    /// Loopback, or declared insecure by the table matching this location.
    fn location_insecure(&self, full: &str) -> bool {
        let host = full.split('/').next().unwrap_or_default();
        is_loopback_host(host) || self.find(full).is_some_and(|(r, _)| r.insecure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn config(text: &str) -> RegistriesConfig {
        RegistriesConfig::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn endpoints(conf: &str, image: &str) -> Vec<Endpoint> {
        config(conf)
            .endpoints(&Reference::parse(image).unwrap())
            .unwrap_or_else(|e| panic!("{image}: {e}"))
    }

    /// `(registry/repository, insecure, is_mirror)` of each endpoint.
    fn summary(conf: &str, image: &str) -> Vec<(String, bool, bool)> {
        endpoints(conf, image)
            .into_iter()
            .map(|e| {
                (
                    format!("{}/{}", e.registry, e.repository),
                    e.insecure,
                    e.is_mirror,
                )
            })
            .collect()
    }

    fn one(s: &str, insecure: bool, is_mirror: bool) -> (String, bool, bool) {
        (s.to_string(), insecure, is_mirror)
    }

    fn parse_error(text: &str) -> String {
        let e = RegistriesConfig::parse(text).expect_err(text);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.starts_with("invalid registries config: "), "{e}");
        e.message
    }

    #[test]
    fn defaults() {
        let d = RegistriesConfig::default();
        assert_eq!(d.unqualified_search_registries, vec!["docker.io"]);
        assert!(d.registries.is_empty());
        assert_eq!(config(""), d);
        assert_eq!(config("# only a comment\n"), d);
        let c = config("unqualified-search-registries = []");
        assert!(c.unqualified_search_registries.is_empty());
        let c = config(r#"unqualified-search-registries = ["quay.io", "docker.io"]"#);
        assert_eq!(
            c.unqualified_search_registries,
            vec!["quay.io", "docker.io"]
        );
    }

    fn candidates(conf: &str, name: &str) -> Vec<String> {
        config(conf)
            .candidates(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(Reference::to_string)
            .collect()
    }

    #[test]
    fn short_names_expand_to_each_search_registry() {
        assert_eq!(
            candidates("", "busybox"),
            ["docker.io/library/busybox:latest"]
        );
        assert_eq!(candidates("", "user/app:1"), ["docker.io/user/app:1"]);
        let conf = r#"unqualified-search-registries = ["127.0.0.1:1", "quay.io", "docker.io", "index.docker.io"]"#;
        assert_eq!(
            candidates(conf, "busybox"),
            [
                "127.0.0.1:1/busybox:latest",
                "quay.io/busybox:latest",
                "docker.io/library/busybox:latest",
            ],
            "in order, library/ only on Docker Hub, duplicates dropped"
        );
        assert_eq!(
            candidates(conf, &format!("org/app@{DIGEST}")),
            [
                format!("127.0.0.1:1/org/app@{DIGEST}"),
                format!("quay.io/org/app@{DIGEST}"),
                format!("docker.io/org/app@{DIGEST}"),
            ]
        );
    }

    #[test]
    fn qualified_names_are_their_own_only_candidate() {
        let conf = r#"unqualified-search-registries = ["quay.io"]"#;
        for (name, want) in [
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:1", "localhost:5000/x:1"),
            ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ] {
            assert_eq!(candidates(conf, name), [want], "{name}");
        }
    }

    #[test]
    fn candidates_refuse_bad_names_and_unresolvable_short_names() {
        let c = config(r#"unqualified-search-registries = ["quay.io"]"#);
        for bad in ["", "UPPER/case", "busybox:bad tag", "busybox@sha256:123"] {
            let e = c.candidates(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(&format!("{bad:?}")), "names it: {e}");
        }
        let e = config("unqualified-search-registries = []")
            .candidates("busybox")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains("\"busybox\""), "{e}");
        // Qualified names need no search list.
        assert_eq!(
            candidates("unqualified-search-registries = []", "quay.io/x").len(),
            1
        );
    }

    #[test]
    fn search_registries_must_be_hosts() {
        // A single-label host would read as a Docker Hub namespace.
        for bad in ["quay.io/org", "Not A Host", "host:port", "", "registry"] {
            let e = parse_error(&format!("unqualified-search-registries = [{bad:?}]"));
            assert!(e.contains("unqualified-search-registries"), "{bad}: {e}");
        }
        config(
            r#"unqualified-search-registries = ["localhost:5000", "[::1]:5000", "registry:5000"]"#,
        );
    }

    #[test]
    fn parses_the_documented_example() {
        let c = config(
            r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/foo"
location = "internal.mirror:5000/foo"
insecure = false
blocked = false

[[registry.mirror]]
location = "127.0.0.1:5000/foo"
insecure = true

[aliases]
"busybox" = "docker.io/library/busybox"
"#,
        );
        assert_eq!(
            c.registries,
            vec![Registry {
                prefix: "example.com/foo".into(),
                location: "internal.mirror:5000/foo".into(),
                insecure: false,
                blocked: false,
                mirror_by_digest_only: false,
                mirrors: vec![Mirror {
                    location: "127.0.0.1:5000/foo".into(),
                    insecure: true,
                    pull_from_mirror: PullFromMirror::All,
                }],
            }]
        );
        assert_eq!(
            summary("", "busybox"),
            vec![one("docker.io/library/busybox", false, false)]
        );
    }

    #[test]
    fn no_match_pulls_from_the_reference_itself() {
        let conf = r#"
[[registry]]
location = "quay.io"
"#;
        assert_eq!(
            summary(conf, "busybox"),
            vec![one("docker.io/library/busybox", false, false)]
        );
        assert_eq!(
            summary("", "ghcr.io/org/app:1"),
            vec![one("ghcr.io/org/app", false, false)]
        );
    }

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        for image in [
            "127.0.0.1:5000/x",
            "localhost:5000/x",
            "localhost/x",
            "[::1]:5000/x",
            "127.9.9.9/x",
        ] {
            let e = endpoints("", image);
            assert_eq!(e.len(), 1);
            assert!(e[0].insecure, "{image}");
        }
        assert!(!endpoints("", "10.0.0.1:5000/x")[0].insecure);
        // Also when a table rewrites to loopback.
        let conf = r#"
[[registry]]
prefix = "example.com"
location = "localhost:5000/example"
"#;
        assert_eq!(
            summary(conf, "example.com/app"),
            vec![one("localhost:5000/example/app", true, false)]
        );
    }

    #[test]
    fn prefix_defaults_to_location_and_location_to_prefix() {
        let conf = r#"
[[registry]]
location = "quay.io/org"
insecure = true

[[registry]]
prefix = "ghcr.io"
insecure = true
"#;
        let c = config(conf);
        assert_eq!(c.registries[0].prefix, "quay.io/org");
        assert_eq!(c.registries[1].location, "ghcr.io");
        assert_eq!(
            summary(conf, "quay.io/org/app"),
            vec![one("quay.io/org/app", true, false)]
        );
        assert_eq!(
            summary(conf, "quay.io/other/app"),
            vec![one("quay.io/other/app", false, false)]
        );
        assert_eq!(
            summary(conf, "ghcr.io/a/b"),
            vec![one("ghcr.io/a/b", true, false)]
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let conf = r#"
[[registry]]
prefix = "example.com"
location = "one.example:5000"

[[registry]]
prefix = "example.com/foo/bar"
location = "three.example/x"

[[registry]]
prefix = "example.com/foo"
location = "two.example/y"
"#;
        assert_eq!(
            summary(conf, "example.com/app"),
            vec![one("one.example:5000/app", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/foo/app"),
            vec![one("two.example/y/app", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/foo/bar"),
            vec![one("three.example/x", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/foo/bar/baz:1"),
            vec![one("three.example/x/baz", false, false)]
        );
    }

    #[test]
    fn prefixes_match_only_at_a_path_component_boundary() {
        let conf = r#"
[[registry]]
prefix = "example.com/foo"
location = "mirror.example/foo"
"#;
        assert_eq!(
            summary(conf, "example.com/foo"),
            vec![one("mirror.example/foo", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/foo/x"),
            vec![one("mirror.example/foo/x", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/foobar"),
            vec![one("example.com/foobar", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/fo"),
            vec![one("example.com/fo", false, false)]
        );
        // A host prefix does not match a longer host or a port of it.
        let conf = r#"
[[registry]]
prefix = "example.com"
location = "mirror.example"
"#;
        assert_eq!(
            summary(conf, "example.com.evil/x"),
            vec![one("example.com.evil/x", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com:5000/x"),
            vec![one("example.com:5000/x", false, false)]
        );
        assert_eq!(
            summary(conf, "example.com/x"),
            vec![one("mirror.example/x", false, false)]
        );
    }

    #[test]
    fn docker_hub_prefixes_use_the_normalised_name() {
        let conf = r#"
[[registry]]
prefix = "docker.io/library"
location = "hub-cache.internal/library"
"#;
        assert_eq!(
            summary(conf, "busybox:1"),
            vec![one("hub-cache.internal/library/busybox", false, false)]
        );
        assert_eq!(
            summary(conf, "user/img"),
            vec![one("docker.io/user/img", false, false)]
        );
    }

    #[test]
    fn wildcard_prefixes_match_subdomains() {
        let conf = r#"
[[registry]]
prefix = "*.example.org"
insecure = true

[[registry.mirror]]
location = "cache.internal/wild"
"#;
        assert_eq!(
            summary(conf, "a.example.org/x"),
            vec![
                one("cache.internal/wild/x", false, true),
                one("a.example.org/x", true, false)
            ]
        );
        assert_eq!(
            summary(conf, "b.a.example.org:5000/x/y")[1],
            one("b.a.example.org:5000/x/y", true, false)
        );
        assert_eq!(
            summary(conf, "B.Example.ORG/x")[1],
            one("B.Example.ORG/x", true, false)
        );
        // Not the domain itself, nor look-alikes.
        assert_eq!(
            summary(conf, "example.org/x"),
            vec![one("example.org/x", false, false)]
        );
        assert_eq!(
            summary(conf, "badexample.org/x"),
            vec![one("badexample.org/x", false, false)]
        );
        assert_eq!(
            summary(conf, "a.example.org.evil/x"),
            vec![one("a.example.org.evil/x", false, false)]
        );
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let conf = r#"
[[registry]]
prefix = "*.example.org"
blocked = true

[[registry]]
prefix = "*.b.example.org"
insecure = true

[[registry]]
location = "a.example.org"
"#;
        assert_eq!(
            summary(conf, "a.example.org/x"),
            vec![one("a.example.org/x", false, false)]
        );
        assert_eq!(
            summary(conf, "c.b.example.org/x"),
            vec![one("c.b.example.org/x", true, false)]
        );
        let e = config(conf)
            .endpoints(&Reference::parse("z.example.org/x").unwrap())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
    }

    #[test]
    fn mirrors_come_first_in_order_then_the_primary() {
        let conf = r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.mirror:5000/bar"
insecure = true

[[registry.mirror]]
location = "127.0.0.1:5001/m"

[[registry.mirror]]
location = "mirror2.example/m2/"

[[registry.mirror]]
location = "mirror3.example"
insecure = true
"#;
        assert_eq!(
            summary(conf, "example.com/foo/app:1"),
            vec![
                one("127.0.0.1:5001/m/app", true, true),
                one("mirror2.example/m2/app", false, true),
                one("mirror3.example/app", true, true),
                one("internal.mirror:5000/bar/app", true, false),
            ]
        );
    }

    #[test]
    fn insecure_is_per_endpoint_and_inherited_from_the_location_table() {
        let conf = r#"
[[registry]]
location = "plain.mirror:5000"
insecure = true

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "plain.mirror:5000/hub"

[[registry.mirror]]
location = "tls.mirror/hub"

[[registry]]
prefix = "secure.example"
location = "plain.mirror:5000/secure"
"#;
        // A mirror does not inherit the primary's setting, but does inherit
        // the setting of the table its own location falls under.
        assert_eq!(
            summary(conf, "busybox"),
            vec![
                one("plain.mirror:5000/hub/library/busybox", true, true),
                one("tls.mirror/hub/library/busybox", false, true),
                one("docker.io/library/busybox", false, false),
            ]
        );
        assert_eq!(
            summary(conf, "secure.example/app"),
            vec![one("plain.mirror:5000/secure/app", true, false)]
        );
        // The primary inherits its table's flag; its mirrors keep their own.
        let conf = r#"
[[registry]]
location = "insecure.example"
insecure = true

[[registry.mirror]]
location = "tls.mirror/x"
"#;
        assert_eq!(
            summary(conf, "insecure.example/app"),
            vec![
                one("tls.mirror/x/app", false, true),
                one("insecure.example/app", true, false)
            ]
        );
    }

    #[test]
    fn mirrors_by_digest_or_tag_only() {
        let conf = r#"
[[registry]]
location = "a.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.example"

[[registry]]
location = "b.example"
[[registry.mirror]]
location = "digest.example"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.example"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.example"
pull-from-mirror = "all"
"#;
        let by_digest = format!("a.example/x@{DIGEST}");
        assert_eq!(summary(conf, "a.example/x:1").len(), 1);
        assert_eq!(
            summary(conf, &by_digest)[0],
            one("m.example/x", false, true)
        );
        let names = |image: &str| {
            endpoints(conf, image)
                .into_iter()
                .map(|e| e.registry)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("b.example/x:1"),
            ["tag.example", "all.example", "b.example"]
        );
        assert_eq!(
            names(&format!("b.example/x@{DIGEST}")),
            ["digest.example", "all.example", "b.example"]
        );
        // name:tag@digest pulls by digest.
        assert_eq!(
            names(&format!("b.example/x:1@{DIGEST}")),
            ["digest.example", "all.example", "b.example"]
        );
    }

    #[test]
    fn blocked_registries_are_refused_by_name() {
        let conf = r#"
[[registry]]
location = "bad.example"
blocked = true

[[registry]]
prefix = "bad.example/allowed"
location = "bad.example/allowed"

[[registry.mirror]]
location = "mirror.example"
"#;
        let c = config(conf);
        let e = c
            .endpoints(&Reference::parse("bad.example/x").unwrap())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert_eq!(
            e.message,
            "pull of \"bad.example/x:latest\" refused: registry \"bad.example\" is blocked in the registries config"
        );
        // A longer, unblocked prefix wins.
        assert_eq!(
            summary(conf, "bad.example/allowed/x").last().unwrap(),
            &one("bad.example/allowed/x", false, false)
        );
        assert_eq!(summary(conf, "bad.example.org/x").len(), 1);
    }

    #[test]
    fn a_rewrite_must_leave_a_repository() {
        let conf = r#"
[[registry]]
prefix = "example.com/app"
location = "mirror.example"
"#;
        let e = config(conf)
            .endpoints(&Reference::parse("example.com/app").unwrap())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("example.com/app"), "{e}");
        assert_eq!(
            summary(conf, "example.com/app/x"),
            vec![one("mirror.example/x", false, false)]
        );
    }

    #[test]
    fn the_v1_format_is_read() {
        let conf = r#"
[registries.search]
registries = ["quay.io", "docker.io"]

[registries.insecure]
registries = ["plain.example:5000", "both.example"]

[registries.block]
registries = ["bad.example", "both.example"]
"#;
        let c = config(conf);
        assert_eq!(
            c.unqualified_search_registries,
            vec!["quay.io", "docker.io"]
        );
        assert_eq!(c.registries.len(), 3);
        assert_eq!(
            summary(conf, "plain.example:5000/x"),
            vec![one("plain.example:5000/x", true, false)]
        );
        for blocked in ["bad.example/x", "both.example/x"] {
            let e = c
                .endpoints(&Reference::parse(blocked).unwrap())
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{blocked}");
        }
        let e = parse_error(
            "unqualified-search-registries = []\n[registries.search]\nregistries = []\n",
        );
        assert!(e.contains("v1"), "{e}");
    }

    #[test]
    fn invalid_settings_are_refused_with_the_reason() {
        for (text, why) in [
            ("[[registry]]\ninsecure = true\n", "needs a prefix or a location"),
            ("[[registry]]\nlocation = \"https://quay.io\"\n", "URL scheme"),
            ("[[registry]]\nprefix = \"*.example.com\"\nlocation = \"x.example\"\n", "cannot have a location"),
            ("[[registry]]\nprefix = \"*.\"\n", "must be *.domain"),
            ("[[registry]]\nprefix = \"*.example.com/foo\"\n", "must be *.domain"),
            ("[[registry]]\nprefix = \"foo.*.com\"\nlocation = \"x\"\n", "leading"),
            ("[[registry]]\nprefix = \"example.com/foo:tag\"\nlocation = \"x/y\"\n", "tag or digest"),
            ("[[registry]]\nlocation = \"a.example\"\n[[registry]]\nlocation = \"a.example/\"\n", "more than once"),
            ("[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\ninsecure = true\n", "no location"),
            (
                "[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
                "pull-from-mirror",
            ),
            ("[[registry]]\nlocation = \"a b\"\n", "white space"),
        ] {
            let e = parse_error(text);
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // Ports are fine in prefixes.
        config("[[registry]]\nprefix = \"example.com:5000/foo\"\nlocation = \"x.example/foo\"\n");
    }

    #[test]
    fn bad_toml_names_the_file_line_and_problem() {
        let e = parse_error("[[registry]\nlocation = \"x\"\n");
        assert!(e.contains("line 1"), "{e}");
        let e = parse_error("[[registry]]\ninsecure = \"yes\"\n");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("bool") || e.contains("boolean"), "{e}");
        assert!(!e.contains('\n'), "one line: {e:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(
            &path,
            "unqualified-search-registries = [\"docker.io\"]\n[[registry]\n",
        )
        .unwrap();
        let e = RegistriesConfig::load(&path).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.starts_with(&format!(
                "invalid registries config {}: line 2",
                path.display()
            )),
            "{e}"
        );

        std::fs::write(&path, "[[registry]]\nlocation = \"http://x\"\n").unwrap();
        let e = RegistriesConfig::load(&path).unwrap_err();
        assert!(e.message.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_a_missing_file_means_defaults() {
        let missing = RegistriesConfig::load(Path::new("/nonexistent/registries.conf")).unwrap();
        assert_eq!(missing, RegistriesConfig::default());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, "[[registry]]\nlocation = \"localhost:5000\"\n").unwrap();
        let c = RegistriesConfig::load(&path).unwrap();
        assert_eq!(c.registries[0].prefix, "localhost:5000");

        // Unreadable (a directory) is an error naming the path, not defaults.
        let e = RegistriesConfig::load(dir.path()).unwrap_err();
        assert!(e.message.contains(&dir.path().display().to_string()), "{e}");
    }
}
