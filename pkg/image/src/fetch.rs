//! Talking to registries over the OCI distribution protocol, through the
//! oci-client crate, and turning its errors into berth error kinds that name
//! the registry and the reference.

use std::fmt;
use std::time::Duration;

use berth_errdefs::{Error, ErrorKind, Result};
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::manifest::ACCEPTED;
use crate::registries::Endpoint;

/// A credential that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// A registry bearer token, sent as is.
    Bearer(Secret),
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_string())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.expose().to_string()),
        }
    }
}

/// Shared HTTP clients for anonymous pulls. Authenticated pulls get a client
/// of their own so a token fetched with one pod's credentials is never
/// reused for another pod's anonymous pull (oci-client caches tokens per
/// registry inside a client).
pub struct Clients {
    plain_http: Client,
    https: Client,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            plain_http: new_client(true),
            https: new_client(false),
        }
    }
}

fn new_client(insecure: bool) -> Client {
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Index entries are chosen by berth itself (see manifest.rs).
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    })
}

impl Clients {
    /// A source for one reference at one endpoint.
    pub fn source(&self, endpoint: &Endpoint, tag: Option<&str>, creds: &Credentials) -> Source {
        let client = match creds {
            Credentials::Anonymous if endpoint.insecure => self.plain_http.clone(),
            Credentials::Anonymous => self.https.clone(),
            _ => new_client(endpoint.insecure),
        };
        let reference = oci_client::Reference::with_tag(
            endpoint.registry.clone(),
            endpoint.repository.clone(),
            tag.unwrap_or("latest").to_string(),
        );
        Source {
            client,
            reference,
            auth: creds.to_auth(),
            registry: endpoint.registry.clone(),
        }
    }
}

/// One repository at one registry endpoint.
pub struct Source {
    client: Client,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    registry: String,
}

impl Source {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Fetches a manifest by tag (`None`) or by digest; the digest of what
    /// arrived is checked by the client against the one asked for.
    pub async fn manifest(&self, digest: Option<&str>) -> Result<(bytes::Bytes, String)> {
        let r = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        self.client
            .pull_manifest_raw(&r, &self.auth, ACCEPTED)
            .await
            .map_err(|e| self.error(e, &r.whole()))
    }

    /// Fetches a small blob (a config) whole, verifying its digest.
    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.client
            .pull_blob(&self.reference, digest, &mut out)
            .await
            .map_err(|e| self.error(e, digest))?;
        Ok(out)
    }

    /// Streams a blob; the stream fails at its end if the digest is wrong.
    pub async fn blob_stream(&self, digest: &str) -> Result<SizedStream> {
        self.client
            .pull_blob_stream(&self.reference, digest)
            .await
            .map_err(|e| self.error(e, digest))
    }

    /// Maps a client error to a kind, naming the registry and the object.
    pub fn error(&self, e: OciDistributionError, what: &str) -> Error {
        map_error(e, &self.registry, what)
    }
}

pub fn map_error(e: OciDistributionError, registry: &str, what: &str) -> Error {
    use OciDistributionError as E;
    let (kind, detail) = match &e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => (
            ErrorKind::Unauthenticated,
            format!("registry {registry} denied access (authentication required or credentials rejected)"),
        ),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let kind = if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                ErrorKind::NotFound
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                ErrorKind::Unauthenticated
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                ErrorKind::PermissionDenied
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                ErrorKind::ResourceExhausted
            } else {
                ErrorKind::InvalidArgument
            };
            let msgs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            (kind, format!("registry {registry} answered {}", msgs.join("; ")))
        }
        E::ImageManifestNotFoundError(m) => {
            (ErrorKind::NotFound, format!("registry {registry}: {m}"))
        }
        E::ServerError { code, message, .. } => {
            let kind = match code {
                404 => ErrorKind::NotFound,
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                429 => ErrorKind::ResourceExhausted,
                _ => ErrorKind::Unavailable,
            };
            (
                kind,
                format!("registry {registry} answered HTTP {code}: {}", message.trim()),
            )
        }
        E::RequestError(re) => {
            let kind = if re.is_timeout() {
                ErrorKind::DeadlineExceeded
            } else {
                ErrorKind::Unavailable
            };
            (kind, format!("registry {registry} is unreachable: {}", error_chain(re)))
        }
        E::DigestError(d) => (
            ErrorKind::InvalidArgument,
            format!("content from registry {registry} failed verification: {d}"),
        ),
        E::IoError(io) => (
            ErrorKind::Unavailable,
            format!("reading from registry {registry}: {io}"),
        ),
        other => (ErrorKind::Internal, format!("registry {registry}: {other}")),
    };
    Error::new(kind, format!("{what}: {detail}"))
}

/// reqwest hides the cause (connection refused, dns) in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn unauthorized_maps_to_unauthenticated_naming_the_registry() {
        let e = map_error(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            "127.0.0.1:5000",
            "busybox",
        );
        assert_eq!(e.kind, ErrorKind::Unauthenticated);
        assert!(e.message.contains("127.0.0.1:5000"));
    }
}
