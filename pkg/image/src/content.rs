//! The on-disk layout of the image store:
//!
//! ```text
//! <root>/images/
//! ├── blobs/sha256/<hex>          verified manifests, configs and layer blobs
//! ├── snapshots/<diff-id hex>/
//! │   ├── fs/                     the unpacked layer: an overlayfs lowerdir
//! │   └── usage.json              bytes and inodes the layer takes on disk
//! └── tmp/                        work in progress; emptied at start-up
//! ```
//!
//! A blob or a snapshot appears under its final name only by a rename after it
//! was verified, so anything found there is complete.
//!
//! Layers keep what containers need (setuid files, device nodes), so the
//! store and every snapshot are root's alone (0700): no other user may run a
//! setuid binary from a layer or read an image's files, as containerd has
//! it since CVE-2021-41103. Overlayfs mounts and OCI runtimes work as root
//! and do not need more.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_errdefs::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::manifest::digest_hex;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.bytes += o.bytes;
        self.inodes += o.inodes;
    }
}

pub struct Content {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

impl Content {
    /// Opens the store under `root`, creating its folders and discarding work
    /// that a previous run left unfinished.
    /// Directories a previous version made with wider modes are tightened.
    pub fn open(root: &Path) -> Result<Content> {
        let c = Content {
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
        };
        for dir in [
            c.root.clone(),
            c.root.join("blobs"),
            c.root.join("blobs/sha256"),
            c.root.join("snapshots"),
        ] {
            private_dir(&dir)?;
        }
        let tmp = c.root.join("tmp");
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        private_dir(&tmp)?;
        // Each snapshot too, should the store ever be reachable again.
        for e in fs::read_dir(c.root.join("snapshots"))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                make_private(&e.path())?;
            }
        }
        Ok(c)
    }

    /// Makes a directory for work in progress, root's alone.
    pub fn create_private_dir(&self, dir: &Path) -> Result<()> {
        private_dir(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn snapshot_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(digest_hex(diff_id)?))
    }

    /// The directory to use as an overlayfs lowerdir for a layer.
    pub fn snapshot_fs(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.snapshot_dir(diff_id)?.join("fs"))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    pub fn has_snapshot(&self, diff_id: &str) -> bool {
        self.snapshot_dir(diff_id).is_ok_and(|p| p.exists())
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(|e| Error::from(e).context(format!("read blob {digest}")))
    }

    /// A fresh path under tmp/ for work in progress.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores small verified content (manifests, configs).
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.blob_path(digest)?;
        if dest.exists() {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        fs::write(&tmp, bytes)?;
        self.commit(&tmp, &dest)
    }

    /// Moves verified work from tmp/ to its final name. Losing a race to a
    /// concurrent writer of the same content is fine: the content is equal.
    pub fn commit(&self, tmp: &Path, dest: &Path) -> Result<()> {
        match fs::rename(tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if dest.exists() => {
                tracing::debug!(dest = %dest.display(), error = %e, "content already committed");
                remove_tree(tmp)
            }
            Err(e) => Err(Error::from(e).context(format!("commit {}", dest.display()))),
        }
    }

    pub fn snapshot_usage(&self, diff_id: &str) -> Usage {
        self.snapshot_dir(diff_id)
            .ok()
            .and_then(|d| fs::read(d.join("usage.json")).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn blob_usage(&self, digest: &str) -> Usage {
        use std::os::unix::fs::MetadataExt;
        match self.blob_path(digest).and_then(|p| Ok(fs::metadata(p)?)) {
            Ok(m) => Usage {
                bytes: m.blocks() * 512,
                inodes: 1,
            },
            Err(_) => Usage::default(),
        }
    }

    /// Removes a blob or snapshot; a missing one is not an error.
    pub fn remove_blob(&self, digest: &str) -> Result<()> {
        match fs::remove_file(self.blob_path(digest)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes a snapshot by first renaming it into tmp/, so that a crash
    /// mid-way never leaves a half-deleted layer under its final name.
    pub fn remove_snapshot(&self, diff_id: &str) -> Result<()> {
        let dir = self.snapshot_dir(diff_id)?;
        let doomed = self.tmp_path("gc");
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_tree(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("remove snapshot {}", dir.display()))),
        }
    }

    /// Lists the diff ids of every snapshot on disk.
    pub fn snapshots(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("snapshots"))? {
            out.push(format!("sha256:{}", e?.file_name().to_string_lossy()));
        }
        Ok(out)
    }

    /// Lists the digests of every blob on disk.
    pub fn blobs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("blobs/sha256"))? {
            out.push(format!("sha256:{}", e?.file_name().to_string_lossy()));
        }
        Ok(out)
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens it.
fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::from(e).context(format!("create {}", dir.display())))?;
    make_private(dir)
}

/// Takes group and other permissions off a directory (a symlink to one is
/// followed: an operator may have moved the store).
fn make_private(dir: &Path) -> Result<()> {
    let context = |e: io::Error| Error::from(e).context(format!("restrict {}", dir.display()));
    let mode = fs::metadata(dir).map_err(context)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700)).map_err(context)?;
        tracing::info!(dir = %dir.display(), old_mode = format_args!("{mode:o}"),
            "made an image store directory private");
    }
    Ok(())
}

/// Removes a directory tree, making read-only directories writable first
/// (layers may contain mode 0500 directories).
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path)
                .map_err(|e| Error::from(e).context(format!("remove {}", path.display())))
        }
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_store_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        Content::open(&root).unwrap();
        for sub in ["", "blobs", "blobs/sha256", "snapshots", "tmp"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub:?}");
        }
    }

    #[test]
    fn a_store_made_open_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        let snapshot = root.join("snapshots").join("a".repeat(64));
        fs::create_dir_all(snapshot.join("fs")).unwrap();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        for d in [
            &root,
            &root.join("blobs"),
            &root.join("blobs/sha256"),
            &root.join("snapshots"),
            &snapshot,
        ] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(snapshot.join("fs"), fs::Permissions::from_mode(0o755)).unwrap();
        // Strays do not stop the store from opening.
        fs::write(root.join("snapshots/stray"), b"").unwrap();
        Content::open(&root).unwrap();
        for d in [
            &root,
            &root.join("blobs"),
            &root.join("blobs/sha256"),
            &root.join("snapshots"),
            &snapshot,
        ] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        // The layer's own root keeps its mode: it is what containers see.
        assert_eq!(mode(&snapshot.join("fs")), 0o755);
    }
}
