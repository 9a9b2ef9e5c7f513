//! Users and groups of an image: `/etc/passwd` and `/etc/group` read from
//! the container's rootfs, and the user a container runs as, resolved the
//! way containerd's CRI plugin does it.
//!
//! The rootfs is untrusted image content. Files are opened by walking the
//! path one component at a time from a descriptor of the rootfs, never
//! letting the kernel follow a symlink or `..`: a symlink is read and its
//! target resolved again from the rootfs (an absolute target starts at the
//! rootfs, as under chroot), and `..` never climbs above the rootfs. So no
//! link in the image can make berth read a host file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_errdefs::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::spec::{SupplementalGroupsPolicy, UserRequest};

/// Symlinks followed in one lookup before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Larger user databases are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 10 << 20;
/// runc (and so containerd) refuses ids above this.
const MAX_ID: u64 = i32::MAX as u64;

fn errno_error(what: &str, rootfs: &Path, e: Errno) -> Error {
    let context = format!("{what} in rootfs {}", rootfs.display());
    match e {
        // Properties of the image's content, not failures of the host.
        Errno::ELOOP | Errno::ENOTDIR | Errno::ENAMETOOLONG => {
            Error::invalid(format!("{context}: {}", e.desc()))
        }
        _ => Error::from(std::io::Error::from(e)).context(context),
    }
}

fn open_at(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> std::result::Result<OwnedFd, Errno> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the regular file at `path` (absolute, as seen inside the
/// container) under `rootfs`; `None` when it does not exist.
pub fn read_in_root(rootfs: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    let what = format!("open {path}");
    let root_fd = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_error("open the rootfs", rootfs, e))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let root = unsafe { OwnedFd::from_raw_fd(root_fd) };

    // Directories from the rootfs down to the current one; `..` pops.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut pending: Vec<Vec<u8>> = components(path.as_bytes());
    pending.reverse(); // a stack: the next component is last
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == b"." {
            continue;
        }
        if name == b".." {
            stack.pop();
            continue;
        }
        let dir = stack.last().unwrap_or(&root);
        let fd = match open_at(
            dir,
            OsStr::from_bytes(&name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno_error(&what, rootfs, e)),
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| errno_error(&what, rootfs, e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(errno_error(&what, rootfs, Errno::ELOOP));
            }
            // An empty path reads the link an O_PATH descriptor refers to.
            let target =
                readlinkat(Some(fd.as_raw_fd()), "").map_err(|e| errno_error(&what, rootfs, e))?;
            let target = target.as_bytes();
            if target.starts_with(b"/") {
                stack.clear();
            }
            pending.extend(components(target).into_iter().rev());
            continue;
        }
        if pending.is_empty() {
            if kind != SFlag::S_IFREG {
                return Err(Error::invalid(format!(
                    "{path} in rootfs {} is not a regular file",
                    rootfs.display()
                )));
            }
            // Reopen for reading; O_NOFOLLOW fails should the entry have
            // been swapped for a link since, O_NONBLOCK keeps a swapped-in
            // FIFO from blocking, and the type is checked again.
            let file = open_at(
                dir,
                OsStr::from_bytes(&name),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            )
            .map_err(|e| errno_error(&what, rootfs, e))?;
            let file = File::from(file);
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(Error::invalid(format!(
                    "{path} in rootfs {} is not a regular file",
                    rootfs.display()
                )));
            }
            let mut data = Vec::new();
            file.take(MAX_FILE_BYTES + 1).read_to_end(&mut data)?;
            if data.len() as u64 > MAX_FILE_BYTES {
                return Err(Error::invalid(format!(
                    "{path} in rootfs {} is larger than {MAX_FILE_BYTES} bytes",
                    rootfs.display()
                )));
            }
            return Ok(Some(data));
        }
        if kind != SFlag::S_IFDIR {
            return Ok(None); // a path through a non-directory: no such file
        }
        stack.push(fd);
    }
    Err(Error::invalid(format!(
        "{path} in rootfs {} is a directory",
        rootfs.display()
    )))
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    data_lines(text)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .collect()
}

