//! Talking to registries over the OCI distribution protocol, with a small
//! client of berth's own on reqwest, built so that a hostile registry cannot
//! make berth buffer, follow or repeat more than it should:
//! - every body is read with a bound, checked against Content-Length before
//!   the first byte: manifests and configs up to
//!   [`Limits::max_metadata_bytes`], blobs up to their descriptor's size,
//!   error bodies and tokens to small fixed caps;
//! - no redirect is followed except for blob downloads (registries send
//!   those to storage), at most [`Limits::max_blob_redirects`] of them, and
//!   credentials go to the registry itself only, never to where it points;
//! - remote text in errors is quoted and cut short ([`quote`]).
//!
//! Errors name the object and the registry; their kinds: limits exceeded
//! are `ResourceExhausted`, content that contradicts its descriptor or a
//! refused redirect `InvalidArgument`, and the registry's own answers map
//! by status and OCI error code.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use berth_errdefs::{Error, ErrorKind, Result};
use bytes::Bytes;
use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::limits::{cut, quote, quote_part, show_bytes, Limits};
use crate::manifest::{Descriptor, ACCEPTED};
use crate::registries::Endpoint;

/// Error bodies are read this far: plenty for an OCI error envelope.
const ERROR_BODY_LIMIT: u64 = 16 * 1024;
/// Token server answers are read this far; real tokens are a few KiB.
const TOKEN_LIMIT: u64 = 256 * 1024;
/// What the limit on manifests and configs is called in errors.
const METADATA_LIMIT: &str = "limit for manifests, indexes and configs";

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

/// The HTTP client every pull shares (its connection pool). Credentials and
/// tokens live in each [`Source`], so one pod's are never used for another.
pub struct Clients {
    http: reqwest::Client,
}

impl Clients {
    pub fn new() -> Result<Clients> {
        let http = reqwest::Client::builder()
            // Redirects are followed by hand, for blobs only.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("registry HTTP client: {e}")))?;
        Ok(Clients { http })
    }

    /// A source for one reference at one endpoint.
    pub fn source(
        &self,
        endpoint: &Endpoint,
        tag: Option<&str>,
        creds: &Credentials,
        limits: Limits,
    ) -> Result<Source> {
        let scheme = if endpoint.insecure { "http" } else { "https" };
        // Docker Hub's API is not served at its name.
        let host = match endpoint.registry.as_str() {
            "docker.io" => "registry-1.docker.io",
            other => other,
        };
        let base = Url::parse(&format!("{scheme}://{host}/")).map_err(|e| {
            Error::invalid(format!(
                "registry {:?} is not a host: {e}",
                endpoint.registry
            ))
        })?;
        let authorization = match creds {
            Credentials::Bearer(token) => Some(sensitive(&format!("Bearer {}", token.expose()))?),
            _ => None,
        };
        Ok(Source {
            http: self.http.clone(),
            base,
            registry: endpoint.registry.clone(),
            repository: endpoint.repository.clone(),
            tag: tag.unwrap_or("latest").to_string(),
            creds: creds.clone(),
            insecure: endpoint.insecure,
            limits,
            actions: "pull",
            authorization: Mutex::new(authorization),
        })
    }
}

/// A request body for a registry: bytes of a type, and for an upload's
/// chunk the range they fill.
pub(crate) struct Payload<'a> {
    pub content_type: &'a str,
    pub bytes: Bytes,
    pub range: Option<String>,
}

/// One repository at one registry endpoint, with the credentials of one pull.
pub struct Source {
    http: reqwest::Client,
    /// `scheme://host[:port]/` of the registry's API.
    base: Url,
    registry: String,
    repository: String,
    tag: String,
    creds: Credentials,
    insecure: bool,
    limits: Limits,
    /// What to send the registry as `Authorization`, once known.
    authorization: Mutex<Option<HeaderValue>>,
    /// The token scope's actions: `pull`, or `pull,push` for a push.
    actions: &'static str,
}

