//! Images from containers and files: `commit` (a container's changes as
//! a new layer on its image), `export` (a container's whole filesystem as
//! a tar), `import` (a root filesystem tar as a one-layer image), and
//! `save`/`load` (image tarballs). The image store work is the leaf's
//! (`berth-image`: layers go through its safe unpacker); this module gives
//! it what the container side knows (the overlay upper dir, the diff) and
//! publishes the events.

use std::io::{Read, Write};

use berth_errdefs::{Error, Result};
use berth_image::config_edit::NewLayerInfo;
use berth_image::diff_tar::DiffEntry;
use berth_image::service::SaveItem;

use crate::changes::ChangeKind;
use crate::events::{Action, Attrs};
use crate::images::{ImageInfo, Images};
use crate::model::{ContainerRecord, ContainerState, Owner};
use crate::Containers;

/// Defaults for containers a new image gets (Docker's `--change`); the
/// image store's own type: the core adds nothing to it.
pub use berth_image::config_edit::ConfigEdit as ImageChanges;

/// How to make an image from a container or a tar.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    pub changes: ImageChanges,
    pub author: String,
    pub comment: String,
    /// A tag for the new image (`repo:tag`; a short name is qualified as
    /// a pull would qualify it).
    pub tag: Option<String>,
    /// Freeze a running container while its changes are copied, so the
    /// layer is one moment's state (dockerd's `pause`, on by default).
    pub pause: bool,
}

/// An image a load stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: String,
    /// The tags the tarball gave it, fully qualified.
    pub tags: Vec<String>,
}

/// The images a save writes, resolved before anything is written (so a
/// missing one is an error, not a cut stream).
#[derive(Debug, Clone)]
pub struct SaveSet(Vec<SaveItem>);

impl Images {
    /// A one-layer image of the root filesystem tar `input` (plain, gzip
    /// or zstd). A malformed or traversing tar is `InvalidArgument` and
    /// nothing is stored.
    pub async fn import(
        &self,
        input: impl Read + Send + 'static,
        new: NewImage,
        source: &str,
    ) -> Result<ImageInfo> {
        let leaf = self.leaf.clone();
        let tag = new.tag.clone();
        let info = NewLayerInfo {
            edit: new.changes,
            author: new.author,
            comment: if new.comment.is_empty() {
                format!("Imported from {source}")
            } else {
                new.comment
            },
            created_by: String::new(),
        };
        let mut input = input;
        let image = blocking(move || leaf.import(&mut input, &info, tag.as_deref())).await?;
        let name = image.repo_tags.first().unwrap_or(&image.id);
        self.image_event(&image.id, name, Action::Import);
        self.info(&image)
    }

    /// Stores every image of the tarball `input` (docker-archive or OCI
    /// layout, plain or compressed). All or nothing: a refused tarball is
    /// `InvalidArgument` naming the entry, and nothing of it is stored.
    pub async fn load(&self, input: impl Read + Send + 'static) -> Result<Vec<LoadedImage>> {
        let leaf = self.leaf.clone();
        let mut input = input;
        let loaded = blocking(move || leaf.load(&mut input)).await?;
        Ok(loaded
            .into_iter()
            .map(|l| {
                let name = l
                    .tags
                    .first()
                    .cloned()
                    .unwrap_or_else(|| l.image.id.clone());
                self.image_event(&l.image.id, &name, Action::Load);
                LoadedImage {
                    id: l.image.id,
                    tags: l.tags,
                }
            })
            .collect())
    }

    /// Resolves what `names` (ids or references) name, for [`Images::save`];
    /// `NotFound` naming the first that is absent.
    pub fn prepare_save(&self, names: &[String]) -> Result<SaveSet> {
        if names.is_empty() {
            return Err(Error::invalid("no image to save"));
        }
        self.leaf.resolve_for_save(names).map(SaveSet)
    }

    /// Writes the images of `set` as one tarball (OCI layout plus Docker's
    /// `manifest.json`). Blocking: call it off the async runtime.
    pub fn save(&self, set: &SaveSet, out: impl Write) -> Result<()> {
        self.leaf.save(&set.0, out)?;
        for item in &set.0 {
            let name = item.tags.first().unwrap_or(&item.image.id);
            self.image_event(&item.image.id, name, Action::Save);
        }
        Ok(())
    }
}

impl Containers {
    /// A new image of the container's image plus one layer of what the
    /// container changed (what [`Containers::changes`] lists; deletions
    /// as whiteouts), with `new`'s config changes, author, comment and tag.
    /// The container keeps running (frozen meanwhile if `new.pause`, with
    /// `pause`/`unpause` events as dockerd's); emits the container's
    /// `commit`.
    pub async fn commit(&self, id: &str, new: NewImage) -> Result<ImageInfo> {
        let record = self.status(id)?;
        let freeze = new.pause
            && record.owner == Owner::Docker
            && record.state == ContainerState::Running
            && !record.paused;
        if freeze {
            self.pause(&record.id).await?;
        }
        let made = self.commit_now(&record, new).await;
        if freeze {
            // A stop or removal meanwhile has thawed it already.
            if let Err(e) = self.unpause(&record.id).await {
                tracing::debug!(container = %record.id, "thaw after commit: {e}");
            }
        }
        made
    }

    async fn commit_now(&self, record: &ContainerRecord, new: NewImage) -> Result<ImageInfo> {
        let parent = self.images.resolve(&record.image_id)?.ok_or_else(|| {
            Error::not_found(format!(
                "the image {} of container {} is gone",
                record.image_id, record.id
            ))
        })?;
        let changes = self.changes(&record.id)?;
        let entries: Vec<DiffEntry> = changes
            .into_iter()
            .map(|c| DiffEntry {
                path: c.path,
                deleted: c.kind == ChangeKind::Deleted,
            })
            .collect();
        let upper = self.container_dir(&record.id).join("upper");
        let info = NewLayerInfo {
            edit: new.changes,
            author: new.author,
            comment: new.comment,
            created_by: record.process_args.join(" "),
        };
        let leaf = self.images.leaf.clone();
        let tag = new.tag;
        let image =
            blocking(move || leaf.commit_diff(&parent, &upper, &entries, &info, tag.as_deref()))
                .await?;
        self.container_event_with(
            record,
            Action::Commit,
            Attrs::new().set("imageID", image.id.clone()),
        );
        self.images.info(&image)
    }

    /// Writes the container's whole root filesystem (as the container
    /// sees it: its image's layers with its own changes) as a tar; emits
    /// the container's `export`. Blocking.
    pub fn export(&self, id: &str, out: impl Write) -> Result<()> {
        let record = self.status(id)?;
        self.archive_path(&record.id, "/", out)?;
        self.container_event(&record, Action::Export);
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("image worker: {e}")))?
}