/// `name:password:gid:member,member`; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    data_lines(text)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The identity a container's process gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates; includes `gid`.
    pub additional_gids: Vec<u32>,
}

/// The image's user databases, read once.
struct Databases {
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl Databases {
    fn load(rootfs: &Path) -> Result<Databases> {
        let read = |p: &str| -> Result<Option<String>> {
            Ok(read_in_root(rootfs, p)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        Ok(Databases {
            passwd: read("/etc/passwd")?.map(|t| parse_passwd(&t)),
            group: read("/etc/group")?.map(|t| parse_group(&t)),
        })
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.name == name)
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.as_ref()?.iter().find(|g| g.name == name)
    }
}

/// A number in a user string; `Err` when numeric but out of range.
fn numeric_id(s: &str, what: &str, userstr: &str) -> Result<Option<u32>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(v) if v <= MAX_ID => Ok(Some(v as u32)),
        _ => Err(Error::invalid(format!(
            "invalid user {userstr:?}: {what} out of range (at most {MAX_ID})"
        ))),
    }
}

fn user_not_found(name: &str) -> Error {
    Error::invalid(format!(
        "user {name:?} not found in /etc/passwd of the image"
    ))
}

fn group_not_found(name: &str) -> Error {
    Error::invalid(format!(
        "group {name:?} not found in /etc/group of the image"
    ))
}

/// uid and gid for an OCI image `user` string (`user`, `uid`,
/// `user:group`, `uid:gid`, `uid:group`, `user:gid`), as containerd's
/// `oci.WithUser`: a name must exist in the image; a uid missing from
/// `/etc/passwd` runs with gid 0; `user:gid` keeps the given gid.
fn resolve_userstr(db: &Databases, userstr: &str) -> Result<(u32, u32)> {
    let parts: Vec<&str> = userstr.split(':').collect();
    match parts.as_slice() {
        [user] => match numeric_id(user, "uid", userstr)? {
            Some(uid) => Ok((uid, db.user_by_uid(uid).map_or(0, |u| u.gid))),
            None => db
                .user_by_name(user)
                .map(|u| (u.uid, u.gid))
                .ok_or_else(|| user_not_found(user)),
        },
        [user, group] => {
            let uid = match numeric_id(user, "uid", userstr)? {
                Some(uid) => uid,
                None => {
                    db.user_by_name(user)
                        .ok_or_else(|| user_not_found(user))?
                        .uid
                }
            };
            let gid = match numeric_id(group, "gid", userstr)? {
                Some(gid) => gid,
                None => {
                    db.group_by_name(group)
                        .ok_or_else(|| group_not_found(group))?
                        .gid
                }
            };
            Ok((uid, gid))
        }
        _ => Err(Error::invalid(format!("invalid user {userstr:?}"))),
    }
}

/// Groups of `/etc/group` that list `user` (a name or a uid) as a member,
/// except a group named like the user (containerd's `WithAdditionalGIDs`).
fn member_gids(db: &Databases, user: &str) -> Vec<u32> {
    let name = match user.parse::<u32>() {
        Ok(uid) => match db.user_by_uid(uid) {
            Some(u) => u.name.clone(),
            None => return Vec::new(),
        },
        Err(_) => user.to_string(),
    };
    db.group
        .iter()
        .flatten()
        .filter(|g| g.name != name && g.members.contains(&name))
        .map(|g| g.gid)
        .collect()
}

