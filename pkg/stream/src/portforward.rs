//! Port-forward over SPDY (`portforward.k8s.io`), as kubelet serves it:
//! the client opens, per forwarded connection, an error stream and a data
//! stream carrying the same `port` and `requestID` headers; the server
//! connects to that port on the pod's loopback and copies bytes both ways.
//! The same SPDY session also runs tunnelled inside a WebSocket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backend::Backend;
use crate::spdy;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// kubectl's WebSocket subprotocol: SPDY/3.1 tunnelled in binary messages.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Pairs of one session waiting for their second stream; a stream that
/// would start one more is reset.
const MAX_PENDING_PAIRS: usize = 64;

/// What bounds one port-forward session.
pub struct Limits {
    /// How long the first stream of a pair waits for the second (kubelet:
    /// the stream creation timeout).
    pub pair_timeout: Duration,
    /// The server's socket budget: each forwarded connection holds one.
    pub sockets: Arc<Semaphore>,
}

/// The streams of one `requestID` seen so far.
struct Pair {
    error: Option<spdy::StreamWriter>,
    data: Option<spdy::Stream>,
    since: Instant,
}

/// Serves every forwarded connection of one SPDY session until the client
/// closes it. Like kubelet, a connection starts once both its error and
/// data streams are there (in either order); a pair still incomplete after
/// `pair_timeout` is dropped with an error.
pub async fn serve(
    connection: spdy::Connection,
    mut incoming: tokio::sync::mpsc::Receiver<spdy::Stream>,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    limits: Limits,
) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    loop {
        let expiry = pending
            .values()
            .map(|p| p.since + limits.pair_timeout)
            .min();
        let stream = tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => break,
            },
            () = sleep_until(expiry) => {
                expire(&mut pending, limits.pair_timeout);
                continue;
            }
        };
        stream.reply();
        let kind = stream.header("streamtype").unwrap_or_default().to_string();
        let request = stream.header("requestid").unwrap_or_default().to_string();
        let is_error = match kind.as_str() {
            "error" => true,
            "data" => false,
            other => {
                tracing::debug!(stream_type = other, "port-forward: unexpected stream");
                stream.reset();
                continue;
            }
        };
        if !pending.contains_key(&request) && pending.len() >= MAX_PENDING_PAIRS {
            tracing::debug!("port-forward: too many incomplete stream pairs");
            stream.reset();
            continue;
        }
        let pair = pending.entry(request.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            since: Instant::now(),
        });
        match (is_error, &pair.error, &pair.data) {
            (true, None, _) => pair.error = Some(stream.writer()),
            (false, _, None) => pair.data = Some(stream),
            _ => {
                tracing::debug!(request, "port-forward: duplicate {kind} stream");
                stream.reset();
                continue;
            }
        }
        if pair.error.is_none() || pair.data.is_none() {
            continue;
        }
        let Some(Pair {
            error: Some(error),
            data: Some(data),
            ..
        }) = pending.remove(&request)
        else {
            continue;
        };
        let port = data.header("port").and_then(|p| p.parse::<u16>().ok());
        let permit = limits.sockets.clone().try_acquire_owned().ok();
        let (backend, sandbox_id) = (backend.clone(), sandbox_id.clone());
        tokio::spawn(async move {
            forward(data, error, port, permit, backend, &sandbox_id).await;
        });
    }
    connection.close().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drops the pairs whose second stream did not come in time.
fn expire(pending: &mut HashMap<String, Pair>, timeout: Duration) {
    let now = Instant::now();
    let late: Vec<String> = pending
        .iter()
        .filter(|(_, p)| now >= p.since + timeout)
        .map(|(id, _)| id.clone())
        .collect();
    for id in late {
        let Some(pair) = pending.remove(&id) else {
            continue;
        };
        tracing::debug!(request = id, "port-forward: timed out waiting for streams");
        if let Some(data) = pair.data {
            data.reset();
        }
        if let Some(error) = pair.error {
            // Not awaited here: a client that does not read must not stall
            // the session's other streams.
            tokio::spawn(async move {
                let message = format!("port-forward request {id}: timed out waiting for streams");
                let _ = error.write(message.as_bytes()).await;
                let _ = error.close().await;
            });
        }
    }
}

async fn forward(
    stream: spdy::Stream,
    error: spdy::StreamWriter,
    port: Option<u16>,
    permit: Option<OwnedSemaphorePermit>,
    backend: Arc<dyn Backend>,
    sandbox_id: &str,
) {
    let report = |message: String| {
        let error = error.clone();
        async move {
            let _ = error.write(message.as_bytes()).await;
            let _ = error.close().await;
        }
    };
    let Some(port) = port else {
        report("port-forward: the data stream has no valid port header".into()).await;
        stream.writer().reset();
        return;
    };
    // Held until the forwarded connection ends.
    let Some(_permit) = permit else {
        report(format!(
            "an error occurred forwarding {port} -> {port}: the streaming server is at its connection limit"
        ))
        .await;
        stream.writer().reset();
        return;
    };
    let tcp = match backend.port_forward(sandbox_id, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            report(format!(
                "an error occurred forwarding {port} -> {port}: {}",
                e.message
            ))
            .await;
            let _ = stream.writer().close().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let (mut from_client, to_client) = stream.into_split();
    // Owns the reader: once the client's side ends (or the pod stops
    // taking data) it is dropped, so an unread stream never stalls the
    // whole SPDY connection.
    let upstream = async move {
        while let Some(data) = from_client.read().await {
            if to_pod.write_all(&data).await.is_err() {
                break;
            }
        }
        // The client is done sending: half-close toward the pod.
        let _ = to_pod.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.close().await;
    };
    tokio::join!(upstream, downstream);
    let _ = error.close().await;
}
