//! `POST /containers/{id}/attach` (hijacked) and `/resize`: the container's
//! output from its monitor to the client, the client's stdin to the
//! container. Works on created containers too, which is how `docker run`
//! attaches before it starts one.

use berth_core::{AttachOutput, AttachWriter, LogOptions, LogStream};
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ApiError, ApiResult};
use crate::hijack::{self, Output, STDERR, STDOUT};
use crate::http::{no_content, Body};
use crate::router::Ctx;
use crate::view;

/// Client bytes read at once for the container's stdin.
const STDIN_CHUNK: usize = 32 * 1024;

pub async fn attach(mut ctx: Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let container = view::find(&ctx.core, reference)?;
    let q = &ctx.query;
    let (stdin, stdout, stderr) = (q.flag("stdin"), q.flag("stdout"), q.flag("stderr"));
    let (logs, stream) = (q.flag("logs"), q.flag("stream"));
    if !stream && !logs {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let id = &container.record.id;
    // `logs=1`: what the container already wrote comes first; without
    // `stream` that is all (a stopped container is fine then).
    let history = match logs {
        true => Some(ctx.core.containers().logs(
            id,
            LogOptions {
                stdout,
                stderr,
                ..Default::default()
            },
        )?),
        false => None,
    };
    let attached = match stream {
        true => Some(ctx.core.containers().attach(id).await?),
        false => None,
    };
    let on_upgrade = hyper::upgrade::on(&mut ctx.req);
    let tty = container.record.config.tty;
    tokio::spawn(async move {
        let Some(io) = upgraded(on_upgrade).await else {
            return;
        };
        let (client_in, client_out) = hijack::split(io);
        let mut output = Output {
            out: client_out,
            tty,
        };
        if let Some(mut history) = history {
            while let Some(entry) = history.next_entry().await {
                let fd = match entry.stream {
                    LogStream::Stdout => STDOUT,
                    LogStream::Stderr => STDERR,
                };
                if output.send(fd, &entry.bytes).await.is_err() {
                    return;
                }
            }
        }
        if let Some(attached) = attached {
            follow(attached, client_in, &mut output, stdin, stdout, stderr).await;
        }
        output.finish().await;
    });
    Ok(hijack::upgraded_response())
}

/// The container's live output to the client (and the client's stdin to
/// the container when asked) until the container exits or the client
/// goes.
async fn follow(
    attached: berth_core::Attached,
    client_in: impl AsyncRead + Unpin + Send + 'static,
    output: &mut Output<impl tokio::io::AsyncWrite + Unpin>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) {
    let (mut from_container, to_container) = attached.split();
    // Without stdin the writer is kept (not dropped) so that this client
    // does not close the container's stdin.
    let (stdin_task, _kept) = if stdin {
        (
            Some(tokio::spawn(copy_stdin(client_in, to_container))),
            None,
        )
    } else {
        (None, Some(to_container))
    };
    while let Some(out) = from_container.next_output().await {
        let sent = match out {
            AttachOutput::Stdout(b) if stdout => output.send(STDOUT, &b).await,
            AttachOutput::Stderr(b) if stderr => output.send(STDERR, &b).await,
            AttachOutput::Exited(_) => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
}

pub async fn upgraded(on: OnUpgrade) -> Option<hyper::upgrade::Upgraded> {
    match on.await {
        Ok(io) => Some(io),
        Err(e) => {
            tracing::debug!("docker API: hijack failed: {e}");
            None
        }
    }
}

/// The client's bytes into the container until the client half-closes;
/// then the monitor is told (it closes a `StdinOnce` container's stdin).
async fn copy_stdin(mut client: impl AsyncRead + Unpin, mut to: AttachWriter) {
    let mut buf = vec![0; STDIN_CHUNK];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_stdin(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.close_stdin().await;
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(ctx: &Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let container = view::find(&ctx.core, reference)?;
    let (rows, cols) = size(ctx)?;
    ctx.core
        .containers()
        .resize_tty(&container.record.id, cols, rows)
        .await?;
    no_content(StatusCode::OK)
}

/// The `h` and `w` of a resize, as (rows, columns).
pub fn size(ctx: &Ctx) -> ApiResult<(u16, u16)> {
    let dim = |key: &str| -> ApiResult<u16> {
        let v = ctx.query.int(key)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v}")))
    };
    Ok((dim("h")?, dim("w")?))
}