/// Resolves who the container runs as, following containerd's CRI plugin:
///
/// - the CRI `run_as_username`, else `run_as_user`, else the image's `user`,
///   else root;
/// - `run_as_group` replaces the group, and needs a CRI user
///   (`run_as_group` alone is an `InvalidArgument`, as cri-tools expects);
/// - additional gids = the primary gid, the groups of `/etc/group` that list
///   the user, and the CRI supplemental groups, sorted and deduplicated
///   (`SupplementalGroupsPolicy: Merge`, the default); with `Strict` the
///   image's `/etc/group` adds nothing (the primary gid still comes from
///   `/etc/passwd`).
pub fn resolve(rootfs: &Path, req: &UserRequest, image_user: &str) -> Result<ResolvedUser> {
    if let Some(uid) = req.run_as_user {
        if u64::from(uid) > MAX_ID {
            return Err(Error::invalid(format!(
                "run_as_user {uid} out of range (at most {MAX_ID})"
            )));
        }
    }
    if let Some(gid) = req.run_as_group {
        if u64::from(gid) > MAX_ID {
            return Err(Error::invalid(format!(
                "run_as_group {gid} out of range (at most {MAX_ID})"
            )));
        }
    }
    let cri_user = match (&req.run_as_username, req.run_as_user) {
        (Some(name), _) if !name.is_empty() => Some(name.clone()),
        (_, Some(uid)) => Some(uid.to_string()),
        _ => None,
    };
    let userstr = match (&cri_user, req.run_as_group) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.clone(),
        (None, Some(g)) => {
            return Err(Error::invalid(format!(
                "run_as_group {g} is specified without run_as_user or run_as_username"
            )))
        }
        (None, None) => image_user.to_string(),
    };
    // The user whose group memberships count: never the group part.
    let member = match &cri_user {
        Some(u) => u.clone(),
        None if !image_user.is_empty() => image_user.split(':').next().unwrap_or("").to_string(),
        None => "0".to_string(),
    };

    let db = Databases::load(rootfs)?;
    let (uid, gid) = if userstr.is_empty() {
        (0, 0)
    } else {
        resolve_userstr(&db, &userstr)?
    };
    let mut gids = vec![gid];
    if req.supplemental_groups_policy == SupplementalGroupsPolicy::Merge {
        gids.extend(member_gids(&db, &member));
    }
    gids.extend(req.supplemental_groups.iter().copied());
    gids.sort_unstable();
    gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1::/:/bin/false\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken:x:notanumber:1\n\
        \n\
        nogroup:x:1001:3000::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:root\n\
        app:x:1000:app\n\
        extra:x:2000:app,other\n\
        wheel:x:10:root\n\
        more:x:4000: other , app \n";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn req(user: Option<u32>, name: Option<&str>, group: Option<u32>, sup: &[u32]) -> UserRequest {
        UserRequest {
            run_as_user: user,
            run_as_username: name.map(String::from),
            run_as_group: group,
            supplemental_groups: sup.to_vec(),
            ..UserRequest::default()
        }
    }

    fn ids(r: &ResolvedUser) -> (u32, u32, Vec<u32>) {
        (r.uid, r.gid, r.additional_gids.clone())
    }

    #[test]
    fn databases_parse_and_skip_malformed_lines() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 4);
        assert_eq!(
            users[2],
            PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1000
            }
        );
        let groups = parse_group(GROUP);
        assert_eq!(groups[2].members, vec!["app", "other"]);
        assert_eq!(groups[4].members, vec!["other", "app"]);
    }

    #[test]
    fn cri_and_image_users_resolve_like_containerd() {
        let root = rootfs();
        let r = |q: UserRequest, image: &str| ids(&resolve(root.path(), &q, image).unwrap());
        // Nothing anywhere: root, with root's groups.
        assert_eq!(r(req(None, None, None, &[]), ""), (0, 0, vec![0, 10]));
        // Username: uid and gid from passwd, memberships from group.
        assert_eq!(
            r(req(None, Some("app"), None, &[]), ""),
            (1000, 1000, vec![1000, 2000, 4000])
        );
        // A uid in passwd takes its gid and its name's memberships.
        assert_eq!(
            r(req(Some(1000), None, None, &[]), "root"),
            (1000, 1000, vec![1000, 2000, 4000])
        );
        // A uid not in passwd is fine: gid 0, no memberships.
        assert_eq!(r(req(Some(4242), None, None, &[]), ""), (4242, 0, vec![0]));
        // The username wins over the uid (containerd's GenerateUserString).
        assert_eq!(r(req(Some(5), Some("app"), None, &[]), "").0, 1000);
        // run_as_group replaces the gid; memberships still count.
        assert_eq!(
            r(req(None, Some("app"), Some(3000), &[]), ""),
            (1000, 3000, vec![2000, 3000, 4000])
        );
        // Supplemental groups merge in, sorted and deduplicated.
        assert_eq!(
            r(req(Some(1000), None, None, &[5678, 1234, 2000]), ""),
            (1000, 1000, vec![1000, 1234, 2000, 4000, 5678])
        );
        // Image user strings.
        assert_eq!(
            r(req(None, None, None, &[]), "app"),
            (1000, 1000, vec![1000, 2000, 4000])
        );
        assert_eq!(
            r(req(None, None, None, &[]), "1000"),
            (1000, 1000, vec![1000, 2000, 4000])
        );
        assert_eq!(
            r(req(None, None, None, &[]), "app:extra"),
            (1000, 2000, vec![2000, 4000])
        );
        assert_eq!(
            r(req(None, None, None, &[]), "app:77"),
            (1000, 77, vec![77, 2000, 4000])
        );
        assert_eq!(
            r(req(None, None, None, &[]), "1000:extra"),
            (1000, 2000, vec![2000, 4000])
        );
        assert_eq!(r(req(None, None, None, &[]), "12:34"), (12, 34, vec![34]));
        assert_eq!(
            r(req(None, None, None, &[]), "nogroup"),
            (1001, 3000, vec![3000])
        );
        // A CRI user replaces the image's entirely.
        assert_eq!(
            r(req(Some(0), None, None, &[]), "app:extra"),
            (0, 0, vec![0, 10])
        );
    }

    #[test]
    fn strict_policy_ignores_the_images_group_memberships() {
        let root = rootfs();
        let strict = |q: UserRequest, image: &str| {
            let q = UserRequest {
                supplemental_groups_policy: SupplementalGroupsPolicy::Strict,
                ..q
            };
            ids(&resolve(root.path(), &q, image).unwrap())
        };
        // app is listed in extra (2000) and more (4000): Merge adds both,
        // Strict only the primary gid and the requested groups.
        assert_eq!(
            strict(req(Some(1000), None, None, &[1234]), ""),
            (1000, 1000, vec![1000, 1234])
        );
        assert_eq!(
            strict(req(None, None, None, &[]), "app"),
            (1000, 1000, vec![1000])
        );
        assert_eq!(
            strict(req(None, Some("app"), Some(3000), &[2000]), ""),
            (1000, 3000, vec![2000, 3000])
        );
        assert_eq!(strict(req(None, None, None, &[]), ""), (0, 0, vec![0]));
    }

    #[test]
    fn bad_users_are_invalid_arguments_naming_them() {
        let root = rootfs();
        let e = |q: UserRequest, image: &str| resolve(root.path(), &q, image).unwrap_err();

        let err = e(req(None, Some("ghost"), None, &[]), "");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            err.message,
            "user \"ghost\" not found in /etc/passwd of the image"
        );
        assert!(e(req(None, None, None, &[]), "ghost")
            .message
            .contains("\"ghost\""));
        let err = e(req(None, None, None, &[]), "app:nosuch");
        assert_eq!(
            err.message,
            "group \"nosuch\" not found in /etc/group of the image"
        );
        let err = e(req(None, None, Some(5), &[]), "app");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("run_as_group 5"), "{err}");
        assert!(e(req(Some(u32::MAX), None, None, &[]), "")
            .message
            .contains("run_as_user"));
        assert!(e(req(None, None, None, &[]), "99999999999")
            .message
            .contains("out of range"));
        assert!(e(req(None, None, None, &[]), "a:b:c")
            .message
            .contains("invalid user"));
    }

    #[test]
    fn missing_databases_only_matter_for_names() {
        let root = tempfile::tempdir().unwrap();
        let r = resolve(root.path(), &req(Some(7), None, None, &[9]), "").unwrap();
        assert_eq!(ids(&r), (7, 0, vec![0, 9]));
        let err = resolve(root.path(), &req(None, Some("app"), None, &[]), "").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn symlinks_never_leave_the_rootfs() {
        // A "host" with its own passwd, and an image whose /etc/passwd
        // points at it by absolute and by relative links.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();

        // Absolute target: resolved inside the rootfs, where it is missing.
        symlink(host.path().join("passwd"), r.join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(r, "/etc/passwd").unwrap(), None);
        let err = resolve(r, &req(None, Some("evil"), None, &[]), "").unwrap_err();
        assert_eq!(
            err.message,
            "user \"evil\" not found in /etc/passwd of the image"
        );

        // Relative target climbing out with `..`: stops at the rootfs.
        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        let ups = "../".repeat(64);
        let rel = format!("{ups}{}", host.path().join("passwd").display());
        symlink(&rel, r.join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(r, "/etc/passwd").unwrap(), None);

        // A directory link to a host directory holding a passwd: the
        // target is looked up in the rootfs, where it does not exist.
        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        std::fs::remove_dir(r.join("etc")).unwrap();
        symlink(host.path(), r.join("etc")).unwrap();
        assert_eq!(read_in_root(r, "/etc/passwd").unwrap(), None);
        // `/etc -> /etc` is a loop under chroot rules, not the host's /etc.
        std::fs::remove_file(r.join("etc")).unwrap();
        symlink("/etc", r.join("etc")).unwrap();
        let err = read_in_root(r, "/etc/passwd").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");

        // Links that stay inside work, absolute ones relative to the rootfs.
        std::fs::remove_file(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("data/etc")).unwrap();
        std::fs::write(r.join("data/etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        symlink("/data/etc", r.join("etc")).unwrap();
        let data = read_in_root(r, "/etc/passwd").unwrap().unwrap();
        assert!(String::from_utf8(data).unwrap().starts_with("app:"));
        std::fs::create_dir_all(r.join("lib")).unwrap();
        symlink("../data/etc/passwd", r.join("lib/pw")).unwrap();
        assert!(read_in_root(r, "/lib/pw").unwrap().is_some());
        assert!(read_in_root(r, "/lib/../../../lib/pw").unwrap().is_some());
    }

    #[test]
    fn loops_and_odd_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        symlink("/etc/group", r.join("etc/passwd")).unwrap();
        symlink("/etc/passwd", r.join("etc/group")).unwrap();
        let err = read_in_root(r, "/etc/passwd").unwrap_err();
        assert!(err.message.contains("/etc/passwd"), "{err}");

        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&r.join("etc/passwd"), Mode::from_bits_truncate(0o644)).unwrap();
        let err = read_in_root(r, "/etc/passwd").unwrap_err();
        assert!(err.message.contains("not a regular file"), "{err}");

        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        std::fs::create_dir(r.join("etc/passwd")).unwrap();
        let err = read_in_root(r, "/etc/passwd").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains("not a regular file"), "{err}");
        std::fs::remove_dir(r.join("etc/passwd")).unwrap();

        // Past the cap, a database is refused rather than read in whole.
        let mut big = b"root:x:0:0::/:/bin/sh\n".to_vec();
        big.resize(MAX_FILE_BYTES as usize, b'#');
        std::fs::write(r.join("etc/passwd"), &big).unwrap();
        assert!(read_in_root(r, "/etc/passwd").unwrap().is_some());
        big.push(b'#');
        std::fs::write(r.join("etc/passwd"), &big).unwrap();
        let err = read_in_root(r, "/etc/passwd").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains("larger than"), "{err}");
        std::fs::remove_file(r.join("etc/passwd")).unwrap();

        // A regular file used as a directory: no such file.
        std::fs::write(r.join("file"), "x").unwrap();
        assert_eq!(read_in_root(r, "/file/passwd").unwrap(), None);
    }
}
