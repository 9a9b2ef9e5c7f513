//! The options of dockerd's `local` volume driver: `type`, `device` and
//! `o`, as `mount -t TYPE -o O DEVICE <volume>/_data` would take them
//! (a tmpfs, a bind of a host directory, any filesystem the kernel
//! mounts). As dockerd does, such a volume is mounted when its first
//! container starts and unmounted when its last one stops; who holds it
//! is counted here, and a berthd that restarted counts the containers
//! still running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_errdefs::{Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::model::MountConfig;
use crate::volumes::{VolumeRecord, VOLUMES};

/// The options the local driver takes.
const OPTIONS: [&str; 3] = ["type", "device", "o"];

/// Containers holding each mounted volume directory (by container id).
/// Keyed by path, so several cores in one process never meet.
static HOLDERS: Mutex<BTreeMap<PathBuf, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

/// Checks `options` as dockerd's local driver does, in its words.
pub(crate) fn check_options(name: &str, options: &BTreeMap<String, String>) -> Result<()> {
    let refuse = |why: String| Err(Error::invalid(format!("create {name}: {why}")));
    if let Some(bad) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return refuse(format!("invalid option: {bad:?}"));
    }
    // dockerd's mandatory pairs: each of these needs the others.
    for (given, needs) in [
        ("device", &["type"][..]),
        ("type", &["device"][..]),
        ("o", &["device", "type"][..]),
    ] {
        if options.contains_key(given) {
            if let Some(missing) = needs.iter().find(|n| !options.contains_key(**n)) {
                return refuse(format!("missing required option: {missing:?}"));
            }
        }
    }
    Ok(())
}

impl crate::Shared {
    /// Mounts the volumes with driver options that `mounts` name, unless
    /// they are mounted already; `id` holds them until
    /// [`release_volumes`](Self::release_volumes).
    pub(crate) fn hold_volumes(&self, id: &str, mounts: &[MountConfig]) -> Result<()> {
        let mut holders = HOLDERS.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, record) in self.mounted_volumes(mounts) {
            if !is_mount_point(&dir) {
                mount_volume(&dir, &record.options)?;
                tracing::info!(volume = %record.name, "volume mounted for its first user");
            }
            holders.entry(dir).or_default().insert(id.to_string());
        }
        Ok(())
    }

    /// `id` no longer holds the volumes `mounts` name: each one no other
    /// live container holds is unmounted.
    pub(crate) fn release_volumes(&self, id: &str, mounts: &[MountConfig]) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, record) in self.mounted_volumes(mounts) {
            let held = holders.get_mut(&dir).is_some_and(|h| {
                h.remove(id);
                !h.is_empty()
            });
            if held || self.live_user_other_than(id, &dir) {
                continue;
            }
            holders.remove(&dir);
            match unmount(&dir) {
                Ok(()) => {
                    tracing::info!(volume = %record.name, "volume unmounted after its last user")
                }
                Err(e) => tracing::warn!(volume = %record.name, "unmount: {e}"),
            }
        }
    }

    /// Unmounts a volume's directory before its removal, so that removing
    /// its data never reaches into what it mounted (a bound host dir).
    pub(crate) fn unmount_volume_dir(&self, dir: &Path) -> Result<()> {
        HOLDERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir);
        unmount(dir)?;
        match is_mount_point(dir) {
            true => Err(Error::internal(format!(
                "{} is still mounted",
                dir.display()
            ))),
            false => Ok(()),
        }
    }

    /// The volumes with driver options among `mounts`: data dir and record.
    fn mounted_volumes(&self, mounts: &[MountConfig]) -> Vec<(PathBuf, VolumeRecord)> {
        let names: BTreeSet<String> = mounts
            .iter()
            .filter_map(|m| self.volume_name_of(&m.host_path))
            .collect();
        if names.is_empty() {
            return Vec::new();
        }
        self.store
            .list_raw(VOLUMES)
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .filter_map(|(_, bytes)| serde_json::from_slice::<VolumeRecord>(&bytes).ok())
            .filter(|r| !r.options.is_empty())
            .map(|r| (self.volume_data(&r.name), r))
            .collect()
    }

    /// Whether a live container other than `id` mounts `dir` (one that
    /// ran before berthd restarted and so is not counted yet).
    fn live_user_other_than(&self, id: &str, dir: &Path) -> bool {
        self.objects().containers.values().any(|c| {
            let r = c.record();
            r.id != id
                && r.state.is_live()
                && r.config
                    .mounts
                    .iter()
                    .any(|m| Path::new(&m.host_path) == dir)
        })
    }
}

/// `mount -t type -o o device dir`, the `o` flags as mount(8) reads them.
fn mount_volume(dir: &Path, options: &BTreeMap<String, String>) -> Result<()> {
    let kind = options.get("type").map(String::as_str).unwrap_or("none");
    let device = options.get("device").map(String::as_str).unwrap_or("");
    let (flags, data) = mount_options(options.get("o").map(String::as_str).unwrap_or(""));
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(device), dir, Some(kind), flags, data).map_err(|e| {
        Error::invalid(format!(
            "error while mounting volume '{}': failed to mount local volume: mount {device}:{}, flags: {:#x}, data: {}: {}",
            dir.display(),
            dir.display(),
            flags.bits(),
            data.unwrap_or(""),
            e.desc().to_lowercase()
        ))
    })
}

/// `o`'s flags (`bind`, `ro`, `nosuid`, ...) and the rest, which the
/// filesystem reads (`size=64m`, `uid=1000`).
fn mount_options(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        let (set, clear) = match opt {
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" | "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

fn unmount(dir: &Path) -> Result<()> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::internal(format!("unmount {}: {e}", dir.display()))),
    }
}

/// Whether `dir` is a mount point (its own line in the mount table; a
/// bind of a directory on the same filesystem has no device of its own).
pub(crate) fn is_mount_point(dir: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    berth_oci::parse_mountinfo(&table)
        .iter()
        .any(|m| m.mount_point == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_in_dockerds_words() {
        let ok = opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")]);
        assert!(check_options("v", &ok).is_ok());
        assert!(check_options("v", &BTreeMap::new()).is_ok());
        let e = check_options("v", &opts(&[("colour", "red")])).unwrap_err();
        assert_eq!(e.message, r#"create v: invalid option: "colour""#);
        let e = check_options("v", &opts(&[("type", "tmpfs")])).unwrap_err();
        assert_eq!(e.message, r#"create v: missing required option: "device""#);
        let e = check_options("v", &opts(&[("o", "size=1m"), ("device", "x")])).unwrap_err();
        assert_eq!(e.message, r#"create v: missing required option: "type""#);
    }

    #[test]
    fn o_splits_into_flags_and_data() {
        let (flags, data) = mount_options("bind,ro,size=64m,uid=1000,rw,noexec");
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_NOEXEC);
        assert_eq!(data, "size=64m,uid=1000");
        assert_eq!(mount_options(""), (MsFlags::empty(), String::new()));
    }
}
