//! The image facade: the core's image service, in the core's own types.
//! Front doors (CRI, Docker) call [`Images`] and never the leaf image
//! service (`berth-image`), which stays behind it; `hack/lint-deps.sh`
//! keeps it so.
//!
//! What it adds to the leaf: the in-use check before removal (through
//! [`ImageUsers`], so it needs nothing of the rest of the core), the image
//! config read into [`ImageInfo`], and pull progress in the core's types.
//!
//! Beyond the leaf's verbs: `push` (the stored blobs and manifest, as
//! pulled, to the registry the name names), `history` (the config's
//! history entries beside the layers they made) and `prune` (the images no
//! container uses, or only the dangling ones: those with no tag left).

use crate::events::{Action, Attrs, EventBus, ObjectKind};
use crate::metrics::{self, NoRecorder, Recorder};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_image::manifest::Platform as LeafPlatform;
use berth_image::service::{ImageService, PullOutcome as LeafPullOutcome};
use tokio::sync::mpsc;

/// The leaf's record of an image, for the core's own use (containers).
pub(crate) type LeafImage = berth_image::service::Image;

/// Tells which container, if any, uses an image. The owner of the
/// containers implements it; removal asks it first.
pub trait ImageUsers: Send + Sync {
    /// The id of a container that uses the image `image_id`, if one does.
    fn user_of(&self, image_id: &str) -> Option<String>;
}

/// How to authenticate a pull; a [`Secret`] never shows in logs or
/// `Debug` output. The registry client's own types: the core adds nothing
/// to them.
pub use berth_image::fetch::{Credentials, Secret};

/// Which image of a multi-platform index to pull, in OCI's names
/// (`linux`, `amd64`, `v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This node's platform.
    pub fn host() -> Platform {
        let p = LeafPlatform::host();
        Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant,
        }
    }
}

/// What to pull, as whom, for which platform (`None`: this node's).
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    pub reference: String,
    pub credentials: Credentials,
    pub platform: Option<Platform>,
}

/// What a pull resolved to and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// The image id (its config digest).
    pub image_id: String,
    /// `registry/repository:tag` or `registry/repository@digest`, as pulled
    /// (a short name qualified with the registry that had it).
    pub reference: String,
    /// The digest the registry served for the reference (an index's for a
    /// multi-platform image): Docker's "Digest:".
    pub digest: String,
    /// The platform manifest the layers came from.
    pub manifest_digest: String,
    /// Whether anything changed: a new image, or a name that now points at
    /// it. `false` is Docker's "Image is up to date".
    pub updated: bool,
    /// Compressed bytes read from the registry for layers.
    pub downloaded_bytes: u64,
    /// Layers that were on disk already.
    pub reused_layers: usize,
}

/// What a pull reports as it goes: the registry client's own reports,
/// with the per-layer states and byte counts a Docker client renders
/// ([`LayerProgress::docker_status`]).
pub use berth_image::progress::{LayerState as LayerProgress, PullProgress};

/// What a push reports as it goes, in Docker's vocabulary
/// ([`PushLayerProgress::docker_status`]).
pub use berth_image::progress::{PushLayerState as PushLayerProgress, PushProgress};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    pub image_id: String,
    /// `registry/repository:tag`, as pushed.
    pub reference: String,
    /// The manifest's digest at the registry (the one pulled, unchanged).
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// Blobs the registry had already.
    pub existing_blobs: usize,
    pub uploaded_bytes: u64,
}

/// One entry of an image's history, newest first, as `docker history`
/// lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The image id on the newest entry; `None` (Docker's `<missing>`) on
    /// the others, which are no image of their own here.
    pub id: Option<String>,
    /// As written in the config (RFC 3339), if it says.
    pub created: Option<String>,
    pub created_by: String,
    pub comment: String,
    /// Unpacked bytes of the layer the step made; 0 for an empty layer.
    pub size: u64,
    /// The image's tags, on the newest entry.
    pub tags: Vec<String>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<PrunedImage>,
    /// Bytes the image store takes less than before.
    pub reclaimed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedImage {
    pub id: String,
    /// The names it had (tags and digest references).
    pub names: Vec<String>,
}

