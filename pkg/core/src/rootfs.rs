//! A container's root filesystem: the image's layers as overlayfs lowerdirs
//! under a writable upper dir of its own; and the staging mounts behind
//! CRI recursive read-only mounts.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_errdefs::{Error, Result};
use nix::errno::Errno;
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

/// Mounts a tmpfs (the pod's /dev/shm), its root owned by `owner` (the
/// host ids of the root of a pod's user namespace) when given.
pub(crate) fn mount_shm(target: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(target)?;
    let mut data = "mode=1777,size=65536k".to_string();
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
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

// The new mount API (Linux ≥ 5.2, mount_setattr ≥ 5.12); the libc crate
// has the syscall numbers but not these constants.
const AT_RECURSIVE: libc::c_uint = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Whether this kernel has `mount_setattr` (Linux ≥ 5.12), which recursive
/// read-only mounts need. Asked once.
pub(crate) fn recursive_readonly_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // An invalid call (no descriptor, no attributes): a kernel with the
        // syscall answers EBADF or EINVAL, one without it ENOSYS.
        // SAFETY: a null attr with size 0 is never dereferenced.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<MountAttr>(),
                0usize,
            )
        };
        r == -1 && !matches!(Errno::last(), Errno::ENOSYS | Errno::EPERM)
    })
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", p.display())))
}

/// Mounts on `target` (an existing directory) a copy of the mount tree at
/// `src`, every mount in it read-only and private: the source the runtime
/// binds (`rbind` keeps each submount's flags) for a CRI
/// `recursive_read_only` mount, which crun 1.8 and runc 1.1 cannot make.
/// The copy is made detached and attached only when complete, so no
/// writable or half-made copy is ever visible, and a failure leaves none.
pub(crate) fn mount_recursive_readonly(src: &Path, target: &Path) -> Result<()> {
    let what = || {
        format!(
            "recursive read-only copy of {} at {}",
            src.display(),
            target.display()
        )
    };
    let fail = |step: &str, e: Errno| {
        let msg = format!("{}: {step}: {}", what(), e.desc());
        match e {
            Errno::ENOSYS => Error::new(
                berth_errdefs::ErrorKind::FailedPrecondition,
                format!("{msg} (recursive read-only mounts need Linux 5.12 or later)"),
            ),
            _ => Error::internal(msg),
        }
    };
    let (csrc, ctarget) = (cpath(src)?, cpath(target)?);
    // SAFETY: plain syscalls on valid C strings; the returned descriptor
    // is owned (and closed) below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(fail("open_tree", Errno::last()));
    }
    // SAFETY: open_tree just returned this descriptor; a detached tree
    // whose descriptor closes unattached is unmounted by the kernel.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: attr lives across the call and its size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(fail("mount_setattr", Errno::last()));
    }
    // SAFETY: valid descriptor and C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(fail("move_mount", Errno::last()));
    }
    Ok(())
}

/// Unmounts and removes every staging mount under `dir` (one directory
/// each), then `dir`; a missing `dir` is fine. A staging mount that will
/// not go is an error, and its directory is kept.
pub(crate) fn unmount_staged(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::from(e).context(format!("read {}", dir.display()))),
    };
    for e in entries.flatten() {
        let path = e.path();
        unmount_all(&path)?;
        let _ = std::fs::remove_dir(&path).or_else(|_| std::fs::remove_file(&path));
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: run the suite as root"
        );
    }

    /// A scratch directory whose mounts (deepest first) are lazily
    /// unmounted and whose files are removed on drop, pass or fail.
    struct Scratch {
        dir: PathBuf,
        mounts: Vec<PathBuf>,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("berth-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch {
                dir,
                mounts: Vec::new(),
            }
        }

        fn mkdir(&self, name: &str) -> PathBuf {
            let p = self.dir.join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        }

        fn mounted(&mut self, p: &Path) {
            self.mounts.push(p.to_path_buf());
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for m in self.mounts.iter().rev() {
                let _ = umount2(m, MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn write_errno(path: &Path) -> Option<i32> {
        std::fs::write(path, "x")
            .err()
            .and_then(|e| e.raw_os_error())
    }

    /// What a runtime does with a read-only CRI mount: `rbind`, then a
    /// read-only remount of the top mount only.
    fn runtime_bind_ro(src: &Path, dest: &Path) {
        mount(
            Some(src),
            dest,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
    }

    #[test]
    fn an_rbind_of_the_staged_copy_keeps_every_submount_read_only() {
        needs_root();
        assert!(
            recursive_readonly_supported(),
            "this kernel has mount_setattr"
        );
        let mut s = Scratch::new("rro-stage");
        let host = s.mkdir("host");
        let sub = s.mkdir("host/sub");
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        s.mounted(&sub);
        std::fs::write(sub.join("before"), "host data").unwrap();

        let staging = s.mkdir("staging");
        let staged = s.mkdir("staging/0");
        mount_recursive_readonly(&host, &staged).unwrap();
        s.mounted(&staged);
        let (rro, plain) = (s.mkdir("rro"), s.mkdir("plain"));
        runtime_bind_ro(&staged, &rro);
        s.mounted(&rro);
        // The control: a plain read-only bind of the host dir itself.
        runtime_bind_ro(&host, &plain);
        s.mounted(&plain);

        let erofs = Some(libc::EROFS);
        assert_eq!(write_errno(&staged.join("sub/new")), erofs);
        assert_eq!(write_errno(&rro.join("top")), erofs);
        assert_eq!(write_errno(&rro.join("sub/new")), erofs);
        assert_eq!(
            std::fs::read_to_string(rro.join("sub/before")).unwrap(),
            "host data"
        );
        assert_eq!(write_errno(&plain.join("top")), erofs);
        assert_eq!(write_errno(&plain.join("sub/new")), None, "control");
        // The host's own submount is untouched.
        assert_eq!(write_errno(&sub.join("host-new")), None);

        // Unstaging removes the copy (the runtime's bind keeps its own),
        // and never the host's mount.
        unmount_staged(&staging).unwrap();
        assert!(!staging.exists());
        assert_eq!(write_errno(&rro.join("sub/new")), erofs);
        assert_eq!(write_errno(&sub.join("host-new2")), None);
        let left = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!left.contains(&*staged.to_string_lossy()), "{left}");
        unmount_staged(&staging).unwrap(); // already gone: fine
    }

    #[test]
    fn a_file_is_staged_read_only_and_a_missing_source_fails_cleanly() {
        needs_root();
        let mut s = Scratch::new("rro-file");
        let file = s.dir.join("data.txt");
        std::fs::write(&file, "v1").unwrap();
        let staging = s.mkdir("staging");
        let target = staging.join("0");
        std::fs::File::create(&target).unwrap();
        mount_recursive_readonly(&file, &target).unwrap();
        s.mounted(&target);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "v1");
        assert_eq!(write_errno(&target), Some(libc::EROFS));
        unmount_staged(&staging).unwrap();
        assert!(!staging.exists());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "v1");

        let target = s.mkdir("staging2/0");
        let e = mount_recursive_readonly(&s.dir.join("missing"), &target).unwrap_err();
        assert!(
            e.message.contains("open_tree") && e.message.contains("missing"),
            "{e}"
        );
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!table.contains(&*s.dir.to_string_lossy()), "{table}");
    }
}
