//! `GET /system/df`: disk usage by images, containers, volumes and build
//! cache, as `docker system df` reads it (system-df.txt).

use std::collections::{HashMap, HashSet};

use berth_core::Core;
use hyper::Response;
use serde_json::{json, Value};

use crate::containers::{size_of, summary};
use crate::error::ApiResult;
use crate::http::{ok_json, Body};
use crate::view;

pub fn df(core: &Core) -> ApiResult<Response<Body>> {
    let containers = view::all(core);
    let mut users: HashMap<&str, usize> = HashMap::new();
    for c in &containers {
        *users.entry(c.record.image_id.as_str()).or_default() += 1;
    }
    let images = core.images().list(None)?;
    let mut seen = HashSet::new();
    let mut layers_size = 0u64;
    for layer in images.iter().flat_map(|i| &i.layers) {
        if seen.insert(layer.diff_id.as_str()) {
            layers_size += layer.size;
        }
    }
    let images: Vec<Value> = images
        .iter()
        .map(|i| {
            let created = i
                .created
                .as_deref()
                .and_then(crate::clock::parse_timestamp_ns)
                .map_or(0, |ns| ns / 1_000_000_000);
            json!({
                "Containers": users.get(i.id.as_str()).copied().unwrap_or(0),
                "Created": created,
                "Id": i.id,
                "Labels": null,
                "ParentId": "",
                "RepoDigests": i.repo_digests,
                "RepoTags": i.repo_tags,
                "SharedSize": -1,
                "Size": i.size,
                "VirtualSize": i.size,
            })
        })
        .collect();
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| summary(core, c, size_of(core, c)))
        .collect();
    ok_json(&json!({
        "LayersSize": layers_size,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes(core),
        "BuildCache": [],
        "BuilderSize": 0,
    }))
}

/// Each volume with its usage (`UsageData`: bytes, and how many
/// containers mount it).
fn volumes(core: &Core) -> Vec<Value> {
    let volumes = core.volumes();
    volumes
        .list()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let mut out = crate::volumes::volume_json(v);
            out["UsageData"] = json!({
                "Size": volumes.usage(&v.record.name),
                "RefCount": v.users.len(),
            });
            out
        })
        .collect()
}