/// An image as front doors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The config digest, `sha256:…`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Compressed size: config plus layers.
    pub size: u64,
    /// What the layers take unpacked (as dockerd counts an image's size).
    pub unpacked_size: u64,
    /// The config's `created`, as written (RFC 3339), if it has one.
    pub created: Option<String>,
    pub manifest_digest: String,
    /// `os/architecture`.
    pub platform: String,
    /// Bottom layer first.
    pub layers: Vec<ImageLayer>,
    pub config: ImageConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

/// The image config's defaults for containers (its `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `User` as written: a name or uid, with an optional `:group`.
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// `port/protocol`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub stop_signal: String,
    pub volumes: Vec<String>,
}

/// What the image store takes on its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFsInfo {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub used_inodes: u64,
    pub timestamp: SystemTime,
}

/// The parts of an image config [`ImageInfo`] shows, read once per image
/// (configs are content-addressed, so never stale).
#[derive(Debug, Clone, Default)]
struct ConfigSummary {
    created: Option<String>,
    config: ImageConfig,
}

/// The core's image service.
pub struct Images {
    pub(crate) leaf: Arc<ImageService>,
    users: Arc<dyn ImageUsers>,
    configs: Mutex<HashMap<String, Arc<ConfigSummary>>>,
    events: Arc<EventBus>,
    metrics: Arc<dyn Recorder>,
}

impl Images {
    pub fn new(
        leaf: Arc<ImageService>,
        users: Arc<dyn ImageUsers>,
        events: Arc<EventBus>,
    ) -> Images {
        Images {
            leaf,
            users,
            configs: Mutex::default(),
            events,
            metrics: Arc::new(NoRecorder),
        }
    }

    /// Records pulls into `metrics` (the core's recorder).
    pub fn recording(mut self, metrics: Arc<dyn Recorder>) -> Images {
        self.metrics = metrics;
        self
    }

    /// Publishes what happened to an image (Docker's image events: the
    /// id is the image's, `name` the reference concerned).
    pub(crate) fn image_event(&self, id: &str, name: &str, action: Action) {
        self.events
            .publish(ObjectKind::Image, id, action, Attrs::new().name(name));
    }

    /// Pulls an image. With `progress`, reports on it as the pull goes,
    /// every report delivered before this returns; the caller must keep
    /// reading it (state changes wait for room; byte counts are dropped
    /// when it is full).
    pub async fn pull(
        &self,
        request: PullRequest,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<PullResult> {
        let creds = request.credentials;
        let platform = request.platform.map(|p| LeafPlatform {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant,
        });
        let started = Instant::now();
        let pulled = self
            .leaf
            .pull_with_progress(&request.reference, &creds, platform, progress)
            .await;
        self.record_pull(&pulled, started.elapsed());
        let (image, outcome) = pulled?;
        self.image_event(&image.id, &outcome.reference, Action::Pull);
        Ok(PullResult {
            image_id: image.id,
            reference: outcome.reference,
            digest: outcome.digest,
            manifest_digest: image.manifest_digest,
            updated: outcome.updated,
            downloaded_bytes: outcome.downloaded_bytes,
            reused_layers: outcome.reused_layers,
        })
    }

    /// A pull's figures: how it ended, how long it took, and the layer
    /// bytes it fetched beside those the store had.
    fn record_pull(&self, pulled: &Result<(LeafImage, LeafPullOutcome)>, took: Duration) {
        match pulled {
            Ok((image, outcome)) => {
                self.metrics
                    .image_pulled(metrics::PullOutcome::Success, took);
                let layers: u64 = image.layers.iter().map(|l| l.size).sum();
                self.metrics
                    .image_pull_bytes(false, outcome.downloaded_bytes);
                self.metrics
                    .image_pull_bytes(true, layers.saturating_sub(outcome.downloaded_bytes));
            }
            Err(e) => self.metrics.image_pulled(
                metrics::PullOutcome::Failure(metrics::PullFailure::of(e.kind)),
                took,
            ),
        }
    }

    /// Every image, or those `filter` (a reference or an id) names. An
    /// image whose config cannot be read is listed without its config.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<ImageInfo>> {
        Ok(self
            .leaf
            .list(filter)?
            .iter()
            .map(|image| {
                let summary = self.summary(image).unwrap_or_else(|e| {
                    tracing::warn!(id = %image.id, error = %e, "image config unreadable");
                    Arc::default()
                });
                to_info(image, &summary, self.unpacked_size(image))
            })
            .collect())
    }

