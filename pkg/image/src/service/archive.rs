//! Image tarballs (`docker save` / `docker load`).
//!
//! Saving writes both layouts in one tar, as Docker 25 does: the OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and the
//! docker-archive files (`manifest.json`, `repositories`) pointing at the
//! same blobs. Loading reads `manifest.json` when there is one, else the
//! OCI layout's `index.json`.
//!
//! A tarball is untrusted: it is extracted by the layer unpacker (which
//! refuses absolute paths, `..`, symlinked parents and outward hardlinks)
//! into a private directory under `tmp/`; every file it names is reached
//! through plain components that are neither symlinks nor anything but a
//! regular file at the end; configs and manifests are bounded and checked
//! against their digests, layers against the config's diff ids. Any failure
//! removes the extraction and every layer the load stored, so nothing of a
//! refused tarball stays.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use berth_errdefs::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use super::local::{sha256_digest, sniff, StoredLayer};
use super::{Image, ImageService};
use crate::apply::{unpack_snapshot, Budget};
use crate::content::remove_tree;
use crate::manifest::{digest_hex, select_platform, ImageConfig, Manifest, Platform, OCI_INDEX};

/// One image a load recorded, with the tags the tarball gave it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub image: Image,
    pub tags: Vec<String>,
}

/// One image to save, with the tags to write for it.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: Image,
    pub tags: Vec<String>,
}

/// An entry of a docker-archive `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image of the tarball, read and checked, not yet stored.
struct Planned {
    config: Vec<u8>,
    diff_ids: Vec<String>,
    /// Each layer's file and, in the OCI layout, the digest it must have.
    layers: Vec<(PathBuf, Option<String>)>,
    tags: Vec<String>,
}

impl ImageService {
    /// The images `names` name, each with the tags to save for it (the
    /// name itself when it is a tag); `NotFound` naming the first absent.
    pub fn resolve_for_save(&self, names: &[String]) -> Result<Vec<SaveItem>> {
        let mut items: Vec<SaveItem> = Vec::new();
        for name in names {
            let image = self
                .status(name)?
                .ok_or_else(|| Error::not_found(format!("reference does not exist: {name}")))?;
            let tags = if crate::reference::is_image_id(name) {
                Vec::new()
            } else {
                self.tag_names(Some(name)).unwrap_or_default()
            };
            match items.iter_mut().find(|i| i.image.id == image.id) {
                Some(item) => super::add_unique(&mut item.tags, &tags),
                None => items.push(SaveItem { image, tags }),
            }
        }
        Ok(items)
    }

