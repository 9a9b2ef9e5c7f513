//! 50 pin/unpin cycles leave no mounts, threads, fds or zombies behind.

mod common;

use berth_ns::{pin, unpin};
use common::*;

#[test]
fn fifty_cycles_leak_nothing() {
    let td = tempfile::tempdir().unwrap();
    let threads = thread_count();
    let fds = fd_count();
    let mounts = mounts_under(std::path::Path::new("/")).len();
    for i in 0..50 {
        let dir = td.path().join(format!("pod-{i}/ns"));
        let req = if i % 2 == 0 {
            all(&dir, "leak")
        } else {
            shared(&dir, "leak")
        };
        let p = pin(&req).unwrap();
        assert_eq!(
            mounts_under(td.path()).len(),
            if i % 2 == 0 { 4 } else { 3 }
        );
        unpin(&dir).unwrap();
        if let Some(pid) = p.pause_pid {
            assert!(!alive(pid as i32));
        }
        assert_clean(td.path(), &dir, p.pause_pid);
        std::fs::remove_dir(td.path().join(format!("pod-{i}"))).unwrap();
    }
    assert_eq!(mounts_under(td.path()), vec![]);
    assert_eq!(thread_count(), threads, "threads");
    assert_eq!(fd_count(), fds, "fds");
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies");
    assert_eq!(our_pauses(), Vec::<i32>::new(), "pause processes");
    eprintln!(
        "mounts in /proc/self/mountinfo: {mounts} before, {} after",
        mounts_under(std::path::Path::new("/")).len()
    );
}
