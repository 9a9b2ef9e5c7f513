//! Named and anonymous volumes with the `local` driver: a directory
//! `<root>/volumes/<name>/_data` and a record in the store. A volume is in
//! use while a container (of any state) mounts it; what uses it is read
//! from the container records, so there is no second bookkeeping to go
//! stale. Volumes outlive their containers and berthd restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::Batch;
use serde::{Deserialize, Serialize};

use crate::events::{Action, Attrs, ObjectKind};
use crate::model::{now_ns, ContainerRecord, MountConfig};
use crate::new_id;

/// The store's table of volume records, by name.
pub(crate) const VOLUMES: &str = "volumes";

crate::service_handle! {
    /// The volumes service. A cheap handle.
    Volumes
}

/// A volume as it is recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeRecord {
    pub name: String,
    pub created_at_ns: i64,
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `VOLUME`), without a
    /// name of its own; `docker rm -v` removes it with the container.
    pub anonymous: bool,
    /// The local driver's options (`type`, `device`, `o`): mounted on
    /// `_data` while containers use it.
    pub options: BTreeMap<String, String>,
}

/// A volume and where it lives now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub record: VolumeRecord,
    /// The directory containers mount.
    pub mountpoint: PathBuf,
    /// The containers that mount it.
    pub users: Vec<String>,
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpec {
    /// Empty: an anonymous volume with a generated name.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The local driver's options (`type`, `device`, `o`), as dockerd's.
    pub options: BTreeMap<String, String>,
}

impl Volumes {
    /// Makes a volume; one of that name already there is returned as it
    /// is (as dockerd does).
    pub fn create(&self, spec: VolumeSpec) -> Result<Volume> {
        let anonymous = spec.name.is_empty();
        let name = match anonymous {
            true => new_id(),
            false => spec.name,
        };
        check_name(&name)?;
        crate::local_driver::check_options(&name, &spec.options)?;
        if let Some(existing) = self.find(&name)? {
            return Ok(existing);
        }
        let record = VolumeRecord {
            name: name.clone(),
            created_at_ns: now_ns(),
            labels: spec.labels,
            anonymous,
            options: spec.options,
        };
        let dir = self.volume_data(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::from(e).context(format!("make volume {name}")))?;
        if let Err(e) = self.store.write(Batch::new().put(VOLUMES, &name, &record)?) {
            let _ = std::fs::remove_dir_all(self.volume_dir(&name));
            return Err(e);
        }
        self.events
            .publish(ObjectKind::Volume, &name, Action::Create, Attrs::new());
        Ok(self.with_users(record))
    }

    /// Every volume.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let records: Vec<VolumeRecord> = self
            .store
            .list_raw(VOLUMES)?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            .collect();
        Ok(records.into_iter().map(|r| self.with_users(r)).collect())
    }

    /// The volume `name`; NotFound in dockerd's words.
    pub fn inspect(&self, name: &str) -> Result<Volume> {
        self.find(name)?.ok_or_else(|| no_such_volume(name))
    }

    /// Removes an unused volume and its data. `force` makes a missing
    /// one fine; a volume in use is never removed.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let Some(volume) = self.find(name)? else {
            return match force {
                true => Ok(()),
                false => Err(no_such_volume(name)),
            };
        };
        if !volume.users.is_empty() {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "remove {name}: volume is in use - [{}]",
                    volume.users.join(", ")
                ),
            ));
        }
        // Never remove through a mount (a bound host directory).
        self.unmount_volume_dir(&volume.mountpoint)
            .map_err(|e| e.context(format!("remove {name}")))?;
        self.store.write(Batch::new().delete(VOLUMES, name))?;
        std::fs::remove_dir_all(self.volume_dir(name))
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| Error::from(e).context(format!("remove volume {name}")))?;
        self.events
            .publish(ObjectKind::Volume, name, Action::Destroy, Attrs::new());
        Ok(())
    }

    /// Removes every volume no container uses; returns their names and
    /// the bytes freed.
    pub fn prune(&self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for v in self.list()?.into_iter().filter(|v| v.users.is_empty()) {
            let size = self.usage(&v.record.name);
            self.remove(&v.record.name, false)?;
            removed.push(v.record.name);
            bytes += size;
        }
        Ok((removed, bytes))
    }

    /// Bytes a volume's data takes (its files' sizes).
    pub fn usage(&self, name: &str) -> u64 {
        crate::rootfs::usage(&self.volume_data(name)).0
    }

    /// The volume a container's mount source is, if it is one.
    pub fn name_of(&self, host_path: &str) -> Option<String> {
        self.volume_name_of(host_path)
    }

    fn find(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.list()?.into_iter().find(|v| v.record.name == name))
    }

    fn with_users(&self, record: VolumeRecord) -> Volume {
        let mountpoint = self.volume_data(&record.name);
        let users = self
            .objects()
            .containers
            .values()
            .map(|c| c.record())
            .filter(|c| mounts_dir(c, &mountpoint))
            .map(|c| c.id)
            .collect();
        Volume {
            record,
            mountpoint,
            users,
        }
    }
}

