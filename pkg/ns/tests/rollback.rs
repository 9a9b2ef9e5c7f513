//! pin is all or nothing: a failure at any step leaves nothing behind.
//! One test in this binary, because the fail point is process-wide.

mod common;

use std::fs;

use berth_errdefs::ErrorKind;
use berth_ns::{is_pinned, pin, set_fail_point, step, unpin, PinRequest};
use common::*;

#[test]
fn a_failure_at_any_step_undoes_everything() {
    let td = tempfile::tempdir().unwrap();
    let threads = thread_count();
    let fds = fd_count();

    // Every step of a full pin, in a directory pin has to create (two levels).
    for s in step::ALL {
        let dir = td.path().join("pod/ns");
        set_fail_point(Some(s));
        let e = pin(&all(&dir, "rollback")).unwrap_err();
        set_fail_point(None);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pin {}: {s}: injected failure", dir.display())),
            "{s}: {msg}"
        );
        assert_eq!(mounts_under(td.path()), vec![], "{s}: mounts left");
        assert!(!td.path().join("pod").exists(), "{s}: directory left");
        assert_eq!(our_pauses(), Vec::<i32>::new(), "{s}: pause process left");
        assert_eq!(zombie_children(), Vec::<i32>::new(), "{s}: zombie left");
        assert_eq!(thread_count(), threads, "{s}: thread left");
        assert_eq!(fd_count(), fds, "{s}: fd left");
    }

    // A directory that existed before stays, empty.
    let dir = td.path().join("existing");
    fs::create_dir(&dir).unwrap();
    set_fail_point(Some(step::MOUNT_PID));
    let e = pin(&all(&dir, "rollback")).unwrap_err();
    set_fail_point(None);
    assert!(e.to_string().contains(step::MOUNT_PID), "{e}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    assert_eq!(mounts_under(td.path()), vec![]);
    assert_eq!(our_pauses(), Vec::<i32>::new());
    fs::remove_dir(&dir).unwrap();

    // The directory is a regular file.
    let file = td.path().join("file");
    fs::write(&file, "x").unwrap();
    let e = pin(&all(&file, "rollback")).unwrap_err();
    assert!(e.to_string().contains(step::CREATE_DIR), "{e}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");

    // A hostname the kernel would refuse (65 bytes): refused before anything.
    let dir = td.path().join("long/ns");
    let e = pin(&all(&dir, &"h".repeat(65))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("hostname"), "{e}");
    assert!(!td.path().join("long").exists());
    // 64 bytes is fine.
    let p = pin(&all(&dir, &"h".repeat(64))).unwrap();
    let h = run(&[
        "nsenter",
        &format!("--uts={}", p.uts.unwrap().display()),
        "hostname",
    ]);
    assert_eq!(h.trim(), "h".repeat(64));
    unpin(&dir).unwrap();

    // A hostname without a new uts namespace would rename the host.
    let e = pin(&PinRequest {
        dir: td.path().join("x"),
        net: true,
        hostname: Some("x".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(!td.path().join("x").exists());

    // A half-made pin on disk (crash after pause.pid, before the pid pin):
    // unpin finds the pause through pause.pid and cleans up.
    let half = td.path().join("half");
    let pause = unpinned_pause(&half, true);
    assert!(alive(pause));
    assert!(!is_pinned(&half.join("pid")));
    assert!(berth_ns::orphaned_pauses().contains(&(pause as u32)));
    unpin(&half).unwrap();
    assert!(!alive(pause), "half-made pin's pause survived unpin");
    assert!(!half.exists());

    // No trace on disk at all (crash before pause.pid): only the recovery
    // scan finds it. (Killed by pid here: other pause processes on this
    // host are not ours to kill.)
    let gone = td.path().join("gone");
    let pause = unpinned_pause(&gone, false);
    fs::remove_dir_all(&gone).unwrap();
    assert!(berth_ns::orphaned_pauses().contains(&(pause as u32)));
    // SAFETY: our own child.
    unsafe {
        libc::kill(pause, libc::SIGKILL);
        libc::waitpid(pause, std::ptr::null_mut(), 0);
    }
    assert!(!berth_ns::orphaned_pauses().contains(&(pause as u32)));

    // A live pin's pause is never an orphan.
    let live = td.path().join("live");
    let p = pin(&all(&live, "live")).unwrap();
    assert!(!berth_ns::orphaned_pauses().contains(&p.pause_pid.unwrap()));
    unpin(&live).unwrap();

    assert_eq!(mounts_under(td.path()), vec![]);
    assert_eq!(our_pauses(), Vec::<i32>::new());
    assert_eq!(zombie_children(), Vec::<i32>::new());
    assert_eq!(thread_count(), threads);
    assert_eq!(fd_count(), fds);
}

/// Leaves `dir` as a crash between "write pause.pid" and "bind-mount pid
/// namespace" would (`pid` a plain file, `pause.pid`, the pause running),
/// or without `pause.pid` at all. Returns the pause pid.
fn unpinned_pause(dir: &std::path::Path, keep_pause_pid: bool) -> i32 {
    let p = pin(&PinRequest {
        dir: dir.to_path_buf(),
        pid: true,
        ..Default::default()
    })
    .unwrap();
    let flags = nix::mount::MntFlags::MNT_DETACH;
    nix::mount::umount2(&dir.join("pid"), flags).unwrap();
    if !keep_pause_pid {
        fs::remove_file(dir.join("pause.pid")).unwrap();
    }
    p.pause_pid.unwrap() as i32
}
