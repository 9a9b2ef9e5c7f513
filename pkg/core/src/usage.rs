//! One snapshot of what every running container and ready pod uses, for
//! the scrape (cAdvisor's `container_*` families) and CRI's
//! `ListPodSandboxMetrics`: taken at most once per [`USAGE_MAX_AGE`] and
//! shared by every caller meanwhile.
//!
//! Taking it holds the objects' lock only to copy the handles, and each
//! record's lock only to copy the record: the cgroup files, the writable
//! layers and `/proc/<pid>/net/dev` are read with no lock held, so a
//! scrape never delays a CRI call. Reading stops at [`COLLECT_BUDGET`];
//! a container not reached by then keeps its previous sample. A snapshot
//! served from the cache is first cut down to the containers still
//! running, so a removed one is gone from the very next scrape.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::*;
use crate::netstats::{net_dev_of, InterfaceStats};
use crate::{rootfs, Core, Shared};

/// A snapshot younger than this is served as it is.
pub const USAGE_MAX_AGE: Duration = Duration::from_secs(1);

/// How long one collection may read for.
const COLLECT_BUDGET: Duration = Duration::from_secs(2);

pub use berth_cgroups::Stats as CgroupStats;

/// Every running container's and every ready pod's usage at one time.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// When the collection began (Unix nanoseconds).
    pub taken_at_ns: i64,
    pub containers: Vec<ContainerUsage>,
    pub pods: Vec<PodUsage>,
}

/// Who a container or pod is, in the words of cAdvisor's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageLabels {
    /// The cgroup path (cAdvisor's `id`).
    pub cgroup: String,
    /// The runtime's name for it: a Kubernetes container's id (as
    /// containerd names them), a Docker container's name; empty for a pod.
    pub name: String,
    /// The image as the container was made from it; empty for a pod.
    pub image: String,
    /// The pod's name and namespace (empty outside Kubernetes).
    pub pod: String,
    pub namespace: String,
    /// The container's name in its pod; empty for a pod's series.
    pub container: String,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerUsage {
    pub id: String,
    pub sandbox_id: String,
    pub owner: Owner,
    pub labels: UsageLabels,
    pub cgroup: CgroupStats,
    /// Bytes the writable layer holds.
    pub fs_usage_bytes: u64,
    /// The memory limit asked for, 0 for none.
    pub memory_limit_bytes: u64,
    pub started_at_ns: i64,
}

#[derive(Debug, Clone, Default)]
pub struct PodUsage {
    pub id: String,
    pub owner: Owner,
    pub labels: UsageLabels,
    /// The pod network namespace's interfaces (none for host network).
    pub interfaces: Vec<InterfaceStats>,
}

/// The cache: the last snapshot and when it was taken. Its lock is held
/// while a collection runs, so concurrent scrapes wait for one collection
/// instead of each making their own.
#[derive(Default)]
pub(crate) struct UsageCache(std::sync::Mutex<Option<(Instant, Arc<Usage>)>>);

impl Core {
    /// What every running container and ready pod uses, at most
    /// [`USAGE_MAX_AGE`] old, without the containers removed or stopped
    /// since it was taken.
    pub fn usage(&self) -> Arc<Usage> {
        let shared = &self.shared;
        let mut cache = shared
            .usage_cache
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, usage)) = cache.as_ref() {
            if at.elapsed() < USAGE_MAX_AGE {
                let usage = usage.clone();
                drop(cache);
                return Arc::new(shared.still_running(&usage));
            }
        }
        let previous = cache.as_ref().map(|(_, u)| u.clone());
        let usage = Arc::new(shared.collect_usage(previous.as_deref()));
        *cache = Some((Instant::now(), usage.clone()));
        usage
    }
}

