//! The container's mounts: the runtime defaults and the CRI bind mounts,
//! merged as containerd's CRI plugin does (`WithMounts`), plus the default
//! masked and read-only paths.

use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};
use oci_spec::runtime::Mount as OciMount;

use crate::spec::{Mount, Propagation};

/// containerd's default masked paths.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> OciMount {
    let mut m = OciMount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// The mounts every container gets: containerd's defaults without `/run`
/// (its CRI plugin drops it) plus a read-only cgroup filesystem. A
/// privileged container gets `/sys` and `/sys/fs/cgroup` read-write.
pub fn default_mounts(privileged: bool) -> Vec<OciMount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// A path made lexically clean (`//`, `.`, `..` resolved), like Go's
/// `filepath.Clean`; `..` never climbs above `/` for an absolute path.
pub fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A container path from a CRI request: absolute, and cleaned.
pub fn container_path(field: &str, path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::invalid(format!(
            "{field} {path:?} must be an absolute path"
        )));
    }
    Ok(clean_path(path))
}

/// One line of `/proc/self/mountinfo`, the parts berth needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    /// The optional fields (`shared:1 master:2`).
    pub optional: String,
}

/// `\040` and friends in mountinfo paths.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(fields[4])),
                optional: fields[6..sep].join(" "),
            })
        })
        .collect()
}

/// The mount `path` lives on: the deepest mount point above it, the last
/// one mounted when several share that point.
pub fn mount_of<'a>(path: &Path, infos: &'a [MountInfo]) -> Option<&'a MountInfo> {
    infos
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&MountInfo>, m| match best {
            Some(b) if b.mount_point.components().count() > m.mount_point.components().count() => {
                Some(b)
            }
            _ => Some(m),
        })
}

/// containerd's `ensureShared` / `ensureSharedOrSlave`: a bidirectional
/// mount needs a shared source mount, host-to-container a shared or slave
/// one, else the propagation asked for cannot happen.
pub fn check_propagation(src: &Path, propagation: Propagation, infos: &[MountInfo]) -> Result<()> {
    let (prefixes, what): (&[&str], &str) = match propagation {
        Propagation::Private => return Ok(()),
        Propagation::Bidirectional => (&["shared:"], "a shared"),
        Propagation::HostToContainer => (&["shared:", "master:"], "a shared or slave"),
    };
    let m = mount_of(src, infos)
        .ok_or_else(|| Error::invalid(format!("host path {} is on no mount", src.display())))?;
    if m.optional
        .split(' ')
        .any(|o| prefixes.iter().any(|p| o.starts_with(p)))
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "host path {} is mounted on {} but it is not {what} mount, which {:?} propagation needs",
            src.display(),
            m.mount_point.display(),
            propagation
        )))
    }
}

/// The CRI rules for `recursive_read_only` (kubelet's and cri-tools'): it
/// needs `readonly` and private propagation, else `InvalidArgument`.
pub fn check_recursive_readonly(m: &Mount) -> Result<()> {
    if !m.recursive_readonly {
        return Ok(());
    }
    let dest = &m.container_path;
    if !m.readonly {
        return Err(Error::invalid(format!(
            "mount {dest}: recursive_read_only needs readonly to be set too"
        )));
    }
    if m.propagation != Propagation::Private {
        return Err(Error::invalid(format!(
            "mount {dest}: recursive_read_only needs private propagation, not {:?}",
            m.propagation
        )));
    }
    Ok(())
}

/// A mount with its cleaned destination.
pub type Destined = (String, OciMount);

/// The CRI mounts as OCI bind mounts, and the rootfs propagation they need.
///
/// As containerd: a missing host path is created as a directory (kubelet
/// relies on it), symlinks in it are resolved, options are `rbind`, the
/// propagation and `ro`/`rw`; mounts are sorted by the depth of their
/// destination (stable), so parents come before children.
pub fn cri_mounts(mounts: &[Mount]) -> Result<(Vec<Destined>, Option<String>)> {
    cri_mounts_with(mounts, &|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::from(e).context("read /proc/self/mountinfo"))?;
        Ok(parse_mountinfo(&text))
    })
}

