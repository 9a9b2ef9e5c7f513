//! The few fields of OCI and Docker v2 schema 2 manifests, indexes and image
//! configs that a runtime needs. The raw bytes are kept as pulled; these types
//! only read them.

use berth_errdefs::{Error, Result};
use serde::Deserialize;

use crate::limits::{cut, quote};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest kind a pull accepts, for the registry's `Accept` header.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux(architecture: &str) -> Self {
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// The platform of this node, in OCI's architecture names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::linux(arch)
    }

    /// Whether an index entry can run here; a wanted variant must match, an
    /// unspecified one matches any.
    fn accepts(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && match (&self.variant, &candidate.variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest or an index, told apart by media type or by shape.
#[derive(Debug)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<Descriptor>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let m: AnyManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed manifest: {}", cut(&e.to_string()))))?;
        if m.schema_version != 2 {
            return Err(Error::invalid(format!(
                "unsupported manifest schema version {}",
                m.schema_version
            )));
        }
        let is_index = matches!(m.media_type.as_deref(), Some(OCI_INDEX) | Some(DOCKER_LIST))
            || (m.media_type.is_none() && m.manifests.is_some());
        if is_index {
            return Ok(Manifest::Index(m.manifests.unwrap_or_default()));
        }
        match (m.config, m.layers) {
            (Some(config), Some(layers)) => Ok(Manifest::Image(ImageManifest { config, layers })),
            _ => Err(Error::invalid("malformed manifest: no config or layers")),
        }
    }
}

/// Picks the index entry for `want`, preferring an exact variant match.
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates = entries
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.accepts(p)));
    let mut first = None;
    for d in candidates {
        if d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref() {
            return Some(d);
        }
        first.get_or_insert(d);
    }
    first
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(media_type: &str) -> Result<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(Error::invalid(format!(
                "unsupported layer media type {}",
                quote(other.as_bytes())
            ))),
        }
    }
}

/// The parts of an image config a runtime reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed image config: {}", cut(&e.to_string()))))
    }

    pub fn user(&self) -> &str {
        self.config
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .unwrap_or("")
    }
}

/// Checks the `algorithm:hex` form of a digest and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::invalid(format!(
            "unsupported digest {}: only sha256",
            quote(digest.as_bytes())
        ))
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(format!(
            "malformed digest {}",
            quote(digest.as_bytes())
        )));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_picks_amd64() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
           {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"architecture":"arm64","os":"linux"}},
           {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let Manifest::Index(entries) = Manifest::parse(idx).unwrap() else {
            panic!("not an index")
        };
        let d = select_platform(&entries, &Platform::linux("amd64")).unwrap();
        assert_eq!(d.digest, "sha256:bb");
        assert!(select_platform(&entries, &Platform::linux("s390x")).is_none());
    }

    #[test]
    fn parses_docker_v2_manifest() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:cc","size":3},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:dd","size":4}]}"#;
        let Manifest::Image(m) = Manifest::parse(m).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(
            Compression::of_media_type(&m.layers[0].media_type).unwrap(),
            Compression::Gzip
        );
    }

    #[test]
    fn remote_text_in_parse_errors_is_cut_short() {
        let long = "x".repeat(1 << 20);
        let m = format!(r#"{{"schemaVersion":"{long}"}}"#);
        let e = Manifest::parse(m.as_bytes()).unwrap_err();
        assert!(e.message.len() < 1024, "{}", e.message.len());
        let c = format!(r#"{{"rootfs":{{"diff_ids":"{long}"}}}}"#);
        assert!(ImageConfig::parse(c.as_bytes()).unwrap_err().message.len() < 1024);
        let e = Compression::of_media_type(&long).unwrap_err();
        assert!(e.message.len() < 1024, "{}", e.message.len());
        assert!(digest_hex(&long).unwrap_err().message.len() < 1024);
        assert!(
            digest_hex(&format!("sha256:{long}"))
                .unwrap_err()
                .message
                .len()
                < 1024
        );
    }

    #[test]
    fn rejects_schema1_and_bad_digests() {
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#).is_err());
        assert!(digest_hex("sha256:xyz").is_err());
        assert!(digest_hex("md5:00").is_err());
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