    /// The image `name` (an id, a tag or a digest reference) names.
    /// An image that is not there is `Ok(None)`, not an error: front doors
    /// answer it in their own ways (CRI with an empty status, Docker with
    /// 404).
    pub fn status(&self, name: &str) -> Result<Option<ImageInfo>> {
        let Some(image) = self.leaf.status(name)? else {
            return Ok(None);
        };
        Ok(Some(self.info(&image)?))
    }

    /// The image config of the image `name` names, as pulled (OCI image
    /// config JSON), for verbose status and inspect; `None` when there is
    /// no such image.
    pub fn config_json(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.leaf.status(name)? {
            Some(image) => self.leaf.config(&image).map(Some),
            None => Ok(None),
        }
    }

    /// Removes an image and its names, unless a container uses it
    /// (`FailedPrecondition` naming the container). Removing an image that
    /// is not there succeeds. The check and the removal are not one step:
    /// a container created in between keeps its mounted layers.
    pub async fn remove(&self, name: &str) -> Result<()> {
        if let Some(image) = self.leaf.status(name)? {
            if let Some(user) = self.users.user_of(&image.id) {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("image {name} is in use by container {user}"),
                ));
            }
            self.configs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&image.id);
            self.leaf.remove(name).await?;
            self.image_event(&image.id, name, Action::Delete);
            return Ok(());
        }
        self.leaf.remove(name).await
    }

    /// Points the tag `target` at the image `source` names (moving it off
    /// any other image). A short `target` is qualified with the first
    /// unqualified-search registry.
    pub async fn tag(&self, source: &str, target: &str) -> Result<ImageInfo> {
        let image = self.leaf.tag(source, target).await?;
        self.image_event(&image.id, target, Action::Tag);
        self.info(&image)
    }

    /// Takes one name (tag or digest reference) off its image; the image
    /// stays, maybe with no name. `NotFound` when no image has the name.
    pub async fn untag(&self, name: &str) -> Result<ImageInfo> {
        let image = self.leaf.untag(name).await?;
        self.image_event(&image.id, name, Action::Untag);
        self.info(&image)
    }

    /// Pushes the image `name` (a tag reference) to the registry that
    /// name is at, under its tag. With `progress`, reports as it goes, as
    /// [`Images::pull`] does. The image gains the pushed
    /// `repository@digest` name.
    pub async fn push(
        &self,
        name: &str,
        credentials: Credentials,
        progress: Option<mpsc::Sender<PushProgress>>,
    ) -> Result<PushResult> {
        let (image, outcome) = self.leaf.push(name, &credentials, progress).await?;
        self.image_event(&image.id, &outcome.reference, Action::Push);
        Ok(PushResult {
            image_id: image.id,
            reference: outcome.reference,
            digest: outcome.digest,
            size: outcome.size,
            existing_blobs: outcome.existing_blobs,
            uploaded_bytes: outcome.uploaded_bytes,
        })
    }

    /// The history of the image `name` names, newest first; `None` when
    /// there is no such image. Entries are the config's `history`; the
    /// ones that made a layer (not `empty_layer`) take the layers' sizes in
    /// order. A config without history gets one entry per layer.
    pub fn history(&self, name: &str) -> Result<Option<Vec<HistoryEntry>>> {
        let Some(image) = self.leaf.status(name)? else {
            return Ok(None);
        };
        let config = self.leaf.config(&image)?;
        let sizes = self.leaf.unpacked_sizes(&image);
        let mut entries = history_entries(&config, &sizes)
            .map_err(|e| e.context(format!("image config {}", image.id)))?;
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = Some(image.id.clone());
            top.tags = image.repo_tags.clone();
        }
        Ok(Some(entries))
    }

    /// Removes the images no container uses: with `dangling_only`, just
    /// those without a tag. An image whose removal fails stays and the
    /// prune goes on; the first failure is logged, not returned.
    pub async fn prune(&self, dangling_only: bool) -> Result<PruneReport> {
        let before = self.leaf.fs_info()?.used.bytes;
        let mut report = PruneReport::default();
        for image in self.leaf.list(None)? {
            if dangling_only && !image.repo_tags.is_empty() {
                continue;
            }
            if self.users.user_of(&image.id).is_some() {
                continue;
            }
            match self.remove(&image.id).await {
                Ok(()) => report.removed.push(PrunedImage {
                    id: image.id.clone(),
                    names: image
                        .repo_tags
                        .iter()
                        .chain(&image.repo_digests)
                        .cloned()
                        .collect(),
                }),
                Err(e) => tracing::warn!(id = %image.id, error = %e, "prune: image not removed"),
            }
        }
        let after = self.leaf.fs_info()?.used.bytes;
        report.reclaimed_bytes = before.saturating_sub(after);
        Ok(report)
    }

    /// The container that uses the image `image_id`, if one does: what
    /// removal refuses on, for front doors that word it themselves.
    pub fn user_of(&self, image_id: &str) -> Option<String> {
        self.users.user_of(image_id)
    }

    /// `name` fully qualified as a pull would first try it
    /// (`busybox` → `docker.io/library/busybox:latest`), split into its
    /// repository and its tag or digest (`:tag`, `@digest`).
    /// `InvalidArgument` for a malformed name.
    pub fn qualify(&self, name: &str) -> Result<QualifiedName> {
        let (repository, tag, digest) = self.leaf.qualify(name)?;
        Ok(QualifiedName {
            repository,
            tag,
            digest,
        })
    }

    pub fn fs_info(&self) -> Result<ImageFsInfo> {
        let i = self.leaf.fs_info()?;
        Ok(ImageFsInfo {
            mountpoint: i.mountpoint,
            used_bytes: i.used.bytes,
            used_inodes: i.used.inodes,
            timestamp: i.timestamp,
        })
    }

    /// The leaf image `name` names, for making containers.
    pub(crate) fn resolve(&self, name: &str) -> Result<Option<LeafImage>> {
        self.leaf.status(name)
    }

    /// The overlayfs lowerdirs of an image, bottom layer first.
    pub(crate) fn layer_dirs(&self, image: &LeafImage) -> Result<Vec<PathBuf>> {
        self.leaf.layer_dirs(image)
    }

    /// The raw image config JSON of an image.
    /// The config fields a container inherits, parsed once per image.
    pub(crate) fn config(&self, image: &LeafImage) -> Result<ImageConfig> {
        Ok(self.summary(image)?.config.clone())
    }

    pub(crate) fn info(&self, image: &LeafImage) -> Result<ImageInfo> {
        Ok(to_info(
            image,
            &*self.summary(image)?,
            self.unpacked_size(image),
        ))
    }

    fn unpacked_size(&self, image: &LeafImage) -> u64 {
        self.leaf.unpacked_sizes(image).iter().sum()
    }

    fn summary(&self, image: &LeafImage) -> Result<Arc<ConfigSummary>> {
        if let Some(s) = self
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&image.id)
        {
            return Ok(s.clone());
        }
        let bytes = self.leaf.config(image)?;
        let summary = Arc::new(
            parse_config(&bytes).map_err(|e| e.context(format!("image config {}", image.id)))?,
        );
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.id.clone(), summary.clone());
        Ok(summary)
    }
}

