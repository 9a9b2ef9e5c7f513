//! An image's filesystem for the builder to read (COPY --from sources,
//! whether a destination exists, `--chown` names): its layers mounted as
//! an overlay under a private temp dir, unmounted and removed on drop.

use std::path::{Path, PathBuf};

use berth_errdefs::Result;
use berth_image::service::Image as LeafImage;

use crate::rootfs::{mount_overlay, unmount_all};
use crate::Core;

pub(crate) struct View {
    dir: PathBuf,
    /// `None`: an image with no layers (an empty filesystem).
    mounted: bool,
}

impl View {
    /// Mounts `image` (none: scratch). Blocking.
    pub fn open(core: &Core, image: Option<&LeafImage>) -> Result<View> {
        let dir = core
            .shared
            .config
            .root
            .join("build")
            .join(format!("view-{}", crate::new_id()));
        std::fs::create_dir_all(dir.join("root"))?;
        let mut view = View {
            dir,
            mounted: false,
        };
        let layers = match image {
            Some(image) => core.shared.images.layer_dirs(image)?,
            None => Vec::new(),
        };
        if !layers.is_empty() {
            let (upper, work, root) = (view.dir.join("u"), view.dir.join("w"), view.root());
            view.mounted = true;
            mount_overlay(&layers, &upper, &work, &root)?;
        }
        Ok(view)
    }

    /// The image's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Whether `path` (absolute in the image) is a directory there; a
    /// symlink counts as what it points to only inside the image.
    pub fn is_dir(&self, path: &str) -> bool {
        self.resolve(path).is_some_and(|p| p.is_dir())
    }

    /// Whether `path` exists in the image (not following a last symlink).
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path)
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// `path` on the host, when it stays inside the image.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        let rel = super::context::inside(path.trim_start_matches('/'))?;
        let host = self.root().join(rel);
        // A symlinked parent may point out of the image: stay inside.
        let parent = host.parent().unwrap_or(Path::new("/"));
        match std::fs::canonicalize(parent) {
            Ok(p) if p.starts_with(self.root()) => Some(host),
            _ => None,
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount_all(&self.root()) {
                tracing::warn!("unmount a build view: {e}");
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "remove a build view: {e}");
        }
    }
}
