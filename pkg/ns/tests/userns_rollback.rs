//! A pin with a user namespace is all or nothing too: a failure at any
//! step leaves no mount, directory, pause or holder process, zombie,
//! thread or fd. One test in this binary: the fail point is process-wide.

mod common;

use berth_ns::{pin, set_fail_point, step, PinRequest};
use common::*;

/// Children of this process (the holder or pause of a failed pin).
fn children() -> Vec<i32> {
    let me = std::process::id();
    procs()
        .into_iter()
        .filter(|&p| status_field(p as u32, "PPid") == me.to_string())
        .collect()
}

#[test]
fn a_failure_at_any_step_of_a_userns_pin_undoes_everything() {
    // SAFETY: plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: run the suite as root"
    );
    let td = tempfile::tempdir().unwrap();
    let threads = thread_count();
    let fds = fd_count();
    let with_pid = |dir: &std::path::Path| all_userns(dir, "rollback");
    let holder = |dir: &std::path::Path| PinRequest {
        pid: false,
        ..all_userns(dir, "rollback")
    };
    let holder_steps = [
        step::CREATE_DIR,
        step::CREATE_FILE,
        step::CLONE_HOLDER,
        step::WRITE_ID_MAPS,
        step::MOUNT_NET,
        step::MOUNT_IPC,
        step::MOUNT_UTS,
        step::MOUNT_USER,
        step::HOSTNAME,
        step::LOOPBACK,
    ];
    type Req = dyn Fn(&std::path::Path) -> PinRequest;
    let runs: [(&[&str], &Req); 2] = [(&step::USERNS_ALL, &with_pid), (&holder_steps, &holder)];
    for (steps, req) in runs {
        for &s in steps {
            let dir = td.path().join("pod/ns");
            set_fail_point(Some(s));
            let e = pin(&req(&dir)).unwrap_err();
            set_fail_point(None);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("pin {}: {s}: injected failure", dir.display())),
                "{s}: {msg}"
            );
            assert_eq!(mounts_under(td.path()), vec![], "{s}: mounts left");
            assert!(!td.path().join("pod").exists(), "{s}: directory left");
            assert_eq!(children(), Vec::<i32>::new(), "{s}: child process left");
            assert_eq!(thread_count(), threads, "{s}: thread left");
            assert_eq!(fd_count(), fds, "{s}: fd left");
        }
    }
}
