//! The image service: pull, list, inspect and remove images, shared by every
//! front door (one store for kubelet and for admins).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::{Batch, Store};
use serde::{Deserialize, Serialize};

use crate::apply::{pull_layer, Budget, ABORTED};
use crate::content::{Content, Usage};
use crate::fetch::{check_size, Clients, Credentials, Source};
use crate::limits::{show_bytes, Limits};
use crate::manifest::{
    digest_hex, select_platform, Compression, Descriptor, ImageConfig, ImageManifest, Manifest,
    Platform,
};
use crate::progress::{short_id, LayerState, PullProgress, Reporter};
use crate::reference::{is_image_id, Reference};
use crate::registries::{Endpoint, RegistriesConfig};

mod archive;
mod build_cache;
mod local;
mod push;
pub use archive::{Loaded, SaveItem};
pub use push::PushOutcome;

const IMAGES: &str = "images";

/// What berth keeps about one image (its id is the config digest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    /// `registry/repository:tag` names that point at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@digest` names; the digest is the one the
    /// registry served for the reference (an index digest for multi-arch).
    pub repo_digests: Vec<String>,
    /// The platform manifest the layers came from.
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
    /// Compressed size: config plus layers, as registries and containerd count it.
    pub size: u64,
    /// The image config's `User`, as written.
    pub user: String,
    pub platform: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

/// Bytes and inodes the image store takes on its filesystem.
#[derive(Debug, Clone)]
pub struct FsInfo {
    pub mountpoint: PathBuf,
    pub used: Usage,
    pub timestamp: SystemTime,
}

/// How a pull went: what it resolved to, and counters a metrics front
/// door can read.
#[derive(Debug, Default, Clone)]
pub struct PullOutcome {
    /// `registry/repository:tag` or `registry/repository@digest`, as pulled
    /// (a short name resolved to the search registry that had it).
    pub reference: String,
    /// The digest the registry served for the reference (an index's for
    /// multi-arch images).
    pub digest: String,
    /// Whether the pull changed what is stored: a new image, or a name
    /// that now points at it. `false` is Docker's "Image is up to date".
    pub updated: bool,
    pub downloaded_bytes: u64,
    pub reused_layers: usize,
    pub seconds: f64,
}

pub struct ImageService {
    content: Arc<Content>,
    store: Arc<Store>,
    registries: RegistriesConfig,
    limits: Limits,
    clients: Clients,
    images: RwLock<BTreeMap<String, Image>>,
    /// One download per layer at a time, across all pulls.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls share it; removal (which collects garbage) takes it alone.
    gc_lock: tokio::sync::RwLock<()>,
}

impl ImageService {
    /// Opens the image store under `root` and loads its records; pulls
    /// use the default [`Limits`].
    pub fn open(root: &Path, store: Arc<Store>, registries: RegistriesConfig) -> Result<Self> {
        Self::open_with_limits(root, store, registries, Limits::default())
    }

