//! Copying files into and out of a container (Docker's `cp`): tars of a
//! path in its root filesystem, and tars extracted into it.
//!
//! Both work on the container's mounted overlay (mounted from create to
//! removal, running or not), so what is copied is what the container sees.
//! Paths are resolved as the container would resolve them: symlinks are
//! followed inside its root, never out of it. Extraction goes through the
//! image unpacker (which refuses absolute paths, `..` and links out of the
//! archive) into a fresh directory inside the root, whose entries are then
//! renamed into place without following any symlink on the way.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};

use crate::Containers;

/// What `HEAD /archive` reports about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub mtime_ns: i64,
    /// For a symlink, the path it leads to inside the container.
    pub link_target: String,
}

/// How many symlinks one resolution follows (Linux's own limit).
const MAX_LINKS: usize = 40;

impl Containers {
    /// The directory the container's root filesystem is mounted on.
    fn mounted_rootfs(&self, id: &str) -> Result<PathBuf> {
        let record = self.status(id)?;
        let userns = self.userns_root().join(&record.id).join("rootfs");
        let plain = self.container_dir(&record.id).join("bundle/rootfs");
        let dir = if userns.is_dir() { userns } else { plain };
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        match (std::fs::metadata(&dir), std::fs::metadata(&parent)) {
            (Ok(d), Ok(p)) if d.dev() != p.dev() => Ok(dir),
            _ => Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("the root filesystem of container {id} is not mounted"),
            )),
        }
    }

    /// Stats `path` in the container (a last symlink not followed).
    pub fn stat_path(&self, id: &str, path: &str) -> Result<PathStat> {
        let root = self.mounted_rootfs(id)?;
        let host = resolve(&root, path, false).map_err(|e| missing(e, id, path))?;
        let meta = std::fs::symlink_metadata(&host).map_err(|e| missing(e.into(), id, path))?;
        let link_target = if meta.file_type().is_symlink() {
            let target = resolve(&root, path, true).unwrap_or_else(|_| host.clone());
            inside(&root, &target)
        } else {
            String::new()
        };
        Ok(PathStat {
            name: base_name(path),
            size: meta.len(),
            mode: meta.mode(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            link_target,
        })
    }

    /// Writes a tar of `path` in the container to `out`, its top entry
    /// named after the path's last component (a directory with everything
    /// under it). Returns the path's stat, taken before the tar is written.
    pub fn archive_path(&self, id: &str, path: &str, out: impl Write) -> Result<PathStat> {
        let stat = self.stat_path(id, path)?;
        let root = self.mounted_rootfs(id)?;
        let host = resolve(&root, path, false)?;
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        let meta = std::fs::symlink_metadata(&host)?;
        let name = if stat.name == "/" { "." } else { &stat.name };
        if meta.is_dir() {
            builder.append_dir_all(name, &host)?;
        } else {
            builder.append_path_with_name(&host, name)?;
        }
        builder.into_inner()?;
        Ok(stat)
    }

    /// Extracts the tar `archive` into the directory `path` of the
    /// container. Nothing lands outside its root: the unpacker refuses
    /// entries that would escape, and existing symlinks at the target are
    /// replaced, never followed. With `no_overwrite_dir_non_dir`, a
    /// directory never replaces a non-directory nor the reverse.
    pub fn extract_archive(
        &self,
        id: &str,
        path: &str,
        archive: impl Read,
        no_overwrite_dir_non_dir: bool,
    ) -> Result<()> {
        let root = self.mounted_rootfs(id)?;
        let dest = resolve(&root, path, true).map_err(|e| missing(e, id, path))?;
        let meta = std::fs::metadata(&dest).map_err(|e| missing(e.into(), id, path))?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!(
                "extraction point is not a directory: {path}"
            )));
        }
        // Same filesystem as the destination, so entries move by rename.
        let staging = root.join(format!(".berth-cp-{}", crate::new_id()));
        std::fs::create_dir(&staging)?;
        let result = berth_image::unpack::unpack_layer(archive, &staging)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.message))
            .and_then(|_| merge(&staging, &dest, no_overwrite_dir_non_dir));
        let _ = std::fs::remove_dir_all(&staging);
        result
    }
}

/// Moves each entry of `from` into `to`, merging directories; nothing is
/// followed: a symlink in the way is replaced like any non-directory.
fn merge(from: &Path, to: &Path, no_overwrite_dir_non_dir: bool) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let src_dir = entry.file_type()?.is_dir();
        match std::fs::symlink_metadata(&dst) {
            Ok(existing) => {
                let dst_dir = existing.is_dir();
                if no_overwrite_dir_non_dir && src_dir != dst_dir {
                    return Err(Error::invalid(format!(
                        "cannot overwrite {} {} with a {}",
                        if dst_dir {
                            "directory"
                        } else {
                            "non-directory"
                        },
                        dst.file_name().unwrap_or_default().to_string_lossy(),
                        if src_dir {
                            "directory"
                        } else {
                            "non-directory"
                        },
                    )));
                }
                if src_dir && dst_dir {
                    merge(&src, &dst, no_overwrite_dir_non_dir)?;
                    // The archive's own mode and owner for the directory.
                    let m = std::fs::symlink_metadata(&src)?;
                    std::fs::set_permissions(&dst, m.permissions())?;
                    std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()))?;
                    continue;
                }
                if dst_dir {
                    std::fs::remove_dir_all(&dst)?;
                }
                std::fs::rename(&src, &dst)?;
            }
            Err(_) => std::fs::rename(&src, &dst)?,
        }
    }
    Ok(())
}

/// `path` (absolute inside the container) as a host path under `root`,
/// following symlinks as the container would, so never out of `root`.
/// The last component is followed only with `follow_last`.
pub(crate) fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut pending: Vec<String> = components(path).into_iter().rev().collect();
    let mut current = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        let host = root.join(next.strip_prefix("/").unwrap_or(&next));
        let last = pending.is_empty();
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::invalid(format!("too many symlinks in {path}")));
                }
                let target = std::fs::read_link(&host)?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    current = PathBuf::from("/");
                }
                pending.extend(components(&target).into_iter().rev());
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("{path}: no such file")))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(root.join(current.strip_prefix("/").unwrap_or(&current)))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn inside(root: &Path, host: &Path) -> String {
    format!("/{}", host.strip_prefix(root).unwrap_or(host).display())
}

fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_string())
}

/// dockerd's wording for a path that is not there.
fn missing(e: Error, id: &str, path: &str) -> Error {
    if e.kind == ErrorKind::NotFound {
        Error::not_found(format!("Could not find the file {path} in container {id}"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("/", r.join("top")).unwrap();
        assert_eq!(
            resolve(r, "/abs/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve(r, "/etc/up/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve(r, "/../../etc", true).unwrap(), r.join("etc"));
        assert_eq!(resolve(r, "/top", true).unwrap(), r.join(""));
        assert_eq!(resolve(r, "/abs", false).unwrap(), r.join("abs"));
        assert_eq!(
            resolve(r, "/nope/x", true).unwrap_err().kind,
            ErrorKind::NotFound
        );
    }
}
