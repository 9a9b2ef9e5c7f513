//! pin / unpin / in_netns against the real kernel (run as root).

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_errdefs::ErrorKind;
use berth_ns::{in_netns, is_pinned, ns_id, pause_alive, pin, unpin, Kind, PinRequest};
use common::*;

#[test]
fn net_ipc_uts_pins_are_live_bind_mounts_with_lo_up_and_hostname() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("pod-a/ns");
    let host_hostname = run(&["hostname"]);
    let before: Vec<_> = ["net", "ipc", "uts"]
        .iter()
        .map(|k| ns_of_self(k))
        .collect();

    let pinned = pin(&shared(&dir, "pod-a")).unwrap();
    assert_eq!(pinned.net, Some(dir.join("net")));
    assert_eq!(pinned.ipc, Some(dir.join("ipc")));
    assert_eq!(pinned.uts, Some(dir.join("uts")));
    assert_eq!((pinned.pid, pinned.pause_pid), (None, None));

    // Bind mounts of nsfs, seen in mountinfo, and is_pinned agrees.
    let mut mounts = mounts_under(td.path());
    mounts.sort();
    let want: Vec<_> = ["ipc", "net", "uts"]
        .iter()
        .map(|k| (dir.join(k), "nsfs".to_string()))
        .collect();
    assert_eq!(mounts, want);
    for k in ["net", "ipc", "uts"] {
        assert!(is_pinned(&dir.join(k)), "{k}");
        let mode = fs::symlink_metadata(dir.join(k)).unwrap();
        assert!(mode.is_file());
    }
    assert!(!is_pinned(&dir));
    assert!(!is_pinned(&dir.join("pid")));

    // Only lo, and it is up.
    let links = run(&[
        "nsenter",
        &format!("--net={}", dir.join("net").display()),
        "ip",
        "-o",
        "link",
    ]);
    let lines: Vec<&str> = links.lines().collect();
    assert_eq!(lines.len(), 1, "{links}");
    assert!(lines[0].contains(": lo: <LOOPBACK,UP,LOWER_UP>"), "{links}");

    // Hostname inside, host's untouched.
    let h = run(&[
        "nsenter",
        &format!("--uts={}", dir.join("uts").display()),
        "hostname",
    ]);
    assert_eq!(h.trim(), "pod-a");
    assert_eq!(run(&["hostname"]), host_hostname);

    // New namespaces, and the calling thread's own are unchanged.
    for (i, k) in ["net", "ipc", "uts"].iter().enumerate() {
        assert_ne!(ns_id(&dir.join(k)).unwrap(), before[i], "{k}");
        assert_eq!(ns_of_self(k), before[i], "{k} of the caller changed");
    }

    // A second pod gets namespaces of its own.
    let dir_b = td.path().join("pod-b/ns");
    pin(&shared(&dir_b, "pod-b")).unwrap();
    for k in ["net", "ipc", "uts"] {
        assert_ne!(
            ns_id(&dir.join(k)).unwrap(),
            ns_id(&dir_b.join(k)).unwrap(),
            "{k}"
        );
    }
    let h = run(&[
        "nsenter",
        &format!("--uts={}", dir_b.join("uts").display()),
        "hostname",
    ]);
    assert_eq!(h.trim(), "pod-b");

    unpin(&dir).unwrap();
    unpin(&dir_b).unwrap();
    assert_clean(td.path(), &dir, None);
    assert_clean(td.path(), &dir_b, None);
}

#[test]
fn pins_are_joinable_from_a_private_mount_namespace_made_later() {
    // An OCI runtime (crun under `unshare --mount --propagation private`, or
    // runc) joins by path from a mount namespace made after the pin.
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    pin(&shared(&dir, "joined")).unwrap();
    let out = run(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "nsenter",
        &format!("--net={}", dir.join("net").display()),
        &format!("--uts={}", dir.join("uts").display()),
        "sh",
        "-c",
        "hostname; ip -o link | wc -l",
    ]);
    assert_eq!(out, "joined\n1\n");
    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, None);
}

