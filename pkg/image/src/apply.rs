//! Downloading a layer and unpacking it in one pass: the network side runs
//! on the async runtime and hands chunks to a blocking worker that writes
//! the blob, decompresses, hashes the uncompressed stream (the diff id) and
//! unpacks into a snapshot in tmp/.
//!
//! The worker owns its temporary files from start to end: it renames them
//! into place only after every check passed and deletes them otherwise,
//! including when the async side goes away (a cancelled RPC), so no failure
//! path can leave work behind.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The error of a layer that stopped because another layer failed.
pub(crate) const ABORTED: &str = "pull aborted";

enum Message {
    Chunk(Bytes),
    /// The download failed; the worker stops and cleans up.
    Failed(String),
    /// The download completed; without it a closed channel means "cancelled".
    End,
}

/// Downloads `layer` from `source` and unpacks it as the snapshot `diff_id`.
/// Returns the bytes downloaded. Stops early when `abort` is set (another
/// layer of the same pull failed).
pub async fn pull_layer(
    content: Arc<Content>,
    source: &Source,
    layer: &Descriptor,
    diff_id: &str,
    abort: &AtomicBool,
) -> Result<u64> {
    let compression = Compression::of_media_type(&layer.media_type)?;
    let mut stream = source.blob_stream(&layer.digest).await?;

    let (tx, rx) = mpsc::channel::<Message>(CHANNEL_DEPTH);
    let job = Job {
        content,
        compression,
        diff_id: diff_id.to_string(),
        digest: layer.digest.clone(),
        size: layer.size,
    };
    let worker = tokio::task::spawn_blocking(move || job.run(rx));

    let mut network_error = None;
    let mut sent_end = false;
    loop {
        if abort.load(Ordering::Relaxed) {
            let _ = tx.send(Message::Failed(ABORTED.into())).await;
            break;
        }
        match stream.next().await {
            Some(Ok(bytes)) => {
                if tx.send(Message::Chunk(bytes)).await.is_err() {
                    break; // the worker stopped early; its error says why
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Message::Failed(e.to_string())).await;
                network_error = Some(e);
                break;
            }
            None => {
                sent_end = tx.send(Message::End).await.is_ok();
                break;
            }
        }
    }
    drop(tx);
    let worker_result = worker
        .await
        .map_err(|e| Error::internal(format!("layer worker: {e}")))?;

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
    if abort.load(Ordering::Relaxed) && !sent_end {
        return Err(Error::new(ErrorKind::Unavailable, ABORTED));
    }
    worker_result.map_err(|e| {
        e.context(format!(
            "layer {} from registry {}",
            layer.digest,
            source.registry()
        ))
    })
}

struct Job {
    content: Arc<Content>,
    compression: Compression,
    diff_id: String,
    digest: String,
    size: u64,
}

impl Job {
    /// Unpacks, verifies and commits; on any failure removes its tmp files.
    fn run(self, rx: mpsc::Receiver<Message>) -> Result<u64> {
        let blob_tmp = self.content.tmp_path("blob");
        let snapshot_tmp = self.content.tmp_path("snapshot");
        let result = self.unpack_and_commit(rx, &blob_tmp, &snapshot_tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&blob_tmp);
            let _ = remove_tree(&snapshot_tmp);
        }
        result
    }

    fn unpack_and_commit(
        &self,
        rx: mpsc::Receiver<Message>,
        blob_tmp: &Path,
        snapshot_tmp: &Path,
    ) -> Result<u64> {
        let blob = BufWriter::with_capacity(1 << 20, File::create(blob_tmp)?);
        let mut raw = ChannelReader {
            rx,
            current: Bytes::new(),
            blob,
            received: 0,
            ended: false,
        };
        let fs_dir: PathBuf = snapshot_tmp.join("fs");
        std::fs::create_dir_all(&fs_dir)?;

        let (stats, diff_id) = {
            let decoder: Box<dyn Read + '_> = match self.compression {
                Compression::None => Box::new(&mut raw),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                    io::BufReader::with_capacity(1 << 17, &mut raw),
                )),
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
            // The tar ends before its padding and the compressed stream before
            // its trailer: read both to the end so every byte is verified.
            io::copy(&mut tar, &mut io::sink())
                .map_err(|e| Error::invalid(format!("layer stream: {e}")))?;
            (
                stats,
                format!("sha256:{}", hex::encode(tar.hasher.finalize())),
            )
        };
        io::copy(&mut raw, &mut io::sink())?;
        if !raw.ended {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "download did not complete",
            ));
        }
        raw.blob.flush()?;

        if diff_id != self.diff_id {
            return Err(Error::invalid(format!(
                "content does not match its diff id: expected {}, got {diff_id}",
                self.diff_id
            )));
        }
        if self.size != 0 && raw.received != self.size {
            return Err(Error::invalid(format!(
                "got {} bytes, the manifest says {}",
                raw.received, self.size
            )));
        }
        let usage = Usage {
            bytes: stats.bytes,
            inodes: stats.inodes,
        };
        let usage_json = serde_json::to_vec(&usage).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(snapshot_tmp.join("usage.json"), usage_json)?;
        self.content
            .commit(blob_tmp, &self.content.blob_path(&self.digest)?)?;
        self.content
            .commit(snapshot_tmp, &self.content.snapshot_dir(&self.diff_id)?)?;
        Ok(raw.received)
    }
}

/// Reads chunks from the channel, writing each to the blob file on the way.
struct ChannelReader {
    rx: mpsc::Receiver<Message>,
    current: Bytes,
    blob: BufWriter<File>,
    received: u64,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Message::Chunk(b)) => {
                    self.blob.write_all(&b)?;
                    self.received += b.len() as u64;
                    self.current = b;
                }
                Some(Message::End) => self.ended = true,
                Some(Message::Failed(why)) => return Err(io::Error::other(why)),
                None => return Err(io::Error::other("download cancelled")),
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
