//! Idmapped views, for pods with a user namespace: the layers of a
//! container's rootfs ([`mount_overlay_idmapped`]) and its volumes
//! ([`idmapped_bind`]). berth makes them itself with the mount API, since
//! runc 1.1 cannot.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};

use crate::rootfs::{mount_overlay, unmount_all};

/// Attaches at `target` (an existing directory, or file for a file) a copy
/// of the mount at `src` whose ids are mapped through the user namespace
/// `userns`: what is owned by id N on disk shows as owned by the host id
/// that container id N maps to, so the pod's root owns what the host's
/// root owns, and what it writes lands on disk with the ids it has inside.
/// `recursive` copies the mounts below `src` too (an `rbind`). Filesystems
/// without idmap support are refused by the kernel.
pub(crate) fn idmapped_bind(
    src: &Path,
    target: &Path,
    userns: &impl AsRawFd,
    recursive: bool,
) -> Result<()> {
    let tree = idmapped_tree(src, userns, recursive)?;
    let to = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL", target.display())))?;
    // SAFETY: attaches the detached tree at a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(
            Error::from(std::io::Error::last_os_error()).context(format!(
                "attach the idmapped view of {} at {}",
                src.display(),
                target.display()
            )),
        );
    }
    Ok(())
}

/// The detached idmapped copy of the mount at `src` that
/// [`idmapped_bind`] attaches (dropped unattached, it goes).
fn idmapped_tree(src: &Path, userns: &impl AsRawFd, recursive: bool) -> Result<OwnedFd> {
    let fail = |what: &str, e: std::io::Error| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (its filesystem may not support idmapped mounts)"
        } else {
            ""
        };
        Error::new(
            ErrorKind::FailedPrecondition,
            format!("idmapped view of {}: {what}: {e}{hint}", src.display()),
        )
    };
    let recurse = if recursive { libc::AT_RECURSIVE } else { 0 };
    let path = std::ffi::CString::new(src.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL", src.display())))?;
    // SAFETY: plain system call on a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | recurse as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(fail("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a fresh fd that we now own.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: attr is a valid mount_attr of the size passed; "" with
    // AT_EMPTY_PATH names the detached tree itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | recurse,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(fail("mount_setattr", std::io::Error::last_os_error()));
    }
    Ok(tree)
}

/// [`mount_overlay`] over idmapped views of the layers, with `upper`
/// owned by `owner` (the host ids of the container's root), so that the
/// container's root owns its `/` and what it writes is owned on the host
/// by the ids it maps to. Each view is attached under `scratch/<i>` only
/// while the overlay is mounted (overlayfs keeps private copies of its
/// layers), then unmounted with `scratch` removed, also on failure.
pub(crate) fn mount_overlay_idmapped(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    scratch: &Path,
    userns: &impl AsRawFd,
    owner: (u32, u32),
) -> Result<()> {
    std::fs::create_dir_all(upper)?;
    std::os::unix::fs::chown(upper, Some(owner.0), Some(owner.1))
        .map_err(|e| Error::from(e).context(format!("chown {}", upper.display())))?;
    std::fs::create_dir_all(scratch)?;
    let mounted = (|| {
        let mut views = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let view = scratch.join(i.to_string());
            std::fs::create_dir(&view)?;
            idmapped_bind(layer, &view, userns, false)?;
            views.push(view);
        }
        mount_overlay(&views, upper, work, target)
    })();
    let cleaned = unmount_under(scratch).and_then(|()| {
        std::fs::remove_dir_all(scratch)
            .map_err(|e| Error::from(e).context(format!("remove {}", scratch.display())))
    });
    if mounted.is_ok() {
        if let Err(e) = cleaned {
            let _ = unmount_all(target);
            return Err(e);
        }
    }
    mounted
}

/// Unmounts every mount at or below `dir` (deepest first), as
/// /proc/self/mountinfo lists them; nothing mounted is fine.
pub(crate) fn unmount_under(dir: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::from(e).context("read /proc/self/mountinfo"))?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        unmount_all(&p)?;
    }
    Ok(())
}

/// A mountinfo path field: `\040`-style octal escapes decoded.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4);
        match oct {
            Some(o) if b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push(o.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Whether overlayfs over idmapped layers works here (kernel ≥ 5.19) and
/// the filesystems of `idmapped` (where layers and pod files live) can be
/// idmapped: the first call mounts such an overlay in
/// `base/.idmap-probe-<pid>`, checks the ownership it shows and idmaps a
/// detached copy of each of `idmapped`; the answer is kept for the life
/// of the process.
pub(crate) fn idmap_probe(base: &Path, idmapped: &[PathBuf]) -> Result<()> {
    static ANSWER: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| probe_idmapped_overlay(base, idmapped).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!("overlayfs over idmapped layers does not work on this node: {e}"),
            )
        })
}

