//! The build cache: which image a build step made, by the step's key (a
//! digest of its parent image, its instruction after substitution and,
//! for COPY/ADD, its sources' content). Kept beside the image records;
//! an entry whose image went (`image prune`, `rmi`) is a miss.

use berth_errdefs::Result;
use berth_store::Batch;

use super::{Image, ImageService};

const BUILD_CACHE: &str = "build-cache";
/// A step image's id → the id of the image it was made on.
const BUILD_PARENTS: &str = "build-parents";

impl ImageService {
    /// The image a step with `key` made, if it is still there.
    pub fn cached_step(&self, key: &str) -> Result<Option<Image>> {
        let Some(id) = self.store.get::<String>(BUILD_CACHE, key)? else {
            return Ok(None);
        };
        self.status(&id)
    }

    /// Records that the step with `key` made `image_id` on `parent`.
    pub fn record_step(&self, key: &str, image_id: &str, parent: Option<&str>) -> Result<()> {
        let mut batch = Batch::new().put(BUILD_CACHE, key, &image_id.to_string())?;
        if let Some(parent) = parent {
            batch = batch.put(BUILD_PARENTS, image_id, &parent.to_string())?;
        }
        self.store.write(batch)
    }

    /// The images a build made another image on that is still there
    /// (dockerd's intermediate images, which `docker images` hides).
    pub fn build_parents(&self) -> Result<std::collections::HashSet<String>> {
        let images = self.list(None)?;
        let present: std::collections::HashSet<&str> =
            images.iter().map(|i| i.id.as_str()).collect();
        Ok(self
            .store
            .list::<String>(BUILD_PARENTS)?
            .into_iter()
            .filter(|(child, _)| present.contains(child.as_str()))
            .map(|(_, parent)| parent)
            .collect())
    }

    /// Forgets every entry; the ids of the images they named (each once).
    pub fn clear_build_cache(&self) -> Result<Vec<String>> {
        let entries = self.store.list::<String>(BUILD_CACHE)?;
        let mut batch = Batch::new();
        for (child, _) in self.store.list::<String>(BUILD_PARENTS)? {
            batch = batch.delete(BUILD_PARENTS, &child);
        }
        let mut ids = Vec::new();
        for (key, id) in entries {
            batch = batch.delete(BUILD_CACHE, &key);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.store.write(batch)?;
        Ok(ids)
    }
}
