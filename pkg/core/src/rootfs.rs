//! A container's root filesystem: the image's layers as overlayfs lowerdirs
//! under a writable upper dir of its own.

use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts the overlay at `target`; `layers` bottom first (as the image lists them).
pub(crate) fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d)?;
    }
    if layers.is_empty() {
        return Err(Error::invalid("image has no layers"));
    }
    // overlayfs lists the top layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| Error::internal(format!("mount overlay rootfs at {}: {e}", target.display())))
}

/// Unmounts whatever is mounted at `target` (all stacked mounts); a path
/// that is not a mount point is fine.
pub(crate) fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..16 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::internal(format!(
                    "unmount {}: {e}",
                    target.display()
                )))
            }
        }
    }
    Ok(())
}

/// Mounts a tmpfs (the pod's /dev/shm).
pub(crate) fn mount_shm(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)?;
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| Error::internal(format!("mount shm at {}: {e}", target.display())))
}

/// Bytes and inodes used under `dir` (the writable layer), not crossing mounts.
pub(crate) fn usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}
