//! Against this host's real cgroupfs (v1/hybrid here, v2 on modern nodes):
//! create a pod-level cgroup, limit it, put a process in, read stats, remove
//! it, and leave nothing behind.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_cgroups::{detect, open, Mode, Resources};

const ROOT: &str = "/sys/fs/cgroup";

fn leftovers(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(ROOT).unwrap().flatten() {
        let p = entry.path().join(name);
        if p.exists() {
            found.push(p.display().to_string());
        }
    }
    if Path::new(ROOT).join(name).exists() {
        found.push(format!("{ROOT}/{name}"));
    }
    found
}

#[test]
fn pod_cgroup_lifecycle_on_this_host() {
    // CI runs as root; returning early would pass without checking anything.
    assert!(is_root(), "needs root: run the suite as root");
    let mode = detect(Path::new(ROOT)).unwrap();
    let cg = open(Path::new(ROOT)).unwrap();
    assert_eq!(cg.mode(), mode);
    let top = format!("berth-test-{}", std::process::id());
    let path = format!("/{top}/pod1");

    cg.create(&path).unwrap();
    cg.create(&path).unwrap(); // idempotent
    cg.apply(
        &path,
        &Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    let memory_limit = match mode {
        Mode::Unified => std::fs::read_to_string(format!("{ROOT}/{top}/pod1/memory.max")),
        _ => std::fs::read_to_string(format!("{ROOT}/memory/{top}/pod1/memory.limit_in_bytes")),
    }
    .unwrap();
    assert_eq!(memory_limit.trim(), (64u64 << 20).to_string());

    // One process (no children, so nothing is left for a slow init to reap)
    // that allocates 8 MB only after it joined the cgroup: v1 does not move
    // charges with a process, so earlier memory would not count.
    let mut guard = Cleanup {
        child: Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys; sys.stdin.readline(); b = bytearray(8_000_000); sys.stdin.readline()",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
        cgroups: vec![path.clone(), format!("/{top}")],
        driver: open(Path::new(ROOT)).unwrap(),
    };
    let pid = guard.child.id();
    cg.add_process(&path, pid).unwrap();
    assert_eq!(cg.processes(&path).unwrap(), vec![pid]);
    writeln!(guard.child.stdin.as_mut().unwrap(), "go").unwrap();
    let start = Instant::now();
    let stats = loop {
        let s = cg.stats(&path).unwrap();
        if s.memory_usage_bytes >= 8_000_000 || start.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(stats.memory_usage_bytes >= 8_000_000, "{stats:?}");
    assert!(stats.memory_working_set_bytes <= stats.memory_usage_bytes);
    assert!(stats.pids >= 1, "{stats:?}");

    let busy = cg.remove(&path).unwrap_err();
    assert_eq!(
        busy.kind,
        berth_errdefs::ErrorKind::FailedPrecondition,
        "{busy}"
    );
    drop(guard);
    cg.remove(&path).unwrap(); // a missing cgroup is fine
    assert!(leftovers(&top).is_empty(), "left: {:?}", leftovers(&top));
}

/// Kills the test process and removes the cgroups even when an assertion
/// fails, so a failing test leaks nothing on the host.
struct Cleanup {
    child: Child,
    cgroups: Vec<String>,
    driver: Box<dyn berth_cgroups::Cgroups>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for path in &self.cgroups {
            if let Err(e) = self.driver.remove(path) {
                eprintln!("cleanup of {path}: {e}");
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
