//! The WebSocket side: remotecommand's channel framing (`v4`/`v5.channel.k8s.io`:
//! every binary message starts with its channel number) and the byte
//! tunnel that carries SPDY for kubectl's WebSocket port-forward.

use std::io;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::backend::{BoxFuture, Process};
use crate::remotecommand::{self, Outputs, ResizeDecoder, Sink, Version};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel (the client's stdin).
const CLOSE: u8 = 255;

/// One channel of the socket, written through the single writer task.
struct ChannelSink {
    tx: mpsc::Sender<Message>,
    channel: u8,
}

impl Sink for ChannelSink {
    fn write(&self, data: Bytes) -> BoxFuture<io::Result<()>> {
        let (tx, channel) = (self.tx.clone(), self.channel);
        Box::pin(async move {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(&data);
            tx.send(Message::Binary(frame.into()))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        })
    }

    fn close(&self) -> BoxFuture<io::Result<()>> {
        // Channels end with the socket; v5 has no server-side close.
        Box::pin(async { Ok(()) })
    }
}

/// The close frame that ends a session: code 1000, which client-go
/// (gorilla) alone reads as a clean end; a close without a code reads as
/// "close 1005 (no status)" and fails the exec or attach.
pub(crate) fn normal_close_frame() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

fn normal_close() -> Message {
    Message::Close(Some(normal_close_frame()))
}

/// Runs one exec or attach over an accepted WebSocket.
pub async fn serve_remotecommand<S>(
    socket: WebSocketStream<S>,
    version: Version,
    mut process: Process,
    cmd: Vec<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let last = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let channel = |channel| {
        Box::new(ChannelSink {
            tx: tx.clone(),
            channel,
        }) as Box<dyn Sink>
    };
    let outputs = Outputs {
        stdout: process.stdout.is_some().then(|| channel(STDOUT)),
        stderr: process.stderr.is_some().then(|| channel(STDERR)),
        error: channel(ERROR),
    };
    let mut stdin = process.stdin.take();
    let resize = process.resize.take();
    // The client's side: stdin, resize, close. Ends when the socket does.
    let reader = async move {
        let mut sizes = ResizeDecoder::default();
        while let Some(Ok(message)) = stream.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin {
                        if tx.send(Bytes::copy_from_slice(payload)).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                RESIZE => {
                    for (cols, rows) in sizes.feed(payload) {
                        if let Some(resize) = &resize {
                            resize(cols, rows);
                        }
                    }
                }
                CLOSE if version >= Version::V5 && payload.first() == Some(&STDIN) => {
                    stdin = None;
                }
                _ => {}
            }
        }
    };
    remotecommand::drive(process, outputs, version, &cmd, reader).await;
    let _ = tx.send(normal_close()).await;
    drop(tx);
    let _ = writer.await;
}

/// Bridges a WebSocket of binary messages to a byte stream: the returned
/// half reads what the client sends and writes what it receives.
pub fn tunnel<S>(socket: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = write_half.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read_half.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(&buf[..n]);
                        if sink.send(Message::Binary(data)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.send(normal_close()).await;
            let _ = sink.close().await;
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    ours
}
