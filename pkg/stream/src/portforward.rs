//! Port-forward over SPDY (`portforward.k8s.io`), as kubelet serves it:
//! the client opens, per forwarded connection, an error stream and a data
//! stream carrying the same `port` and `requestID` headers; the server
//! connects to that port on the pod's loopback and copies bytes both ways.
//! The same SPDY session also runs tunnelled inside a WebSocket.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::Backend;
use crate::spdy;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// kubectl's WebSocket subprotocol: SPDY/3.1 tunnelled in binary messages.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Serves every forwarded connection of one SPDY session until the client
/// closes it.
pub async fn serve(
    connection: spdy::Connection,
    mut incoming: tokio::sync::mpsc::Receiver<spdy::Stream>,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
) {
    // Error streams wait here until their data stream arrives.
    let mut errors: std::collections::HashMap<String, spdy::StreamWriter> =
        std::collections::HashMap::new();
    while let Some(stream) = incoming.recv().await {
        stream.reply();
        let kind = stream.header("streamtype").unwrap_or_default().to_string();
        let request = stream.header("requestid").unwrap_or_default().to_string();
        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok());
        match kind.as_str() {
            "error" => {
                errors.insert(request, stream.writer());
            }
            "data" => {
                let error = errors.remove(&request);
                let (backend, sandbox_id) = (backend.clone(), sandbox_id.clone());
                tokio::spawn(async move {
                    forward(stream, error, port, backend, &sandbox_id).await;
                });
            }
            other => {
                tracing::debug!(stream_type = other, "port-forward: unexpected stream");
                stream.writer().reset();
            }
        }
    }
    connection.close().await;
}

async fn forward(
    stream: spdy::Stream,
    error: Option<spdy::StreamWriter>,
    port: Option<u16>,
    backend: Arc<dyn Backend>,
    sandbox_id: &str,
) {
    let report = |message: String| {
        let error = error.clone();
        async move {
            if let Some(e) = error {
                let _ = e.write(message.as_bytes()).await;
                let _ = e.close().await;
            }
        }
    };
    let Some(port) = port else {
        report("port-forward: the data stream has no valid port header".into()).await;
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
    if let Some(e) = error {
        let _ = e.close().await;
    }
}
