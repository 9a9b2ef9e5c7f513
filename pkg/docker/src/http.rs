//! Request and response plumbing shared by every endpoint: bodies (whole,
//! JSON, streamed), the headers dockerd sets on every answer, the request
//! body limit, and the query string.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// Every response body: whole or streamed, never failing mid-way at the
/// HTTP layer (a stream that fails ends, as dockerd's do).
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body read into memory (create, exec, rename, …);
/// bigger ones are refused with 413. Archives and image uploads stream
/// and are not bound by it.
pub const MAX_JSON_BODY: usize = 4 << 20;

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body fed chunk by chunk (progress, logs, events, stats).
pub fn streamed<S>(chunks: S) -> Body
where
    S: Stream<Item = Bytes> + Send + Sync + 'static,
{
    BodyExt::boxed(StreamBody::new(
        chunks.map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ))
}

/// `status` with a JSON body, as dockerd writes it (one line, ending in a
/// newline).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn ok_json<T: Serialize>(value: &T) -> ApiResult<Response<Body>> {
    Ok(json(StatusCode::OK, value))
}

/// An answer with no body (204 for most verbs, 200 for some).
pub fn no_content(status: StatusCode) -> ApiResult<Response<Body>> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    Ok(resp)
}

/// A chunked JSON-lines stream (pull/push progress, events, stats).
pub fn json_stream<S>(lines: S) -> Response<Body>
where
    S: Stream<Item = Bytes> + Send + Sync + 'static,
{
    let mut resp = Response::new(streamed(lines));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// One JSON value as a line of a stream.
pub fn json_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub fn error_response(err: &ApiError) -> Response<Body> {
    json(err.status, &serde_json::json!({ "message": err.message }))
}

/// Reads the whole request body, refusing more than `limit` bytes (413).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> ApiResult<Bytes> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

/// Reads a JSON body into `T`; an empty body is `T::default()` (the CLI
/// sends none for some verbs), malformed JSON is 400 like dockerd's.
pub async fn read_json<T: DeserializeOwned + Default>(req: Request<Incoming>) -> ApiResult<T> {
    let body = read_body(req, MAX_JSON_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// The decoded query string.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: HashMap<String, String>,
    /// Every pair in order, for keys given more than once (`changes`, `names`).
    all: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut pairs = HashMap::new();
        let mut all = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            all.push((k.clone(), v.clone()));
            pairs.insert(k, v);
        }
        Query { pairs, all }
    }

    /// Every value of a key given more than once, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.all
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// Go's `strconv.ParseBool` truths, as dockerd reads boolean flags
    /// (`all=1`, `force=true`); absent or anything else is false.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    /// An integer parameter; absent or empty is `None`, garbage is 400.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }
}

/// `%XX` and `+` decoding of a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_like_go() {
        let q = Query::parse(Some(
            "all=1&filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D&t=x+y&force",
        ));
        assert!(q.flag("all"));
        assert!(!q.flag("force"));
        assert_eq!(q.get("filters"), Some(r#"{"status":{"exited":true}}"#));
        assert_eq!(q.get("t"), Some("x y"));
        assert_eq!(Query::parse(Some("a=%zz%4")).get("a"), Some("%zz%4"));
        assert!(Query::parse(Some("n=abc")).int("n").is_err());
        assert_eq!(Query::parse(Some("n=-3")).int("n").unwrap(), Some(-3));
    }
}
