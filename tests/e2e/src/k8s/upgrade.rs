//! The HTTP/1.1 upgrade request, written by hand so its bytes are exactly
//! what Go's `http.Request.Write` puts on the wire for client-go: request
//! line, `Host`, `User-Agent`, the transfer headers, then the rest sorted by
//! name.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::UpgradeError;

/// Go's default User-Agent for a bare `http.Request`.
const USER_AGENT: &str = "Go-http-client/1.1";
/// How long to wait for the server's answer to the upgrade request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an `http://host:port/path?query` URL points.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub connect_host: String,
    pub port: u16,
    /// `Host:` header value: the URL's authority as written.
    pub authority: String,
    pub path_and_query: String,
}

pub(crate) fn parse_url(url: &str) -> Result<Target, UpgradeError> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if let Some(r) = url.strip_prefix("ws://") {
        r
    } else {
        return Err(UpgradeError::local(format!(
            "unsupported URL {url:?}: only plain http:// is implemented"
        )));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let end = h
            .find(']')
            .ok_or_else(|| UpgradeError::local(format!("bad IPv6 authority in {url:?}")))?;
        let port = h[end + 1..].strip_prefix(':');
        (h[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| UpgradeError::local(format!("bad port in {url:?}")))?,
        None => 80,
    };
    Ok(Target {
        connect_host: host,
        port,
        authority: authority.to_string(),
        path_and_query: path,
    })
}

pub(crate) async fn connect(t: &Target) -> Result<TcpStream, UpgradeError> {
    let s = TcpStream::connect((t.connect_host.as_str(), t.port))
        .await
        .map_err(|e| UpgradeError::local(format!("connect {}:{}: {e}", t.connect_host, t.port)))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// The SPDY upgrade request of apimachinery's `SpdyRoundTripper.RoundTrip`:
/// `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
/// `X-Stream-Protocol-Version` line per protocol, in preference order
/// (`req.Header.Add` per protocol in client-go's `spdy.Negotiate`). Go sends
/// `Content-Length: 0` for a body-less POST.
pub(crate) fn spdy_request(method: &str, t: &Target, protocols: &[&str]) -> Vec<u8> {
    let mut r = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n",
        t.path_and_query, t.authority
    );
    if matches!(method, "POST" | "PUT" | "PATCH") {
        r.push_str("Content-Length: 0\r\n");
    }
    r.push_str("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    for p in protocols {
        r.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The handshake gorilla/websocket's `Dialer` writes for client-go: GET,
/// the subprotocols joined with ", " in one `Sec-WebSocket-Protocol` line,
/// header names spelled as gorilla spells them, sorted as Go writes them.
pub(crate) fn ws_request(t: &Target, protocols: &[&str], key: &str) -> Vec<u8> {
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n",
        t.path_and_query, t.authority
    );
    if !protocols.is_empty() {
        r.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    r.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n");
    r.into_bytes()
}

/// The server's answer to an upgrade request.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Bytes that arrived after the header block: the start of the upgraded
    /// protocol on a 101.
    pub leftover: Vec<u8>,
}

impl Response {
    /// First value of a header, like Go's `Header.Get`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Go's `tokenListContainsValue`: comma-separated, case-insensitive.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Writes `request`, reads the response head. A non-101 answer becomes an
/// [`UpgradeError`] carrying its body.
pub(crate) async fn round_trip(
    s: &mut TcpStream,
    request: &[u8],
) -> Result<Response, UpgradeError> {
    s.write_all(request)
        .await
        .map_err(|e| UpgradeError::local(format!("write upgrade request: {e}")))?;
    tokio::time::timeout(RESPONSE_TIMEOUT, read_response(s))
        .await
        .map_err(|_| UpgradeError::local("no response to the upgrade request"))?
}

async fn read_response(s: &mut TcpStream) -> Result<Response, UpgradeError> {
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(UpgradeError::local("response head larger than 64 KiB"));
        }
        let mut chunk = [0u8; 4096];
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| UpgradeError::local(format!("read upgrade response: {e}")))?;
        if n == 0 {
            return Err(UpgradeError::local(format!(
                "connection closed before a full response head ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut hdrs);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(UpgradeError::local("incomplete response head"))
        }
        Err(e) => {
            return Err(UpgradeError::local(format!(
                "malformed response head: {e}: {:?}",
                String::from_utf8_lossy(&buf[..head_len])
            )))
        }
    }
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        leftover: buf[head_len..].to_vec(),
    };
    if status == 101 {
        return Ok(resp);
    }
    let body = read_body(s, &mut resp).await;
    Err(UpgradeError {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: resp.headers,
    })
}

/// Reads an error response's body (Content-Length, chunked, or to EOF).
async fn read_body(s: &mut TcpStream, resp: &mut Response) -> Vec<u8> {
    let mut data = std::mem::take(&mut resp.leftover);
    let chunked = resp.header_has_token("Transfer-Encoding", "chunked");
    let length: Option<usize> = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(n) = length {
            if data.len() >= n {
                data.truncate(n);
                return data;
            }
        }
        if chunked {
            if let Some(body) = dechunk(&data) {
                return body;
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    if chunked {
        dechunk(&data).unwrap_or(data)
    } else {
        data
    }
}

/// Decodes a complete chunked body; `None` until the last chunk arrived.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:10010/exec/abc?x=1").unwrap();
        assert_eq!(
            (t.connect_host.as_str(), t.port, t.authority.as_str()),
            ("127.0.0.1", 10010, "127.0.0.1:10010")
        );
        assert_eq!(t.path_and_query, "/exec/abc?x=1");
        let t = parse_url("http://[::1]:99/attach/t").unwrap();
        assert_eq!((t.connect_host.as_str(), t.port), ("::1", 99));
        let t = parse_url("http://host").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));
        assert!(parse_url("https://host/").is_err());
    }

    #[test]
    fn spdy_request_bytes() {
        let t = parse_url("http://h:1/exec/tok").unwrap();
        let r = spdy_request("POST", &t, &["v4.channel.k8s.io", "v3.channel.k8s.io"]);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /exec/tok HTTP/1.1\r\nHost: h:1\r\nUser-Agent: Go-http-client/1.1\r\n\
             Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
             X-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n"
        );
    }

    #[test]
    fn ws_request_bytes() {
        let t = parse_url("http://h:1/exec/tok").unwrap();
        let r = ws_request(&t, &["v5.channel.k8s.io", "v4.channel.k8s.io"], "KEY");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /exec/tok HTTP/1.1\r\nHost: h:1\r\nUser-Agent: Go-http-client/1.1\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: KEY\r\n\
             Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n\
             Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert!(dechunk(b"5\r\nhel").is_none());
    }
}
