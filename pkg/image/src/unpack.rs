//! Unpacking one OCI layer into its own snapshot directory, safely.
//!
//! Each layer is unpacked in isolation into an empty directory that later
//! becomes an overlayfs lowerdir, so:
//! - OCI whiteouts (`.wh.name`) become overlayfs whiteouts (char device 0:0)
//!   and opaque markers (`.wh..wh..opq`) the `trusted.overlay.opaque` xattr;
//! - nothing may be written outside the directory: absolute paths, `..`,
//!   parents that are symlinks and hardlinks leaving the layer reject the
//!   whole layer with an error naming the entry. Symlinks themselves are kept
//!   verbatim (they are resolved inside the container, not here), and no
//!   path is ever opened through one.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_errdefs::{Error, Result};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

/// What a layer takes on disk once unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Allocated bytes (`st_blocks * 512`), each inode counted once.
    pub bytes: u64,
    pub inodes: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const COPY_BUFFER: usize = 256 * 1024;

fn refuse(entry: &Path, why: &str) -> Error {
    Error::invalid(format!(
        "layer entry {:?} {why}",
        entry.display().to_string()
    ))
}

fn io_error(entry: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!(
        "layer entry {:?}: {what}: {e}",
        entry.display().to_string()
    ))
}

/// Unpacks the uncompressed tar stream into `dest` (an existing directory).
pub fn unpack_layer<R: Read>(tar_stream: R, dest: &Path) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid(format!("malformed layer tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::invalid(format!("malformed layer tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| Error::invalid(format!("malformed layer tar entry name: {e}")))?
            .into_owned();
        let rel = clean(&raw)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            continue; // the layer's own root, "./"
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = make_parents(dest, parent_rel, &raw)?;

        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            xattr::set(&parent, "trusted.overlay.opaque", b"y")
                .map_err(|e| io_error(&raw, "set opaque xattr", e))?;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(refuse(&raw, "is a malformed whiteout"));
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_existing(&target, false, &raw)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| io_error(&raw, "create whiteout", e))?;
            continue;
        }

        let target = parent.join(&name);
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        match kind {
            EntryType::Directory => {
                remove_existing(&target, true, &raw)?;
                if fs::symlink_metadata(&target).is_err() {
                    fs::create_dir(&target).map_err(|e| io_error(&raw, "create directory", e))?;
                }
                own_and_mode(&target, uid, gid, Some(mode), &raw)?;
                dir_times.push((target.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&target, false, &raw)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|e| io_error(&raw, "create file", e))?;
                loop {
                    let n = entry
                        .read(&mut buffer)
                        .map_err(|e| Error::invalid(format!("layer entry {raw:?}: read: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buffer[..n])
                        .map_err(|e| io_error(&raw, "write", e))?;
                }
                drop(file);
                own_and_mode(&target, uid, gid, Some(mode), &raw)?;
                set_mtime(&target, mtime, &raw)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| Error::invalid(format!("layer entry {raw:?}: link name: {e}")))?
                    .ok_or_else(|| refuse(&raw, "is a symlink without a target"))?
                    .into_owned();
                remove_existing(&target, false, &raw)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| io_error(&raw, "create symlink", e))?;
                own_and_mode(&target, uid, gid, None, &raw)?;
                set_mtime(&target, mtime, &raw)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| Error::invalid(format!("layer entry {raw:?}: link name: {e}")))?
                    .ok_or_else(|| refuse(&raw, "is a hardlink without a target"))?
                    .into_owned();
                let link_rel = clean(&link).map_err(|_| {
                    refuse(
                        &raw,
                        &format!(
                            "links to {:?} outside the layer",
                            link.display().to_string()
                        ),
                    )
                })?;
                let source = existing_inside(dest, &link_rel, &raw)?;
                remove_existing(&target, false, &raw)?;
                fs::hard_link(&source, &target)
                    .map_err(|e| io_error(&raw, "create hardlink", e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let flag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_existing(&target, false, &raw)?;
                mknod(
                    &target,
                    flag,
                    Mode::from_bits_truncate(mode),
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| io_error(&raw, "create device node", e))?;
                own_and_mode(&target, uid, gid, Some(mode), &raw)?;
            }
            // Global PAX headers and other metadata-only records.
            _ => continue,
        }
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let Some(attr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                // Some xattrs (security.*, trusted.*) are refused by some
                // filesystems; the content itself is still right.
                let _ = xattr::set(&target, OsStr::from_bytes(attr), ext.value_bytes());
            }
        }
    }
    // Children change their directory's mtime: set those last, deepest first.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime, dir)?;
    }
    disk_usage(dest)
}

