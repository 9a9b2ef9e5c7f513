//! Answers scrapes: `GET /metrics` (and `HEAD`) on one TCP listener, HTTP/1.1
//! through hyper like the Docker door. The text format 0.0.4 by default,
//! OpenMetrics when the `Accept` header names it, gzip when
//! `Accept-Encoding` allows it. Anything else is 404 (another path) or 405
//! (another method). Each scrape gathers afresh (on a blocking thread: it
//! reads cgroup files), only the core's usage snapshot is kept, for a
//! second; no task runs between scrapes but the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::openmetrics;

/// Where berthd serves metrics unless told otherwise: loopback only, as
/// the numbers say what runs on the node.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9838";

/// A client must send its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `registry` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, mostly: let some close.
                    tracing::warn!("metrics accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                // Gathering reads cgroup files and writable layers: off
                // the async workers, which CRI calls share.
                async move {
                    let (parts, _body) = req.into_parts();
                    let req = Request::from_parts(parts, ());
                    let answered = tokio::task::spawn_blocking(move || {
                        let answer = answer(&registry, &req);
                        // What the scrape (and a pull before it) freed.
                        berth_core::release_freed_memory();
                        answer
                    })
                    .await;
                    Ok::<_, Infallible>(answered.unwrap_or_else(|_| {
                        plain(StatusCode::INTERNAL_SERVER_ERROR, "gathering failed\n")
                    }))
                }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// One request's answer.
fn answer<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let families = registry.gather();
    let (body, content_type) = if wants_openmetrics(req) {
        (openmetrics::encode(&families), openmetrics::CONTENT_TYPE)
    } else {
        (encode_text(&families), TEXT_CONTENT_TYPE)
    };
    let mut response = Response::new(Full::default());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let body = if accepts_gzip(req) {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        gzip(body.as_bytes())
    } else {
        Bytes::from(body)
    };
    if req.method() == Method::GET {
        *response.body_mut() = Full::new(body);
    }
    response
}

/// The text format 0.0.4.
pub(crate) fn encode_text(families: &[MetricFamily]) -> String {
    let mut out = Vec::new();
    // Writing into a Vec fails only on a family the encoder cannot write
    // (none of ours): answer what was written.
    if let Err(e) = TextEncoder::new().encode(families, &mut out) {
        tracing::warn!("metrics text encoding: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether the scraper asks for OpenMetrics (Prometheus lists it first,
/// with the text format after it as a fallback).
fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    header_items(req, ACCEPT.as_str())
        .iter()
        .any(|(item, q)| *q > 0.0 && item.eq_ignore_ascii_case("application/openmetrics-text"))
}

fn accepts_gzip<B>(req: &Request<B>) -> bool {
    header_items(req, ACCEPT_ENCODING.as_str())
        .iter()
        .any(|(item, q)| *q > 0.0 && item.eq_ignore_ascii_case("gzip"))
}

/// The items of a comma-separated header, each with its `q` (1 if none):
/// `application/openmetrics-text;version=1.0.0;q=0.5` → (`application/openmetrics-text`, 0.5).
fn header_items<B>(req: &Request<B>, name: &str) -> Vec<(String, f32)> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let value = parts.next().unwrap_or_default().to_string();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse().ok())
                .unwrap_or(1.0);
            (value, q)
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap()
    }

    fn registry() -> Registry {
        let registry = Registry::new();
        let gauge = prometheus::IntGauge::new("x_level", "A level.").unwrap();
        gauge.set(3);
        registry.register(Box::new(gauge)).unwrap();
        registry
    }

    fn body(response: Response<Full<Bytes>>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let collected = block_on(response.into_body().collect());
        collected.unwrap().to_bytes().to_vec()
    }

    /// A Full body is ready at once.
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_text_format_by_default() {
        let response = answer(&registry(), &get("/metrics", &[]));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], TEXT_CONTENT_TYPE);
        let text = String::from_utf8(body(response)).unwrap();
        assert!(text.contains("x_level 3\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_when_accept_names_it() {
        let prometheus_accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
        let response = answer(
            &registry(),
            &get("/metrics", &[("accept", prometheus_accept)]),
        );
        assert_eq!(response.headers()[CONTENT_TYPE], openmetrics::CONTENT_TYPE);
        let text = String::from_utf8(body(response)).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");

        let refused = "application/openmetrics-text;q=0,text/plain";
        let response = answer(&registry(), &get("/metrics", &[("accept", refused)]));
        assert_eq!(response.headers()[CONTENT_TYPE], TEXT_CONTENT_TYPE);
    }

    #[test]
    fn gzip_when_asked() {
        let response = answer(
            &registry(),
            &get("/metrics", &[("accept-encoding", "deflate, gzip;q=0.8")]),
        );
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&body(response)[..]),
            &mut text,
        )
        .unwrap();
        assert!(text.contains("x_level 3\n"), "{text}");
    }

    #[test]
    fn another_path_is_404_and_another_method_405() {
        let response = answer(&registry(), &get("/metricsx", &[]));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).unwrap();
        let response = answer(&registry(), &post);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET, HEAD");
    }
}
