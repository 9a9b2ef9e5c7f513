//! The push side of the distribution protocol, on the same [`Source`] (and
//! so the same credentials, challenges and origin rules) as pulls:
//! - a blob is looked for with HEAD first, and sent only when missing;
//! - a blob is sent in chunks (POST to open an upload session, PATCH per
//!   chunk with its range, PUT with the digest to close it), so memory
//!   stays bounded by one chunk however large the layer, and each chunk
//!   is a progress report;
//! - the manifest goes last, under its tag, with its own media type, and
//!   the digest the registry announces must be the one berth computed.

use std::path::Path;

use berth_errdefs::{Error, Result};
use bytes::Bytes;
use reqwest::header::LOCATION;
use reqwest::{Method, Response, StatusCode, Url};
use tokio::io::AsyncReadExt;

use crate::fetch::{sha256_digest, Payload, Source};

/// Bytes sent per PATCH: large enough to keep requests few, small enough
/// to hold in memory and to report progress on.
pub const CHUNK_BYTES: usize = 8 << 20;

const OCTET_STREAM: &str = "application/octet-stream";

impl Source {
    /// Whether the repository has the blob `digest` already.
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        let what = format!("blob {digest}");
        let url = self.url(&format!("blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, &url, None, None, &what).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(resp, &self.who(&url), &what).await),
        }
    }

    /// Uploads the file at `path` as the blob `digest` of `size` bytes,
    /// calling `sent` with the running count after each chunk.
    pub async fn upload_blob(
        &self,
        digest: &str,
        path: &Path,
        size: u64,
        mut sent: impl FnMut(u64),
    ) -> Result<()> {
        let what = format!("upload of blob {digest}");
        let start = self.url("blobs/uploads/")?;
        let resp = self.send(Method::POST, &start, None, None, &what).await?;
        let mut location = self.next_location(resp, &start, &what).await?;

        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::from(e).context(format!("{what}: open {}", path.display())))?;
        let mut offset: u64 = 0;
        loop {
            let chunk = read_chunk(&mut file)
                .await
                .map_err(|e| Error::from(e).context(format!("{what}: read {}", path.display())))?;
            if chunk.is_empty() {
                break;
            }
            let end = offset + chunk.len() as u64;
            if end > size {
                return Err(Error::invalid(format!(
                    "{what}: the stored blob is longer than its {size} bytes"
                )));
            }
            let resp = self
                .send_range(&location, chunk, offset, end, &what)
                .await?;
            location = self.next_location(resp, &location, &what).await?;
            offset = end;
            sent(offset);
        }
        if offset != size {
            return Err(Error::invalid(format!(
                "{what}: the stored blob has {offset} bytes, its descriptor says {size}"
            )));
        }
        let mut close = location.clone();
        close.query_pairs_mut().append_pair("digest", digest);
        let resp = self.send(Method::PUT, &close, None, None, &what).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp, &self.who(&close), &what).await);
        }
        Ok(())
    }

    /// PUTs a manifest under `tag` and returns its digest, checked against
    /// the one the registry announces.
    pub async fn put_manifest(&self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        let what = format!("manifest {}/{}:{tag}", self.registry(), self.repository());
        let url = self.url(&format!("manifests/{tag}"))?;
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .send(
                Method::PUT,
                &url,
                None,
                Some(Payload {
                    content_type: media_type,
                    bytes: body,
                    range: None,
                }),
                &what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp, &self.who(&url), &what).await);
        }
        let digest = sha256_digest(bytes);
        let announced = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok());
        if let Some(announced) = announced.filter(|a| *a != digest) {
            return Err(Error::invalid(format!(
                "{what}: registry {} stored it as {}, berth computed {digest}",
                self.registry(),
                crate::limits::quote(announced.as_bytes())
            )));
        }
        Ok(digest)
    }

    /// PATCHes one chunk into the upload session at `location`.
    async fn send_range(
        &self,
        location: &Url,
        chunk: Bytes,
        offset: u64,
        end: u64,
        what: &str,
    ) -> Result<Response> {
        let payload = Payload {
            content_type: OCTET_STREAM,
            bytes: chunk,
            range: Some(format!("{offset}-{}", end - 1)),
        };
        self.send(Method::PATCH, location, None, Some(payload), what)
            .await
    }

    /// The upload session's next URL, from a 202's Location.
    async fn next_location(&self, resp: Response, from: &Url, what: &str) -> Result<Url> {
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(resp, &self.who(from), what).await);
        }
        let next = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| from.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{what}: registry {} opened an upload without a usable Location",
                    self.registry()
                ))
            })?;
        Ok(next)
    }
}

/// Up to [`CHUNK_BYTES`] from `file`; empty at its end.
async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    while buf.len() < CHUNK_BYTES {
        let n = (&mut *file)
            .take((CHUNK_BYTES - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}