/// [`cri_mounts`] with the mount table from `mount_table` (read only when
/// a mount asks for propagation).
fn cri_mounts_with(
    mounts: &[Mount],
    mount_table: &dyn Fn() -> Result<Vec<MountInfo>>,
) -> Result<(Vec<Destined>, Option<String>)> {
    // Every mount is checked before any host directory is made, so a bad
    // mount late in the list leaves nothing behind.
    let mut checked = Vec::with_capacity(mounts.len());
    for m in mounts {
        let dest = container_path("mount container_path", &m.container_path)?;
        check_recursive_readonly(m)?;
        if dest == "/" {
            return Err(Error::invalid(format!(
                "mount container_path {:?} cannot be the root",
                m.container_path
            )));
        }
        if m.tmpfs.is_some() {
            checked.push((m, dest, false));
            continue;
        }
        let host = &m.host_path;
        if !host.is_absolute() {
            return Err(Error::invalid(format!(
                "mount host_path {} (for {dest}) must be an absolute path",
                host.display()
            )));
        }
        let missing = match std::fs::metadata(host) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::from(e)
                    .context(format!("mount host_path {} (for {dest})", host.display())))
            }
        };
        checked.push((m, dest, missing));
    }
    let mut made = MadeDirs::default();
    let out = resolve_mounts(checked, mount_table, &mut made)?;
    made.keep();
    Ok(out)
}

/// Directories made for missing host paths, removed again (deepest first,
/// only if still empty) unless kept.
#[derive(Default)]
pub struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    /// Remembers the directories missing now on the way to each of `paths`
    /// (to be made later, by someone else): removed on drop if still empty.
    pub fn missing<'a>(paths: impl IntoIterator<Item = &'a Path>) -> MadeDirs {
        let mut out = Vec::new();
        for path in paths.into_iter().filter(|p| p.is_absolute()) {
            let mut chain = Vec::new();
            let mut p = Some(path);
            while let Some(d) = p.filter(|d| std::fs::symlink_metadata(d).is_err()) {
                chain.push(d.to_path_buf());
                p = d.parent();
            }
            out.extend(chain.into_iter().rev());
        }
        MadeDirs(out)
    }

    /// Makes `path` and its missing parents, remembering each one made.
    pub fn create(&mut self, path: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut p = Some(path);
        while let Some(d) = p.filter(|d| std::fs::symlink_metadata(d).is_err()) {
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        std::fs::create_dir_all(path)?;
        self.0.extend(missing.into_iter().rev());
        Ok(())
    }

    /// The directories stay.
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn resolve_mounts(
    checked: Vec<(&Mount, String, bool)>,
    mount_table: &dyn Fn() -> Result<Vec<MountInfo>>,
    made: &mut MadeDirs,
) -> Result<(Vec<Destined>, Option<String>)> {
    let mut infos: Option<Vec<MountInfo>> = None;
    let mut out = Vec::new();
    let mut rootfs_propagation: Option<String> = None;
    for (m, dest, missing) in checked {
        if let Some(options) = &m.tmpfs {
            out.push((dest.clone(), tmpfs_mount(&dest, m.readonly, options)));
            continue;
        }
        let host = &m.host_path;
        if missing {
            made.create(host).map_err(|e| {
                Error::from(e).context(format!(
                    "create missing mount host_path {} (for {dest})",
                    host.display()
                ))
            })?;
        }
        let src = std::fs::canonicalize(host).map_err(|e| {
            Error::from(e).context(format!(
                "resolve mount host_path {} (for {dest})",
                host.display()
            ))
        })?;
        let propagation = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        };
        if m.propagation != Propagation::Private {
            if infos.is_none() {
                infos = Some(mount_table()?);
            }
            check_propagation(&src, m.propagation, infos.as_deref().unwrap_or_default())
                .map_err(|e| e.context(format!("mount {dest}")))?;
            // rshared wins over rslave, rslave over the default.
            if m.propagation == Propagation::Bidirectional {
                rootfs_propagation = Some("rshared".into());
            } else if rootfs_propagation.is_none() {
                rootfs_propagation = Some("rslave".into());
            }
        }
        let mode = if m.readonly { "ro" } else { "rw" };
        let mut om = mount(&dest, "bind", "", &["rbind", propagation, mode]);
        om.set_source(Some(src));
        out.push((dest, om));
    }
    out.sort_by_key(|(dest, _)| dest.matches('/').count());
    Ok((out, rootfs_propagation))
}

