//! What the streaming server runs: a process with channels for its stdio
//! (an exec'd command, or an attached container), and connections to pod
//! ports. Implemented for the runtime core; the protocols never see it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::{Core, ExecSpec, NoRecorder, Recorder};
use berth_errdefs::Result;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Output chunks in flight per stream: back-pressure, not buffering.
const CHANNEL_DEPTH: usize = 16;
const CHUNK: usize = 32 * 1024;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A running process as the protocols drive it. Dropping it before `exit`
/// resolved ends it (an exec'd process is killed; an attach detaches).
pub struct Process {
    /// Dropping the sender closes the process's stdin.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    pub stdout: Option<mpsc::Receiver<Bytes>>,
    pub stderr: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// The exit code; attach resolves with 0 when the container's output
    /// ends (kubelet reports success then too).
    pub exit: BoxFuture<Result<i32>>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub trait Backend: Send + Sync + 'static {
    fn exec(&self, container_id: &str, spec: ExecSpec) -> BoxFuture<Result<Process>>;
    fn attach(&self, container_id: &str, stdin: bool) -> BoxFuture<Result<Process>>;
    fn port_forward(&self, sandbox_id: &str, port: u16)
        -> BoxFuture<Result<tokio::net::TcpStream>>;
    /// Where sessions are recorded (`service="stream"`); nowhere by default.
    fn recorder(&self) -> Arc<dyn Recorder> {
        Arc::new(NoRecorder)
    }
}

/// Copies `reader` into a channel in chunks until EOF.
fn pump_out(mut reader: impl AsyncRead + Send + Unpin + 'static) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

impl Backend for Arc<Core> {
    fn recorder(&self) -> Arc<dyn Recorder> {
        Core::recorder(self).clone()
    }

    fn exec(&self, container_id: &str, spec: ExecSpec) -> BoxFuture<Result<Process>> {
        let (core, id) = (self.clone(), container_id.to_string());
        Box::pin(async move {
            let mut process = core.containers().exec_stream(&id, spec).await?;
            let stdin = process.stdin.take().map(|mut writer| {
                let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
                tokio::spawn(async move {
                    while let Some(data) = rx.recv().await {
                        if writer.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    // The client closed stdin: so does the process's.
                    let _ = writer.shutdown().await;
                });
                tx
            });
            let resize = process.pty.clone().map(|pty| {
                Box::new(move |cols, rows| {
                    let _ = pty.resize(cols, rows);
                }) as Box<dyn Fn(u16, u16) + Send + Sync>
            });
            Ok(Process {
                stdin,
                stdout: process.stdout.take().map(pump_out),
                stderr: process.stderr.take().map(pump_out),
                resize,
                exit: Box::pin(async move { process.wait().await }),
            })
        })
    }

    fn attach(&self, container_id: &str, stdin: bool) -> BoxFuture<Result<Process>> {
        let (core, id) = (self.clone(), container_id.to_string());
        Box::pin(async move {
            let attached = core.containers().attach(&id).await?;
            let (tty, wants_stdin) = (attached.tty, stdin && attached.stdin);
            let (mut reader, mut writer) = attached.split();
            let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
            let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
            let exit = tokio::spawn(async move {
                while let Some(output) = reader.next_output().await {
                    let sent = match output {
                        berth_core::AttachOutput::Stdout(b) => out_tx.send(Bytes::from(b)).await,
                        berth_core::AttachOutput::Stderr(b) => err_tx.send(Bytes::from(b)).await,
                        berth_core::AttachOutput::Exited(_) => break,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            });
            let stdin = wants_stdin.then(|| {
                let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
                tokio::spawn(async move {
                    while let Some(data) = rx.recv().await {
                        if writer.write_stdin(&data).await.is_err() {
                            return;
                        }
                    }
                    let _ = writer.close_stdin().await;
                });
                tx
            });
            let resize = tty.then(|| {
                let (core, id) = (core.clone(), id.clone());
                Box::new(move |cols, rows| {
                    let (core, id) = (core.clone(), id.clone());
                    tokio::spawn(async move {
                        let _ = core.containers().resize_tty(&id, cols, rows).await;
                    });
                }) as Box<dyn Fn(u16, u16) + Send + Sync>
            });
            Ok(Process {
                stdin,
                stdout: Some(out_rx),
                stderr: (!tty).then_some(err_rx),
                resize,
                exit: Box::pin(async move {
                    // Dropped with the process: the reader must not linger
                    // on a silent container's monitor.
                    let mut reader = AbortOnDrop(exit);
                    let _ = (&mut reader.0).await;
                    Ok(0)
                }),
            })
        })
    }

    fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<Result<tokio::net::TcpStream>> {
        let (core, id) = (self.clone(), sandbox_id.to_string());
        Box::pin(async move { core.sandboxes().port_forward(&id, port).await })
    }
}