impl Source {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The same source, asking token servers for push access too.
    pub fn for_push(mut self) -> Source {
        self.actions = "pull,push";
        self
    }

    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    /// Fetches a manifest or index by tag (`None`) or by digest, and
    /// returns it with its digest, verified against the one asked for (or
    /// else the one the registry announced). `declared_size`, from an index
    /// entry, is checked before the download and against what arrived.
    pub async fn manifest(
        &self,
        digest: Option<&str>,
        declared_size: Option<u64>,
    ) -> Result<(Vec<u8>, String)> {
        let name = match digest {
            Some(d) => format!("{}/{}@{d}", self.registry, self.repository),
            None => format!("{}/{}:{}", self.registry, self.repository, self.tag),
        };
        let what = format!("manifest {name}");
        let limit = self.limits.max_metadata_bytes;
        if let Some(size) = declared_size {
            check_size(&what, size, limit, METADATA_LIMIT)?;
        }
        let url = self.url(&format!("manifests/{}", digest.unwrap_or(&self.tag)))?;
        let mut resp = self.get(&url, Some(&ACCEPTED.join(", ")), &what).await?;
        if resp.status().is_redirection() {
            return Err(self.refused_redirect(&resp, &what));
        }
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(resp, &self.who(&url), &what).await);
        }
        let announced = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string);
        let body = self.read_whole(&mut resp, &url, &what, limit).await?;
        let actual = sha256_digest(&body);
        if let Some(want) = digest.map(str::to_string).or(announced) {
            if want != actual {
                return Err(Error::invalid(format!(
                    "{what}: content from registry {} does not match its digest: expected {}, got {actual}",
                    self.registry,
                    quote(want.as_bytes())
                )));
            }
        }
        if let Some(size) = declared_size.filter(|&s| s != body.len() as u64) {
            return Err(self.wrong_length(&what, body.len() as u64, size));
        }
        Ok((body, actual))
    }

    /// Fetches an image config whole (it is small), verified against its
    /// descriptor.
    pub async fn config(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let what = format!("image config {}", desc.digest);
        check_size(
            &what,
            desc.size,
            self.limits.max_metadata_bytes,
            METADATA_LIMIT,
        )?;
        let (mut resp, url) = self.blob_response(&desc.digest, &what).await?;
        let body = match read_bounded(&mut resp, desc.size).await {
            Ok(b) => b,
            Err(Bounded::TooLong) => {
                return Err(longer_than_descriptor(&what, &self.who(&url), desc.size))
            }
            Err(Bounded::Failed(e)) => return Err(unreachable_error(e, &self.who(&url), &what)),
        };
        if body.len() as u64 != desc.size {
            return Err(self.wrong_length(&what, body.len() as u64, desc.size));
        }
        let actual = sha256_digest(&body);
        if actual != desc.digest {
            return Err(Error::invalid(format!(
                "{what}: content from registry {} does not match its digest (got {actual})",
                self.registry
            )));
        }
        Ok(body)
    }

    /// Starts the download of a layer blob; the stream refuses to run past
    /// the descriptor's size. Its digest is for the reader to verify.
    pub async fn layer(&self, desc: &Descriptor) -> Result<BlobStream> {
        let what = format!("layer {}", desc.digest);
        let (resp, url) = self.blob_response(&desc.digest, &what).await?;
        if resp.content_length().is_some_and(|n| n > desc.size) {
            return Err(longer_than_descriptor(&what, &self.who(&url), desc.size));
        }
        Ok(BlobStream {
            resp,
            remaining: desc.size,
            size: desc.size,
            what,
            from: self.who(&url),
        })
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        let s = format!("{}v2/{}/{path}", self.base, self.repository);
        Url::parse(&s).map_err(|e| Error::invalid(format!("bad registry URL {s:?}: {e}")))
    }

    /// GETs `url`, as [`Source::send`] does.
    async fn get(&self, url: &Url, accept: Option<&str>, what: &str) -> Result<Response> {
        self.send(Method::GET, url, accept, None, what).await
    }

    /// Sends one request, with `body` (its content type and bytes) if any.
    /// Credentials go to the registry itself only (same scheme, host and
    /// port); a 401 from it is answered once, through its challenge.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        accept: Option<&str>,
        body: Option<Payload<'_>>,
        what: &str,
    ) -> Result<Response> {
        let to_registry = same_origin(url, &self.base);
        let mut challenged = false;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if let Some(payload) = &body {
                req = req
                    .header(CONTENT_TYPE, payload.content_type)
                    .body(payload.bytes.clone());
                if let Some(range) = &payload.range {
                    req = req.header(CONTENT_RANGE, range.as_str());
                }
            } else if method != Method::GET && method != Method::HEAD {
                req = req.header(CONTENT_LENGTH, 0);
            }
            let authorization = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(value) = authorization.filter(|_| to_registry) {
                req = req.header(AUTHORIZATION, value);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| unreachable_error(e, &self.who(url), what))?;
            if resp.status() == StatusCode::UNAUTHORIZED && to_registry && !challenged {
                challenged = true;
                if let Some(value) = self.answer_challenge(&resp, what).await? {
                    *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Credentials for a 401's challenge, or `None` when there is nothing
    /// (more) to offer.
    async fn answer_challenge(&self, resp: &Response, what: &str) -> Result<Option<HeaderValue>> {
        let Some(challenge) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(None);
        };
        match (challenge.scheme.as_str(), &self.creds) {
            // A token handed over by kubelet was already sent.
            (_, Credentials::Bearer(_)) => Ok(None),
            ("basic", Credentials::Basic { .. }) => Ok(self.basic()),
            ("bearer", _) => self.token(&challenge, what).await.map(Some),
            _ => Ok(None),
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        let Credentials::Basic { username, password } = &self.creds else {
            return None;
        };
        let pair = format!("{username}:{}", password.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        sensitive(&format!("Basic {encoded}")).ok()
    }

    /// A bearer token from the challenge's realm, asked for with the pull's
    /// basic credentials (or none), for pulling this repository.
    async fn token(&self, challenge: &Challenge, what: &str) -> Result<HeaderValue> {
        let unauthenticated = |why: String| {
            Error::new(
                ErrorKind::Unauthenticated,
                format!("{what}: registry {} {why}", self.registry),
            )
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| unauthenticated("sent a bearer challenge without a realm".into()))?;
        let mut url = Url::parse(realm).map_err(|_| {
            unauthenticated(format!(
                "sent a bearer challenge with a bad realm {}",
                quote(realm.as_bytes())
            ))
        })?;
        // Basic credentials in the clear only where the registry is in the clear.
        if url.scheme() != "https" && !(url.scheme() == "http" && self.insecure) {
            return Err(unauthenticated(format!(
                "asks for a token from {}, which is not HTTPS",
                redact(&url)
            )));
        }
        url.query_pairs_mut().append_pair(
            "scope",
            &format!("repository:{}:{}", self.repository, self.actions),
        );
        if let Some(service) = challenge.param("service") {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut req = self.http.get(url.clone());
        if let Some(basic) = self.basic() {
            req = req.header(AUTHORIZATION, basic);
        }
        let server = format!("token server {}", origin(&url));
        let mut resp = req
            .send()
            .await
            .map_err(|e| unreachable_error(e, &server, what))?;
        if resp.status().is_redirection() {
            return Err(Error::invalid(format!(
                "{what}: {server} answered with a redirect; berth follows redirects only for blob downloads"
            )));
        }
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &server, what).await);
        }
        let body = match read_bounded(&mut resp, TOKEN_LIMIT).await {
            Ok(b) => b,
            Err(Bounded::TooLong) => {
                return Err(Error::new(
                    ErrorKind::ResourceExhausted,
                    format!(
                        "{what}: the answer of {server} is larger than {}",
                        show_bytes(TOKEN_LIMIT)
                    ),
                ))
            }
            Err(Bounded::Failed(e)) => return Err(unreachable_error(e, &server, what)),
        };
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token = serde_json::from_slice::<Token>(&body)
            .ok()
            .and_then(|t| t.token.or(t.access_token))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthenticated,
                    format!(
                        "{what}: {server} answered without a token: {}",
                        quote(&body)
                    ),
                )
            })?;
        sensitive(&format!("Bearer {token}")).map_err(|_| {
            Error::new(
                ErrorKind::Unauthenticated,
                format!("{what}: {server} answered with a token that is not a header value"),
            )
        })
    }

    /// GETs a blob, following the redirects registries use to send blobs
    /// to storage, up to the limit. Returns the answer and where it came from.
    async fn blob_response(&self, digest: &str, what: &str) -> Result<(Response, Url)> {
        let mut url = self.url(&format!("blobs/{digest}"))?;
        let mut followed = 0;
        loop {
            let resp = self.get(&url, None, what).await?;
            let status = resp.status();
            if status == StatusCode::OK {
                return Ok((resp, url));
            }
            if !status.is_redirection() {
                return Err(self.status_error(resp, &self.who(&url), what).await);
            }
            if followed == self.limits.max_blob_redirects {
                return Err(Error::invalid(format!(
                    "{what}: registry {} sent the download through more than {} redirects",
                    self.registry, self.limits.max_blob_redirects
                )));
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{what}: registry {} answered HTTP {} without a usable Location",
                        self.registry,
                        status.as_u16()
                    ))
                })?;
            // Neither the query nor user info: signed URLs carry tokens there.
            tracing::info!(registry = %self.registry, blob = %digest, from = %redact(&url),
                to = %redact(&next), "following a blob redirect");
            followed += 1;
            url = next;
        }
    }

    /// Reads a manifest whole, within the limit on metadata.
    async fn read_whole(
        &self,
        resp: &mut Response,
        url: &Url,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        match read_bounded(resp, limit).await {
            Ok(b) => Ok(b),
            Err(Bounded::TooLong) => Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "{what} is larger than the {} {METADATA_LIMIT}",
                    show_bytes(limit)
                ),
            )),
            Err(Bounded::Failed(e)) => Err(unreachable_error(e, &self.who(url), what)),
        }
    }

    /// Who answered at `url`: the registry, or where it redirected to.
    pub(crate) fn who(&self, url: &Url) -> String {
        if same_origin(url, &self.base) {
            format!("registry {}", self.registry)
        } else {
            format!(
                "{} (redirected from registry {})",
                origin(url),
                self.registry
            )
        }
    }

    fn refused_redirect(&self, resp: &Response, what: &str) -> Error {
        let to = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| Url::parse(l.to_str().ok()?).ok())
            .map_or_else(|| "elsewhere".to_string(), |u| redact(&u));
        Error::invalid(format!(
            "{what}: registry {} answered with a redirect (HTTP {} to {to}); berth follows redirects only for blob downloads",
            self.registry,
            resp.status().as_u16()
        ))
    }

    fn wrong_length(&self, what: &str, got: u64, want: u64) -> Error {
        Error::invalid(format!(
            "{what}: registry {} sent {got} bytes, its descriptor says {want}",
            self.registry
        ))
    }

    /// An error answer, with a bounded, quoted excerpt of what it said.
    pub(crate) async fn status_error(&self, mut resp: Response, who: &str, what: &str) -> Error {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Error::new(
                ErrorKind::Unauthenticated,
                format!(
                    "{what}: {who} denied access (authentication required or credentials rejected)"
                ),
            );
        }
        let announced = resp.content_length();
        let (body, more) = read_prefix(&mut resp, ERROR_BODY_LIMIT).await;
        let whole = match announced {
            Some(n) => format!("{n} bytes"),
            None if more => format!("more than {}", show_bytes(ERROR_BODY_LIMIT)),
            None => format!("{} bytes", body.len()),
        };
        let errors = serde_json::from_slice::<Envelope>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
        let detail = if !errors.is_empty() {
            let shown: Vec<String> = errors
                .iter()
                .take(3)
                .map(|e| format!("{} {}", show_code(&e.code), quote(e.message.as_bytes())))
                .collect();
            format!(": {}", shown.join("; "))
        } else if body.is_empty() {
            String::new()
        } else {
            format!(": {}", quote_part(&body, &whole))
        };
        Error::new(
            error_kind(status, &codes),
            format!("{what}: {who} answered HTTP {}{detail}", status.as_u16()),
        )
    }
}

