//! The unified cgroup v2 hierarchy.

use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};

use crate::{
    io_stat_sum, keyed, limit_value, pids_of, read, read_u64, relative, remove_dir, write, Cgroups,
    Mode, Resources, Stats,
};

pub struct CgroupV2 {
    root: PathBuf,
}

/// v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), the
/// conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

impl CgroupV2 {
    pub fn new(root: &Path) -> Self {
        CgroupV2 {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self, path: &str) -> Result<PathBuf> {
        Ok(self.root.join(relative(path)?))
    }

    /// Controllers are usable in a cgroup only when every ancestor delegates
    /// them through `cgroup.subtree_control`.
    fn enable_controllers(&self, path: &str) -> Result<()> {
        let wanted = read(&self.root, "cgroup.controllers")?;
        let mut cur = self.root.clone();
        let parts: Vec<&str> = relative(path)?.split('/').collect();
        for part in &parts {
            let available = read(&cur, "cgroup.controllers").unwrap_or_else(|_| wanted.clone());
            for c in ["cpu", "cpuset", "memory", "pids", "io"] {
                if available.split_whitespace().any(|a| a == c) {
                    let _ = write(&cur, "cgroup.subtree_control", &format!("+{c}"));
                }
            }
            cur.push(part);
        }
        Ok(())
    }
}

impl Cgroups for CgroupV2 {
    fn mode(&self) -> Mode {
        Mode::Unified
    }

    fn create(&self, path: &str) -> Result<()> {
        let dir = self.dir(path)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::from(e).context(format!("create cgroup {}", dir.display())))?;
        self.enable_controllers(path)
    }

    fn apply(&self, path: &str, r: &Resources) -> Result<()> {
        let dir = self.dir(path)?;
        if let Some(v) = r.cpu_shares {
            write(&dir, "cpu.weight", &shares_to_weight(v).to_string())?;
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let quota = match r.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = r.cpu_period.unwrap_or(100_000);
            write(&dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(v) = &r.cpuset_cpus {
            write(&dir, "cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            write(&dir, "cpuset.mems", v)?;
        }
        if let Some(v) = r.memory_limit {
            write(&dir, "memory.max", &limit_value(v))?;
        }
        if let Some(v) = r.pids_limit {
            write(&dir, "pids.max", &limit_value(v))?;
        }
        Ok(())
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<()> {
        write(&self.dir(path)?, "cgroup.procs", &pid.to_string())
    }

    fn processes(&self, path: &str) -> Result<Vec<u32>> {
        pids_of(&self.dir(path)?)
    }

    fn stats(&self, path: &str) -> Result<Stats> {
        let dir = self.dir(path)?;
        let usage = read_u64(&dir, "memory.current")?;
        let stat = read(&dir, "memory.stat")?;
        let inactive_file = keyed(&stat, "inactive_file").unwrap_or(0);
        let cpu = read(&dir, "cpu.stat")?;
        Ok(Stats {
            cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
            cpu_user_ns: keyed(&cpu, "user_usec").unwrap_or(0) * 1000,
            cpu_system_ns: keyed(&cpu, "system_usec").unwrap_or(0) * 1000,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive_file),
            memory_rss_bytes: keyed(&stat, "anon").unwrap_or(0),
            memory_cache_bytes: keyed(&stat, "file").unwrap_or(0),
            cpu_throttled_ns: keyed(&cpu, "throttled_usec").unwrap_or(0) * 1000,
            // No io controller delegated: no io.stat, and nothing counted.
            io_write_bytes: read(&dir, "io.stat")
                .map(|t| io_stat_sum(&t, "wbytes"))
                .unwrap_or(0),
            pids: read_u64(&dir, "pids.current")?,
            oom_kills: read(&dir, "memory.events")
                .ok()
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0),
        })
    }

    fn remove(&self, path: &str) -> Result<()> {
        remove_dir(&self.dir(path)?, path)
    }

    fn exists(&self, path: &str) -> bool {
        self.dir(path).is_ok_and(|d| d.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 tree: plain files where the kernel would have cgroupfs.
    fn fixture() -> (tempfile::TempDir, CgroupV2) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(t.path().join("cgroup.subtree_control"), "").unwrap();
        let cg = CgroupV2::new(t.path());
        (t, cg)
    }

    #[test]
    fn limits_are_written_in_v2_units() {
        let (t, cg) = fixture();
        cg.create("/kubepods/pod1").unwrap();
        cg.apply(
            "/kubepods/pod1",
            &Resources {
                cpu_shares: Some(1024),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
                pids_limit: Some(-1),
                ..Default::default()
            },
        )
        .unwrap();
        let dir = t.path().join("kubepods/pod1");
        let f = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(f("cpu.weight"), "39");
        assert_eq!(f("cpu.max"), "50000 100000");
        assert_eq!(f("memory.max"), (64u64 << 20).to_string());
        assert_eq!(f("pids.max"), "max");
        // The root delegated the controllers it has (a plain file keeps the
        // last write; the kernel would accumulate them).
        assert!(
            std::fs::read_to_string(t.path().join("cgroup.subtree_control"))
                .unwrap()
                .starts_with('+')
        );
    }

    #[test]
    fn stats_are_read_from_v2_files() {
        let (t, cg) = fixture();
        let dir = t.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "1000\n").unwrap();
        std::fs::write(
            dir.join("memory.stat"),
            "anon 600\nfile 400\ninactive_file 300\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\nthrottled_usec 9\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=1 wbytes=4096 rios=1 wios=1 dbytes=0 dios=0\n8:16 rbytes=0 wbytes=512 rios=0 wios=1 dbytes=0 dios=0\n",
        )
        .unwrap();
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\noom 2\noom_kill 1\n").unwrap();
        let s = cg.stats("/p").unwrap();
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: 7000,
                cpu_user_ns: 5000,
                cpu_system_ns: 2000,
                memory_usage_bytes: 1000,
                memory_working_set_bytes: 700,
                memory_rss_bytes: 600,
                memory_cache_bytes: 400,
                cpu_throttled_ns: 9000,
                io_write_bytes: 4608,
                pids: 3,
                oom_kills: 1,
            }
        );
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
