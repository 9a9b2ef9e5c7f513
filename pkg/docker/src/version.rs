//! API versions: what berth serves, the `/v1.xx/` path prefix, `/_ping`
//! and `/version`. The CLI asks `HEAD /_ping` first and then uses the
//! `Api-Version` it read, so any newer CLI negotiates down to ours.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, PRAGMA};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::host;
use crate::http::{full, ok_json, Body};

/// The newest API version served: dockerd 20.10's, the one every
/// exchange in the reference traces negotiated.
pub const MAX_VERSION: ApiVersion = ApiVersion(1, 41);
/// The oldest: what current dockerd still accepts.
pub const MIN_VERSION: ApiVersion = ApiVersion(1, 24);

pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

/// Splits a `/v1.41/containers/json` path into the version asked for
/// (the newest when unversioned) and the rest, refusing versions outside
/// [MIN_VERSION, MAX_VERSION] with dockerd's words.
pub fn split_version(path: &str) -> ApiResult<(ApiVersion, &str)> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((MAX_VERSION, path));
    };
    let (text, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(version) = ApiVersion::parse(text) else {
        // Not a version prefix (`/volumes` would not reach here): a path
        // that does not exist.
        return Ok((MAX_VERSION, path));
    };
    if version > MAX_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {MAX_VERSION}"
        )));
    }
    if version < MIN_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok((version, tail))
}

/// `GET|HEAD /_ping`: `OK`, with the headers the CLI negotiates from.
pub fn ping(method: &Method) -> ApiResult<Response<Body>> {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    if method == Method::HEAD {
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// `GET /version`.
pub fn version() -> ApiResult<Response<Body>> {
    let kernel = host::kernel_version();
    let arch = host::go_arch();
    ok_json(&json!({
        "Platform": { "Name": "berth" },
        "Components": [{
            "Name": "Engine",
            "Version": SERVER_VERSION,
            "Details": {
                "ApiVersion": MAX_VERSION.to_string(),
                "Arch": arch,
                "BuildTime": "",
                "Experimental": "false",
                "GitCommit": "",
                "GoVersion": "",
                "KernelVersion": kernel,
                "MinAPIVersion": MIN_VERSION.to_string(),
                "Os": "linux",
            },
        }],
        "Version": SERVER_VERSION,
        "ApiVersion": MAX_VERSION.to_string(),
        "MinAPIVersion": MIN_VERSION.to_string(),
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_range_pass_and_others_get_dockerds_words() {
        assert_eq!(
            split_version("/v1.41/containers/json").unwrap(),
            (ApiVersion(1, 41), "/containers/json")
        );
        assert_eq!(split_version("/_ping").unwrap(), (MAX_VERSION, "/_ping"));
        assert_eq!(
            split_version("/v1.50/info").unwrap_err().message,
            "client version 1.50 is too new. Maximum supported API version is 1.41"
        );
        let old = split_version("/v1.12/info").unwrap_err();
        assert_eq!(old.status, StatusCode::BAD_REQUEST);
        assert!(old.message.starts_with("client version 1.12 is too old."));
        assert!(ApiVersion(1, 9) < ApiVersion(1, 10));
    }
}