pub(crate) fn unreachable_error(e: reqwest::Error, who: &str, what: &str) -> Error {
    network_error(e, &format!("{who} is unreachable"), what)
}

fn network_error(e: reqwest::Error, doing: &str, what: &str) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::DeadlineExceeded
    } else {
        ErrorKind::Unavailable
    };
    // Without the URL: it may be a signed one.
    let cause = cut(&error_chain(&e.without_url()));
    Error::new(kind, format!("{what}: {doing}: {cause}"))
}

/// A layer download in progress.
pub struct BlobStream {
    resp: Response,
    remaining: u64,
    size: u64,
    what: String,
    /// Who is sending it, for errors.
    from: String,
}

impl BlobStream {
    /// The next chunk, `None` at the end. Fails as soon as the blob runs
    /// past its descriptor's size.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        match self.resp.chunk().await {
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                if n > self.remaining {
                    return Err(longer_than_descriptor(&self.what, &self.from, self.size));
                }
                self.remaining -= n;
                Ok(Some(chunk))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(network_error(
                e,
                &format!("reading from {}", self.from),
                &self.what,
            )),
        }
    }
}

/// Refuses a descriptor without a size, or with one over `limit`, before
/// anything is downloaded.
pub fn check_size(what: &str, size: u64, limit: u64, limit_name: &str) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid(format!(
            "{what}: its descriptor has no size"
        )));
    }
    if size > limit {
        return Err(Error::new(
            ErrorKind::ResourceExhausted,
            format!(
                "{what} is {size} bytes, over the {} {limit_name}",
                show_bytes(limit)
            ),
        ));
    }
    Ok(())
}

