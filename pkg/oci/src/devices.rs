//! Host devices given to a container, and the device cgroup rules.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::mounts::container_path;
use crate::spec::Device;

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// Deny every device, then allow the ones every container has (containerd's
/// `WithDefaultUnixDevices`): null, random, full, tty, zero, urandom,
/// console, the pts range and ptmx. A privileged container may use all.
pub fn default_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, C};
    if privileged {
        return vec![rule(true, A, None, None, "rwm")];
    }
    let mut rules = vec![rule(false, A, None, None, "rwm")];
    let standard: [(i64, Option<i64>); 9] = [
        (1, Some(3)), // /dev/null
        (1, Some(8)), // /dev/random
        (1, Some(7)), // /dev/full
        (5, Some(0)), // /dev/tty
        (1, Some(5)), // /dev/zero
        (1, Some(9)), // /dev/urandom
        (5, Some(1)), // /dev/console
        (136, None),  // /dev/pts/*
        (5, Some(2)), // /dev/ptmx
    ];
    rules.extend(
        standard
            .iter()
            .map(|(major, minor)| rule(true, C, Some(*major), *minor, "rwm")),
    );
    rules
}

/// Directories of a device tree that hold no devices to pass (containerd's
/// list: mounts of their own, and runtime bookkeeping).
const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The device node at `host`, as seen at `container`; `None` when it is
/// not a character or block device.
fn device_at(host: &Path, container: &str) -> Result<Option<LinuxDevice>> {
    let meta = std::fs::symlink_metadata(host)
        .map_err(|e| Error::from(e).context(format!("device host_path {}", host.display())))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(container));
    d.set_typ(typ);
    d.set_major(i64::from(libc::major(rdev)));
    d.set_minor(i64::from(libc::minor(rdev)));
    d.set_file_mode(Some(meta.mode() & 0o7777));
    d.set_uid(Some(meta.uid()));
    d.set_gid(Some(meta.gid()));
    Ok(Some(d))
}

/// More entries than this below a device directory are refused: a device
/// tree (`/dev`, `/dev/snd`) has at most a few thousand, and a request
/// naming `/` must not make berthd walk the host's whole file system.
const MAX_TREE_ENTRIES: usize = 10_000;

/// An entry of a device tree still to visit: host path, container path.
type Pending = (PathBuf, String, std::fs::FileType);

/// Every device under the host directory `top`, placed under `container`:
/// depth first, each directory's entries in name order. The walk keeps
/// its own stack, so a deep tree costs no call stack.
fn devices_in(top: &Path, container: &str, out: &mut Vec<LinuxDevice>) -> Result<()> {
    let mut seen = 0;
    let mut stack: Vec<Pending> = Vec::new();
    let mut push_entries = |dir: &Path, container: &str, stack: &mut Vec<Pending>| {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::from(e).context(format!("device host_path {}", dir.display())))?;
        let mut found = Vec::new();
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_TREE_ENTRIES {
                return Err(Error::invalid(format!(
                    "device host_path {} has more than {MAX_TREE_ENTRIES} entries below it; name the devices or a smaller directory",
                    top.display()
                )));
            }
            found.push(e);
        }
        found.sort_by_key(|e| e.file_name());
        for e in found.into_iter().rev() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let inner = format!("{}/{name}", container.trim_end_matches('/'));
            stack.push((e.path(), inner, ft));
        }
        Ok(())
    };
    push_entries(top, container, &mut stack)?;
    while let Some((host, inner, ft)) = stack.pop() {
        let name = host.file_name().unwrap_or_default().to_string_lossy();
        if ft.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) {
                push_entries(&host, &inner, &mut stack)?;
            }
        } else if name != "console" {
            if let Some(d) = device_at(&host, &inner)? {
                out.push(d);
            }
        }
    }
    Ok(())
}