impl crate::Shared {
    /// The volume a mount source is, if it is one.
    pub(crate) fn volume_name_of(&self, host_path: &str) -> Option<String> {
        let rest = Path::new(host_path)
            .strip_prefix(self.config.root.join("volumes"))
            .ok()?;
        let mut parts = rest.components();
        let name = parts.next()?.as_os_str().to_str()?.to_string();
        (parts.as_path() == Path::new("_data")).then_some(name)
    }

    pub(crate) fn volume_dir(&self, name: &str) -> PathBuf {
        self.config.root.join("volumes").join(name)
    }

    /// What containers mount: `<root>/volumes/<name>/_data`.
    pub(crate) fn volume_data(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }
}

impl crate::Shared {
    /// Docker's copy-up: an empty volume mounted where the image has a
    /// directory gets a copy of what is there first (files, links and
    /// directories with their owners and modes). The image path is
    /// resolved inside the rootfs, never out of it.
    pub(crate) fn copy_up_volumes(&self, mounts: &[MountConfig], rootfs: &Path) -> Result<()> {
        let volumes = self.config.root.join("volumes");
        for m in mounts {
            let volume = Path::new(&m.host_path);
            if m.no_copy || !volume.starts_with(&volumes) || !is_empty_dir(volume) {
                continue;
            }
            let Ok(source) = crate::archive::resolve(rootfs, &m.container_path, true) else {
                continue;
            };
            if !source.is_dir() {
                continue;
            }
            if let Err(e) = copy_tree(&source, volume) {
                // Empty again, as it was: the next mount tries again.
                clear_dir(volume);
                return Err(Error::from(e).context(format!(
                    "copy the image's {} into its volume",
                    m.container_path
                )));
            }
        }
        Ok(())
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

fn clear_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let _ = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
    }
}

/// Copies what `from` holds into the existing directory `to`; symlinks
/// are copied as links (never followed), other special files skipped.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode()))?;
        }
    }
    // The directory itself takes the image directory's owner and mode.
    let meta = std::fs::metadata(from)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode()))
}

/// Whether `record` mounts `dir`.
fn mounts_dir(record: &ContainerRecord, dir: &std::path::Path) -> bool {
    record
        .config
        .mounts
        .iter()
        .any(|m| std::path::Path::new(&m.host_path) == dir)
}

/// A volume's name must follow dockerd's rule.
fn check_name(name: &str) -> Result<()> {
    match is_docker_name(name) {
        true => Ok(()),
        false => Err(Error::invalid(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        ))),
    }
}

/// dockerd's rule for container and volume names:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn no_such_volume(name: &str) -> Error {
    Error::not_found(format!("get {name}: no such volume"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_dockerds_rule() {
        assert!(check_name("data_1.x-y").is_ok());
        for bad in ["a", "-x", "a/b", "a b", "../x", ""] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains("invalid characters"), "{e}");
        }
    }
}