fn probe_idmapped_overlay(base: &Path, idmapped: &[PathBuf]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    const HOST_ROOT: u32 = 1 << 30;
    const PREFIX: &str = ".idmap-probe-";
    berth_store::private_dir(base, 0o711)?;
    // Those of an earlier berthd that died probing.
    for e in std::fs::read_dir(base)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            let stale = e.path();
            if unmount_under(&stale).is_ok() && berth_ns::unpin(&stale.join("ns")).is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(dir.join("lower"))?;
        std::fs::write(dir.join("lower/file"), b"")?;
        let map = berth_ns::IdMap {
            container_id: 0,
            host_id: HOST_ROOT,
            size: 1,
        };
        berth_ns::pin(&berth_ns::PinRequest {
            dir: dir.join("ns"),
            user: Some(berth_ns::IdMappings {
                uids: vec![map],
                gids: vec![map],
            }),
            ..Default::default()
        })?;
        let userns = std::fs::File::open(dir.join("ns/user"))?;
        for path in idmapped {
            idmapped_tree(path, &userns, false)?;
        }
        let merged = dir.join("merged");
        mount_overlay_idmapped(
            &[dir.join("lower")],
            &dir.join("upper"),
            &dir.join("work"),
            &merged,
            &dir.join("views"),
            &userns,
            (HOST_ROOT, HOST_ROOT),
        )?;
        let owner = std::fs::metadata(merged.join("file")).map(|m| m.uid());
        unmount_all(&merged)?;
        match owner? {
            HOST_ROOT => Ok(()),
            uid => Err(Error::internal(format!(
                "a root-owned file of an idmapped layer shows as uid {uid}, not {HOST_ROOT}"
            ))),
        }
    })();
    let unmounted = unmount_under(&dir).and_then(|()| berth_ns::unpin(&dir.join("ns")));
    if unmounted.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.and(unmounted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::MetadataExt;

    fn require_root() {
        // SAFETY: plain getter.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "needs root: run the suite as root"
        );
    }

    fn mounted_under(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|p| p.starts_with(dir))
            .collect()
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b/c\011d\134e"),
            PathBuf::from("/a b/c\td\\e")
        );
        assert_eq!(unescape_mountinfo(r"/x\04"), PathBuf::from(r"/x\04"));
    }

    #[test]
    fn idmapped_views_show_host_root_files_as_the_pods_root_and_go_again() {
        require_root();
        let td = std::env::temp_dir().join(format!("berth-rootfs-test-{}", std::process::id()));
        let dir = td.join("with space");
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("file"), "x").unwrap();
        std::fs::write(dir.join("single"), "y").unwrap();
        let map = berth_ns::IdMap {
            container_id: 0,
            host_id: 300_000,
            size: 65_536,
        };
        berth_ns::pin(&berth_ns::PinRequest {
            dir: dir.join("ns"),
            user: Some(berth_ns::IdMappings {
                uids: vec![map],
                gids: vec![berth_ns::IdMap {
                    host_id: 400_000,
                    ..map
                }],
            }),
            ..Default::default()
        })
        .unwrap();
        let userns = std::fs::File::open(dir.join("ns/user")).unwrap();

        // A directory, with a mount below it (recursive), and a file.
        std::fs::create_dir(src.join("sub")).unwrap();
        mount(
            Some("tmpfs"),
            &src.join("sub"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let view = dir.join("view");
        std::fs::create_dir(&view).unwrap();
        idmapped_bind(&src, &view, &userns, true).unwrap();
        let owner = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&view.join("file")), (300_000, 400_000));
        assert_eq!(owner(&view.join("sub")), (300_000, 400_000));
        assert_eq!(owner(&src.join("file")), (0, 0));
        let file_view = dir.join("file-view");
        std::fs::write(&file_view, "").unwrap();
        idmapped_bind(&dir.join("single"), &file_view, &userns, false).unwrap();
        assert_eq!(owner(&file_view), (300_000, 400_000));
        assert_eq!(std::fs::read_to_string(&file_view).unwrap(), "y");

        // A filesystem without idmap support (procfs) is refused, named.
        let e = idmapped_bind(Path::new("/proc"), &dir.join("view"), &userns, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
        assert!(e.to_string().contains("idmapped view of /proc"), "{e}");

        unmount_under(&dir).unwrap();
        assert_eq!(mounted_under(&dir), Vec::<PathBuf>::new());
        // Idempotent, and the views took nothing with them.
        unmount_under(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(src.join("file")).unwrap(), "x");
        berth_ns::unpin(&dir.join("ns")).unwrap();
        std::fs::remove_dir_all(&td).unwrap();
    }
}