    /// Like [`ImageService::open`], with the limits every pull keeps to.
    pub fn open_with_limits(
        root: &Path,
        store: Arc<Store>,
        registries: RegistriesConfig,
        limits: Limits,
    ) -> Result<Self> {
        let content = Arc::new(Content::open(root)?);
        let found = store.list_readable::<Image>(IMAGES)?;
        for (key, error) in found.moved_aside {
            tracing::error!(image = %key, "unreadable image record ({error}): moved aside");
        }
        let images = found.records.into_iter().collect::<BTreeMap<_, _>>();
        tracing::info!(images = images.len(), root = %root.display(), "image store opened");
        Ok(ImageService {
            content,
            store,
            registries,
            limits,
            clients: Clients::new()?,
            images: RwLock::new(images),
            layer_locks: Mutex::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    /// Pulls `reference` for `platform` (default: this node's) and returns the image.
    pub async fn pull(
        &self,
        reference: &str,
        creds: &Credentials,
        platform: Option<Platform>,
    ) -> Result<(Image, PullOutcome)> {
        self.pull_with_progress(reference, creds, platform, None)
            .await
    }

    /// Like [`ImageService::pull`], reporting progress on `progress` (see
    /// [`crate::progress`] for how it is delivered).
    pub async fn pull_with_progress(
        &self,
        reference: &str,
        creds: &Credentials,
        platform: Option<Platform>,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<(Image, PullOutcome)> {
        let progress = Reporter::new(progress);
        let started = Instant::now();
        let candidates = self.registries.candidates(reference)?;
        let platform = platform.unwrap_or_else(Platform::host);
        let _gc = self.gc_lock.read().await;

        let mut first_error = None;
        for reference in &candidates {
            match self
                .pull_reference(reference, creds, &platform, &progress)
                .await
            {
                Ok((image, mut outcome)) => {
                    outcome.seconds = started.elapsed().as_secs_f64();
                    return Ok((image, outcome));
                }
                Err(e) => {
                    first_error.get_or_insert(e.context(format!("pull image \"{reference}\"")));
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::not_found("no image name to pull")))
    }

    /// Tries each endpoint of one fully qualified reference: mirrors first.
    async fn pull_reference(
        &self,
        reference: &Reference,
        creds: &Credentials,
        platform: &Platform,
        progress: &Reporter,
    ) -> Result<(Image, PullOutcome)> {
        let mut last_error = None;
        for endpoint in &self.registries.endpoints(reference)? {
            match self
                .pull_from(reference, endpoint, creds, platform, progress)
                .await
            {
                Ok((image, outcome)) => {
                    tracing::info!(image = %reference, id = %image.id, registry = %endpoint.registry,
                        bytes = outcome.downloaded_bytes, reused_layers = outcome.reused_layers,
                        "image pulled");
                    return Ok((image, outcome));
                }
                Err(e) => {
                    tracing::warn!(image = %reference, registry = %endpoint.registry,
                        mirror = endpoint.is_mirror, error = %e, "pull attempt failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::not_found("no registry endpoint")))
    }

    async fn pull_from(
        &self,
        reference: &Reference,
        endpoint: &Endpoint,
        creds: &Credentials,
        platform: &Platform,
        progress: &Reporter,
    ) -> Result<(Image, PullOutcome)> {
        progress
            .send(PullProgress::Started {
                repository: reference.name(),
                tag: reference
                    .tag
                    .clone()
                    .or_else(|| reference.digest.clone())
                    .unwrap_or_default(),
            })
            .await;
        let source = self
            .clients
            .source(endpoint, reference.tag.as_deref(), creds, self.limits)?;
        // Verified against the reference's digest, if it has one.
        let (top_bytes, top_digest) = source.manifest(reference.digest.as_deref(), None).await?;
        let parsed =
            Manifest::parse(&top_bytes).map_err(|e| e.context(format!("manifest {top_digest}")))?;
        let mut blobs = vec![(top_digest.clone(), top_bytes)];
        let manifest = match parsed {
            Manifest::Image(m) => m,
            Manifest::Index(entries) => {
                let entry = select_platform(&entries, platform).ok_or_else(|| {
                    Error::not_found(format!(
                        "image index {top_digest} has no manifest for platform {platform}"
                    ))
                })?;
                // Checked before it goes into a URL or a message.
                digest_hex(&entry.digest)
                    .map_err(|e| e.context(format!("image index {top_digest}")))?;
                let declared = (entry.size != 0).then_some(entry.size);
                let (bytes, digest) = source.manifest(Some(&entry.digest), declared).await?;
                let Manifest::Image(m) =
                    Manifest::parse(&bytes).map_err(|e| e.context(format!("manifest {digest}")))?
                else {
                    return Err(Error::invalid(format!(
                        "index entry {digest} is itself an index"
                    )));
                };
                blobs.push((digest, bytes));
                m
            }
        };
        let manifest_digest = blobs.last().map(|b| b.0.clone()).unwrap_or_default();
        check_references(&manifest)
            .map_err(|e| e.context(format!("manifest {manifest_digest}")))?;

        let config_digest = manifest.config.digest.clone();
        let config_bytes = if self.content.has_blob(&config_digest) {
            self.content.read_blob(&config_digest)?
        } else {
            source.config(&manifest.config).await?
        };
        let config = ImageConfig::parse(&config_bytes)
            .map_err(|e| e.context(format!("image config {config_digest}")))?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::invalid(format!(
                "image config {config_digest} lists {} diff ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        for d in diff_ids {
            digest_hex(d).map_err(|e| e.context(format!("image config {config_digest}")))?;
        }
        blobs.push((config_digest.clone(), config_bytes));
        self.check_sizes(&manifest, diff_ids, &manifest_digest)?;
        let budget = Budget {
            layer: self.limits.max_layer_bytes,
            image: self.limits.max_image_bytes,
            image_used: Arc::default(),
        };

        // All layers at once; the first failure tells the others to stop, and
        // every one is awaited so none is cut off mid-write.
        let abort = AtomicBool::new(false);
        let fetches = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                let abort = &abort;
                let source = &source;
                let budget = budget.clone();
                async move {
                    let r = self
                        .ensure_layer(source, layer, diff_id, abort, budget, progress)
                        .await;
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                }
            });
        let mut downloaded = Vec::new();
        let mut errors = Vec::new();
        for r in futures::future::join_all(fetches).await {
            match r {
                Ok(d) => downloaded.push(d),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            // A layer that stopped because another failed is not the cause.
            let cause = errors
                .iter()
                .position(|e| e.message != ABORTED)
                .unwrap_or(0);
            return Err(errors.swap_remove(cause));
        }
        for (digest, bytes) in &blobs {
            self.content.put_blob(digest, bytes)?;
        }

        let image = Image {
            id: config_digest.clone(),
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top_digest)],
            manifest_digest,
            layers: manifest
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(l, d)| Layer {
                    digest: l.digest.clone(),
                    diff_id: d.clone(),
                    size: l.size,
                })
                .collect(),
            size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            user: config.user().to_string(),
            platform: format!("{}/{}", config.os, config.architecture),
        };
        let (image, updated) = self.commit(image)?;
        let pulled = match &reference.tag {
            Some(_) => reference.tagged().unwrap_or_default(),
            None => reference.with_digest(&top_digest),
        };
        progress
            .send(PullProgress::Finished {
                reference: pulled.clone(),
                digest: top_digest.clone(),
                updated,
            })
            .await;
        let outcome = PullOutcome {
            reference: pulled,
            digest: top_digest,
            updated,
            downloaded_bytes: downloaded.iter().flatten().sum(),
            reused_layers: downloaded.iter().filter(|d| d.is_none()).count(),
            seconds: 0.0,
        };
        Ok((image, outcome))
    }

    /// Makes sure the snapshot of one layer exists; `Some(bytes)` when it had
    /// to be downloaded, `None` when it was already there.
    async fn ensure_layer(
        &self,
        source: &Source,
        layer: &Descriptor,
        diff_id: &str,
        abort: &AtomicBool,
        budget: Budget,
        progress: &Reporter,
    ) -> Result<Option<u64>> {
        let id = short_id(&layer.digest);
        let lock = {
            let mut locks = self.layer_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(diff_id.to_string()).or_default().clone()
        };
        let result = {
            let _held = match lock.try_lock() {
                Ok(held) => held,
                Err(_) => {
                    progress.layer(&id, LayerState::Waiting).await;
                    lock.lock().await
                }
            };
            if self.content.has_snapshot(diff_id) {
                progress.layer(&id, LayerState::AlreadyExists).await;
                Ok(None)
            } else {
                progress.layer(&id, LayerState::PullingFsLayer).await;
                let pulled = pull_layer(
                    self.content.clone(),
                    source,
                    layer,
                    diff_id,
                    abort,
                    budget,
                    progress,
                    &id,
                )
                .await;
                if pulled.is_ok() {
                    progress.layer(&id, LayerState::PullComplete).await;
                }
                pulled.map(Some)
            }
        };
        let mut locks = self.layer_locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            locks.remove(diff_id);
        }
        result
    }

    /// Refuses, before anything is downloaded, a layer whose compressed size
    /// is over the per-layer limit, and layers to download whose sizes add
    /// up to more than the per-image limit: a layer unpacks to at least its
    /// compressed size, but for a few bytes of framing.
    fn check_sizes(
        &self,
        manifest: &ImageManifest,
        diff_ids: &[String],
        manifest_digest: &str,
    ) -> Result<()> {
        let mut total: u64 = 0;
        for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
            check_size(
                &format!("layer {}", layer.digest),
                layer.size,
                self.limits.max_layer_bytes,
                "per-layer limit",
            )?;
            if !self.content.has_snapshot(diff_id) {
                total = total.saturating_add(layer.size);
            }
        }
        if total > self.limits.max_image_bytes {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "manifest {manifest_digest} has {total} bytes of layers to download, over the {} per-image limit",
                    show_bytes(self.limits.max_image_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// Records a pulled image: merges names into an existing record of the
    /// same id and moves names that pointed at other images. The store is
    /// written before memory changes, so what is listed is what is durable.
    /// Also says whether anything changed (a new image or a moved name).
    fn commit(&self, pulled: Image) -> Result<(Image, bool)> {
        let mut images = self.images.write().unwrap_or_else(|p| p.into_inner());
        let existing = images.get(&pulled.id).cloned();
        let mut image = existing.clone().unwrap_or_else(|| pulled.clone());
        let mut changed = Vec::new();
        for name in pulled.repo_tags.iter().chain(&pulled.repo_digests) {
            for other in images.values().filter(|o| o.id != image.id) {
                if other.repo_tags.contains(name) || other.repo_digests.contains(name) {
                    let mut o = changed
                        .iter()
                        .position(|c: &Image| c.id == other.id)
                        .map(|i| changed.remove(i))
                        .unwrap_or_else(|| other.clone());
                    o.repo_tags.retain(|t| t != name);
                    o.repo_digests.retain(|t| t != name);
                    changed.push(o);
                }
            }
        }
        add_unique(&mut image.repo_tags, &pulled.repo_tags);
        add_unique(&mut image.repo_digests, &pulled.repo_digests);
        let updated = !changed.is_empty() || existing.as_ref() != Some(&image);
        changed.push(image.clone());

        let mut batch = Batch::new();
        for c in &changed {
            batch = batch.put(IMAGES, &c.id, c)?;
        }
        self.store.write(batch)?;
        for c in changed {
            images.insert(c.id.clone(), c);
        }
        Ok((image, updated))
    }

    /// All images, or those that `filter` (a reference or id) names.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.status(f)?.into_iter().collect()),
            None => Ok(self
                .images
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect()),
        }
    }

    /// The image that `name` (id, tag or digest reference) names, if present.
    pub fn status(&self, name: &str) -> Result<Option<Image>> {
        let images = self.images.read().unwrap_or_else(|p| p.into_inner());
        if is_image_id(name) {
            let id = if name.starts_with("sha256:") {
                name.to_string()
            } else {
                format!("sha256:{name}")
            };
            return Ok(images.get(&id).cloned());
        }
        for reference in self.registries.candidates(name)? {
            let found = match &reference.digest {
                Some(digest) => {
                    let by_digest = reference.with_digest(digest);
                    images
                        .values()
                        .find(|i| i.repo_digests.contains(&by_digest))
                }
                None => {
                    let tagged = reference.tagged().unwrap_or_default();
                    images.values().find(|i| i.repo_tags.contains(&tagged))
                }
            };
            if let Some(image) = found {
                return Ok(Some(image.clone()));
            }
        }
        Ok(None)
    }

    /// `name` as a pull would first try it: `registry/repository`, and its
    /// tag (`latest` when it names neither tag nor digest) or digest.
    pub fn qualify(&self, name: &str) -> Result<(String, Option<String>, Option<String>)> {
        let r = self.registries.candidates(name)?.swap_remove(0);
        Ok((r.name(), r.tag, r.digest))
    }

    /// Points the tag `target` at the image `source` names, moving it off
    /// any image it named before. A short `target` is qualified with the
    /// first unqualified-search registry, the one a pull tries first.
    pub async fn tag(&self, source: &str, target: &str) -> Result<Image> {
        // Not while a removal collects the layers of the image.
        let _gc = self.gc_lock.read().await;
        let image = self
            .status(source)?
            .ok_or_else(|| Error::not_found(format!("image {source:?} not found")))?;
        let reference = self.registries.candidates(target)?.swap_remove(0);
        let Some(tagged) = reference.tagged().filter(|_| reference.digest.is_none()) else {
            return Err(Error::invalid(format!(
                "cannot tag image {source:?} as {target:?}: a tag names no digest"
            )));
        };
        let (image, _) = self.commit(Image {
            repo_tags: vec![tagged],
            repo_digests: Vec::new(),
            ..image
        })?;
        tracing::info!(id = %image.id, target, "image tagged");
        Ok(image)
    }

    /// Removes one name (a tag or a digest reference) from the image it
    /// names; the image stays, possibly with no name left ([`ImageService::remove`]
    /// deletes images). Returns the image as it is now.
    pub async fn untag(&self, name: &str) -> Result<Image> {
        if is_image_id(name) {
            return Err(Error::invalid(format!(
                "cannot untag {name:?}: it is an image id, not a name"
            )));
        }
        let _gc = self.gc_lock.read().await;
        let mut images = self.images.write().unwrap_or_else(|p| p.into_inner());
        for reference in self.registries.candidates(name)? {
            let key = match &reference.digest {
                Some(digest) => reference.with_digest(digest),
                None => reference.tagged().unwrap_or_default(),
            };
            let Some(found) = images
                .values()
                .find(|i| i.repo_tags.contains(&key) || i.repo_digests.contains(&key))
            else {
                continue;
            };
            let mut image = found.clone();
            image.repo_tags.retain(|n| *n != key);
            image.repo_digests.retain(|n| *n != key);
            self.store
                .write(Batch::new().put(IMAGES, &image.id, &image)?)?;
            images.insert(image.id.clone(), image.clone());
            tracing::info!(id = %image.id, name = %key, "image untagged");
            return Ok(image);
        }
        Err(Error::not_found(format!("image {name:?} not found")))
    }

    /// The raw image config JSON of a present image.
    pub fn config(&self, image: &Image) -> Result<Vec<u8>> {
        self.content.read_blob(&image.id)
    }

    /// What each layer of an image takes unpacked, bottom layer first:
    /// the sizes `docker history` shows.
    pub fn unpacked_sizes(&self, image: &Image) -> Vec<u64> {
        image
            .layers
            .iter()
            .map(|l| self.content.snapshot_usage(&l.diff_id).bytes)
            .collect()
    }

    /// The overlayfs lowerdirs of an image, bottom layer first.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .map(|l| self.content.snapshot_fs(&l.diff_id))
            .collect()
    }

    /// Removes an image and every name of it, then collects layers and blobs
    /// no remaining image uses. Removing a missing image succeeds.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let _gc = self.gc_lock.write().await;
        let Some(image) = self.status(name)? else {
            return Ok(());
        };
        {
            let mut images = self.images.write().unwrap_or_else(|p| p.into_inner());
            self.store.write(Batch::new().delete(IMAGES, &image.id))?;
            images.remove(&image.id);
        }
        tracing::info!(id = %image.id, "image removed");
        self.collect_garbage()
    }

    /// Deletes snapshots and blobs that no image references (also those an
    /// interrupted pull left, which are kept until then so a retry resumes).
    fn collect_garbage(&self) -> Result<()> {
        let (layers, blobs) = {
            let images = self.images.read().unwrap_or_else(|p| p.into_inner());
            let mut layers = BTreeSet::new();
            let mut blobs = BTreeSet::new();
            for i in images.values() {
                blobs.insert(i.id.clone());
                blobs.insert(i.manifest_digest.clone());
                for d in &i.repo_digests {
                    if let Some((_, digest)) = d.rsplit_once('@') {
                        blobs.insert(digest.to_string());
                    }
                }
                for l in &i.layers {
                    layers.insert(l.diff_id.clone());
                    blobs.insert(l.digest.clone());
                }
            }
            (layers, blobs)
        };
        let mut errors = Vec::new();
        for diff_id in self.content.snapshots()? {
            if !layers.contains(&diff_id) {
                if let Err(e) = self.content.remove_snapshot(&diff_id) {
                    errors.push(e.to_string());
                }
            }
        }
        for digest in self.content.blobs()? {
            if !blobs.contains(&digest) {
                if let Err(e) = self.content.remove_blob(&digest) {
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Internal,
                format!("image garbage collection: {}", errors.join("; ")),
            ))
        }
    }

    /// Real bytes and inodes used by snapshots, blobs and the metadata file.
    pub fn fs_info(&self) -> Result<FsInfo> {
        let mut used = Usage::default();
        for diff_id in self.content.snapshots()? {
            used += self.content.snapshot_usage(&diff_id);
        }
        for digest in self.content.blobs()? {
            used += self.content.blob_usage(&digest);
        }
        Ok(FsInfo {
            mountpoint: self.content.root().to_path_buf(),
            used,
            timestamp: SystemTime::now(),
        })
    }
}

/// Checks what a manifest points at before any of it is used in a URL, a
/// path or a message: digests well formed, layer media types known.
fn check_references(manifest: &ImageManifest) -> Result<()> {
    digest_hex(&manifest.config.digest)?;
    for layer in &manifest.layers {
        digest_hex(&layer.digest)?;
        Compression::of_media_type(&layer.media_type)
            .map_err(|e| e.context(format!("layer {}", layer.digest)))?;
    }
    Ok(())
}

fn add_unique(into: &mut Vec<String>, names: &[String]) {
    for n in names {
        if !into.contains(n) {
            into.push(n.clone());
        }
    }
}