/// The CRI devices as OCI devices and the cgroup rules that allow them.
///
/// As containerd: symlinks in the host path are resolved; a directory
/// gives every device below it; the rule grants the requested permissions
/// (`rwm` when none are given).
pub fn cri_devices(devices: &[Device]) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for dev in devices {
        let dest = container_path("device container_path", &dev.container_path)?;
        let access = if dev.permissions.is_empty() {
            "rwm".to_string()
        } else {
            dev.permissions.clone()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::invalid(format!(
                "device {} permissions {:?}: only r, w and m are allowed",
                dev.host_path.display(),
                dev.permissions
            )));
        }
        if !dev.host_path.is_absolute() {
            return Err(Error::invalid(format!(
                "device host_path {} must be an absolute path",
                dev.host_path.display()
            )));
        }
        let host = std::fs::canonicalize(&dev.host_path).map_err(|e| {
            Error::invalid(format!("device host_path {}: {e}", dev.host_path.display()))
        })?;
        let mut found = Vec::new();
        if host.is_dir() {
            devices_in(&host, &dest, &mut found)?;
        } else {
            match device_at(&host, &dest)? {
                Some(d) => found.push(d),
                None => {
                    return Err(Error::invalid(format!(
                        "device host_path {} is not a character or block device",
                        dev.host_path.display()
                    )))
                }
            }
        }
        for d in found {
            rules.push(rule(
                true,
                d.typ(),
                Some(d.major()),
                Some(d.minor()),
                &access,
            ));
            nodes.push(d);
        }
    }
    Ok((nodes, rules))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;

    fn dev(host: &str, container: &str, perms: &str) -> Device {
        Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn default_rules_deny_then_allow_the_standard_nodes() {
        let rules = default_rules(false);
        assert!(!rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        let allowed: Vec<String> = rules[1..].iter().map(|r| r.to_string()).collect();
        for want in [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        ] {
            assert!(allowed.contains(&want.to_string()), "{want} in {allowed:?}");
        }
        assert!(rules[1..].iter().all(|r| r.allow()));
        let p = default_rules(true);
        assert_eq!(p.len(), 1);
        assert!(p[0].allow());
        assert_eq!(p[0].to_string(), "a *:* rwm");
    }

    #[test]
    fn a_host_device_becomes_a_node_and_a_rule() {
        let (nodes, rules) = cri_devices(&[dev("/dev/null", "/dev/mynull", "rw")]).unwrap();
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!(n.path(), Path::new("/dev/mynull"));
        assert_eq!(n.typ(), LinuxDeviceType::C);
        assert_eq!((n.major(), n.minor()), (1, 3));
        assert_eq!(n.file_mode(), Some(0o666));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to_string(), "c 1:3 rw");
        assert!(rules[0].allow());
        // No permissions given: all of them.
        let (_, rules) = cri_devices(&[dev("/dev/zero", "/dev/zero", "")]).unwrap();
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    }

    /// Makes a character device node (needs root, as CI runs the suite).
    fn mknod(path: &Path, major: u64, minor: u64) {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "needs root: run the suite as root");
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o640),
            libc::makedev(major as u32, minor as u32),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
    }

    #[test]
    fn symlinks_and_directories_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("nul")).unwrap();
        let (nodes, _) =
            cri_devices(&[dev(dir.path().join("nul").to_str().unwrap(), "/dev/x", "r")]).unwrap();
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
        assert_eq!(nodes[0].path(), Path::new("/dev/x"));

        // A tree of devices: nested directories are walked in name order;
        // a file that is no device, a symlink, `console` and the skipped
        // directories (`pts`, ...) give nothing.
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("snd/sub")).unwrap();
        std::fs::create_dir(t.join("pts")).unwrap();
        std::fs::write(t.join("readme"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/null", t.join("link")).unwrap();
        mknod(&t.join("zero"), 1, 5);
        mknod(&t.join("snd/null"), 1, 3);
        mknod(&t.join("snd/sub/full"), 1, 7);
        mknod(&t.join("console"), 5, 1);
        mknod(&t.join("pts/0"), 136, 0);
        let (nodes, rules) = cri_devices(&[dev(t.to_str().unwrap(), "/dev/t/", "rw")]).unwrap();
        let got: Vec<(String, i64, i64)> = nodes
            .iter()
            .map(|n| (n.path().display().to_string(), n.major(), n.minor()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/t/snd/null".to_string(), 1, 3),
                ("/dev/t/snd/sub/full".to_string(), 1, 7),
                ("/dev/t/zero".to_string(), 1, 5),
            ]
        );
        assert_eq!(nodes[0].file_mode(), Some(0o640));
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["c 1:3 rw", "c 1:7 rw", "c 1:5 rw"]);
    }

    #[test]
    fn device_trees_too_large_to_walk_are_refused() {
        let tree = tempfile::tempdir().unwrap();
        let sub = tree.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        // The directory counts too: one entry over the cap in all.
        for i in 0..MAX_TREE_ENTRIES {
            std::fs::File::create(sub.join(i.to_string())).unwrap();
        }
        let e = cri_devices(&[dev(tree.path().to_str().unwrap(), "/dev/t", "rw")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message.contains(&tree.path().display().to_string())
                && e.message.contains("more than 10000 entries"),
            "{e}"
        );
        // At the cap it is walked.
        std::fs::remove_file(sub.join("0")).unwrap();
        let (nodes, _) =
            cri_devices(&[dev(tree.path().to_str().unwrap(), "/dev/t", "rw")]).unwrap();
        assert!(nodes.is_empty());
    }

    #[test]
    fn bad_devices_are_invalid_arguments_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let cases = [
            (dev("/no/such/device", "/dev/x", "rw"), "/no/such/device"),
            (
                dev(file.to_str().unwrap(), "/dev/x", "rw"),
                "not a character or block device",
            ),
            (dev("/dev/null", "dev/x", "rw"), "container_path \"dev/x\""),
            (dev("/dev/null", "/dev/x", "rwx"), "permissions \"rwx\""),
            (dev("dev/null", "/dev/x", "rw"), "must be an absolute path"),
        ];
        for (d, want) in cases {
            let e = cri_devices(&[d]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            assert!(e.message.contains(want), "{e} should contain {want}");
        }
    }
}
