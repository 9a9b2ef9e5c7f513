//! Helpers shared by the integration tests (they run as root).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount points at or below `root`, from /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> Vec<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((PathBuf::from(unescape(f[4])), f[sep + 1].to_string()))
        })
        .filter(|(p, _)| p.starts_with(root))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Our children that stay zombies.
pub fn zombie_children() -> Vec<i32> {
    // Tests of one binary run in parallel: a sibling test's child is a
    // zombie between its exit and its reaping. A leak is a zombie that
    // stays; wait a little for the passing ones to be reaped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let zombies = zombie_children_now();
        if zombies.is_empty() || std::time::Instant::now() >= deadline {
            return zombies;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn zombie_children_now() -> Vec<i32> {
    let me = std::process::id().to_string();
    procs()
        .into_iter()
        .filter(|p| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            f[0] == "Z" && f[1] == me
        })
        .collect()
}

pub fn procs() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes whose command line is `berth-pause <dir>` (only set where
/// the caller has CAP_SYS_RESOURCE).
pub fn pauses_of(dir: &Path) -> Vec<i32> {
    let mut want = b"berth-pause\0".to_vec();
    want.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    want.push(0);
    procs()
        .into_iter()
        .filter(|p| fs::read(format!("/proc/{p}/cmdline")).ok().as_deref() == Some(&want[..]))
        .collect()
}

/// Live `berth-pause` processes that are children of this process.
pub fn our_pauses() -> Vec<i32> {
    let me = std::process::id().to_string();
    procs()
        .into_iter()
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "berth-pause\n")
                && fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(me.as_str()))
                })
        })
        .collect()
}

pub fn has_cap_sys_resource() -> bool {
    let eff = status_field(std::process::id(), "CapEff");
    u64::from_str_radix(&eff, 16).unwrap() & (1 << 24) != 0 // CAP_SYS_RESOURCE
}

pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(") ").unwrap().1.starts_with('Z'),
        Err(_) => false,
    }
}

/// A field of `/proc/<pid>/status`; empty when the process is gone (it can
/// exit between a listing of /proc and this read).
pub fn status_field(pid: u32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Runs a command, asserts success, returns stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn ns_of_self(kind: &str) -> (u64, u64) {
    berth_ns::ns_id(Path::new(&format!("/proc/thread-self/ns/{kind}"))).unwrap()
}

pub fn all(dir: &Path, hostname: &str) -> berth_ns::PinRequest {
    berth_ns::PinRequest {
        dir: dir.to_path_buf(),
        net: true,
        ipc: true,
        uts: true,
        pid: true,
        hostname: Some(hostname.to_string()),
        user: None,
    }
}

/// Container ids 0..65536 as host ids 100000.. (uids and gids alike).
pub fn mappings() -> berth_ns::IdMappings {
    let m = berth_ns::IdMap {
        container_id: 0,
        host_id: 100_000,
        size: 65_536,
    };
    berth_ns::IdMappings {
        uids: vec![m],
        gids: vec![m],
    }
}

/// Every namespace, owned by a new user namespace with [`mappings`].
pub fn all_userns(dir: &Path, hostname: &str) -> berth_ns::PinRequest {
    berth_ns::PinRequest {
        user: Some(mappings()),
        ..all(dir, hostname)
    }
}

pub fn shared(dir: &Path, hostname: &str) -> berth_ns::PinRequest {
    berth_ns::PinRequest {
        pid: false,
        ..all(dir, hostname)
    }
}

/// Asserts that nothing of a pin at `dir` (under `root`) is left; `pause`
/// is the pin's pause process, if it had one.
pub fn assert_clean(root: &Path, dir: &Path, pause: Option<u32>) {
    assert_eq!(
        mounts_under(root),
        vec![],
        "mounts left under {}",
        root.display()
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(pauses_of(dir), Vec::<i32>::new(), "pause process left");
    if let Some(p) = pause {
        assert!(!alive(p as i32), "pause process {p} left");
    }
}
