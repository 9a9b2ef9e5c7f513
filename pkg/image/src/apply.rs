//! Downloading a layer and unpacking it in one pass: the network side runs
//! on the async runtime and hands chunks to a blocking worker that writes
//! the blob, decompresses, hashes the uncompressed stream (the diff id) and
//! unpacks into a snapshot in tmp/.
//!
//! The worker owns its temporary files from start to end: it renames them
//! into place only after every check passed and deletes them otherwise,
//! including when the async side goes away (a cancelled RPC), so no failure
//! path can leave work behind.
//!
//! Sizes are bounded on both sides: the download stops where the
//! descriptor's size ends, and the decompressed stream stops at the
//! per-layer and per-image limits, so a small gzip bomb unpacks to no more
//! than was allowed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use berth_errdefs::{Error, ErrorKind, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::content::{remove_tree, Content, Usage};
use crate::fetch::Source;
use crate::limits::show_bytes;
use crate::manifest::{Compression, Descriptor};
use crate::progress::{LayerState, Reporter};
use crate::unpack::{unpack_layer, UnpackStats};

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

/// How much the layers of one pull may unpack to, and how much they have.
#[derive(Clone)]
pub(crate) struct Budget {
    pub layer: u64,
    pub image: u64,
    /// Uncompressed bytes read so far by every layer of the pull.
    pub image_used: Arc<AtomicU64>,
}

/// Downloads `layer` from `source` and unpacks it as the snapshot `diff_id`.
/// Returns the bytes downloaded. Stops early when `abort` is set (another
/// layer of the same pull failed). Reports the download of layer `id`
/// (bytes as they arrive) up to its extraction's tail.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull_layer(
    content: Arc<Content>,
    source: &Source,
    layer: &Descriptor,
    diff_id: &str,
    abort: &AtomicBool,
    budget: Budget,
    progress: &Reporter,
    id: &str,
) -> Result<u64> {
    let compression = Compression::of_media_type(&layer.media_type)?;
    let mut blob = source.layer(layer).await?;
    let mut counter = progress.bytes(id, layer.size);

    let (tx, rx) = mpsc::channel::<Message>(CHANNEL_DEPTH);
    let job = Job {
        content,
        compression,
        diff_id: diff_id.to_string(),
        digest: layer.digest.clone(),
        size: layer.size,
        budget,
    };
    let worker = tokio::task::spawn_blocking(move || job.run(rx));

    let mut network_error = None;
    let mut sent_end = false;
    loop {
        if abort.load(Ordering::Relaxed) {
            let _ = tx.send(Message::Failed(ABORTED.into())).await;
            break;
        }
        match blob.next().await {
            Ok(Some(bytes)) => {
                counter.add(bytes.len() as u64);
                if tx.send(Message::Chunk(bytes)).await.is_err() {
                    break; // the worker stopped early; its error says why
                }
            }
            Err(e) => {
                let _ = tx.send(Message::Failed(e.message.clone())).await;
                network_error = Some(e);
                break;
            }
            Ok(None) => {
                sent_end = tx.send(Message::End).await.is_ok();
                break;
            }
        }
    }
    // Hang up on the registry now rather than when the pull ends.
    drop(blob);
    drop(tx);
    if sent_end {
        counter.finish().await;
        // The worker checks the digests and unpacks what it still holds.
        for state in [
            LayerState::VerifyingChecksum,
            LayerState::DownloadComplete,
            LayerState::Extracting,
        ] {
            progress.layer(id, state).await;
        }
    }
    let worker_result = worker
        .await
        .map_err(|e| Error::internal(format!("layer worker: {e}")))?;

    if let Some(e) = network_error {
        return Err(e); // it names the layer and the registry
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
    budget: Budget,
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
            hasher: Sha256::new(),
            received: 0,
            ended: false,
        };
        let (stats, diff_id) = unpack_snapshot(
            &self.content,
            self.compression,
            &mut raw,
            snapshot_tmp,
            &self.budget,
        )?;
        io::copy(&mut raw, &mut io::sink())?;
        if !raw.ended {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "download did not complete",
            ));
        }
        raw.blob.flush()?;

        if raw.received != self.size {
            return Err(Error::invalid(format!(
                "the download ended after {} of its {} bytes",
                raw.received, self.size
            )));
        }
        let digest = format!("sha256:{}", hex::encode(raw.hasher.finalize_reset()));
        if digest != self.digest {
            return Err(Error::invalid(format!(
                "content does not match its digest (got {digest})"
            )));
        }
        if diff_id != self.diff_id {
            return Err(Error::invalid(format!(
                "content does not match its diff id: expected {}, got {diff_id}",
                self.diff_id
            )));
        }
        write_usage(snapshot_tmp, &stats)?;
        self.content
            .commit(blob_tmp, &self.content.blob_path(&self.digest)?)?;
        self.content
            .commit(snapshot_tmp, &self.content.snapshot_dir(&self.diff_id)?)?;
        Ok(raw.received)
    }
}