#[test]
fn in_netns_runs_inside_the_pinned_network_namespace() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let pinned = pin(&PinRequest {
        dir: dir.clone(),
        net: true,
        ..Default::default()
    })
    .unwrap();
    let net = pinned.net.unwrap();
    let host_net = ns_of_self("net");
    let want = ns_id(&net).unwrap();

    let (names, ns, listener) = in_netns(&net, || {
        let names = interface_names();
        let ns = ns_of_self("net");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (names, ns, l)
    })
    .unwrap();
    assert_eq!(names, vec!["lo".to_string()]);
    assert_eq!(ns, want);
    assert_eq!(ns_of_self("net"), host_net, "caller's netns changed");

    // The listener lives in the pod: reachable inside, not from the host.
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let inside = in_netns(&net, move || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap();
    assert!(inside);
    let _ = listener.accept().unwrap();
    if let Ok(_s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    {
        // Some host process happens to listen on this port: it must not be ours.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            listener.accept().is_err(),
            "host reached the pod's listener"
        );
    }
    assert_ne!(
        interface_names(),
        vec!["lo".to_string()],
        "host sees only lo?"
    );

    // Errors: missing path, not a namespace; panics come back to the caller.
    let e = in_netns(&dir.join("missing"), || ()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let plain = td.path().join("plain");
    fs::write(&plain, "").unwrap();
    let e = in_netns(&plain, || ()).unwrap_err();
    assert!(e.to_string().contains("setns"), "{e}");
    let r = std::panic::catch_unwind(|| in_netns(&net, || panic!("boom")));
    assert!(r.is_err());

    drop(listener);
    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, None);
}

fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        assert!(!list.is_null());
        let mut p = list;
        while (*p).if_index != 0 {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

#[test]
fn pid_namespace_has_a_pause_process_as_pid_1() {
    // Touch 64 MiB first: the pause process must not keep a copy of it.
    let ballast = vec![1u8; 64 << 20];
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let pinned = pin(&PinRequest {
        dir: dir.clone(),
        pid: true,
        ..Default::default()
    })
    .unwrap();
    let pause = pinned.pause_pid.unwrap();
    assert_eq!(pinned.pid, Some(dir.join("pid")));
    assert!(is_pinned(&dir.join("pid")));
    assert!(pause_alive(&dir));
    assert_eq!(
        fs::read_to_string(dir.join("pause.pid")).unwrap(),
        format!("{pause}\n")
    );

    // Name, command line, pid 1 of the pinned namespace.
    assert_eq!(
        fs::read_to_string(format!("/proc/{pause}/comm")).unwrap(),
        "berth-pause\n"
    );
    if has_cap_sys_resource() {
        assert_eq!(pauses_of(&dir), vec![pause as i32], "command line");
    }
    assert_eq!(status_field(pause, "NSpid"), format!("{pause}\t1"));
    assert_eq!(
        ns_id(Path::new(&format!("/proc/{pause}/ns/pid"))).unwrap(),
        ns_id(&dir.join("pid")).unwrap()
    );
    assert_ne!(ns_id(&dir.join("pid")).unwrap(), ns_of_self("pid"));
    // No fds, cwd /, SIGCHLD ignored, nothing blocked, not a copy of our memory.
    assert_eq!(
        fs::read_dir(format!("/proc/{pause}/fd")).unwrap().count(),
        0
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pause}/cwd")).unwrap(),
        Path::new("/")
    );
    assert_eq!(status_field(pause, "SigIgn"), "0000000000010000");
    assert_eq!(status_field(pause, "SigCgt"), "0000000000000000");
    assert_eq!(status_field(pause, "SigBlk"), "0000000000000000");
    let rss_anon: u64 = status_field(pause, "RssAnon")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "pause RssAnon {rss_anon} kB, VmRSS {}",
        status_field(pause, "VmRSS")
    );
    assert!(
        rss_anon < 2048,
        "pause keeps {rss_anon} kB of anonymous memory"
    );
    drop(ballast);

    // A process joining sees itself as pid > 1; orphans get reaped by pid 1.
    let pidns = format!("--pid={}", dir.join("pid").display());
    let out = run(&["nsenter", &pidns, "sh", "-c", "echo $$"]);
    let inner: u32 = out.trim().parse().unwrap();
    assert!(inner > 1, "{out}");
    run(&[
        "nsenter",
        &pidns,
        "sh",
        "-c",
        "sleep 0.5 >/dev/null 2>&1 </dev/null & exit 0",
    ]);
    let members = |ns| {
        procs()
            .into_iter()
            .filter(move |p| ns_id(Path::new(&format!("/proc/{p}/ns/pid"))).ok() == Some(ns))
    };
    let ns = ns_id(&dir.join("pid")).unwrap();
    assert!(
        members(ns).count() >= 2,
        "the orphaned sleep should be running"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        members(ns).collect::<Vec<_>>(),
        vec![pause as i32],
        "orphan not reaped"
    );

    // Neither SIGTERM from the host nor SIGKILL from inside kill it.
    // SAFETY: signal to our own pause process.
    unsafe { libc::kill(pause as i32, libc::SIGTERM) };
    let _ = Command::new("nsenter")
        .args([&pidns, "kill", "-9", "1"])
        .status();
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pause as i32));
    assert!(pause_alive(&dir));

    unpin(&dir).unwrap();
    assert!(!alive(pause as i32));
    assert!(
        !Path::new(&format!("/proc/{pause}")).exists(),
        "pause not reaped"
    );
    assert!(!pause_alive(&dir));
    assert_clean(td.path(), &dir, Some(pause));
    assert!(zombie_children().is_empty());
}