/// Strips `./` and rejects absolute paths and `..`, naming the entry.
fn clean(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(
                    raw,
                    "has an absolute path, which would escape the snapshot",
                ))
            }
            Component::ParentDir => {
                return Err(refuse(
                    raw,
                    "contains \"..\", which would escape the snapshot",
                ))
            }
        }
    }
    Ok(out)
}

/// Creates missing parent directories, refusing to pass through a symlink
/// or a non-directory.
fn make_parents(dest: &Path, parent_rel: &Path, raw: &Path) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in parent_rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(
                    raw,
                    "traverses a symlink, which could escape the snapshot",
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refuse(raw, "has a parent that is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| io_error(raw, "create parent directory", e))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| io_error(raw, "chmod parent directory", e))?;
            }
            Err(e) => return Err(io_error(raw, "inspect parent", e)),
        }
    }
    Ok(cur)
}

/// The path of an existing non-directory inside the layer, reached without
/// passing through a symlink.
fn existing_inside(dest: &Path, rel: &Path, raw: &Path) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    let count = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        let m = fs::symlink_metadata(&cur)
            .map_err(|_| refuse(raw, "links to a file that is not in this layer"))?;
        let last = i + 1 == count;
        if !last && m.file_type().is_symlink() {
            return Err(refuse(
                raw,
                "links through a symlink, which could escape the snapshot",
            ));
        }
        if last && m.is_dir() {
            return Err(refuse(raw, "is a hardlink to a directory"));
        }
    }
    if count == 0 {
        return Err(refuse(raw, "is a hardlink to the layer root"));
    }
    Ok(cur)
}

/// Makes room for a new entry: a later entry replaces an earlier one, but a
/// directory entry over an existing directory only updates it.
fn remove_existing(target: &Path, keep_dir: bool, raw: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(target).map_err(|e| io_error(raw, "replace directory", e))
        }
        Ok(_) => fs::remove_file(target).map_err(|e| io_error(raw, "replace file", e)),
        Err(_) => Ok(()),
    }
}

/// Owner first, then mode: chown clears setuid/setgid bits.
fn own_and_mode(path: &Path, uid: u32, gid: u32, mode: Option<u32>, raw: &Path) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| io_error(raw, "chown", e))?;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(raw, "chmod", e))?;
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64, raw: &Path) -> Result<()> {
    let t = TimeSpec::new(mtime as i64, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_error(raw, "set mtime", e))
}