/// Decompresses `raw` and unpacks it into a new snapshot directory
/// `snapshot_tmp` (its `fs/` the layer's root), measured against `budget`.
/// Returns what the layer takes and its diff id (the digest of the
/// uncompressed stream, read to its end so every byte is verified).
/// The caller removes `snapshot_tmp` on failure.
pub(crate) fn unpack_snapshot(
    content: &Content,
    compression: Compression,
    raw: &mut dyn Read,
    snapshot_tmp: &Path,
    budget: &Budget,
) -> Result<(UnpackStats, String)> {
    content.create_private_dir(snapshot_tmp)?;
    // The layer's root: what a container sees as `/` if no layer sets it.
    let fs_dir: PathBuf = snapshot_tmp.join("fs");
    std::fs::create_dir(&fs_dir)?;
    std::fs::set_permissions(&fs_dir, std::fs::Permissions::from_mode(0o755))?;
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 17, raw),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| Error::invalid(format!("zstd layer: {e}")))?,
        ),
    };
    let mut tar = Measured {
        inner: decoder,
        hasher: Sha256::new(),
        read: 0,
        budget,
        over: None,
    };
    let unpacked = unpack_layer(&mut tar, &fs_dir).and_then(|stats| {
        // The tar ends before its padding and the compressed stream
        // before its trailer: read both to the end so every byte is
        // verified.
        io::copy(&mut tar, &mut io::sink())
            .map_err(|e| Error::invalid(format!("layer stream: {e}")))?;
        Ok(stats)
    });
    // Whatever the tar reader made of it, the limit is the cause.
    if let Some(over) = tar.over {
        return Err(over);
    }
    Ok((
        unpacked?,
        format!("sha256:{}", hex::encode(tar.hasher.finalize())),
    ))
}

/// Records what an unpacked snapshot takes, beside its `fs/`.
pub(crate) fn write_usage(snapshot_tmp: &Path, stats: &UnpackStats) -> Result<()> {
    let usage = Usage {
        bytes: stats.bytes,
        inodes: stats.inodes,
    };
    let usage_json = serde_json::to_vec(&usage).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(snapshot_tmp.join("usage.json"), usage_json)?;
    Ok(())
}

/// Reads chunks from the channel, writing each to the blob file and
/// hashing it on the way.
struct ChannelReader {
    rx: mpsc::Receiver<Message>,
    current: Bytes,
    blob: BufWriter<File>,
    hasher: Sha256,
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
                    self.hasher.update(&b);
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

/// The uncompressed stream: hashed (the diff id) and measured against the
/// budget. Past a limit it fails every read and keeps the reason in `over`.
struct Measured<'a, R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    budget: &'a Budget,
    over: Option<Error>,
}

impl<R: Read> Read for Measured<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.over.is_none() {
            let n = self.inner.read(buf)?;
            self.hasher.update(&buf[..n]);
            self.read += n as u64;
            let image_used = self
                .budget
                .image_used
                .fetch_add(n as u64, Ordering::Relaxed)
                + n as u64;
            let exceeded = if self.read > self.budget.layer {
                Some(format!("{} per-layer limit", show_bytes(self.budget.layer)))
            } else if image_used > self.budget.image {
                Some(format!("{} per-image limit", show_bytes(self.budget.image)))
            } else {
                None
            };
            match exceeded {
                None => return Ok(n),
                Some(limit) => {
                    self.over = Some(Error::new(
                        ErrorKind::ResourceExhausted,
                        format!("unpacks to more than the {limit}"),
                    ))
                }
            }
        }
        Err(io::Error::other("over the uncompressed size limit"))
    }
}