/// A name as a pull would first resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The config's history entries, oldest first, each that made a layer
/// with that layer's size.
fn history_entries(config: &[u8], sizes: &[u64]) -> Result<Vec<HistoryEntry>> {
    let v: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| Error::invalid(format!("malformed image config: {e}")))?;
    let Some(history) = v["history"].as_array().filter(|h| !h.is_empty()) else {
        return Ok(sizes
            .iter()
            .map(|&size| HistoryEntry {
                id: None,
                created: None,
                created_by: String::new(),
                comment: String::new(),
                size,
                tags: Vec::new(),
            })
            .collect());
    };
    let mut layers = sizes.iter();
    Ok(history
        .iter()
        .map(|h| {
            let text = |k: &str| h[k].as_str().unwrap_or_default().to_string();
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            HistoryEntry {
                id: None,
                created: h["created"].as_str().map(str::to_string),
                created_by: text("created_by"),
                comment: text("comment"),
                size: if empty {
                    0
                } else {
                    layers.next().copied().unwrap_or(0)
                },
                tags: Vec::new(),
            }
        })
        .collect())
}

fn to_info(image: &LeafImage, summary: &ConfigSummary, unpacked_size: u64) -> ImageInfo {
    let mut config = summary.config.clone();
    if config.user.is_empty() {
        config.user = image.user.clone();
    }
    ImageInfo {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        unpacked_size,
        created: summary.created.clone(),
        manifest_digest: image.manifest_digest.clone(),
        platform: image.platform.clone(),
        layers: image
            .layers
            .iter()
            .map(|l| ImageLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
            })
            .collect(),
        config,
    }
}

