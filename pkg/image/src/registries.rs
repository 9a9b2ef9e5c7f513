//! Registry settings in the containers-registries.conf v2 format that CRI-O
//! and Podman users already know (`/etc/containers/registries.conf`).

use std::path::Path;

use berth_errdefs::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::reference::{is_loopback_host, is_short_name, Reference};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConfig {
    #[serde(default = "default_search")]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

fn default_search() -> Vec<String> {
    vec!["docker.io".to_string()]
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            unqualified_search_registries: default_search(),
            registries: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One place to try for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`
    pub registry: String,
    /// Repository path within that registry.
    pub repository: String,
    pub insecure: bool,
    pub is_mirror: bool,
}

impl RegistryEntry {
    fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.location)
    }

    /// How many characters of `name` the prefix covers, if it matches at a
    /// path boundary (or as a `*.domain` wildcard on the host).
    fn match_len(&self, name: &str) -> Option<usize> {
        let prefix = self.prefix();
        if let Some(domain) = prefix.strip_prefix("*.") {
            let host = name.split('/').next().unwrap_or_default();
            return host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
                .then_some(host.len());
        }
        let rest = name.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@'))
            .then_some(prefix.len())
    }
}

impl RegistriesConfig {
    /// Reads a file; a missing one means the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| e.context(path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::from(e).context(format!("read {}", path.display()))),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: RegistriesConfig =
            toml::from_str(text).map_err(|e| Error::invalid(format!("registries config: {e}")))?;
        for r in &config.registries {
            if r.prefix.is_none() && r.location.is_empty() {
                return Err(Error::invalid(
                    "registries config: a [[registry]] needs a prefix or a location",
                ));
            }
        }
        Ok(config)
    }

    /// The fully qualified names a user's image name may mean, in the order
    /// to try: itself when it names a registry, else one per
    /// `unqualified-search-registries` entry (by default only docker.io).
    pub fn candidates(&self, name: &str) -> Result<Vec<Reference>> {
        if !is_short_name(name) {
            return Ok(vec![Reference::parse(name)?]);
        }
        if self.unqualified_search_registries.is_empty() {
            return Err(Error::invalid(format!(
                "short image name {name:?} and no unqualified-search-registries are configured"
            )));
        }
        // Validate the name as written before combining it with registries.
        Reference::parse(name)?;
        self.unqualified_search_registries
            .iter()
            .map(|registry| Reference::parse(&format!("{registry}/{name}")))
            .collect()
    }

    /// Where to pull `reference` from, in order: mirrors, then the primary.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>> {
        let name = reference.name();
        let best = self
            .registries
            .iter()
            .filter_map(|r| r.match_len(&name).map(|n| (n, r)))
            .max_by_key(|(n, _)| *n);
        let Some((matched, entry)) = best else {
            return Ok(vec![Endpoint {
                insecure: is_loopback_host(&reference.registry),
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                is_mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "registry {} is blocked by the registries config",
                    entry.prefix()
                ),
            ));
        }
        let remainder = &name[matched..];
        let rewrite = |location: &str, insecure: bool, is_mirror: bool| {
            // A wildcard prefix keeps the host: only the location of an
            // exact prefix replaces it.
            let full = if entry.prefix().starts_with("*.") || location.is_empty() {
                name.clone()
            } else {
                format!("{location}{remainder}")
            };
            let (registry, repository) = full.split_once('/').unwrap_or((&full, ""));
            Endpoint {
                insecure: insecure || is_loopback_host(registry),
                registry: registry.to_string(),
                repository: repository.to_string(),
                is_mirror,
            }
        };
        let mut out: Vec<Endpoint> = entry
            .mirrors
            .iter()
            .map(|m| rewrite(&m.location, m.insecure, true))
            .collect();
        out.push(rewrite(&entry.location, entry.insecure, false));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(conf: &str, image: &str) -> Vec<Endpoint> {
        RegistriesConfig::parse(conf)
            .unwrap()
            .endpoints(&Reference::parse(image).unwrap())
            .unwrap()
    }

    #[test]
    fn no_match_pulls_from_the_reference_itself() {
        let e = endpoints("", "busybox");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].registry, "docker.io");
        assert_eq!(e[0].repository, "library/busybox");
        assert!(!e[0].insecure);
        assert!(
            endpoints("", "127.0.0.1:5000/x")[0].insecure,
            "loopback is insecure"
        );
    }

    #[test]
    fn longest_prefix_wins_at_a_path_boundary_with_mirrors_first() {
        let conf = r#"
[[registry]]
prefix = "example.com"
location = "one.example:5000"

[[registry]]
prefix = "example.com/foo"
location = "internal.mirror:5000/bar"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:5001/m"
[[registry.mirror]]
location = "mirror2.example/m2"
"#;
        let e = endpoints(conf, "example.com/foo/app:1");
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].registry.as_str(), e[0].repository.as_str()),
            ("127.0.0.1:5001", "m/app")
        );
        assert!(e[0].insecure && e[0].is_mirror);
        assert_eq!(
            (e[1].registry.as_str(), e[1].repository.as_str()),
            ("mirror2.example", "m2/app")
        );
        assert!(!e[1].insecure);
        assert_eq!(
            (e[2].registry.as_str(), e[2].repository.as_str()),
            ("internal.mirror:5000", "bar/app")
        );
        assert!(e[2].insecure && !e[2].is_mirror);

        let e = endpoints(conf, "example.com/foobar/app");
        assert_eq!(e.len(), 1, "foo does not match foobar");
        assert_eq!(e[0].registry, "one.example:5000");
        assert_eq!(e[0].repository, "foobar/app");
    }

    #[test]
    fn short_names_use_the_search_registries_in_order() {
        let names = |conf: &str, n: &str| -> Vec<String> {
            RegistriesConfig::parse(conf)
                .unwrap()
                .candidates(n)
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(names("", "busybox"), ["docker.io/library/busybox:latest"]);
        assert_eq!(
            names(
                r#"unqualified-search-registries = ["quay.io", "docker.io"]"#,
                "app/x:1"
            ),
            ["quay.io/app/x:1", "docker.io/app/x:1"]
        );
        assert_eq!(
            names(
                r#"unqualified-search-registries = ["quay.io"]"#,
                "127.0.0.1:5000/x"
            ),
            ["127.0.0.1:5000/x:latest"]
        );
        let none = RegistriesConfig::parse("unqualified-search-registries = []").unwrap();
        assert_eq!(
            none.candidates("busybox").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn wildcards_blocked_and_errors() {
        let conf = r#"
[[registry]]
prefix = "*.example.org"
insecure = true
[[registry]]
location = "bad.example"
blocked = true
"#;
        let e = endpoints(conf, "a.example.org/x");
        assert_eq!(e[0].registry, "a.example.org");
        assert!(e[0].insecure);
        assert!(!endpoints(conf, "example.org/x")[0].insecure);

        let err = RegistriesConfig::parse(conf)
            .unwrap()
            .endpoints(&Reference::parse("bad.example/x").unwrap())
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(err.message.contains("bad.example"));

        let err = RegistriesConfig::parse("[[registry]\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        let missing = RegistriesConfig::load(Path::new("/nonexistent/registries.conf")).unwrap();
        assert_eq!(missing, RegistriesConfig::default());
    }
}
