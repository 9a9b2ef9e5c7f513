//! Hijacked connections (attach, exec start): the `101 UPGRADED` answer,
//! and dockerd's output framing on the raw socket — an 8-byte header
//! (`[stream, 0, 0, 0, big-endian u32 length]`) per write for a container
//! without a tty, the bare bytes for one with a tty.

use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::http::{empty, Body};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

pub type Io = TokioIo<Upgraded>;

/// The answer that hands the connection over. At API 1.41 dockerd names
/// the stream `raw-stream` whether or not it is multiplexed.
pub fn upgraded_response() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    // dockerd's status line: `HTTP/1.1 101 UPGRADED`.
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"UPGRADED"));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.docker.raw-stream"),
    );
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

/// The two directions of a hijacked connection.
pub fn split(upgraded: Upgraded) -> (ReadHalf<Io>, WriteHalf<Io>) {
    tokio::io::split(TokioIo::new(upgraded))
}

/// One multiplexed frame: header and payload.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&frame_header(stream, payload.len()));
    out.extend_from_slice(payload);
    out
}

/// The 8 bytes before a payload of `len` bytes: the stream, three zero
/// bytes, the length big-endian.
pub fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    // Payloads are single reads or log lines, far below 4 GiB.
    let len = (len as u32).to_be_bytes();
    [stream, 0, 0, 0, len[0], len[1], len[2], len[3]]
}

/// Where a container's output goes: framed, or raw for a tty.
pub struct Output<W> {
    pub out: W,
    pub tty: bool,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    pub async fn send(&mut self, stream: u8, payload: &[u8]) -> std::io::Result<()> {
        if payload.is_empty() {
            return Ok(());
        }
        if self.tty {
            self.out.write_all(payload).await?;
        } else {
            self.out.write_all(&frame(stream, payload)).await?;
        }
        self.out.flush().await
    }

    /// Ends the output: the client's read sees EOF.
    pub async fn finish(&mut self) {
        let _ = self.out.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_dockerds_header() {
        assert_eq!(
            frame(STDOUT, b"hi\n"),
            b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
        );
        assert_eq!(frame(STDERR, &[0; 256])[..8], [2, 0, 0, 0, 0, 0, 1, 0]);
    }
}
