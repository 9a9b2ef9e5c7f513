//! Pods with a user namespace: one clone makes every namespace, owned by
//! the new user namespace, so a process that joins the user namespace
//! first (as runc and crun do) can join the rest and is root over them.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_errdefs::ErrorKind;
use berth_ns::{is_pinned, ns_id, pin, unpin, IdMap, IdMappings, PinRequest};
use common::*;

fn require_root() {
    // SAFETY: plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: run the suite as root"
    );
}

/// `NS_GET_USERNS`: the user namespace that owns the namespace at `path`.
fn owner(path: &Path) -> (u64, u64) {
    let f = fs::File::open(path).unwrap();
    // SAFETY: the ioctl takes no argument and returns a new fd.
    let fd = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701 as _) };
    assert!(fd >= 0, "NS_GET_USERNS {}", path.display());
    let m = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
    // SAFETY: closing the fd the ioctl returned.
    unsafe { libc::close(fd) };
    (m.dev(), m.ino())
}

/// Runs `script` in a child that joins the namespaces pinned at `pins` in
/// that order, then becomes uid and gid 0 of the user namespace it joined
/// (as an OCI runtime does). Returns (success, stdout + stderr).
fn joined(pins: &[(PathBuf, libc::c_int)], script: &str) -> (bool, String) {
    let files: Vec<(fs::File, libc::c_int)> = pins
        .iter()
        .map(|(p, flag)| (fs::File::open(p).unwrap(), *flag))
        .collect();
    let fds: Vec<(i32, libc::c_int)> = files.iter().map(|(f, fl)| (f.as_raw_fd(), *fl)).collect();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(fd, flag) in &fds {
                if libc::setns(fd, flag) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("spawn: {e}")),
    }
}

/// The pins under `dir` in the order runc joins them (user first), the
/// first `n` of them.
fn runtime_order(dir: &Path, n: usize) -> Vec<(PathBuf, libc::c_int)> {
    [
        ("user", libc::CLONE_NEWUSER),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
    ]
    .into_iter()
    .take(n)
    .map(|(k, flag)| (dir.join(k), flag))
    .collect()
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Processes whose user namespace is the one pinned at `pin`.
fn members(pin: &Path) -> Vec<i32> {
    let ns = ns_id(pin).unwrap();
    procs()
        .into_iter()
        .filter(|p| ns_id(Path::new(&format!("/proc/{p}/ns/user"))).ok() == Some(ns))
        .collect()
}

#[test]
fn a_pod_user_namespace_owns_its_other_namespaces_and_maps_its_root() {
    require_root();
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let p = pin(&all_userns(&dir, "userns-pod")).unwrap();
    assert_eq!(p.user, Some(dir.join("user")));
    assert!(is_pinned(&dir.join("user")));
    let pause = p.pause_pid.expect("a pause process for the pid namespace");

    // The maps, as written; the pause process lives in the new namespaces.
    for map in ["uid_map", "gid_map"] {
        let text = fs::read_to_string(format!("/proc/{pause}/{map}")).unwrap();
        assert_eq!(words(&text), "0 100000 65536", "{map}");
    }
    assert_eq!(
        ns_id(Path::new(&format!("/proc/{pause}/ns/user"))).unwrap(),
        ns_id(&dir.join("user")).unwrap()
    );
    assert_ne!(ns_id(&dir.join("user")).unwrap(), ns_of_self("user"));
    assert_eq!(status_field(pause, "NSpid"), format!("{pause}\t1"));

    // Every other namespace is owned by the pod's user namespace.
    let user = ns_id(&dir.join("user")).unwrap();
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_eq!(owner(&dir.join(kind)), user, "owner of {kind}");
    }

    // Joined as a runtime does: user namespace first, then the rest.
    let (ok, out) = joined(
        &runtime_order(&dir, 5),
        "cat /proc/self/uid_map; id -u; id -g; hostname; ip -o link show lo",
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(words(lines[0]), "0 100000 65536", "{out}");
    assert_eq!(lines[1], "0", "uid inside: {out}");
    assert_eq!(lines[2], "0", "gid inside: {out}");
    assert_eq!(lines[3], "userns-pod", "{out}");
    assert!(lines[4].contains(",UP"), "lo is not up: {out}");

    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, Some(pause));
    assert!(zombie_children().is_empty());
}

#[test]
fn namespaces_made_outside_the_user_namespace_cannot_be_joined_from_it() {
    require_root();
    // The control for the test above: a pod's net namespace made without
    // the user namespace is out of reach once a process is in it, which is
    // why every namespace must be made inside it.
    let td = tempfile::tempdir().unwrap();
    let with = td.path().join("with");
    let without = td.path().join("without");
    pin(&PinRequest {
        dir: with.clone(),
        user: Some(mappings()),
        ..Default::default()
    })
    .unwrap();
    pin(&PinRequest {
        dir: without.clone(),
        net: true,
        ..Default::default()
    })
    .unwrap();
    let (ok, out) = joined(
        &[
            (with.join("user"), libc::CLONE_NEWUSER),
            (without.join("net"), libc::CLONE_NEWNET),
        ],
        "true",
    );
    assert!(
        !ok,
        "joined a host-owned netns from the pod's userns: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    unpin(&with).unwrap();
    unpin(&without).unwrap();
    assert_eq!(mounts_under(td.path()), vec![]);
}

#[test]
fn without_a_pid_namespace_no_process_is_left_holding_them() {
    require_root();
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let mut maps = mappings();
    maps.gids[0].host_id = 300_000;
    let p = pin(&PinRequest {
        pid: false,
        user: Some(maps),
        ..all_userns(&dir, "holderless")
    })
    .unwrap();
    assert_eq!(p.pause_pid, None);
    assert_eq!(p.pid, None);
    assert!(!dir.join("pause.pid").exists());
    // The holder child is gone (killed and reaped); the pins keep them.
    assert_eq!(members(&dir.join("user")), Vec::<i32>::new());
    assert!(zombie_children().is_empty());
    let (ok, out) = joined(
        &runtime_order(&dir, 4),
        "cat /proc/self/uid_map /proc/self/gid_map; hostname",
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(words(lines[0]), "0 100000 65536", "{out}");
    assert_eq!(words(lines[1]), "0 300000 65536", "{out}");
    assert_eq!(lines[2], "holderless", "{out}");
    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, None);
}

#[test]
fn bad_id_maps_are_refused_before_anything_is_made() {
    require_root();
    let td = tempfile::tempdir().unwrap();
    let m = |c: u32, h: u32, s: u32| IdMap {
        container_id: c,
        host_id: h,
        size: s,
    };
    let cases: Vec<(Vec<IdMap>, &str)> = vec![
        (vec![], "uid map has 0 ranges"),
        (vec![m(0, 100_000, 0)], "size must be at least 1"),
        (vec![m(0, 4_294_967_295, 2)], "runs past the last id"),
        (
            vec![m(0, 100_000, 10), m(5, 200_000, 10)],
            "range 1 (container 5 host 200000 size 10): overlaps range 0",
        ),
        (
            vec![m(0, 100_000, 10), m(10, 100_009, 10)],
            "overlaps range 0",
        ),
        (
            (0..341).map(|i| m(i, 100_000 + i, 1)).collect(),
            "341 ranges",
        ),
    ];
    for (uids, want) in cases {
        let dir = td.path().join("pod/ns");
        let e = pin(&PinRequest {
            user: Some(IdMappings {
                uids,
                gids: mappings().gids,
            }),
            ..all(&dir, "bad")
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(want), "want {want:?}: {e}");
        assert!(!td.path().join("pod").exists(), "{want}: directory made");
    }
}
