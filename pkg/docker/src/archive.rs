//! `docker cp`: `HEAD`/`GET`/`PUT /containers/{id}/archive?path=`
//! (cp-from.txt, cp-to.txt, cp-from-missing.txt). The core reads and
//! writes the container's root filesystem; this module speaks dockerd's
//! stat header and streams the upload into the core's extraction.

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use crate::clock::rfc3339_nano;
use crate::error::{ApiError, ApiResult};
use crate::http::{empty, no_content, streamed, Body};
use crate::router::Ctx;
use crate::view;

const STAT_HEADER: &str = "x-docker-container-path-stat";

fn path_of(ctx: &Ctx) -> ApiResult<String> {
    match ctx.query.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError::bad_request("path cannot be empty")),
    }
}

/// `HEAD` (the stat alone) and `GET` (the stat and a tar of the path).
pub async fn get(ctx: Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(&ctx.core, reference)?;
    let path = path_of(&ctx)?;
    let head = ctx.req.method() == Method::HEAD;
    let core = ctx.core.clone();
    let id = v.record.id.clone();
    // The stat first, for the header (and a 404 before any body).
    let stat = {
        let (core, id, path) = (core.clone(), id.clone(), path.clone());
        tokio::task::spawn_blocking(move || core.containers().stat_path(&id, &path))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| named(e, reference, &v.record.id))?
    };
    let mut resp = if head {
        Response::new(empty())
    } else {
        let container = id.clone();
        tar_response(
            move |out| core.containers().archive_path(&id, &path, out).map(|_| ()),
            format!("archive of container {container}"),
        )
    };
    let header = base64::engine::general_purpose::STANDARD.encode(
        serde_json::to_vec(&json!({
            "name": stat.name,
            "size": stat.size,
            "mode": go_file_mode(stat.mode),
            "mtime": rfc3339_nano(stat.mtime_ns),
            "linkTarget": stat.link_target,
        }))
        .unwrap_or_default(),
    );
    if let Ok(value) = HeaderValue::from_str(&header) {
        resp.headers_mut().insert(STAT_HEADER, value);
    }
    Ok(resp)
}

/// `PUT ?path=&noOverwriteDirNonDir=`: the body, a tar, extracted into
/// the directory `path`, streamed (never held whole in memory).
pub async fn put(ctx: Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(&ctx.core, reference)?;
    let path = path_of(&ctx)?;
    let no_overwrite = ctx.query.flag("noOverwriteDirNonDir");
    let core = ctx.core.clone();
    let id = v.record.id.clone();
    with_body_reader(ctx.req, move |reader| async move {
        tokio::task::spawn_blocking(move || {
            core.containers()
                .extract_archive(&id, &path, reader, no_overwrite)
        })
        .await
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| named(e, reference, &v.record.id))?;
    no_content(StatusCode::OK)
}

/// dockerd names the container as the user typed it in "Could not find".
fn named(e: berth_core::Error, reference: &str, id: &str) -> ApiError {
    let mut e: ApiError = e.into();
    e.message = e.message.replace(
        &format!("in container {id}"),
        &format!("in container {reference}"),
    );
    e
}

/// Runs `work` with the request body as a blocking `Read` (streamed,
/// never held whole in memory). If `work` stops reading early (it refused
/// the input), the rest of the body is still read, so that the client
/// gets the answer rather than a broken pipe.
pub(crate) async fn with_body_reader<T, F, Fut>(
    req: hyper::Request<hyper::body::Incoming>,
    work: F,
) -> T
where
    F: FnOnce(ChannelReader) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let reader = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    let feed = async move {
        let mut body = req.into_body();
        let mut tx = Some(tx);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let (Ok(data), Some(sender)) = (frame.into_data(), &tx) {
                if sender.send(data).await.is_err() {
                    tx = None;
                }
            }
        }
    };
    let (out, ()) = tokio::join!(work(reader), feed);
    out
}

/// A tar written by the core on a blocking thread, streamed as the
/// response body as it is written (a failure mid-way ends it, logged).
pub(crate) fn tar_response(
    write: impl FnOnce(std::io::BufWriter<ChannelWriter>) -> Result<(), berth_core::Error>
        + Send
        + 'static,
    what: String,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter(tx));
        if let Err(e) = write(out) {
            tracing::warn!("{what}: {e}");
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut resp = Response::new(streamed(chunks));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    resp
}

/// The request body as a blocking `Read` for the core's extraction.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The response body as a blocking `Write` for the core's tar writer.
pub(crate) struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A unix `st_mode` as Go's `os.FileMode`, which the CLI decodes.
fn go_file_mode(mode: u32) -> u32 {
    let mut m = mode & 0o777;
    let kind = mode & libc::S_IFMT;
    m |= match kind {
        libc::S_IFDIR => 1 << 31,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        _ => 0,
    };
    if mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_convert_like_go() {
        assert_eq!(go_file_mode(0o100644), 420);
        // cp-to.txt's /tmp: ModeDir|ModeSticky|0777.
        assert_eq!(go_file_mode(0o41777), 2148532735);
    }
}
