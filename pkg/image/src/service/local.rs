//! Images made on this node rather than pulled: a container's diff on top
//! of its image (commit) and a root filesystem tar as a one-layer image
//! (import); `archive.rs` adds the images a tarball brings (load). Every
//! layer goes through the unpacker a pulled one does (`apply.rs`), and the
//! image record is written only once its layers are in place; all of it
//! under the garbage-collection lock, so no removal takes a new layer
//! before its image is recorded.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use berth_errdefs::{Error, ErrorKind, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Image, ImageService, Layer};
use crate::apply::{unpack_snapshot, write_usage, Budget};
use crate::config_edit::{derive_config, NewLayerInfo};
use crate::content::remove_tree;
use crate::diff_tar::{write_diff_tar, DiffEntry};
use crate::limits::show_bytes;
use crate::manifest::{Compression, ImageConfig, Manifest, OCI_MANIFEST};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A stored layer and how its blob is compressed.
#[derive(Debug, Clone)]
pub(crate) struct StoredLayer {
    pub layer: Layer,
    pub media_type: String,
}

impl ImageService {
    /// Makes a new image of `parent` plus one layer holding `changes`
    /// (read from the container's overlay `upper` directory), with the
    /// config `info` describes, tagged `tag` if given. Blocking.
    pub fn commit_diff(
        &self,
        parent: &Image,
        upper: &Path,
        changes: &[DiffEntry],
        info: &NewLayerInfo,
        tag: Option<&str>,
    ) -> Result<Image> {
        let tar_tmp = self.content.tmp_path("diff");
        let made = (|| {
            let out = BufWriter::new(File::create(&tar_tmp)?);
            write_diff_tar(upper, changes, out)?;
            let mut tar = File::open(&tar_tmp)?;
            self.commit_layer(Some(parent), Some(&mut tar), info, tag)
        })();
        let _ = std::fs::remove_file(&tar_tmp);
        made
    }

    /// Makes a new image of `parent` (or of nothing) plus the layer tar
    /// `layer` (plain, gzip or zstd; none: a config-only step, whose
    /// history entry is `empty_layer`), with the config `info` describes,
    /// tagged `tag` if given. A malformed or traversing tar is
    /// `InvalidArgument` and leaves nothing behind. Blocking.
    pub fn commit_layer(
        &self,
        parent: Option<&Image>,
        layer: Option<&mut dyn Read>,
        info: &NewLayerInfo,
        tag: Option<&str>,
    ) -> Result<Image> {
        let tags = self.tag_names(tag)?;
        let _gc = self.gc_lock.blocking_read();
        let layer = layer.map(|l| self.ingest_layer(l, None)).transpose()?;
        self.add_layer_image(parent, layer, info, tags)
    }

    /// Makes a one-layer image of the root filesystem tar `input` (plain,
    /// gzip or zstd), tagged `tag` if given. A malformed tar or one with
    /// an entry that leaves the layer is `InvalidArgument` and leaves
    /// nothing behind. Blocking.
    pub fn import(
        &self,
        input: &mut dyn Read,
        info: &NewLayerInfo,
        tag: Option<&str>,
    ) -> Result<Image> {
        self.commit_layer(None, Some(input), info, tag)
    }

    /// `tag` qualified as a pull would resolve it; a digest is refused.
    pub(crate) fn tag_names(&self, tag: Option<&str>) -> Result<Vec<String>> {
        let Some(tag) = tag.filter(|t| !t.is_empty()) else {
            return Ok(Vec::new());
        };
        let reference = self.registries.candidates(tag)?.swap_remove(0);
        match reference.tagged().filter(|_| reference.digest.is_none()) {
            Some(tagged) => Ok(vec![tagged]),
            None => Err(Error::invalid(format!(
                "invalid tag {tag:?}: a tag names no digest"
            ))),
        }
    }

    /// The parent's config and layers plus `layer`, recorded as an image.
    fn add_layer_image(
        &self,
        parent: Option<&Image>,
        layer: Option<StoredLayer>,
        info: &NewLayerInfo,
        tags: Vec<String>,
    ) -> Result<Image> {
        let (parent_config, mut layers) = match parent {
            Some(p) => (Some(self.content.read_blob(&p.id)?), self.stored_layers(p)?),
            None => (None, Vec::new()),
        };
        let diff_id = layer.as_ref().map(|l| l.layer.diff_id.as_str());
        let config = derive_config(parent_config.as_deref(), diff_id, info)?;
        layers.extend(layer);
        self.record_local(&config, layers, tags)
    }

