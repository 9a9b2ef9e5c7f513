//! Serving the API: HTTP/1.1 with upgrades (attach and exec hijack the
//! connection) on a unix socket, or on TCP behind TLS that verifies the
//! client's certificate (dockerd's `--tlsverify`).

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use berth_core::metrics::Service;

use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use crate::http::{error_response, Body};
use crate::router;
use crate::version::MAX_VERSION;
use crate::Door;

/// A listener whose connections the door serves.
trait Listener {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and who it came from, for logs.
    fn next(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next(&self) -> std::io::Result<(Self::Stream, String)> {
        self.accept().await.map(|(s, _)| (s, "unix".to_string()))
    }
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn next(&self) -> std::io::Result<(Self::Stream, String)> {
        self.accept().await.map(|(s, peer)| (s, peer.to_string()))
    }
}

/// Hands each connection of `listener` to `serve` until `shutdown`
/// completes; a failed accept is logged and the loop goes on.
async fn accept_until<L: Listener>(
    listener: L,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(L::Stream, String),
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok((stream, peer)) => serve(stream, peer),
                Err(e) => tracing::warn!("docker API accept: {e}"),
            },
            () = &mut shutdown => return,
        }
    }
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve_unix(
    listener: UnixListener,
    door: Arc<Door>,
    shutdown: impl Future<Output = ()>,
) {
    accept_until(listener, shutdown, |stream, _| {
        spawn_connection(stream, door.clone())
    })
    .await
}

/// Serves TLS on `listener` until `shutdown` completes; a client without
/// a certificate signed by the configured CA never gets past the handshake.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    door: Arc<Door>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_until(listener, shutdown, |stream, peer| {
        let (acceptor, door) = (acceptor.clone(), door.clone());
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(tls) => spawn_connection(tls, door),
                Err(e) => tracing::warn!(%peer, "docker TLS handshake refused: {e}"),
            }
        });
    })
    .await
}

/// Serves plain TCP: only with the explicit insecure flag, which the
/// daemon warns about loudly.
pub async fn serve_tcp_insecure(
    listener: TcpListener,
    door: Arc<Door>,
    shutdown: impl Future<Output = ()>,
) {
    accept_until(listener, shutdown, |stream, _| {
        spawn_connection(stream, door.clone())
    })
    .await
}

fn spawn_connection<S>(stream: S, door: Arc<Door>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let door = door.clone();
            async move { Ok::<_, Infallible>(handle(door, req).await) }
        });
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await
        {
            tracing::debug!("docker API connection: {e}");
        }
    });
}

async fn handle(door: Arc<Door>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let recorder = door.core.recorder().clone();
    let started = Instant::now();
    let (operation, result) = router::route(door, req).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %path, status = %e.status, "docker API: {}", e.message);
            error_response(&e)
        }
    };
    // Until the head of the answer: a streamed body (logs, events, a
    // pull's progress) or a hijacked connection goes on after.
    recorder.operation(
        Service::Docker,
        operation,
        resp.status().as_str(),
        started.elapsed(),
    );
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&MAX_VERSION.to_string()) {
            h.insert("Api-Version", v);
        }
        h.insert("Docker-Experimental", HeaderValue::from_static("false"));
        h.insert("Ostype", HeaderValue::from_static("linux"));
        h.insert("Server", HeaderValue::from_static(SERVER_HEADER));
    }
    resp
}

const SERVER_HEADER: &str = concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)");

/// The TLS settings of `--docker-tlscacert/-tlscert/-tlskey`: the server's
/// certificate, and client certificates required and checked against the CA.
pub fn tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("read {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("parse {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in read_certs(ca)? {
        roots
            .add(ca_cert)
            .map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("read key {}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert)?, key)
        .map_err(|e| format!("server certificate {}: {e}", cert.display()))?;
    Ok(Arc::new(config))
}