/// Allocated bytes and inodes under `dir`, hardlinks counted once.
fn disk_usage(dir: &Path) -> Result<UnpackStats> {
    let mut seen = HashSet::new();
    let mut stats = UnpackStats::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            stats.inodes += 1;
            stats.bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use tar::{Builder, Header};

    /// A tar built entry by entry; names are written raw so that malicious
    /// ones (which `Builder::append_path` refuses) can be made.
    struct Tar(Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(Builder::new(Vec::new()))
        }

        fn header(name: &str, kind: EntryType, size: u64, mode: u32) -> Header {
            let mut h = Header::new_gnu();
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h
        }

        fn file(mut self, name: &str, data: &[u8]) -> Self {
            let mut h = Self::header(name, EntryType::Regular, data.len() as u64, 0o644);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn dir(mut self, name: &str, mode: u32) -> Self {
            let mut h = Self::header(name, EntryType::Directory, 0, mode);
            h.set_cksum();
            self.0.append(&h, &[][..]).unwrap();
            self
        }

        fn link(mut self, name: &str, kind: EntryType, target: &str) -> Self {
            let mut h = Self::header(name, kind, 0, 0o777);
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            h.set_cksum();
            self.0.append(&h, &[][..]).unwrap();
            self
        }

        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack(tar: Tar) -> (tempfile::TempDir, Result<UnpackStats>) {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&tar.bytes()[..], &dest);
        (outer, r)
    }

    #[test]
    fn files_dirs_links_and_modes() {
        let tar = Tar::new()
            .dir("./bin/", 0o755)
            .file("./bin/busybox", b"binary")
            .link("./bin/sh", EntryType::Symlink, "busybox")
            .link("./bin/abs", EntryType::Symlink, "/etc/passwd")
            .link("./bin/hard", EntryType::Link, "bin/busybox")
            .dir("./tmp/", 0o1777)
            .file("deep/new/file.txt", b"x");
        let (outer, r) = unpack(tar);
        let stats = r.unwrap();
        let d = outer.path().join("dest");
        assert_eq!(fs::read(d.join("bin/busybox")).unwrap(), b"binary");
        assert_eq!(
            fs::read_link(d.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(d.join("bin/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::metadata(d.join("bin/hard")).unwrap().ino(),
            fs::metadata(d.join("bin/busybox")).unwrap().ino()
        );
        let tmp = fs::metadata(d.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(tmp.mtime(), 1_000_000, "directory mtime kept");
        assert_eq!(fs::read(d.join("deep/new/file.txt")).unwrap(), b"x");
        assert!(stats.inodes >= 8 && stats.bytes > 0, "{stats:?}");
    }

    #[test]
    fn whiteouts_and_opaque_markers_become_overlayfs_form() {
        let tar = Tar::new()
            .dir("data/", 0o755)
            .file("data/.wh.gone", b"")
            .file("opq/.wh..wh..opq", b"")
            .file("opq/new", b"n");
        let (outer, r) = unpack(tar);
        r.unwrap();
        let d = outer.path().join("dest");
        let w = fs::symlink_metadata(d.join("data/gone")).unwrap();
        assert!(w.file_type().is_char_device());
        assert_eq!(w.rdev(), 0);
        assert!(!d.join("data/.wh.gone").exists());
        assert!(!d.join("opq/.wh..wh..opq").exists());
        assert_eq!(
            xattr::get(d.join("opq"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = Tar::new()
            .file("f", b"one")
            .file("f", b"two")
            .link("l", EntryType::Symlink, "f")
            .file("l", b"now a file");
        let (outer, r) = unpack(tar);
        r.unwrap();
        let d = outer.path().join("dest");
        assert_eq!(fs::read(d.join("f")).unwrap(), b"two");
        assert_eq!(fs::read(d.join("l")).unwrap(), b"now a file");
    }

    fn assert_refused(tar: Tar, entry: &str) -> tempfile::TempDir {
        let (outer, r) = unpack(tar);
        let e = r.expect_err("must be refused");
        assert_eq!(
            e.kind,
            berth_errdefs::ErrorKind::InvalidArgument,
            "{}",
            e.message
        );
        assert!(e.message.contains(entry), "names {entry}: {}", e.message);
        outer
    }

    #[test]
    fn escapes_are_refused_and_write_nothing_outside() {
        let outer = assert_refused(Tar::new().file("../escaped", b"x"), "../escaped");
        assert!(!outer.path().join("escaped").exists());

        assert_refused(Tar::new().file("a/../../escaped", b"x"), "a/../../escaped");
        assert_refused(Tar::new().file("/abs-escaped", b"x"), "/abs-escaped");

        let victim = tempfile::tempdir().unwrap();
        let v = victim.path().to_str().unwrap();
        assert_refused(
            Tar::new()
                .link("link", EntryType::Symlink, v)
                .file("link/escaped", b"x"),
            "link/escaped",
        );
        assert!(!victim.path().join("escaped").exists());
        assert_refused(
            Tar::new()
                .link("up", EntryType::Symlink, "..")
                .file("up/escaped", b"x"),
            "up/escaped",
        );
        assert_refused(
            Tar::new()
                .link("link", EntryType::Symlink, v)
                .file("link/.wh.x", b""),
            "link/.wh.x",
        );

        // Hardlinks out of the layer.
        assert_refused(
            Tar::new().link("h", EntryType::Link, "/etc/passwd"),
            "\"h\"",
        );
        assert_refused(Tar::new().link("h", EntryType::Link, "../x"), "\"h\"");
        assert_refused(Tar::new().link("h", EntryType::Link, "missing"), "\"h\"");
        let outer = assert_refused(
            Tar::new()
                .link("d", EntryType::Symlink, "/etc")
                .link("h", EntryType::Link, "d/passwd"),
            "\"h\"",
        );
        assert!(!outer.path().join("dest/h").exists());
    }

    #[test]
    fn a_long_gnu_name_works() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"z"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&b.into_inner().unwrap()[..], dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join(&long)).unwrap(), b"z");
    }
}
