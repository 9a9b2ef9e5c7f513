//! One cgroup interface over the three layouts a node can have: cgroup v1,
//! the hybrid layout (v1 controllers plus an empty v2 tree at
//! `/sys/fs/cgroup/unified`, as on the machine berth is tested on) and the
//! unified v2 hierarchy most current nodes run.
//!
//! Paths are hierarchy-relative and absolute (`/kubepods/pod-x`), the form
//! an OCI `cgroupsPath` takes; systemd slice names are expanded by
//! [`systemd_slice_path`]. Container cgroups themselves are made by the OCI
//! runtime; berth uses this crate for pod-level parents, their limits, stats
//! and removal.
//!
//! It writes cgroupfs files directly rather than through cgroups-rs: the few
//! files berth needs are stable kernel ABI, and the crate stays free of the
//! parts of cgroups-rs that misbehave on v1 (see docs/dev/architecture.md).

mod systemd;
mod v1;
mod v2;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_errdefs::{Error, ErrorKind, Result};

pub use systemd::systemd_slice_path;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 controller hierarchies.
    Legacy,
    /// v1 controllers, plus a v2 tree at `unified/` that holds none.
    Hybrid,
    /// One v2 hierarchy with the controllers.
    Unified,
}

/// Limits, in the units of the OCI runtime spec (`linux.resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes; `-1` for no limit.
    pub memory_limit: Option<i64>,
    /// `-1` for no limit.
    pub pids_limit: Option<i64>,
}

/// Usage as kubelet and cAdvisor report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    /// The part of `cpu_usage_ns` spent in user mode.
    pub cpu_user_ns: u64,
    /// The part of `cpu_usage_ns` spent in the kernel.
    pub cpu_system_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages: what the kernel cannot reclaim easily.
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    /// Page cache charged to the cgroup (v1 `total_cache`, v2 `file`).
    pub memory_cache_bytes: u64,
    /// Time the CFS bandwidth limit held the cgroup's tasks back.
    pub cpu_throttled_ns: u64,
    /// Bytes written to block devices (v1 blkio, v2 io.stat), all devices.
    pub io_write_bytes: u64,
    pub pids: u64,
    /// Processes the kernel's OOM killer killed in this cgroup.
    pub oom_kills: u64,
}

/// The operations berth needs on a cgroup, whatever the layout.
pub trait Cgroups: Send + Sync {
    fn mode(&self) -> Mode;
    /// Creates the cgroup (and missing parents); an existing one is fine.
    fn create(&self, path: &str) -> Result<()>;
    fn apply(&self, path: &str, resources: &Resources) -> Result<()>;
    /// Moves a process into the cgroup.
    fn add_process(&self, path: &str, pid: u32) -> Result<()>;
    fn processes(&self, path: &str) -> Result<Vec<u32>>;
    fn stats(&self, path: &str) -> Result<Stats>;
    /// Removes the cgroup; a missing one is fine, a populated one is a
    /// `FailedPrecondition` naming it.
    fn remove(&self, path: &str) -> Result<()>;
    /// Whether the cgroup exists (in the memory hierarchy on v1).
    fn exists(&self, path: &str) -> bool;
}

/// Finds the layout under `root` (normally `/sys/fs/cgroup`).
pub fn detect(root: &Path) -> Result<Mode> {
    if is_cgroup2(root)? {
        return Ok(Mode::Unified);
    }
    let unified = root.join("unified");
    if unified.exists() && is_cgroup2(&unified)? {
        Ok(Mode::Hybrid)
    } else {
        Ok(Mode::Legacy)
    }
}

fn is_cgroup2(path: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("bad path {}", path.display())))?;
    // SAFETY: statfs into a zeroed struct we own, with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error())
            .context(format!("statfs {}", path.display())));
    }
    Ok(st.f_type == libc::CGROUP2_SUPER_MAGIC)
}

/// The cgroup driver for this host: v1 files for legacy and hybrid hosts,
/// v2 files for unified ones.
pub fn open(root: &Path) -> Result<Box<dyn Cgroups>> {
    Ok(match detect(root)? {
        Mode::Unified => Box::new(v2::CgroupV2::new(root)),
        mode => Box::new(v1::CgroupV1::new(root, mode)),
    })
}

/// The `cgroup.procs` file of the calling process's own cgroup in one
/// hierarchy under `root` (v1: the memory controller's, else the first
/// mounted controller's), if it can be found.
///
/// Writing a pid there moves nothing, yet takes the kernel's lock for
/// cgroup migrations: see `berth-shim`'s `--own-cgroup-procs`.
pub fn own_procs_file(root: &Path) -> Option<std::path::PathBuf> {
    let mode = detect(root).ok()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own_procs_in(root, mode, &text).filter(|p| p.exists())
}

