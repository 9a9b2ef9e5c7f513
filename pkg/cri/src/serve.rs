//! Serves gRPC on a unix socket: HTTP/2 from hyper, the methods from tonic
//! `Routes`, and what berthd adds around every call: client authorities
//! fixed (`authority.rs`), one span per call, the client's deadline
//! answered with DEADLINE_EXCEEDED, oversized requests answered with
//! RESOURCE_EXHAUSTED, and each call's code and time recorded
//! (`metrics.rs`, through the core's `Recorder`).
//!
//! tonic's own `transport::Server` is not used: it always wraps services
//! in a timeout that answers an expired `grpc-timeout` with CANCELLED
//! ("Timeout expired") from outside every layer a caller can add, where
//! gRPC says DEADLINE_EXCEEDED.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_core::{metrics::Service as Door, Recorder};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;
use tonic::service::Routes;
use tracing::Instrument;

use crate::authority::{LocalAuthority, HEADER_TABLE_SIZE};

/// Serves `routes` on `listener` until `shutdown` resolves; then stops
/// accepting, tells every connection to finish (HTTP/2 GOAWAY) and returns
/// once in-flight calls are done. Bound the wait from outside.
pub async fn serve(
    listener: UnixListener,
    routes: Routes,
    recorder: Arc<dyn Recorder>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // tonic's server settings, which berthd had before: no cap on
    // concurrent calls per connection (kubelet multiplexes one), and the
    // table size the authority rewrite's decoder follows.
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(None)
        .header_table_size(HEADER_TABLE_SIZE);
    let service = TowerToHyperService::new(Calls { routes, recorder });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, mostly: let some close.
                    tracing::warn!("accept on the CRI socket: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let io = TokioIo::new(LocalAuthority::new(stream));
        let conn = graceful.watch(http2.serve_connection(io, service.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("CRI connection: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Every call: its span, its deadline, its status mapping, its figures.
#[derive(Clone)]
struct Calls {
    routes: Routes,
    recorder: Arc<dyn Recorder>,
}

impl Service<Request<Incoming>> for Calls {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Routes is always ready; each call clones it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // One span per CRI call, named by its method, for every log line inside.
        let span = tracing::info_span!("cri", method = %req.uri().path());
        let deadline = grpc_timeout(req.headers());
        let operation = crate::metrics::operation(req.uri().path());
        let recorder = self.recorder.clone();
        let started = Instant::now();
        let call = {
            let _entered = span.enter();
            self.routes.clone().call(req.map(Body::new))
        };
        Box::pin(
            async move {
                let response = match deadline {
                    None => call.await?,
                    Some(d) => match tokio::time::timeout(d, call).await {
                        Ok(response) => response?,
                        Err(_) => {
                            tracing::debug!(deadline = ?d, "the client's deadline passed");
                            tonic::Status::deadline_exceeded(format!(
                                "the client's deadline of {d:?} passed before berthd answered"
                            ))
                            .into_http()
                        }
                    },
                };
                let response = crate::oversized_request_status(response);
                // Unary calls are answered whole by now; a streaming one
                // (GetContainerEvents) counts until its headers.
                let code = crate::metrics::code(response.headers());
                recorder.operation(Door::Cri, operation, code, started.elapsed());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The call's `grpc-timeout`: at most 8 digits and a unit (gRPC over
/// HTTP/2); a malformed one is ignored, as gRPC's servers do.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_says() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(parse("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("0n"), Some(Duration::ZERO));
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S", " 1S", "1"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