/// A tmpfs at `dest`: Docker's defaults (`noexec`, `nosuid`, `nodev`,
/// `rprivate`), then the options asked for, a later one of a kind
/// winning (dockerd's `MergeTmpfsOptions`).
fn tmpfs_mount(dest: &str, readonly: bool, asked: &[String]) -> OciMount {
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev", "rprivate"]
        .into_iter()
        .map(String::from)
        .collect();
    if readonly {
        options.push("ro".into());
    }
    for o in asked.iter().filter(|o| !o.is_empty()) {
        options.retain(|x| tmpfs_option_kind(x) != tmpfs_option_kind(o));
        options.push(o.clone());
    }
    let refs: Vec<&str> = options.iter().map(String::as_str).collect();
    mount(dest, "tmpfs", "tmpfs", &refs)
}

/// What a tmpfs option sets: a flag and its opposite set one thing, as
/// do `size=1m` and `size=2m`.
fn tmpfs_option_kind(option: &str) -> &str {
    match option.split('=').next().unwrap_or(option) {
        "rw" => "ro",
        "exec" => "noexec",
        "suid" => "nosuid",
        "dev" => "nodev",
        "private" | "shared" | "rshared" | "slave" | "rslave" => "rprivate",
        name => name,
    }
}

/// The defaults a CRI mount does not replace, then the CRI mounts: a CRI
/// mount at a default's destination replaces it, and a CRI `/dev`
/// replaces every default under `/dev`.
pub fn merge(defaults: Vec<OciMount>, cri: Vec<Destined>) -> Vec<OciMount> {
    let taken = |d: &str| cri.iter().any(|(c, _)| c == d);
    let mut out: Vec<OciMount> = defaults
        .into_iter()
        .filter(|m| {
            let d = clean_path(&m.destination().to_string_lossy());
            let under_cri_dev = taken("/dev") && d.starts_with("/dev/");
            !(taken(&d) || under_cri_dev)
        })
        .collect();
    out.extend(cri.into_iter().map(|(_, m)| m));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;

    fn dests(mounts: &[OciMount]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn options(m: &OciMount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn tmpfs_mounts_take_dockers_defaults_then_the_options() {
        let (out, _) = cri_mounts(&[Mount {
            container_path: "/run/x/".into(),
            readonly: true,
            tmpfs: Some(vec!["size=2m".into(), "exec".into(), "mode=1770".into()]),
            ..Mount::default()
        }])
        .unwrap();
        let (dest, m) = &out[0];
        assert_eq!(dest, "/run/x");
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            options(m),
            [
                "nosuid",
                "nodev",
                "rprivate",
                "ro",
                "size=2m",
                "exec",
                "mode=1770"
            ],
            "exec replaces the default noexec"
        );
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("/a//b/./c/.."), "/a/b");
        assert_eq!(clean_path("/../../etc"), "/etc");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/dev/shm/"), "/dev/shm");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path(""), ".");
    }

    #[test]
    fn defaults_are_containerds() {
        let m = default_mounts(false);
        assert_eq!(
            dests(&m),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(
            options(&m[1]),
            ["nosuid", "strictatime", "mode=755", "size=65536k"]
        );
        assert_eq!(
            options(&m[2]),
            [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5"
            ]
        );
        assert_eq!(
            options(&m[3]),
            ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        );
        assert!(options(&m[5]).contains(&"ro".to_string()));
        assert!(options(&m[6]).contains(&"ro".to_string()));
        assert_eq!(m[6].typ().as_deref(), Some("cgroup"));
        let p = default_mounts(true);
        assert!(options(&p[5]).contains(&"rw".to_string()));
        assert!(options(&p[6]).contains(&"rw".to_string()));
    }

    #[test]
    fn cri_mounts_sort_parents_first_and_replace_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let host = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let mounts = vec![
            Mount {
                host_path: host("c"),
                container_path: "/data/a/b".into(),
                readonly: true,
                ..Mount::default()
            },
            Mount {
                host_path: host("shm"),
                container_path: "/dev/shm/".into(),
                ..Mount::default()
            },
            Mount {
                host_path: host("a"),
                container_path: "/data".into(),
                ..Mount::default()
            },
            Mount {
                host_path: host("b"),
                container_path: "/data/a".into(),
                ..Mount::default()
            },
        ];
        let (cri, propagation) = cri_mounts(&mounts).unwrap();
        assert_eq!(propagation, None);
        let merged = merge(default_mounts(false), cri);
        assert_eq!(
            dests(&merged),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/dev/shm",
                "/data/a",
                "/data/a/b"
            ]
        );
        let shm = &merged[7];
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(
            shm.source().as_deref(),
            Some(dir.path().join("shm").canonicalize().unwrap().as_path())
        );
        assert_eq!(options(shm), ["rbind", "rprivate", "rw"]);
        assert_eq!(options(&merged[9]), ["rbind", "rprivate", "ro"]);
    }

    #[test]
    fn a_cri_dev_replaces_everything_under_dev() {
        let dir = tempfile::tempdir().unwrap();
        let (cri, _) = cri_mounts(&[Mount {
            host_path: dir.path().to_path_buf(),
            container_path: "/dev".into(),
            ..Mount::default()
        }])
        .unwrap();
        let merged = merge(default_mounts(false), cri);
        assert_eq!(dests(&merged), ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]);
    }

    #[test]
    fn missing_host_dirs_are_created_and_links_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new/deeper");
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let (cri, _) = cri_mounts(&[
            Mount {
                host_path: missing.clone(),
                container_path: "/a".into(),
                ..Mount::default()
            },
            Mount {
                host_path: dir.path().join("link"),
                container_path: "/b".into(),
                ..Mount::default()
            },
        ])
        .unwrap();
        assert!(missing.is_dir());
        assert_eq!(
            cri[1].1.source().as_deref(),
            Some(dir.path().join("real").canonicalize().unwrap().as_path())
        );
    }

    #[test]
    fn bad_mounts_are_invalid_arguments_naming_the_path() {
        let e = cri_mounts(&[Mount {
            host_path: "relative/dir".into(),
            container_path: "/x".into(),
            ..Mount::default()
        }])
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("relative/dir"), "{e}");
        let e = cri_mounts(&[Mount {
            host_path: "/tmp".into(),
            container_path: "data".into(),
            ..Mount::default()
        }])
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("container_path \"data\""), "{e}");
        let e = cri_mounts(&[Mount {
            host_path: "/tmp".into(),
            container_path: "/a/..".into(),
            ..Mount::default()
        }])
        .unwrap_err();
        assert!(e.message.contains("root"), "{e}");
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let rro = |readonly, propagation| Mount {
            host_path: dir.path().to_path_buf(),
            container_path: "/data".into(),
            readonly,
            propagation,
            recursive_readonly: true,
            tmpfs: None,
        };
        let e = cri_mounts(&[rro(false, Propagation::Private)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            "mount /data: recursive_read_only needs readonly to be set too"
        );
        for p in [Propagation::HostToContainer, Propagation::Bidirectional] {
            let e = cri_mounts_with(&[rro(true, p)], &|| panic!("refused before the table"))
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert_eq!(
                e.message,
                format!("mount /data: recursive_read_only needs private propagation, not {p:?}")
            );
        }
        // Valid: a plain read-only rbind of the (staged) source.
        let (cri, _) = cri_mounts(&[rro(true, Propagation::Private)]).unwrap();
        assert_eq!(options(&cri[0].1), ["rbind", "rprivate", "ro"]);
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt/shared rw shared:7 - tmpfs tmpfs rw
31 22 0:26 / /mnt/slave rw master:7 - tmpfs tmpfs rw
32 22 0:27 / /mnt/private rw - tmpfs tmpfs rw
33 32 0:28 / /mnt/private/inner\\040dir rw shared:9 - tmpfs tmpfs rw
";

    #[test]
    fn a_bad_mount_leaves_no_host_directory_behind() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new/deeper");
        let m = |host: &Path, dest: &str, propagation| Mount {
            host_path: host.to_path_buf(),
            container_path: dest.into(),
            propagation,
            ..Mount::default()
        };
        // A later mount is invalid: nothing is made for the earlier one.
        let e = cri_mounts(&[
            m(&new, "/a", Propagation::Private),
            m(Path::new("relative"), "/b", Propagation::Private),
        ])
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("relative"), "{e}");
        assert!(!dir.path().join("new").exists());
        // A failure once the directory exists (propagation the host mount
        // cannot give) removes what was made, and only that.
        let e = cri_mounts_with(&[m(&new, "/a", Propagation::Bidirectional)], &|| Ok(vec![]))
            .unwrap_err();
        assert!(e.message.contains("on no mount"), "{e}");
        assert!(!dir.path().join("new").exists());
        assert!(dir.path().exists());
        // Success keeps it.
        cri_mounts(&[m(&new, "/a", Propagation::Private)]).unwrap();
        assert!(new.is_dir());
    }

    #[test]
    fn mountinfo_decides_propagation() {
        let infos = parse_mountinfo(MOUNTINFO);
        assert_eq!(infos.len(), 5);
        assert_eq!(infos[4].mount_point, Path::new("/mnt/private/inner dir"));
        assert_eq!(
            mount_of(Path::new("/mnt/private/x"), &infos)
                .unwrap()
                .mount_point,
            Path::new("/mnt/private")
        );
        assert_eq!(
            mount_of(Path::new("/mnt/privatex"), &infos)
                .unwrap()
                .mount_point,
            Path::new("/")
        );

        let ok = |p: &str, prop| check_propagation(Path::new(p), prop, &infos);
        assert!(ok("/mnt/shared/a", Propagation::Bidirectional).is_ok());
        assert!(ok("/mnt/shared/a", Propagation::HostToContainer).is_ok());
        assert!(ok("/mnt/slave/a", Propagation::HostToContainer).is_ok());
        assert!(ok("/mnt/private/inner dir/a", Propagation::Bidirectional).is_ok());
        assert!(ok("/mnt/private/a", Propagation::Private).is_ok());
        let e = ok("/mnt/slave/a", Propagation::Bidirectional).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("/mnt/slave/a") && e.message.contains("not a shared mount"),
            "{e}"
        );
        let e = ok("/mnt/private/a", Propagation::HostToContainer).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("not a shared or slave mount"), "{e}");
    }

    #[test]
    fn propagation_sets_the_rootfs_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().canonicalize().unwrap();
        // A mount table where the source is on a shared mount.
        let table = format!(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:40 / {} rw shared:3 - tmpfs t rw\n",
            src.display()
        );
        let shared = move || Ok(parse_mountinfo(&table));
        let m = |p| Mount {
            host_path: src.clone(),
            container_path: "/x".into(),
            propagation: p,
            ..Mount::default()
        };
        let (cri, prop) = cri_mounts_with(&[m(Propagation::HostToContainer)], &shared).unwrap();
        assert_eq!(prop.as_deref(), Some("rslave"));
        assert_eq!(options(&cri[0].1), ["rbind", "rslave", "rw"]);
        let (cri, prop) = cri_mounts_with(
            &[
                m(Propagation::HostToContainer),
                m(Propagation::Bidirectional),
            ],
            &shared,
        )
        .unwrap();
        assert_eq!(prop.as_deref(), Some("rshared"));
        assert_eq!(options(&cri[1].1), ["rbind", "rshared", "rw"]);
        let (_, prop) = cri_mounts_with(&[m(Propagation::Private)], &|| {
            panic!("private mounts need no mount table")
        })
        .unwrap();
        assert_eq!(prop, None);

        // On this host's real table, whichever way the source is mounted:
        // rshared when it is a shared mount, else an error saying so.
        let infos = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let shared_here = mount_of(&src, &infos)
            .unwrap()
            .optional
            .split(' ')
            .any(|o| o.starts_with("shared:"));
        match cri_mounts(&[m(Propagation::Bidirectional)]) {
            Ok((_, prop)) => {
                assert!(shared_here, "{} is not on a shared mount", src.display());
                assert_eq!(prop.as_deref(), Some("rshared"));
            }
            Err(e) => {
                assert!(!shared_here, "{} is on a shared mount: {e}", src.display());
                assert_eq!(e.kind, ErrorKind::InvalidArgument);
                assert!(
                    e.message.contains("mount /x") && e.message.contains("not a shared mount"),
                    "{e}"
                );
            }
        }
    }
}