/// Reads what [`ImageConfig`] shows; absent or mistyped fields are empty
/// (registries' images are not all tidy), malformed JSON is an error.
fn parse_config(bytes: &[u8]) -> Result<ConfigSummary> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("malformed image config: {e}")))?;
    let c = &v["config"];
    let string = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    let strings = |k: &str| -> Vec<String> {
        c[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Docker writes sets as objects with empty values.
    let keys = |k: &str| -> Vec<String> {
        c[k].as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let labels = c["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ConfigSummary {
        created: v["created"].as_str().map(str::to_string),
        config: ImageConfig {
            user: string("User"),
            env: strings("Env"),
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            working_dir: string("WorkingDir"),
            labels,
            exposed_ports: keys("ExposedPorts"),
            stop_signal: string("StopSignal"),
            volumes: keys("Volumes"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_image::content::Content;
    use berth_image::registries::RegistriesConfig;
    use berth_image::service::Layer;
    use berth_store::{Batch, Store};

    const CONFIG: &str = r#"{
        "created": "2026-01-02T03:04:05Z",
        "architecture": "amd64", "os": "linux",
        "config": {
            "User": "app:app", "Env": ["PATH=/bin", "A=b"],
            "Entrypoint": ["/init"], "Cmd": ["serve", "--port=80"],
            "WorkingDir": "/srv", "Labels": {"org.example": "yes", "n": 1},
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "StopSignal": "SIGQUIT", "Volumes": {"/data": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }"#;

    /// An image of one empty layer (a tar of 1024 zero bytes).
    const PULLED_CONFIG: &str = r#"{
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["serve", "--port=80"]},
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        ]}
    }"#;

    /// A container per image id.
    struct Users(Mutex<HashMap<String, String>>);

    impl ImageUsers for Users {
        fn user_of(&self, image_id: &str) -> Option<String> {
            self.0.lock().unwrap().get(image_id).cloned()
        }
    }

    /// A well-formed digest; the leaf checks the form, not the content.
    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// A leaf store holding one image (its record and config blob) named
    /// `reg.example/app:v1`, opened behind the facade.
    fn images_with_one(dir: &std::path::Path, config: &[u8]) -> (Images, Arc<Users>, String) {
        let id = digest('c');
        let store = Arc::new(Store::open(&dir.join("store")).unwrap());
        let root = dir.join("images");
        Content::open(&root).unwrap().put_blob(&id, config).unwrap();
        let image = LeafImage {
            id: id.clone(),
            repo_tags: vec!["reg.example/app:v1".into()],
            repo_digests: vec![format!("reg.example/app@{}", digest('d'))],
            manifest_digest: digest('d'),
            layers: vec![Layer {
                digest: digest('e'),
                diff_id: digest('f'),
                size: 5,
            }],
            size: 5 + config.len() as u64,
            user: "app:app".into(),
            platform: "linux/amd64".into(),
        };
        store
            .write(Batch::new().put("images", &id, &image).unwrap())
            .unwrap();
        let leaf = ImageService::open(&root, store, RegistriesConfig::default()).unwrap();
        let users = Arc::new(Users(Mutex::default()));
        (
            Images::new(Arc::new(leaf), users.clone(), Default::default()),
            users,
            id,
        )
    }

    #[test]
    fn an_unreadable_image_record_is_moved_aside_and_the_rest_load() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        drop(images);
        let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
        store
            .write(Batch::new().put_raw("images", &digest('b'), b"{not json".to_vec()))
            .unwrap();
        let leaf = ImageService::open(
            &dir.path().join("images"),
            store.clone(),
            Default::default(),
        )
        .expect("the image store opens past an unreadable record");
        let ids: Vec<String> = leaf.list(None).unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, [id]);
        assert_eq!(
            store.list_aside("images").unwrap(),
            [(digest('b'), b"{not json".to_vec())]
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!(
            "{:?}",
            PullRequest {
                reference: "r".into(),
                credentials: c,
                platform: None,
            }
        );
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!format!("{:?}", Credentials::Bearer(Secret::new("tok3n"))).contains("tok3n"));
    }

    #[test]
    fn status_shows_the_config_summary() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        let info = images.status("reg.example/app:v1").unwrap().unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.created.as_deref(), Some("2026-01-02T03:04:05Z"));
        assert_eq!(info.platform, "linux/amd64");
        assert_eq!(info.layers[0].size, 5);
        let c = &info.config;
        assert_eq!(c.user, "app:app");
        assert_eq!(c.env, ["PATH=/bin", "A=b"]);
        assert_eq!(
            (c.entrypoint.as_slice(), c.cmd.as_slice()),
            (
                &["/init".to_string()][..],
                &["serve".to_string(), "--port=80".to_string()][..]
            )
        );
        assert_eq!(c.working_dir, "/srv");
        // A label that is not a string is left out.
        assert_eq!(
            c.labels,
            BTreeMap::from([("org.example".into(), "yes".into())])
        );
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(
            (c.stop_signal.as_str(), c.volumes.as_slice()),
            ("SIGQUIT", &["/data".to_string()][..])
        );
        assert_eq!(images.list(None).unwrap(), vec![info.clone()]);
        assert_eq!(
            images.config_json(&id).unwrap().as_deref(),
            Some(CONFIG.as_bytes())
        );
        // Missing is None, not an error.
        assert_eq!(images.status("reg.example/app:v2").unwrap(), None);
        assert_eq!(images.config_json("reg.example/app:v2").unwrap(), None);
    }

    #[test]
    fn a_malformed_config_fails_status_and_not_list() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, id) = images_with_one(dir.path(), b"{not json");
        let err = images.status(&id).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(
            err.message.contains(&id) && err.message.contains("malformed"),
            "{err}"
        );
        let listed = images.list(None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].config.user, "app:app",
            "the record's user still shows"
        );
    }

    #[tokio::test]
    async fn an_image_in_use_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (images, users, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        users.0.lock().unwrap().insert(id.clone(), "c0ffee".into());
        let err = images.remove("reg.example/app:v1").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.message.contains("reg.example/app:v1") && err.message.contains("container c0ffee"),
            "{err}"
        );
        assert!(images.status(&id).unwrap().is_some(), "still there");

        users.0.lock().unwrap().clear();
        images.remove("reg.example/app:v1").await.unwrap();
        assert_eq!(images.status(&id).unwrap(), None);
        // Removing what is gone succeeds.
        images.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn tags_go_through_the_facade() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        let tagged = images.tag(&id, "reg.example/other:x").await.unwrap();
        assert_eq!(
            tagged.repo_tags,
            ["reg.example/app:v1", "reg.example/other:x"]
        );
        assert_eq!(tagged.config.working_dir, "/srv");
        let untagged = images.untag("reg.example/app:v1").await.unwrap();
        assert_eq!(untagged.repo_tags, ["reg.example/other:x"]);
        let err = images.untag("reg.example/app:v1").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    }

    /// A registry on 127.0.0.1 serving one image at `<host>/app:latest`:
    /// an uncompressed layer (an empty tar) and `config`. Returns its host,
    /// the manifest digest and the layer's size.
    async fn registry(config: &'static [u8]) -> (String, String, u64) {
        use berth_image::fetch::sha256_digest;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let layer: &'static [u8] = &[0; 1024];
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256_digest(layer), "size": layer.len()}],
        }))
        .unwrap();
        let manifest_digest = sha256_digest(&manifest);
        let blobs: Arc<HashMap<String, Vec<u8>>> = Arc::new(HashMap::from([
            ("/v2/app/manifests/latest".to_string(), manifest),
            (
                format!("/v2/app/blobs/{}", sha256_digest(config)),
                config.to_vec(),
            ),
            (
                format!("/v2/app/blobs/{}", sha256_digest(layer)),
                layer.to_vec(),
            ),
        ]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let blobs = blobs.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split(' ').nth(1).unwrap_or_default();
                    let (status, body) = match blobs.get(path) {
                        Some(b) => ("200 OK", b.clone()),
                        None => ("404 Not Found", Vec::new()),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        (host, manifest_digest, layer.len() as u64)
    }

    /// A facade over an empty store under `dir`, publishing on `bus`.
    fn empty_images(dir: &std::path::Path, bus: Arc<EventBus>) -> Images {
        let store = Arc::new(Store::open(&dir.join("store")).unwrap());
        let leaf =
            ImageService::open(&dir.join("images"), store, RegistriesConfig::default()).unwrap();
        Images::new(Arc::new(leaf), Arc::new(Users(Mutex::default())), bus)
    }

    #[tokio::test]
    async fn a_pull_through_the_facade_reports_in_core_types() {
        let (host, manifest_digest, layer_size) = registry(PULLED_CONFIG.as_bytes()).await;
        let dir = tempfile::tempdir().unwrap();
        let images = empty_images(dir.path(), Default::default());
        let name = format!("{host}/app:latest");
        let pull = || PullRequest {
            reference: name.clone(),
            credentials: Credentials::Anonymous,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            }),
        };

        let (tx, mut rx) = mpsc::channel(64);
        let pulled = images.pull(pull(), Some(tx)).await.unwrap();
        assert_eq!(
            pulled,
            PullResult {
                image_id: berth_image::fetch::sha256_digest(PULLED_CONFIG.as_bytes()),
                reference: name.clone(),
                digest: manifest_digest.clone(),
                manifest_digest: manifest_digest.clone(),
                updated: true,
                downloaded_bytes: layer_size,
                reused_layers: 0,
            }
        );
        // Every report arrived before the pull returned.
        let mut seen = Vec::new();
        while let Ok(p) = rx.try_recv() {
            seen.push(p);
        }
        assert!(rx.is_closed() && rx.is_empty(), "nothing more to come");
        // The counts come as the bytes arrive (in one chunk or more).
        let (counts, states): (Vec<LayerProgress>, Vec<LayerProgress>) = seen
            .iter()
            .filter_map(|p| match p {
                PullProgress::Layer { state, .. } => Some(*state),
                _ => None,
            })
            .partition(|s| matches!(s, LayerProgress::Downloading { .. }));
        assert_eq!(
            counts.last(),
            Some(&LayerProgress::Downloading {
                current: layer_size,
                total: layer_size
            })
        );
        assert_eq!(
            states,
            [
                LayerProgress::PullingFsLayer,
                LayerProgress::VerifyingChecksum,
                LayerProgress::DownloadComplete,
                LayerProgress::Extracting,
                LayerProgress::PullComplete,
            ]
        );
        assert_eq!(
            seen.first(),
            Some(&PullProgress::Started {
                repository: format!("{host}/app"),
                tag: "latest".into()
            })
        );
        assert_eq!(
            seen.last(),
            Some(&PullProgress::Finished {
                reference: name.clone(),
                digest: manifest_digest,
                updated: true
            })
        );
        let info = images.status(&name).unwrap().unwrap();
        assert_eq!(info.id, pulled.image_id);
        assert_eq!(info.config.cmd, ["serve", "--port=80"]);

        // Again, without a progress channel: nothing new.
        let again = images.pull(pull(), None).await.unwrap();
        assert_eq!(
            (again.updated, again.downloaded_bytes, again.reused_layers),
            (false, 0, 1)
        );
    }

    #[test]
    fn history_pairs_layer_making_steps_with_layer_sizes() {
        let config = br#"{"history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": "ADD rootfs"},
            {"created_by": "ENV A=b", "empty_layer": true},
            {"created_by": "RUN make", "comment": "built"}
        ]}"#;
        let entries = history_entries(config, &[700, 50]).unwrap();
        let shown: Vec<(&str, u64)> = entries
            .iter()
            .map(|e| (e.created_by.as_str(), e.size))
            .collect();
        assert_eq!(
            shown,
            [("ADD rootfs", 700), ("ENV A=b", 0), ("RUN make", 50)]
        );
        assert_eq!(entries[0].created.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(entries[2].comment, "built");
        // No history: one entry per layer.
        let bare = history_entries(b"{}", &[1, 2]).unwrap();
        assert_eq!(bare.iter().map(|e| e.size).collect::<Vec<_>>(), [1, 2]);
        assert!(history_entries(b"{nope", &[]).is_err());
    }

    #[tokio::test]
    async fn history_is_newest_first_with_the_id_and_tags_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        let entries = images.history("reg.example/app:v1").unwrap().unwrap();
        assert_eq!(entries.len(), 1, "one layer, no history in the config");
        assert_eq!(entries[0].id.as_deref(), Some(id.as_str()));
        assert_eq!(entries[0].tags, ["reg.example/app:v1"]);
        assert_eq!(images.history("reg.example/app:v2").unwrap(), None);
    }

    #[tokio::test]
    async fn prune_takes_dangling_or_unused_images_and_never_used_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (images, users, id) = images_with_one(dir.path(), CONFIG.as_bytes());
        let report = images.prune(true).await.unwrap();
        assert!(report.removed.is_empty(), "a tagged image is not dangling");

        users.0.lock().unwrap().insert(id.clone(), "c0ffee".into());
        let report = images.prune(false).await.unwrap();
        assert!(report.removed.is_empty(), "a used image stays");
        images.untag("reg.example/app:v1").await.unwrap();
        assert!(images.prune(true).await.unwrap().removed.is_empty());

        users.0.lock().unwrap().clear();
        let report = images.prune(true).await.unwrap();
        assert_eq!(
            report.removed,
            [PrunedImage {
                id: id.clone(),
                names: vec![format!("reg.example/app@{}", digest('d'))],
            }]
        );
        assert!(report.reclaimed_bytes > 0, "the config blob went");
        assert_eq!(images.status(&id).unwrap(), None);
    }

    #[test]
    fn names_qualify_as_a_pull_would() {
        let dir = tempfile::tempdir().unwrap();
        let (images, _, _) = images_with_one(dir.path(), CONFIG.as_bytes());
        let q = images.qualify("busybox").unwrap();
        assert_eq!(
            (q.repository.as_str(), q.tag.as_deref(), q.digest),
            ("docker.io/library/busybox", Some("latest"), None)
        );
        let err = images.qualify("UPPER/case").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    }

    #[tokio::test]
    async fn a_push_goes_through_the_facade_and_on_the_bus() {
        let reg = berth_testkit::TestRegistry::start();
        reg.push(&["busybox"]);
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(EventBus::default());
        let images = empty_images(dir.path(), bus.clone());
        let request = PullRequest {
            reference: reg.image("busybox"),
            ..Default::default()
        };
        let pulled = images.pull(request, None).await.unwrap();
        let target = format!("{}/pushed/busybox:1", reg.addr);
        images.tag(&pulled.image_id, &target).await.unwrap();

        let (tx, mut rx) = mpsc::channel(256);
        let pushed = images
            .push(&target, Credentials::Anonymous, Some(tx))
            .await
            .unwrap();
        assert_eq!(
            (pushed.image_id.as_str(), pushed.digest.as_str()),
            (pulled.image_id.as_str(), pulled.manifest_digest.as_str())
        );
        let mut last = None;
        while let Ok(p) = rx.try_recv() {
            last = Some(p);
        }
        assert!(
            matches!(&last, Some(PushProgress::Finished { tag, .. }) if tag == "1"),
            "{last:?}"
        );
        let event = bus.history(0).last().cloned().expect("an event");
        assert_eq!(event.action, Action::Push);
        assert_eq!(event.id, pulled.image_id);
        assert_eq!(
            event.attributes.get(crate::events::attr::NAME),
            Some(&target)
        );
        let info = images.status(&target).unwrap().unwrap();
        assert!(
            info.repo_digests
                .contains(&format!("{}/pushed/busybox@{}", reg.addr, pushed.digest)),
            "{:?}",
            info.repo_digests
        );
    }

    #[test]
    fn layer_states_have_docker_texts() {
        for (state, text) in [
            (LayerProgress::Waiting, "Waiting"),
            (LayerProgress::PullingFsLayer, "Pulling fs layer"),
            (
                LayerProgress::Downloading {
                    current: 1,
                    total: 2,
                },
                "Downloading",
            ),
            (LayerProgress::VerifyingChecksum, "Verifying Checksum"),
            (LayerProgress::DownloadComplete, "Download complete"),
            (LayerProgress::Extracting, "Extracting"),
            (LayerProgress::PullComplete, "Pull complete"),
            (LayerProgress::AlreadyExists, "Already exists"),
        ] {
            assert_eq!(state.docker_status(), text);
        }
    }
}