fn longer_than_descriptor(what: &str, who: &str, size: u64) -> Error {
    Error::invalid(format!(
        "{what} is longer than its descriptor: {who} sent more than its {size} bytes"
    ))
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

enum Bounded {
    TooLong,
    Failed(reqwest::Error),
}

/// Reads a body whole, refusing one longer than `limit` as soon as that is
/// known: from Content-Length before reading, or from what arrived. Holds
/// at most `limit` bytes.
async fn read_bounded(resp: &mut Response, limit: u64) -> Result<Vec<u8>, Bounded> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(Bounded::TooLong);
    }
    let expected = resp.content_length().unwrap_or(0).min(limit).min(1 << 20);
    let mut out = Vec::with_capacity(expected as usize);
    while let Some(chunk) = resp.chunk().await.map_err(Bounded::Failed)? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Bounded::TooLong);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The first `limit` bytes of a body (an error's), however it ends, and
/// whether more followed.
async fn read_prefix(resp: &mut Response, limit: u64) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while (out.len() as u64) <= limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let more = out.len() as u64 > limit;
    out.truncate(limit as usize);
    (out, more)
}

/// The OCI error envelope: `{"errors": [{"code", "message", "detail"}]}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<RemoteError>,
}

#[derive(Deserialize)]
struct RemoteError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// An OCI error code as is when it looks like one, quoted otherwise.
fn show_code(code: &str) -> String {
    let plain = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        code.to_string()
    } else {
        quote(code.as_bytes())
    }
}

