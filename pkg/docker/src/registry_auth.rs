//! `X-Registry-Auth`: base64url JSON `{username, password, serveraddress,
//! identitytoken, registrytoken}` from the CLI, read into the core's
//! credentials. The header's value is a secret: it is never logged, and
//! errors about it never repeat it.

use base64::Engine as _;
use berth_core::{Credentials, Secret};
use hyper::header::HeaderMap;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    #[serde(rename = "identitytoken")]
    identity_token: String,
    #[serde(rename = "registrytoken")]
    registry_token: String,
}

/// The credentials a request carries; none (or `{}`) is anonymous.
pub fn credentials(headers: &HeaderMap) -> ApiResult<Credentials> {
    let Some(value) = headers.get("x-registry-auth") else {
        return Ok(Credentials::Anonymous);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(Credentials::Anonymous);
    }
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let json = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| ApiError::bad_request("X-Registry-Auth is not base64"))?;
    let auth: AuthConfig = serde_json::from_slice(&json)
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not an auth config"))?;
    Ok(if !auth.registry_token.is_empty() {
        Credentials::Bearer(Secret::new(auth.registry_token))
    } else if !auth.username.is_empty() {
        // An identity token stands in for the password, as in a token login.
        let password = if auth.password.is_empty() {
            auth.identity_token
        } else {
            auth.password
        };
        Credentials::Basic {
            username: auth.username,
            password: Secret::new(password),
        }
    } else {
        Credentials::Anonymous
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::URL_SAFE.encode(json);
        h.insert("x-registry-auth", v.parse().unwrap());
        h
    }

    #[test]
    fn auth_configs_become_credentials_that_do_not_print() {
        assert_eq!(credentials(&header("{}")).unwrap(), Credentials::Anonymous);
        let c = credentials(&header(
            r#"{"username":"u","password":"hunter2","serveraddress":"r"}"#,
        ))
        .unwrap();
        assert_eq!(
            c,
            Credentials::Basic {
                username: "u".into(),
                password: Secret::new("hunter2")
            }
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = credentials(&header("not json")).unwrap_err();
        assert!(!e.message.contains("not json"), "{e:?}");
    }
}
