//! cgroup v1 (and the hybrid layout, whose v2 tree holds no controllers):
//! one directory per controller hierarchy.

use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};

use crate::{
    blkio_sum, keyed, limit_value, pids_of, read, read_u64, relative, remove_dir, write, Cgroups,
    Mode, Resources, Stats,
};

/// The hierarchies berth creates cgroups in. `cpu` and `cpuacct` are often
/// one mount (`cpu,cpuacct`) reached through two links: creating in both is
/// harmless, the second finds the directory there. `systemd` is the named,
/// controller-less hierarchy that runc and systemd also track processes in;
/// on hybrid hosts `unified` plays that part for v2 (see `mounted`).
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd",
];

pub struct CgroupV1 {
    root: PathBuf,
    mode: Mode,
}

impl CgroupV1 {
    pub fn new(root: &Path, mode: Mode) -> Self {
        CgroupV1 {
            root: root.to_path_buf(),
            mode,
        }
    }

    fn dir(&self, controller: &str, path: &str) -> Result<PathBuf> {
        Ok(self.root.join(controller).join(relative(path)?))
    }

    fn mounted(&self) -> impl Iterator<Item = &'static str> + '_ {
        let unified: &[&'static str] = if self.mode == Mode::Hybrid {
            &["unified"]
        } else {
            &[]
        };
        CONTROLLERS
            .iter()
            .chain(unified)
            .copied()
            .filter(|c| self.root.join(c).is_dir())
    }

    /// A new cpuset cgroup starts with no cpus or mems, and no process can
    /// join it until both are set: inherit them from the parent.
    fn init_cpuset(&self, path: &str) -> Result<()> {
        let mut cur = self.root.join("cpuset");
        for part in relative(path)?.split('/') {
            let parent = cur.clone();
            cur.push(part);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if read(&cur, file)?.trim().is_empty() {
                    write(&cur, file, read(&parent, file)?.trim())?;
                }
            }
        }
        Ok(())
    }
}

impl CgroupV1 {
    /// Bytes written, from the throttle policy's counters, which count
    /// every I/O scheduler's requests (`blkio.io_service_bytes` stays 0
    /// under blk-mq); the recursive file where the kernel has it.
    fn io_write_bytes(&self, path: &str) -> u64 {
        let Ok(dir) = self.dir("blkio", path) else {
            return 0;
        };
        [
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ]
        .iter()
        .find_map(|file| read(&dir, file).ok())
        .map(|t| blkio_sum(&t, "Write"))
        .unwrap_or(0)
    }
}

/// v1's user/system split is accounted by tick, apart from the precise
/// total, and drifts from it (a busy loop shows more user time than
/// total): the split is kept as a ratio of the total, as on v2 where the
/// parts add up.
fn split_usage(total: u64, user: u64, system: u64) -> (u64, u64) {
    let parts = u128::from(user) + u128::from(system);
    if parts == 0 {
        return (0, 0);
    }
    let user = (u128::from(total) * u128::from(user) / parts) as u64;
    (user, total - user)
}

impl Cgroups for CgroupV1 {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn exists(&self, path: &str) -> bool {
        self.dir("memory", path).is_ok_and(|d| d.is_dir())
    }