fn error_kind(status: StatusCode, codes: &[&str]) -> ErrorKind {
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    if has(&[
        "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN",
        "BLOB_UNKNOWN",
        "NOT_FOUND",
    ]) {
        return ErrorKind::NotFound;
    }
    if has(&["UNAUTHORIZED"]) {
        return ErrorKind::Unauthenticated;
    }
    if has(&["DENIED"]) {
        return ErrorKind::PermissionDenied;
    }
    if has(&["TOOMANYREQUESTS"]) {
        return ErrorKind::ResourceExhausted;
    }
    match status.as_u16() {
        404 => ErrorKind::NotFound,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        429 => ErrorKind::ResourceExhausted,
        400..=499 if !codes.is_empty() => ErrorKind::InvalidArgument,
        _ => ErrorKind::Unavailable,
    }
}

/// A `WWW-Authenticate` challenge: its scheme (lowercase) and parameters.
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Scheme key="quoted \"value\"", key=token, ...`.
    fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let value;
            if let Some(quoted) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                value = v;
                rest = &quoted[end? + 1..];
            } else {
                let end = after.find(',').unwrap_or(after.len());
                value = after[..end].trim().to_string();
                rest = &after[end..];
            }
            params.push((key.trim().to_ascii_lowercase(), value));
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| Error::invalid("credentials contain characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `scheme://host[:port]`, without user info.
fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// A URL fit for logs and errors: no user info, no query, no fragment.
fn redact(url: &Url) -> String {
    cut(&format!("{}{}", origin(url), url.path()))
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
    fn challenges_parse() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));

        let c = Challenge::parse(r#"Basic realm="say \"hi\"", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("say \"hi\""));
        assert_eq!(c.param("charset"), Some("UTF-8"));

        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn kinds_follow_codes_then_status() {
        let k = |s: u16, c: &[&str]| error_kind(StatusCode::from_u16(s).unwrap(), c);
        assert_eq!(k(404, &[]), ErrorKind::NotFound);
        assert_eq!(k(400, &["MANIFEST_UNKNOWN"]), ErrorKind::NotFound);
        assert_eq!(k(403, &[]), ErrorKind::PermissionDenied);
        assert_eq!(k(400, &["DENIED"]), ErrorKind::PermissionDenied);
        assert_eq!(k(429, &[]), ErrorKind::ResourceExhausted);
        assert_eq!(k(400, &["SIZE_INVALID"]), ErrorKind::InvalidArgument);
        assert_eq!(k(400, &[]), ErrorKind::Unavailable);
        assert_eq!(k(503, &[]), ErrorKind::Unavailable);
    }

    #[test]
    fn urls_in_logs_lose_queries_and_user_info() {
        let u =
            Url::parse("https://user:pw@storage.example:8443/b/sha256:ab?X-Amz-Signature=s3cr3t#f")
                .unwrap();
        assert_eq!(redact(&u), "https://storage.example:8443/b/sha256:ab");
        assert!(same_origin(
            &Url::parse("http://127.0.0.1:5000/v2/").unwrap(),
            &Url::parse("http://127.0.0.1:5000/hop").unwrap()
        ));
        assert!(!same_origin(
            &Url::parse("http://127.0.0.1:5000/").unwrap(),
            &Url::parse("http://127.0.0.1:5001/").unwrap()
        ));
        assert!(!same_origin(
            &Url::parse("https://r.example/").unwrap(),
            &Url::parse("http://r.example:443/").unwrap()
        ));
    }

    #[test]
    fn odd_error_codes_are_quoted() {
        assert_eq!(show_code("BLOB_UNKNOWN"), "BLOB_UNKNOWN");
        assert_eq!(show_code("x\ny"), "\"x\\ny\"");
        assert!(show_code(&"A".repeat(10_000)).len() < 300);
    }
}
