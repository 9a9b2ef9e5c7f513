//! What a container did to its filesystem and which processes it runs:
//! its writable layer against the image's layers (Docker's `diff`), and
//! the pids in its cgroup (Docker's `top`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};

use crate::model::*;
use crate::Containers;

/// How a path differs from the image (Docker's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute inside the container (`/etc/hosts`).
    pub path: String,
    pub kind: ChangeKind,
}

impl Containers {
    /// The pids in the container's cgroup (empty unless it runs).
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let record = self.status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::new(
                berth_errdefs::ErrorKind::Conflict,
                format!("Container {id} is not running"),
            ));
        }
        self.cgroups.processes(&record.cgroups_path)
    }

    /// The paths the container added, changed or deleted, sorted, from
    /// its overlay upper directory: a whiteout (character device 0/0) is
    /// a deletion; a path the image's layers have is a modification,
    /// otherwise an addition (whose children are additions too).
    pub fn changes(&self, id: &str) -> Result<Vec<Change>> {
        let record = self.status(id)?;
        let upper = self.container_dir(&record.id).join("upper");
        let lowers = match self.images.resolve(&record.image_id)? {
            Some(image) => self.images.layer_dirs(&image)?,
            None => Vec::new(),
        };
        let mut out = Vec::new();
        walk(&upper, Path::new("/"), &lowers, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Files berth bind-mounts over (the pod's own); the empty placeholders
/// the runtime makes for them are not the container's doing (dockerd keeps
/// them in an init layer below the container's).
const MOUNT_PLACEHOLDERS: &[&str] = &["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

fn walk(dir: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<Change>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::from(e).context(format!("read {}", dir.display()))),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = rel.join(entry.file_name());
        let shown = path.display().to_string();
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change {
                path: shown,
                kind: ChangeKind::Deleted,
            });
            continue;
        }
        let inner = path.strip_prefix("/").unwrap_or(&path);
        let in_image = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(inner)).is_ok());
        if !in_image && meta.len() == 0 && MOUNT_PLACEHOLDERS.contains(&shown.as_str()) {
            continue;
        }
        if in_image && meta.is_dir() && holds_only_placeholders(&entry.path(), &path) {
            // Copied up only for the placeholders: not a change.
            continue;
        }
        let kind = if in_image {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        out.push(Change { path: shown, kind });
        if meta.is_dir() {
            walk(&entry.path(), &path, lowers, out)?;
            if in_image && is_opaque(&entry.path()) {
                hidden_by_opaque(&entry.path(), &path, lowers, out);
            }
        }
    }
    Ok(())
}

/// True when `dir` (shown as `rel`) holds mount placeholders and nothing else.
fn holds_only_placeholders(dir: &Path, rel: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut seen = false;
    for entry in entries.flatten() {
        let shown = rel.join(entry.file_name()).display().to_string();
        let empty = entry.metadata().is_ok_and(|m| m.len() == 0);
        if !empty || !MOUNT_PLACEHOLDERS.contains(&shown.as_str()) {
            return false;
        }
        seen = true;
    }
    seen
}

/// An opaque directory (a directory deleted and made again) hides all of
/// the image's entries under it.
fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 1];
    // SAFETY: both strings are NUL-terminated; the buffer is ours and its
    // length is passed.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// The image's entries under an opaque `dir` that the container has not
/// made again: deleted.
fn hidden_by_opaque(dir: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<Change>) {
    let inner = rel.strip_prefix("/").unwrap_or(rel);
    let mut names = std::collections::BTreeSet::new();
    for lower in lowers {
        if let Ok(entries) = std::fs::read_dir(lower.join(inner)) {
            names.extend(entries.flatten().map(|e| e.file_name()));
        }
    }
    for name in names {
        if std::fs::symlink_metadata(dir.join(&name)).is_err() {
            out.push(Change {
                path: rel.join(&name).display().to_string(),
                kind: ChangeKind::Deleted,
            });
        }
    }
}