/// [`own_procs_file`] for a `/proc/<pid>/cgroup` text.
fn own_procs_in(root: &Path, mode: Mode, text: &str) -> Option<std::path::PathBuf> {
    // Lines are `hierarchy-id:controllers:path`; v2's has no controllers.
    let entries = text.lines().filter_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        Some((controllers, path.trim_start_matches('/')))
    });
    let (dir, path) = if mode == Mode::Unified {
        entries
            .filter(|(c, _)| c.is_empty())
            .map(|(_, p)| (String::new(), p))
            .next()?
    } else {
        let v1: Vec<(&str, &str)> = entries
            .filter(|(c, _)| !c.is_empty() && !c.starts_with("name="))
            .collect();
        v1.iter()
            .find(|(c, _)| c.split(',').any(|one| one == "memory"))
            .or_else(|| v1.first())
            .map(|(c, p)| (c.to_string(), *p))?
    };
    Some(root.join(dir).join(path).join("cgroup.procs"))
}

/// Checks a hierarchy-relative path: absolute, no `..`, no empty parts.
fn relative(path: &str) -> Result<&str> {
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| Error::invalid(format!("cgroup path {path:?} must be absolute")))?;
    if rel.is_empty()
        || rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(Error::invalid(format!("cgroup path {path:?} is malformed")));
    }
    Ok(rel)
}

/// A limit as cgroupfs writes it: a negative one means "no limit".
fn limit_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value)
        .map_err(|e| Error::from(e).context(format!("write {value:?} to {}", p.display())))
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).map_err(|e| Error::from(e).context(format!("read {}", p.display())))
}

fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let s = read(dir, file)?;
    s.trim()
        .parse()
        .map_err(|_| Error::internal(format!("{}: not a number: {s:?}", dir.join(file).display())))
}

/// `key value` lines, as in memory.stat and cpu.stat.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of `key=value` fields named `key` over io.stat's device lines
/// (`8:0 rbytes=1 wbytes=2 ...`).
fn io_stat_sum(text: &str, key: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|field| field.strip_prefix(key)?.strip_prefix('='))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// The sum of v1 blkio's per-device `MAJ:MIN Op value` lines for `op`
/// (`8:0 Write 4096`); the `Total` line has no device and is skipped.
fn blkio_sum(text: &str, op: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_device, o, v) = (f.next()?, f.next()?, f.next()?);
            (o == op).then(|| v.parse::<u64>().ok()).flatten()
        })
        .sum()
}

fn pids_of(dir: &Path) -> Result<Vec<u32>> {
    Ok(read(dir, "cgroup.procs")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Removes a cgroup directory. EBUSY with processes listed means the cgroup
/// is in use; EBUSY with none listed is the kernel still releasing tasks
/// that just exited, which passes within moments, so that is retried.
fn remove_dir(dir: &Path, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let in_use = !pids_of(dir).unwrap_or_default().is_empty() || has_children(dir);
                if in_use || Instant::now() > deadline {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!("cgroup {path} still has processes or children"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(Error::from(e).context(format!("remove cgroup {}", dir.display())))
            }
        }
    }
}

fn has_children(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_clean() {
        assert_eq!(relative("/a/b").unwrap(), "a/b");
        for bad in ["a", "/", "/a//b", "/a/../b", "/a/./b"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_procs_file_per_layout() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = "12:pids:/system.slice/b.service\n11:cpu,cpuacct:/x\n\
                      5:memory:/system.slice/b.service\n1:name=systemd:/s\n0::/s\n";
        assert_eq!(
            own_procs_in(root, Mode::Hybrid, hybrid).unwrap(),
            root.join("memory/system.slice/b.service/cgroup.procs")
        );
        let no_memory = "11:cpu,cpuacct:/x\n0::/s\n";
        assert_eq!(
            own_procs_in(root, Mode::Legacy, no_memory).unwrap(),
            root.join("cpu,cpuacct/x/cgroup.procs")
        );
        assert_eq!(
            own_procs_in(root, Mode::Unified, "0::/kubepods/p\n").unwrap(),
            root.join("kubepods/p/cgroup.procs")
        );
        assert_eq!(own_procs_in(root, Mode::Unified, "5:memory:/x\n"), None);
    }

    #[test]
    fn keyed_values() {
        let t = "usage_usec 12\nuser_usec 3\n";
        assert_eq!(keyed(t, "usage_usec"), Some(12));
        assert_eq!(keyed(t, "usage"), None);
    }

    #[test]
    fn io_and_blkio_sums_add_every_device() {
        let io =
            "8:0 rbytes=10 wbytes=4096 rios=1 wios=2\n253:1 rbytes=0 wbytes=100 rios=0 wios=1\n";
        assert_eq!(io_stat_sum(io, "wbytes"), 4196);
        assert_eq!(io_stat_sum("", "wbytes"), 0);
        let blkio = "8:0 Read 10\n8:0 Write 4096\n8:0 Total 4106\n253:1 Write 100\nTotal 4206\n";
        assert_eq!(blkio_sum(blkio, "Write"), 4196);
    }
}