    /// An image's layers with their media types, from its stored manifest.
    pub(crate) fn stored_layers(&self, image: &Image) -> Result<Vec<StoredLayer>> {
        let bytes = self.content.read_blob(&image.manifest_digest)?;
        let Manifest::Image(manifest) = Manifest::parse(&bytes)
            .map_err(|e| e.context(format!("manifest of image {}", image.id)))?
        else {
            return Err(Error::internal(format!(
                "the manifest of image {} is an index",
                image.id
            )));
        };
        Ok(image
            .layers
            .iter()
            .zip(manifest.layers)
            .map(|(layer, d)| StoredLayer {
                layer: layer.clone(),
                media_type: d.media_type,
            })
            .collect())
    }

    /// Records an image of `config` over `layers` (all stored already):
    /// writes the config and an OCI manifest as blobs, then the record,
    /// moving `tags` off any image that had them. The caller holds the
    /// garbage-collection lock.
    pub(crate) fn record_local(
        &self,
        config: &[u8],
        layers: Vec<StoredLayer>,
        tags: Vec<String>,
    ) -> Result<Image> {
        let parsed = ImageConfig::parse(config)?;
        if parsed.rootfs.diff_ids.len() != layers.len()
            || parsed
                .rootfs
                .diff_ids
                .iter()
                .zip(&layers)
                .any(|(d, l)| *d != l.layer.diff_id)
        {
            return Err(Error::invalid(
                "the image config's diff ids do not match its layers",
            ));
        }
        let config_digest = sha256_digest(config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.layer.digest, "size": l.layer.size,
            })).collect::<Vec<_>>(),
        }))
        .map_err(|e| Error::internal(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest);
        self.content.put_blob(&config_digest, config)?;
        self.content.put_blob(&manifest_digest, &manifest)?;
        let image = Image {
            id: config_digest,
            repo_tags: tags,
            repo_digests: Vec::new(),
            manifest_digest,
            size: config.len() as u64 + layers.iter().map(|l| l.layer.size).sum::<u64>(),
            layers: layers.into_iter().map(|l| l.layer).collect(),
            user: parsed.user().to_string(),
            platform: format!("{}/{}", parsed.os, parsed.architecture),
        };
        let (image, _) = self.commit(image)?;
        tracing::info!(id = %image.id, tags = ?image.repo_tags, "image recorded");
        Ok(image)
    }

    /// Stores the layer tar `input` (plain, gzip or zstd, told by its first
    /// bytes) as a blob and an unpacked snapshot, checked against
    /// `expected_diff_id` if given. On failure nothing is left in `tmp/`.
    pub(crate) fn ingest_layer(
        &self,
        input: &mut dyn Read,
        expected_diff_id: Option<&str>,
    ) -> Result<StoredLayer> {
        let blob_tmp = self.content.tmp_path("blob");
        let snapshot_tmp = self.content.tmp_path("snapshot");
        let stored = self.ingest_into(input, expected_diff_id, &blob_tmp, &snapshot_tmp);
        if stored.is_err() {
            let _ = std::fs::remove_file(&blob_tmp);
            let _ = remove_tree(&snapshot_tmp);
        }
        stored
    }

    fn ingest_into(
        &self,
        input: &mut dyn Read,
        expected_diff_id: Option<&str>,
        blob_tmp: &Path,
        snapshot_tmp: &Path,
    ) -> Result<StoredLayer> {
        let limit = self.limits.max_layer_bytes;
        let (digest, size) = spool(input, blob_tmp, limit)?;
        let mut blob = BufReader::with_capacity(1 << 17, File::open(blob_tmp)?);
        let compression = sniff(blob.fill_buf()?);
        let budget = Budget {
            layer: limit,
            image: limit,
            image_used: Arc::default(),
        };
        let (stats, diff_id) =
            unpack_snapshot(&self.content, compression, &mut blob, snapshot_tmp, &budget)?;
        if let Some(expected) = expected_diff_id {
            if diff_id != expected {
                return Err(Error::invalid(format!(
                    "layer does not match its diff id: expected {expected}, got {diff_id}"
                )));
            }
        }
        write_usage(snapshot_tmp, &stats)?;
        self.content
            .commit(blob_tmp, &self.content.blob_path(&digest)?)?;
        if self.content.has_snapshot(&diff_id) {
            remove_tree(snapshot_tmp)?;
        } else {
            self.content
                .commit(snapshot_tmp, &self.content.snapshot_dir(&diff_id)?)?;
        }
        Ok(StoredLayer {
            layer: Layer {
                digest,
                diff_id,
                size,
            },
            media_type: media_type(compression).to_string(),
        })
    }
}

/// Copies `input` to `path`, at most `limit` bytes; its digest and size.
fn spool(input: &mut dyn Read, path: &Path, limit: u64) -> Result<(String, u64)> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::invalid(format!("read layer: {e}"))),
        };
        size += n as u64;
        if size > limit {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "layer is larger than the {} per-layer limit",
                    show_bytes(limit)
                ),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// A stream's compression from its magic bytes.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
