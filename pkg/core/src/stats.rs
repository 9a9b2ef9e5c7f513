//! Usage of containers and pods, read from their cgroups and writable layers.

use berth_errdefs::Result;

use crate::model::*;
use crate::{rootfs, Containers, Sandboxes};

impl Containers {
    pub fn stats(&self, id: &str) -> Result<ContainerStats> {
        let record = self.status(id)?;
        Ok(self.stats_of(&record))
    }

    /// Stats of the containers matching the filter.
    pub fn list_stats(&self, filter: &ContainerFilter) -> Vec<ContainerStats> {
        self.list(filter).iter().map(|r| self.stats_of(r)).collect()
    }

    fn stats_of(&self, record: &ContainerRecord) -> ContainerStats {
        let now = now_ns();
        let upper = self.container_dir(&record.id).join("upper");
        let (bytes, inodes) = rootfs::usage(&upper);
        let mut stats = ContainerStats {
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            timestamp_ns: now,
            writable_layer_bytes: bytes,
            writable_layer_inodes: inodes,
            writable_layer_mountpoint: upper,
            ..Default::default()
        };
        if record.state != ContainerState::Running {
            return stats;
        }
        if let Ok(cg) = self.cgroups.stats(&record.cgroups_path) {
            stats.cpu_usage_ns = cg.cpu_usage_ns;
            stats.cpu_user_ns = cg.cpu_user_ns;
            stats.cpu_system_ns = cg.cpu_system_ns;
            stats.memory_usage_bytes = cg.memory_usage_bytes;
            stats.memory_working_set_bytes = cg.memory_working_set_bytes;
            stats.memory_rss_bytes = cg.memory_rss_bytes;
            stats.pids = cg.pids;
            let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, usage)) = samples.get(&record.id) {
                let dt = now.saturating_sub(*t);
                if dt > 0 && cg.cpu_usage_ns >= *usage {
                    stats.cpu_nano_cores =
                        ((cg.cpu_usage_ns - usage) as u128 * 1_000_000_000 / dt as u128) as u64;
                }
            }
            samples.insert(record.id.clone(), (now, cg.cpu_usage_ns));
        }
        stats
    }
}

impl Sandboxes {
    /// A pod and the stats of each of its containers.
    pub fn stats(&self, id: &str) -> Result<(SandboxRecord, Vec<ContainerStats>)> {
        let pod = self.status(id)?;
        let containers = Containers::new(self.shared()).list_stats(&ContainerFilter {
            sandbox_id: id.to_string(),
            owner: Some(pod.owner),
            ..Default::default()
        });
        Ok((pod, containers))
    }
}

impl Containers {
    /// Bytes and inodes in a container's writable layer (Docker's
    /// `SizeRw`), without sampling its cgroup.
    pub fn writable_layer_usage(&self, id: &str) -> Result<(u64, u64)> {
        let record = self.status(id)?;
        Ok(rootfs::usage(&self.container_dir(&record.id).join("upper")))
    }
}