    fn create(&self, path: &str) -> Result<()> {
        for c in self.mounted() {
            let dir = self.dir(c, path)?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::from(e).context(format!("create cgroup {}", dir.display())))?;
        }
        if self.root.join("cpuset").is_dir() {
            self.init_cpuset(path)?;
        }
        Ok(())
    }

    fn apply(&self, path: &str, r: &Resources) -> Result<()> {
        let cpu = self.dir("cpu", path)?;
        if let Some(v) = r.cpu_shares {
            write(&cpu, "cpu.shares", &v.to_string())?;
        }
        if let Some(v) = r.cpu_period {
            write(&cpu, "cpu.cfs_period_us", &v.to_string())?;
        }
        if let Some(v) = r.cpu_quota {
            write(&cpu, "cpu.cfs_quota_us", &v.to_string())?;
        }
        let cpuset = self.dir("cpuset", path)?;
        if let Some(v) = &r.cpuset_cpus {
            write(&cpuset, "cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            write(&cpuset, "cpuset.mems", v)?;
        }
        if let Some(v) = r.memory_limit {
            write(
                &self.dir("memory", path)?,
                "memory.limit_in_bytes",
                &v.to_string(),
            )?;
        }
        if let Some(v) = r.pids_limit {
            write(&self.dir("pids", path)?, "pids.max", &limit_value(v))?;
        }
        Ok(())
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<()> {
        for c in self.mounted() {
            write(&self.dir(c, path)?, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn processes(&self, path: &str) -> Result<Vec<u32>> {
        pids_of(&self.dir("memory", path)?)
    }

    fn stats(&self, path: &str) -> Result<Stats> {
        let memory = self.dir("memory", path)?;
        let usage = read_u64(&memory, "memory.usage_in_bytes")?;
        let stat = read(&memory, "memory.stat")?;
        let inactive_file = keyed(&stat, "total_inactive_file").unwrap_or(0);
        let cpuacct = self.dir("cpuacct", path)?;
        let cpu_usage_ns = read_u64(&cpuacct, "cpuacct.usage")?;
        // cpuacct.stat's ticks, one read (usage_user and usage_sys cost
        // twice as much, summing every cpu); only their ratio is used.
        let ticks = read(&cpuacct, "cpuacct.stat").unwrap_or_default();
        let (cpu_user_ns, cpu_system_ns) = split_usage(
            cpu_usage_ns,
            keyed(&ticks, "user").unwrap_or(0),
            keyed(&ticks, "system").unwrap_or(0),
        );
        Ok(Stats {
            cpu_usage_ns,
            cpu_user_ns,
            cpu_system_ns,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive_file),
            memory_rss_bytes: keyed(&stat, "total_rss").unwrap_or(0),
            memory_cache_bytes: keyed(&stat, "total_cache").unwrap_or(0),
            cpu_throttled_ns: read(&self.dir("cpu", path)?, "cpu.stat")
                .ok()
                .and_then(|t| keyed(&t, "throttled_time"))
                .unwrap_or(0),
            io_write_bytes: self.io_write_bytes(path),
            pids: read_u64(&self.dir("pids", path)?, "pids.current")?,
            oom_kills: read(&memory, "memory.oom_control")
                .ok()
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0),
        })
    }

    fn remove(&self, path: &str) -> Result<()> {
        let mut errors = Vec::new();
        for c in self.mounted() {
            if let Err(e) = remove_dir(&self.dir(c, path)?, path) {
                errors.push(e);
            }
        }
        // One failure must not leave the other hierarchies behind: every
        // one was tried; report the first problem.
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 tree: one directory per controller, plain files where the
    /// kernel would have cgroupfs.
    #[test]
    fn stats_are_read_from_v1_files() {
        let t = tempfile::tempdir().unwrap();
        let file = |controller: &str, name: &str, text: &str| {
            let dir = t.path().join(controller).join("p");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), text).unwrap();
        };
        file("memory", "memory.usage_in_bytes", "1000\n");
        file(
            "memory",
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 400\ntotal_rss 600\ntotal_inactive_file 300\n",
        );
        file(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        file("cpuacct", "cpuacct.usage", "7000\n");
        file("cpuacct", "cpuacct.stat", "user 3\nsystem 1\n");
        file(
            "cpu",
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n",
        );
        file("pids", "pids.current", "3\n");
        file(
            "blkio",
            "blkio.throttle.io_service_bytes",
            "8:0 Read 10\n8:0 Write 4096\n8:0 Total 4106\nTotal 4106\n",
        );
        let s = CgroupV1::new(t.path(), Mode::Legacy).stats("/p").unwrap();
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: 7000,
                cpu_user_ns: 5250,
                cpu_system_ns: 1750,
                memory_usage_bytes: 1000,
                memory_working_set_bytes: 700,
                memory_rss_bytes: 600,
                memory_cache_bytes: 400,
                cpu_throttled_ns: 5000,
                io_write_bytes: 4096,
                pids: 3,
                oom_kills: 2,
            }
        );
        // The recursive file wins where the kernel has it.
        file(
            "blkio",
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Write 8192\n",
        );
        let s = CgroupV1::new(t.path(), Mode::Legacy).stats("/p").unwrap();
        assert_eq!(s.io_write_bytes, 8192);
    }

    #[test]
    fn the_cpu_split_adds_up_to_the_total() {
        assert_eq!(split_usage(1000, 1100, 0), (1000, 0));
        assert_eq!(split_usage(1000, 300, 100), (750, 250));
        assert_eq!(split_usage(1000, 0, 0), (0, 0));
    }
}