#[test]
fn unpin_is_idempotent() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    unpin(&td.path().join("never-existed")).unwrap();
    let pinned = pin(&all(&dir, "idem")).unwrap();
    let pause = pinned.pause_pid.unwrap() as i32;
    assert_eq!(mounts_under(td.path()).len(), 4);
    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, None);
    assert!(!alive(pause));
    unpin(&dir).unwrap();
    unpin(&dir).unwrap();
    assert_clean(td.path(), &dir, None);
    assert!(td.path().exists());
}

#[test]
fn unpin_never_kills_a_process_that_only_reuses_the_pid() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let pinned = pin(&all(&dir, "reuse")).unwrap();
    let pause = pinned.pause_pid.unwrap() as i32;
    // pause.pid now names an unrelated process.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    fs::write(dir.join("pause.pid"), format!("{}\n", bystander.id())).unwrap();
    unpin(&dir).unwrap();
    assert!(alive(bystander.id() as i32), "unpin killed a bystander");
    // The real pause was found through the pinned namespace.
    assert!(!alive(pause));
    assert_clean(td.path(), &dir, None);
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn pin_refuses_a_directory_with_pins_and_leaves_them_alone() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let first = pin(&all(&dir, "first")).unwrap();
    let e = pin(&shared(&dir, "second")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("create pin file"), "{e}");
    for k in Kind::ALL.into_iter().filter(|k| *k != Kind::User) {
        assert!(is_pinned(&dir.join(k.name())), "{k:?}");
    }
    assert!(pause_alive(&dir));
    let h = run(&[
        "nsenter",
        &format!("--uts={}", dir.join("uts").display()),
        "hostname",
    ]);
    assert_eq!(h.trim(), "first");
    unpin(&dir).unwrap();
    assert!(!alive(first.pause_pid.unwrap() as i32));
    assert_clean(td.path(), &dir, None);
}

