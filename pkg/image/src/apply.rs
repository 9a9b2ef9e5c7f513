//! Downloading a layer and unpacking it in one pass: the network side runs
//! on the async runtime and hands chunks to a blocking worker that writes
//! the blob, decompresses, hashes the uncompressed stream (the diff id) and
//! unpacks into a snapshot in tmp/. Only a fully verified result is renamed
//! into place; anything else is deleted.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_errdefs::{Error, ErrorKind, Result};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::content::{remove_tree, Content, Usage};
use crate::fetch::Source;
use crate::manifest::{Compression, Descriptor};
use crate::unpack::unpack_layer;

/// Chunks in flight between the network and the unpacker: enough to keep
/// both busy, bounded so a slow disk applies back-pressure.
const CHANNEL_DEPTH: usize = 64;

/// Downloads `layer` from `source` and unpacks it as the snapshot `diff_id`.
/// Returns the bytes downloaded.
pub async fn pull_layer(
    content: Arc<Content>,
    source: &Source,
    layer: &Descriptor,
    diff_id: &str,
) -> Result<u64> {
    let compression = Compression::of_media_type(&layer.media_type)?;
    let mut stream = source.blob_stream(&layer.digest).await?;

    let blob_tmp = content.tmp_path("blob");
    let snapshot_tmp = content.tmp_path("snapshot");
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let worker = {
        let (blob_tmp, snapshot_tmp) = (blob_tmp.clone(), snapshot_tmp.clone());
        let diff_id = diff_id.to_string();
        tokio::task::spawn_blocking(move || {
            unpack_stream(rx, compression, &blob_tmp, &snapshot_tmp, &diff_id)
        })
    };

    let mut received: u64 = 0;
    let mut network_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    break; // the worker stopped early; its error says why
                }
            }
            Err(e) => {
                let msg = e.to_string();
                network_error = Some(e);
                let _ = tx.send(Err(io::Error::other(msg))).await;
                break;
            }
        }
    }
    drop(tx);
    let worker_result = worker
        .await
        .map_err(|e| Error::internal(format!("layer worker: {e}")));

    let outcome = (|| {
        if let Some(e) = network_error {
            let digest_mismatch = e
                .get_ref()
                .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
            let kind = if digest_mismatch {
                ErrorKind::InvalidArgument
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(
                kind,
                format!(
                    "layer {} from registry {}: {e}",
                    layer.digest,
                    source.registry()
                ),
            ));
        }
        let usage = worker_result??;
        if layer.size != 0 && received != layer.size {
            return Err(Error::invalid(format!(
                "layer {} from registry {}: got {received} bytes, the manifest says {}",
                layer.digest,
                source.registry(),
                layer.size
            )));
        }
        let usage_json = serde_json::to_vec(&usage).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(snapshot_tmp.join("usage.json"), usage_json)?;
        content.commit(&blob_tmp, &content.blob_path(&layer.digest)?)?;
        content.commit(&snapshot_tmp, &content.snapshot_dir(diff_id)?)
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&blob_tmp);
        let _ = remove_tree(&snapshot_tmp);
    }
    outcome.map(|()| received)
}

/// Reads chunks from the channel, writing each to the blob file on the way.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    blob: BufWriter<File>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => {
                    self.blob.write_all(&b)?;
                    self.current = b;
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn unpack_stream(
    rx: mpsc::Receiver<io::Result<Bytes>>,
    compression: Compression,
    blob_tmp: &Path,
    snapshot_tmp: &Path,
    diff_id: &str,
) -> Result<Usage> {
    let blob = BufWriter::with_capacity(1 << 20, File::create(blob_tmp)?);
    let mut raw = ChannelReader {
        rx,
        current: Bytes::new(),
        blob,
    };
    let fs_dir: PathBuf = snapshot_tmp.join("fs");
    std::fs::create_dir_all(&fs_dir)?;

    let (stats, digest) = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(
                1 << 17,
                &mut raw,
            ))),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut raw)
                    .map_err(|e| Error::invalid(format!("zstd layer: {e}")))?,
            ),
        };
        let mut tar = HashingReader {
            inner: decoder,
            hasher: Sha256::new(),
        };
        let stats = unpack_layer(&mut tar, &fs_dir)?;
        // The tar ends before its padding and the compressed stream before its
        // trailer: read both to the end so every byte is hashed and verified.
        io::copy(&mut tar, &mut io::sink())
            .map_err(|e| Error::invalid(format!("layer stream for {diff_id}: {e}")))?;
        (stats, format!("sha256:{}", hex::encode(tar.hasher.finalize())))
    };
    io::copy(&mut raw, &mut io::sink())?;
    raw.blob.flush()?;

    if digest != diff_id {
        return Err(Error::invalid(format!(
            "layer content does not match its diff id: expected {diff_id}, got {digest}"
        )));
    }
    Ok(Usage {
        bytes: stats.bytes,
        inodes: stats.inodes,
    })
}