impl Shared {
    fn collect_usage(&self, previous: Option<&Usage>) -> Usage {
        let started = Instant::now();
        let taken_at_ns = now_ns();
        let (sandboxes, containers) = {
            let objects = self.objects();
            (
                objects.sandboxes.values().cloned().collect::<Vec<_>>(),
                objects.containers.values().cloned().collect::<Vec<_>>(),
            )
        };
        let pods: HashMap<String, SandboxRecord> = sandboxes
            .iter()
            .map(|e| e.record())
            .filter(|r| r.state == SandboxState::Ready)
            .map(|r| (r.id.clone(), r))
            .collect();
        let earlier: HashMap<&str, &ContainerUsage> = previous
            .map(|p| p.containers.iter().map(|c| (c.id.as_str(), c)).collect())
            .unwrap_or_default();
        let mut out = Usage {
            taken_at_ns,
            ..Default::default()
        };
        // A running container's pid per pod: whose /proc/<pid>/net/dev
        // shows the pod's network namespace.
        let mut pod_pids: HashMap<String, u32> = HashMap::new();
        for entry in &containers {
            let record = entry.record();
            if record.state != ContainerState::Running {
                continue;
            }
            if record.pid != 0
                && pods
                    .get(&record.sandbox_id)
                    .is_some_and(|p| p.network.is_some())
            {
                pod_pids
                    .entry(record.sandbox_id.clone())
                    .or_insert(record.pid);
            }
            if started.elapsed() > COLLECT_BUDGET {
                if let Some(c) = earlier.get(record.id.as_str()) {
                    out.containers.push((*c).clone());
                }
                continue;
            }
            // A container whose cgroup is gone has just exited.
            let Ok(cgroup) = self.cgroups.stats(&record.cgroups_path) else {
                continue;
            };
            let upper = self.container_dir(&record.id).join("upper");
            out.containers.push(ContainerUsage {
                labels: container_labels(&record, pods.get(&record.sandbox_id)),
                id: record.id,
                sandbox_id: record.sandbox_id,
                owner: record.owner,
                cgroup,
                fs_usage_bytes: rootfs::usage(&upper).0,
                memory_limit_bytes: record.config.resources.memory_limit_in_bytes.max(0) as u64,
                started_at_ns: record.started_at_ns,
            });
        }
        for pod in pods.values() {
            let interfaces = pod_pids
                .get(&pod.id)
                .and_then(|pid| net_dev_of(*pid).ok())
                .unwrap_or_default();
            if interfaces.is_empty() {
                continue;
            }
            out.pods.push(PodUsage {
                id: pod.id.clone(),
                owner: pod.owner,
                labels: pod_labels(pod),
                interfaces,
            });
        }
        out
    }

    /// `usage` without the containers no longer running, and the pods no
    /// longer ready.
    fn still_running(&self, usage: &Usage) -> Usage {
        let (sandboxes, containers) = {
            let objects = self.objects();
            let pods: Vec<_> = usage
                .pods
                .iter()
                .filter_map(|p| objects.sandboxes.get(&p.id).cloned())
                .collect();
            let ctrs: Vec<_> = usage
                .containers
                .iter()
                .filter_map(|c| objects.containers.get(&c.id).cloned())
                .collect();
            (pods, ctrs)
        };
        let ready: HashSet<String> = sandboxes
            .iter()
            .filter(|e| e.state_and_owner().0 == SandboxState::Ready)
            .map(|e| e.record().id)
            .collect();
        let running: HashSet<String> = containers
            .iter()
            .map(|e| e.record())
            .filter(|r| r.state == ContainerState::Running)
            .map(|r| r.id)
            .collect();
        Usage {
            taken_at_ns: usage.taken_at_ns,
            containers: usage
                .containers
                .iter()
                .filter(|c| running.contains(&c.id))
                .cloned()
                .collect(),
            pods: usage
                .pods
                .iter()
                .filter(|p| ready.contains(&p.id))
                .cloned()
                .collect(),
        }
    }
}

fn container_labels(record: &ContainerRecord, pod: Option<&SandboxRecord>) -> UsageLabels {
    let kubernetes = pod.and_then(|p| p.config.kubernetes.as_ref());
    UsageLabels {
        cgroup: record.cgroups_path.clone(),
        name: match kubernetes {
            Some(_) => record.id.clone(),
            None => record.config.name.clone(),
        },
        image: record.image_ref.clone(),
        pod: kubernetes
            .and(pod)
            .map(|p| p.config.name.clone())
            .unwrap_or_default(),
        namespace: kubernetes.map(|k| k.namespace.clone()).unwrap_or_default(),
        container: kubernetes
            .map(|_| record.config.name.clone())
            .unwrap_or_default(),
    }
}

fn pod_labels(pod: &SandboxRecord) -> UsageLabels {
    let kubernetes = pod.config.kubernetes.as_ref();
    UsageLabels {
        cgroup: pod.cgroup_parent.clone(),
        pod: kubernetes
            .map(|_| pod.config.name.clone())
            .unwrap_or_default(),
        namespace: kubernetes.map(|k| k.namespace.clone()).unwrap_or_default(),
        ..Default::default()
    }
}