    /// Writes `items` as one tarball to `out`. Blocking.
    pub fn save(&self, items: &[SaveItem], out: impl Write) -> Result<()> {
        let _gc = self.gc_lock.blocking_read();
        let mut tar = tar::Builder::new(out);
        let mut written = std::collections::BTreeSet::new();
        let mut manifest_json = Vec::new();
        let mut index = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for item in items {
            let image = &item.image;
            let layers = self.stored_layers(image)?;
            let manifest = self.content.read_blob(&image.manifest_digest)?;
            let blobs = [&image.id, &image.manifest_digest]
                .into_iter()
                .chain(layers.iter().map(|l| &l.layer.digest));
            for digest in blobs {
                if written.insert(digest.clone()) {
                    let path = self.content.blob_path(digest)?;
                    let file = File::open(&path)
                        .map_err(|e| Error::from(e).context(format!("read blob {digest}")))?;
                    let size = file.metadata()?.len();
                    append(&mut tar, &blob_name(digest)?, size, file)?;
                }
            }
            manifest_json.push(json!({
                "Config": blob_name(&image.id)?,
                "RepoTags": if item.tags.is_empty() { Value::Null } else { json!(item.tags) },
                "Layers": layers.iter().map(|l| blob_name(&l.layer.digest)).collect::<Result<Vec<_>>>()?,
            }));
            let media_type = serde_json::from_slice::<Value>(&manifest)
                .ok()
                .and_then(|m| m["mediaType"].as_str().map(str::to_string))
                .unwrap_or_else(|| crate::manifest::OCI_MANIFEST.to_string());
            let descriptor = |annotations: Value| {
                json!({"mediaType": media_type, "digest": image.manifest_digest,
                       "size": manifest.len(), "annotations": annotations})
            };
            if item.tags.is_empty() {
                index.push(descriptor(json!({})));
            }
            for tag in &item.tags {
                let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
                index.push(descriptor(json!({
                    "io.containerd.image.name": tag,
                    "org.opencontainers.image.ref.name": t,
                })));
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(t.to_string(), digest_hex(&image.id)?.to_string());
            }
        }
        let files = [
            ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
            (
                "index.json",
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}),
            ),
            ("manifest.json", json!(manifest_json)),
            ("repositories", json!(repositories)),
        ];
        for (name, value) in files {
            let bytes = serde_json::to_vec(&value).map_err(|e| Error::internal(e.to_string()))?;
            append(&mut tar, name, bytes.len() as u64, &bytes[..])?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::from(e).context("write image archive"))
    }

    /// Loads every image of the tarball `input` (plain, gzip or zstd):
    /// docker-archive or OCI layout. All or nothing: a refused tarball
    /// (`InvalidArgument` naming the entry and the cause) leaves no layer,
    /// blob, record or temporary file. Blocking.
    pub fn load(&self, input: &mut dyn Read) -> Result<Vec<Loaded>> {
        let dir = self.content.tmp_path("load");
        let loaded = {
            let _gc = self.gc_lock.blocking_read();
            self.load_from(input, &dir)
        };
        let _ = remove_tree(&dir);
        if loaded.is_err() {
            // Layers stored before the failure belong to no image.
            let _gc = self.gc_lock.blocking_write();
            if let Err(e) = self.collect_garbage() {
                tracing::warn!(error = %e, "cleaning up after a refused load");
            }
        }
        loaded
    }

    fn load_from(&self, input: &mut dyn Read, dir: &Path) -> Result<Vec<Loaded>> {
        let mut input = BufReader::with_capacity(1 << 17, input);
        let compression = sniff(
            input
                .fill_buf()
                .map_err(|e| Error::invalid(e.to_string()))?,
        );
        let budget = Budget {
            layer: self.limits.max_image_bytes,
            image: self.limits.max_image_bytes,
            image_used: Arc::default(),
        };
        unpack_snapshot(&self.content, compression, &mut input, dir, &budget)
            .map_err(|e| e.context("invalid image archive"))?;
        let root = dir.join("fs");
        let planned = if entry_exists(&root, "manifest.json") {
            self.plan_docker_archive(&root)?
        } else if entry_exists(&root, "index.json") {
            self.plan_oci_layout(&root)?
        } else {
            return Err(Error::invalid(
                "invalid image archive: it has neither manifest.json nor index.json",
            ));
        };
        if planned.is_empty() {
            return Err(Error::invalid("invalid image archive: it holds no image"));
        }
        let mut stored = Vec::new();
        for plan in &planned {
            let mut layers = Vec::new();
            for ((path, digest), diff_id) in plan.layers.iter().zip(&plan.diff_ids) {
                let shown = path
                    .strip_prefix(&root)
                    .unwrap_or(path)
                    .display()
                    .to_string();
                let layer = self
                    .ingest_layer(&mut File::open(path)?, Some(diff_id))
                    .map_err(|e| e.context(format!("layer {shown:?}")))?;
                if let Some(d) = digest.as_ref().filter(|d| **d != layer.layer.digest) {
                    return Err(Error::invalid(format!(
                        "layer {shown:?} does not match its digest {d}"
                    )));
                }
                layers.push(layer);
            }
            stored.push(layers);
        }
        // Every layer is in place: the records now.
        let mut loaded = Vec::new();
        for (plan, layers) in planned.into_iter().zip(stored) {
            let layers: Vec<StoredLayer> = layers;
            let image = self.record_local(&plan.config, layers, plan.tags.clone())?;
            loaded.push(Loaded {
                image,
                tags: plan.tags,
            });
        }
        Ok(loaded)
    }

    fn plan_docker_archive(&self, root: &Path) -> Result<Vec<Planned>> {
        let entries: Vec<ArchiveEntry> =
            serde_json::from_slice(&self.read_small(root, "manifest.json")?)
                .map_err(|e| Error::invalid(format!("invalid manifest.json: {e}")))?;
        entries
            .into_iter()
            .map(|entry| {
                let config = self.read_small(root, &entry.config)?;
                let diff_ids = checked_diff_ids(&config, &entry.config, entry.layers.len())?;
                let layers = entry
                    .layers
                    .iter()
                    .map(|l| Ok((archive_file(root, l)?, None)))
                    .collect::<Result<_>>()?;
                let tags = entry
                    .repo_tags
                    .unwrap_or_default()
                    .iter()
                    .map(|t| self.archive_tag(t))
                    .collect::<Result<_>>()?;
                Ok(Planned {
                    config,
                    diff_ids,
                    layers,
                    tags,
                })
            })
            .collect()
    }

    fn plan_oci_layout(&self, root: &Path) -> Result<Vec<Planned>> {
        let index: Value = serde_json::from_slice(&self.read_small(root, "index.json")?)
            .map_err(|e| Error::invalid(format!("invalid index.json: {e}")))?;
        let Some(descriptors) = index["manifests"].as_array() else {
            return Err(Error::invalid("invalid index.json: no manifests"));
        };
        let mut planned: Vec<Planned> = Vec::new();
        for d in descriptors {
            let digest = d["digest"].as_str().unwrap_or_default();
            let annotations = &d["annotations"];
            let name = annotations["io.containerd.image.name"]
                .as_str()
                .or_else(|| {
                    annotations["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|n| n.contains(':') || n.contains('/'))
                });
            let tags = match name {
                Some(n) => vec![self.archive_tag(n)?],
                None => Vec::new(),
            };
            let mut manifest = Manifest::parse(&self.read_blob_file(root, digest)?)
                .map_err(|e| e.context(format!("manifest {digest}")))?;
            if let Manifest::Index(entries) = &manifest {
                let host = Platform::host();
                let entry = select_platform(entries, &host).ok_or_else(|| {
                    Error::invalid(format!("index {digest} has no manifest for {host}"))
                })?;
                manifest = Manifest::parse(&self.read_blob_file(root, &entry.digest)?)
                    .map_err(|e| e.context(format!("manifest {}", entry.digest)))?;
            }
            let Manifest::Image(manifest) = manifest else {
                return Err(Error::invalid(format!("index {digest} nests indexes")));
            };
            let config_digest = &manifest.config.digest;
            let config = self.read_blob_file(root, config_digest)?;
            let diff_ids = checked_diff_ids(&config, config_digest, manifest.layers.len())?;
            // The same image under several names is one image.
            if let Some(p) = planned.iter_mut().find(|p| p.config == config) {
                p.tags.extend(tags);
                continue;
            }
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    Ok((
                        archive_file(root, &blob_name(&l.digest)?)?,
                        Some(l.digest.clone()),
                    ))
                })
                .collect::<Result<_>>()?;
            planned.push(Planned {
                config,
                diff_ids,
                layers,
                tags,
            });
        }
        Ok(planned)
    }

    /// A file of the archive read whole, up to the metadata limit.
    fn read_small(&self, root: &Path, name: &str) -> Result<Vec<u8>> {
        let path = archive_file(root, name)?;
        let limit = self.limits.max_metadata_bytes;
        let mut bytes = Vec::new();
        File::open(&path)?.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(Error::invalid(format!(
                "archive entry {name:?} is larger than {limit} bytes"
            )));
        }
        Ok(bytes)
    }

    /// An OCI layout blob, read and checked against its digest.
    fn read_blob_file(&self, root: &Path, digest: &str) -> Result<Vec<u8>> {
        let bytes = self.read_small(root, &blob_name(digest)?)?;
        if sha256_digest(&bytes) != digest {
            return Err(Error::invalid(format!(
                "archive blob {digest} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// A tag of the archive, qualified as a pull would resolve it.
    fn archive_tag(&self, name: &str) -> Result<String> {
        let mut tags = self
            .tag_names(Some(name))
            .map_err(|e| e.context("invalid image archive"))?;
        tags.pop()
            .ok_or_else(|| Error::invalid(format!("invalid image archive: empty tag {name:?}")))
    }
}

/// The config's diff ids, well formed and one per layer.
fn checked_diff_ids(config: &[u8], name: &str, layers: usize) -> Result<Vec<String>> {
    let parsed =
        ImageConfig::parse(config).map_err(|e| e.context(format!("image config {name:?}")))?;
    let diff_ids = parsed.rootfs.diff_ids;
    if diff_ids.len() != layers {
        return Err(Error::invalid(format!(
            "image config {name:?} lists {} diff ids for {layers} layers",
            diff_ids.len()
        )));
    }
    for d in &diff_ids {
        digest_hex(d).map_err(|e| e.context(format!("image config {name:?}")))?;
    }
    Ok(diff_ids)
}

/// `blobs/sha256/<hex>` for a well-formed sha256 digest.
fn blob_name(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

fn entry_exists(root: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(root.join(name)).is_ok()
}

/// The regular file `name` (relative, plain components only) names under
/// `root`, reached without following any symlink.
fn archive_file(root: &Path, name: &str) -> Result<PathBuf> {
    let refuse = |why: &str| Error::invalid(format!("archive entry {name:?} {why}"));
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse("is not a plain relative path"));
    }
    let mut path = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| refuse("is missing"))?;
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() {
            return Err(refuse("goes through a symlink"));
        }
        if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return Err(refuse("is not a regular file"));
        }
    }
    Ok(path)
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
        .map_err(|e| Error::from(e).context(format!("write {name} to the archive")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_edit::NewLayerInfo;
    use crate::registries::RegistriesConfig;
    use berth_errdefs::ErrorKind;
    use berth_store::Store;

    fn service(dir: &Path) -> ImageService {
        let store = Arc::new(Store::open(&dir.join("meta.redb")).unwrap());
        ImageService::open(&dir.join("images"), store, RegistriesConfig::default()).unwrap()
    }

    /// A tar entry written byte for byte (the tar crate refuses `..`).
    fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            raw_entry(&mut out, name, *kind, link, data);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    fn assert_nothing_stored(dir: &Path, svc: &ImageService) {
        assert!(svc.list(None).unwrap().is_empty(), "an image was recorded");
        for sub in ["snapshots", "blobs/sha256", "tmp"] {
            let left: Vec<_> = std::fs::read_dir(dir.join("images").join(sub))
                .unwrap()
                .collect();
            assert!(left.is_empty(), "left in {sub}: {left:?}");
        }
    }

    #[test]
    fn an_imported_image_saves_and_loads_with_its_id_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let layer = tar_of(&[("hello.txt", FILE, "", b"hi\n")]);
        let info = NewLayerInfo {
            comment: "imported".into(),
            ..Default::default()
        };
        let image = svc
            .import(&mut &layer[..], &info, Some("reg.example/tiny:1"))
            .unwrap();
        assert_eq!(image.repo_tags, ["reg.example/tiny:1"]);
        let items = svc
            .resolve_for_save(&["reg.example/tiny:1".into()])
            .unwrap();
        let mut archive = Vec::new();
        svc.save(&items, &mut archive).unwrap();

        let other = tempfile::tempdir().unwrap();
        let fresh = service(other.path());
        let loaded = fresh.load(&mut &archive[..]).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].image.id, image.id);
        assert_eq!(loaded[0].tags, ["reg.example/tiny:1"]);
        let fs = fresh.layer_dirs(&loaded[0].image).unwrap();
        assert_eq!(std::fs::read(fs[0].join("hello.txt")).unwrap(), b"hi\n");
        // Without manifest.json the OCI layout is read: the same image.
        let third = tempfile::tempdir().unwrap();
        let oci = service(third.path());
        let only_oci = strip_entry(&archive, "manifest.json");
        let loaded = oci.load(&mut &only_oci[..]).unwrap();
        assert_eq!(loaded[0].image.id, image.id);
        assert_eq!(loaded[0].tags, ["reg.example/tiny:1"]);
    }

    /// The archive without one of its entries.
    fn strip_entry(archive: &[u8], name: &str) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        let mut a = tar::Archive::new(archive);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some(name) {
                continue;
            }
            let mut h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.append_data(&mut h, &*e.path().unwrap(), &data[..])
                .unwrap();
        }
        out.into_inner().unwrap()
    }

    fn docker_archive(config_name: &str, config: &[u8], layer: &[u8]) -> Vec<u8> {
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name, "RepoTags": ["reg.example/bad:1"], "Layers": ["l/layer.tar"],
        }]))
        .unwrap();
        tar_of(&[
            ("manifest.json", FILE, "", &manifest),
            (config_name, FILE, "", config),
            ("l/layer.tar", FILE, "", layer),
        ])
    }

    fn config_for(layer: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        }))
        .unwrap()
    }

    #[test]
    fn refused_tarballs_leave_nothing() {
        let evil_layer = tar_of(&[("ok.txt", FILE, "", b"fine"), ("../escape", FILE, "", b"x")]);
        let symlink_layer = tar_of(&[
            ("link", tar::EntryType::Symlink, "/", b""),
            ("link/etc/x", FILE, "", b"x"),
        ]);
        let good_layer = tar_of(&[("ok.txt", FILE, "", b"fine")]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("outer ..", tar_of(&[("../x", FILE, "", b"x")]), "\"../x\""),
            (
                "outer absolute",
                tar_of(&[("/etc/x", FILE, "", b"x")]),
                "\"/etc/x\"",
            ),
            (
                "layer ..",
                docker_archive("c.json", &config_for(&evil_layer), &evil_layer),
                "../escape",
            ),
            (
                "layer symlink escape",
                docker_archive("c.json", &config_for(&symlink_layer), &symlink_layer),
                "link/etc/x",
            ),
            (
                "config outside",
                docker_archive("../c.json", &config_for(&good_layer), &good_layer),
                "../c.json",
            ),
            (
                "wrong diff id",
                docker_archive("c.json", &config_for(b"other"), &good_layer),
                "diff id",
            ),
            (
                "not a tarball",
                b"garbage that is no tar".repeat(40),
                "archive",
            ),
        ];
        for (what, archive, says) in cases {
            let dir = tempfile::tempdir().unwrap();
            let svc = service(dir.path());
            let e = svc.load(&mut &archive[..]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}: {e}");
            assert!(e.message.contains(says), "{what}: {e}");
            assert_nothing_stored(dir.path(), &svc);
        }
        // Import goes through the same unpacker.
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let e = svc
            .import(&mut &evil_layer[..], &NewLayerInfo::default(), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert_nothing_stored(dir.path(), &svc);
    }

    #[test]
    fn a_commit_adds_one_layer_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let base_layer = tar_of(&[("a", FILE, "", b"a"), ("b", FILE, "", b"b")]);
        let base = svc
            .import(
                &mut &base_layer[..],
                &NewLayerInfo::default(),
                Some("base:1"),
            )
            .unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::write(upper.path().join("c"), b"c").unwrap();
        let changes = [
            crate::diff_tar::DiffEntry {
                path: "/b".into(),
                deleted: true,
            },
            crate::diff_tar::DiffEntry {
                path: "/c".into(),
                deleted: false,
            },
        ];
        let info = NewLayerInfo {
            comment: "msg".into(),
            ..Default::default()
        };
        let image = svc
            .commit_diff(&base, upper.path(), &changes, &info, Some("new:1"))
            .unwrap();
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[0], base.layers[0]);
        let dirs = svc.layer_dirs(&image).unwrap();
        assert_eq!(std::fs::read(dirs[1].join("c")).unwrap(), b"c");
        let whiteout = std::fs::symlink_metadata(dirs[1].join("b")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(whiteout.file_type().is_char_device(), "{whiteout:?}");
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join("images/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
}