#[test]
fn pin_of_nothing_makes_only_the_directory() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("a/b/ns");
    let p = pin(&PinRequest {
        dir: dir.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(p, berth_ns::Pinned::default());
    assert!(dir.is_dir());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    unpin(&dir).unwrap();
    assert!(!dir.exists());
}

/// Helper for the test below: pins in a child process that then exits, as
/// a berthd that restarts would.
#[test]
fn helper_pin_and_exit() {
    if let Ok(dir) = std::env::var("BERTH_NS_HELPER_DIR") {
        let p = pin(&all(Path::new(&dir), "orphan")).unwrap();
        println!("PAUSE={}", p.pause_pid.unwrap());
    }
}

#[test]
fn unpin_works_after_the_pinning_process_is_gone() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("ns");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_pin_and_exit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_NS_HELPER_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pause: i32 = stdout
        .split_once("PAUSE=")
        .unwrap_or_else(|| panic!("{stdout}"))
        .1
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The pins live on without their maker; the pause is no child of ours.
    assert!(alive(pause));
    assert!(pause_alive(&dir));
    assert_ne!(
        status_field(pause as u32, "PPid"),
        std::process::id().to_string()
    );
    for k in Kind::ALL.into_iter().filter(|k| *k != Kind::User) {
        assert!(is_pinned(&dir.join(k.name())), "{k:?}");
    }
    let h = run(&[
        "nsenter",
        &format!("--uts={}", dir.join("uts").display()),
        "hostname",
    ]);
    assert_eq!(h.trim(), "orphan");

    unpin(&dir).unwrap();
    assert!(!alive(pause));
    assert_clean(td.path(), &dir, None);
    unpin(&dir).unwrap();
}

#[test]
fn make_shared_lets_unpin_reach_copies_in_slave_mount_namespaces() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    berth_ns::make_shared(&root).unwrap();
    berth_ns::make_shared(&root).unwrap();
    assert_eq!(
        mounts_under(td.path()).len(),
        1,
        "make_shared is not idempotent"
    );

    let dir = root.join("pod/ns");
    pin(&shared(&dir, "copied")).unwrap();
    // A mount namespace made now, with slave propagation (like systemd's
    // sandboxing), holds copies of the pins.
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sleep", "30"])
        .spawn()
        .unwrap();
    let child_mounts = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .filter(|l| l.contains(dir.to_str().unwrap()))
            .count()
    };
    let mut n = 0;
    for _ in 0..100 {
        n = child_mounts(child.id());
        if n == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(n, 3, "copies in the new mount namespace");
    unpin(&dir).unwrap();
    assert_eq!(child_mounts(child.id()), 0, "unmount did not propagate");
    child.kill().unwrap();
    child.wait().unwrap();

    nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(mounts_under(td.path()), vec![]);
}

#[test]
fn concurrent_pins_from_many_threads_get_distinct_namespaces() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().to_path_buf();
    for round in 0..5 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let dir = root.join(format!("r{round}-p{i}"));
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    assert!(thread_count() > 8, "not multithreaded?");
                    // Nobody pins (and ends) before every thread counted.
                    barrier.wait();
                    let p = pin(&all(&dir, &format!("pod-{i}"))).unwrap();
                    let ids = (
                        ns_id(&dir.join("net")).unwrap(),
                        ns_id(&dir.join("pid")).unwrap(),
                    );
                    (dir, p.pause_pid.unwrap(), ids)
                })
            })
            .collect();
        let pins: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut nets: Vec<_> = pins.iter().map(|p| p.2 .0).collect();
        let mut pids: Vec<_> = pins.iter().map(|p| p.2 .1).collect();
        nets.sort();
        nets.dedup();
        pids.sort();
        pids.dedup();
        assert_eq!((nets.len(), pids.len()), (8, 8));
        for (dir, pause, _) in &pins {
            assert!(pause_alive(dir));
            assert_eq!(
                fs::read_dir(format!("/proc/{pause}/fd")).unwrap().count(),
                0
            );
        }
        let handles: Vec<_> = pins
            .into_iter()
            .map(|(dir, pause, _)| std::thread::spawn(move || (unpin(&dir), dir, pause)))
            .collect();
        for h in handles {
            let (r, dir, pause) = h.join().unwrap();
            r.unwrap();
            assert!(!dir.exists());
            assert!(!alive(pause as i32));
        }
    }
    assert_eq!(mounts_under(&root), vec![]);
}
