//! The build cache: which image a build step made, by the step's key (a
//! digest of its parent image, its instruction after substitution and,
//! for COPY/ADD, its sources' content). Kept beside the image records;
//! an entry whose image went (`image prune`, `rmi`) is a miss.

use berth_errdefs::Result;
use berth_store::Batch;

use super::{Image, ImageService};

const BUILD_CACHE: &str = "build-cache";

impl ImageService {
    /// The image a step with `key` made, if it is still there.
    pub fn cached_step(&self, key: &str) -> Result<Option<Image>> {
        let Some(id) = self.store.get::<String>(BUILD_CACHE, key)? else {
            return Ok(None);
        };
        self.status(&id)
    }

    /// Records that the step with `key` made `image_id`.
    pub fn record_step(&self, key: &str, image_id: &str) -> Result<()> {
        self.store
            .write(Batch::new().put(BUILD_CACHE, key, &image_id.to_string())?)
    }

    /// Forgets every entry; the ids of the images they named (each once).
    pub fn clear_build_cache(&self) -> Result<Vec<String>> {
        let entries = self.store.list::<String>(BUILD_CACHE)?;
        let mut batch = Batch::new();
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
