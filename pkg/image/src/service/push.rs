//! Push: a stored image's blobs, config and manifest, byte for byte as
//! they were pulled, to the registry its tag names. Since the manifest is
//! the stored one, the registry ends up with the same manifest digest, and
//! a pull back gives the same image id.
//!
//! What the store keeps makes this possible: a pull writes every layer's
//! compressed blob beside its unpacked snapshot (see `apply`), so nothing
//! is recompressed. An image whose blob is missing cannot be pushed
//! (`FailedPrecondition` naming the layer) rather than pushed different.

use std::collections::HashSet;

use berth_errdefs::{Error, ErrorKind, Result};
use tokio::sync::mpsc;

use super::{Image, ImageService};
use crate::fetch::{Credentials, Source};
use crate::manifest::{Descriptor, OCI_MANIFEST};
use crate::progress::{short_id, PushLayerState, PushProgress};
use crate::reference::is_image_id;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// `registry/repository:tag`, as pushed.
    pub reference: String,
    /// The manifest's digest at the registry.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// Blobs the registry had already.
    pub existing_blobs: usize,
    /// Blob bytes sent.
    pub uploaded_bytes: u64,
}

/// Sends push reports; a closed or absent receiver only stops the reports.
struct PushReporter(Option<mpsc::Sender<PushProgress>>);

impl PushReporter {
    async fn send(&self, p: PushProgress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(p).await;
        }
    }

    async fn layer(&self, id: &str, state: PushLayerState) {
        self.send(PushProgress::Layer {
            id: id.to_string(),
            state,
        })
        .await;
    }

    /// A byte count: dropped when the channel is full, the next supersedes it.
    fn bytes(&self, id: &str, current: u64, total: u64) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(PushProgress::Layer {
                id: id.to_string(),
                state: PushLayerState::Pushing { current, total },
            });
        }
    }
}

impl ImageService {
    /// Pushes the image `name` names (a tag reference; a short name is
    /// qualified as a pull would be) to that name's registry, under its tag.
    /// Records the pushed `repository@digest` on the image.
    pub async fn push(
        &self,
        name: &str,
        creds: &Credentials,
        progress: Option<mpsc::Sender<PushProgress>>,
    ) -> Result<(Image, PushOutcome)> {
        let progress = PushReporter(progress);
        if is_image_id(name) {
            return Err(Error::invalid(format!(
                "cannot push {name:?}: it is an image id; push a tagged name"
            )));
        }
        // The blobs stay while they are read.
        let _gc = self.gc_lock.read().await;
        let image = self
            .status(name)?
            .ok_or_else(|| Error::not_found(format!("image {name:?} not found")))?;
        let reference = self.registries.candidates(name)?.swap_remove(0);
        let Some(tag) = reference.tag.clone().filter(|_| reference.digest.is_none()) else {
            return Err(Error::invalid(format!(
                "cannot push {name:?}: push names a tag, not a digest"
            )));
        };
        let endpoint = self
            .registries
            .endpoints(&reference)?
            .into_iter()
            .find(|e| !e.is_mirror)
            .ok_or_else(|| Error::not_found(format!("no registry to push {name:?} to")))?;
        progress
            .send(PushProgress::Started {
                repository: reference.name(),
            })
            .await;
        let source = self
            .clients
            .source(&endpoint, Some(&tag), creds, self.limits)?
            .for_push();
        let pushed = self
            .push_to(&source, &image, &tag, &progress)
            .await
            .map_err(|e| e.context(format!("push image \"{}\"", reference.name())))?;
        let outcome = PushOutcome {
            reference: reference.tagged().unwrap_or_default(),
            ..pushed
        };
        tracing::info!(image = %outcome.reference, id = %image.id, digest = %outcome.digest,
            bytes = outcome.uploaded_bytes, existing_blobs = outcome.existing_blobs, "image pushed");
        let (image, _) = self.commit(Image {
            repo_tags: Vec::new(),
            repo_digests: vec![reference.with_digest(&outcome.digest)],
            ..image
        })?;
        Ok((image, outcome))
    }

    async fn push_to(
        &self,
        source: &Source,
        image: &Image,
        tag: &str,
        progress: &PushReporter,
    ) -> Result<PushOutcome> {
        let manifest = self
            .content
            .read_blob(&image.manifest_digest)
            .map_err(|e| {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "the manifest {} is not in the store: {e}",
                        image.manifest_digest
                    ),
                )
            })?;
        let media_type = media_type_of(&manifest);
        let mut outcome = PushOutcome {
            reference: String::new(),
            digest: String::new(),
            size: manifest.len() as u64,
            existing_blobs: 0,
            uploaded_bytes: 0,
        };
        // Docker lists the top layer first, by its diff id.
        let layers: Vec<_> = image.layers.iter().rev().collect();
        for layer in &layers {
            progress
                .layer(&short_id(&layer.diff_id), PushLayerState::Preparing)
                .await;
        }
        let mut done = HashSet::new();
        for layer in &layers {
            let id = short_id(&layer.diff_id);
            if !done.insert(layer.digest.clone()) {
                progress.layer(&id, PushLayerState::AlreadyExists).await;
                continue;
            }
            let desc = Descriptor {
                media_type: String::new(),
                digest: layer.digest.clone(),
                size: layer.size,
                platform: None,
            };
            let sent = self
                .push_blob(source, &desc, |current| {
                    progress.bytes(&id, current, layer.size)
                })
                .await?;
            match sent {
                None => {
                    outcome.existing_blobs += 1;
                    progress.layer(&id, PushLayerState::AlreadyExists).await;
                }
                Some(n) => {
                    outcome.uploaded_bytes += n;
                    progress.layer(&id, PushLayerState::Pushed).await;
                }
            }
        }
        let config = self.content.read_blob(&image.id)?;
        let desc = Descriptor {
            media_type: String::new(),
            digest: image.id.clone(),
            size: config.len() as u64,
            platform: None,
        };
        match self.push_blob(source, &desc, |_| {}).await? {
            None => outcome.existing_blobs += 1,
            Some(n) => outcome.uploaded_bytes += n,
        }
        outcome.digest = source.put_manifest(tag, &media_type, &manifest).await?;
        progress
            .send(PushProgress::Finished {
                tag: tag.to_string(),
                digest: outcome.digest.clone(),
                size: outcome.size,
            })
            .await;
        Ok(outcome)
    }

    /// Uploads one stored blob unless the registry has it: `Some(bytes)`
    /// sent, `None` when it was there.
    async fn push_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        sent: impl FnMut(u64),
    ) -> Result<Option<u64>> {
        if source.has_blob(&desc.digest).await? {
            return Ok(None);
        }
        if !self.content.has_blob(&desc.digest) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "blob {} is not in the store (only the unpacked layer is), so it cannot be pushed unchanged",
                    desc.digest
                ),
            ));
        }
        let path = self.content.blob_path(&desc.digest)?;
        source
            .upload_blob(&desc.digest, &path, desc.size, sent)
            .await?;
        Ok(Some(desc.size))
    }
}

/// A manifest's own `mediaType`, which is what a registry must be told it
/// is; OCI's when it names none.
fn media_type_of(manifest: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(manifest)
        .ok()
        .and_then(|t| t.media_type)
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}
