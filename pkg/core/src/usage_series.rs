//! A [`Usage`] snapshot as series under cAdvisor's names and labels, the
//! ones kubelet's `/metrics/cadvisor` serves, so dashboards and alerts
//! built for it work unchanged. One table feeds both the scrape
//! (berth-metrics) and CRI's `ListMetricDescriptors`/`ListPodSandboxMetrics`
//! (berth-cri), so the two always show the same series.
//!
//! Labels: `container`, `id` (the cgroup), `image`, `name`, `namespace`,
//! `pod`; a pod's network series have `container=""`, `image=""` and
//! `name=""`, and its cgroup parent as `id`, as kubelet's have for the pod
//! cgroup. The pod cgroup's own CPU and memory series are left out: they
//! would double a collection's cgroup reads (v1 `memory.stat` is the
//! dearest file), and `sum by (pod)` of the containers' gives them.

use crate::usage::{CgroupStats, ContainerUsage, PodUsage, Usage, UsageLabels};

/// Counter (only ever rises) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Counter,
    Gauge,
}

/// One family's name, help and label names, without values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesDescriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: SeriesKind,
    /// In the order of every series' `label_values`.
    pub label_keys: &'static [&'static str],
}

/// One series: whose it is, its label values and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSeries {
    pub sandbox_id: String,
    /// Empty for a pod's own series.
    pub container_id: String,
    pub label_values: Vec<String>,
    pub value: f64,
}

/// A descriptor and its series.
#[derive(Debug, Clone)]
pub struct UsageFamily {
    pub descriptor: SeriesDescriptor,
    pub series: Vec<UsageSeries>,
}

const LABELS: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];
const CPU_LABELS: &[&str] = &[
    "container",
    "cpu",
    "id",
    "image",
    "name",
    "namespace",
    "pod",
];
const NET_LABELS: &[&str] = &[
    "container",
    "id",
    "image",
    "interface",
    "name",
    "namespace",
    "pod",
];

const fn counter(name: &'static str, help: &'static str) -> SeriesDescriptor {
    SeriesDescriptor {
        name,
        help,
        kind: SeriesKind::Counter,
        label_keys: LABELS,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> SeriesDescriptor {
    SeriesDescriptor {
        name,
        help,
        kind: SeriesKind::Gauge,
        label_keys: LABELS,
    }
}

const NS: f64 = 1e9;

/// The families read from a container's cgroup.
#[allow(clippy::type_complexity)]
const CGROUP_FAMILIES: &[(SeriesDescriptor, fn(&CgroupStats) -> f64)] = &[
    (
        SeriesDescriptor {
            name: "container_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed in seconds.",
            kind: SeriesKind::Counter,
            label_keys: CPU_LABELS,
        },
        |s| s.cpu_usage_ns as f64 / NS,
    ),
    (
        counter(
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
        ),
        |s| s.cpu_user_ns as f64 / NS,
    ),
    (
        counter(
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
        ),
        |s| s.cpu_system_ns as f64 / NS,
    ),
    (
        counter(
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
        ),
        |s| s.cpu_throttled_ns as f64 / NS,
    ),
    (
        gauge(
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
        ),
        |s| s.memory_working_set_bytes as f64,
    ),
    (
        gauge(
            "container_memory_rss",
            "Size of RSS in bytes.",
        ),
        |s| s.memory_rss_bytes as f64,
    ),
    (
        gauge(
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        ),
        |s| s.memory_usage_bytes as f64,
    ),
    (
        gauge(
            "container_memory_cache",
            "Number of bytes of page cache memory.",
        ),
        |s| s.memory_cache_bytes as f64,
    ),
    (
        counter(
            "container_fs_writes_bytes_total",
            "Cumulative count of bytes written.",
        ),
        |s| s.io_write_bytes as f64,
    ),
    (
        gauge("container_processes", "Number of processes running inside the container."),
        |s| s.pids as f64,
    ),
    (
        counter(
            "container_oom_events_total",
            "Count of out of memory events observed for the container.",
        ),
        |s| s.oom_kills as f64,
    ),
];

/// The families only containers have.
#[allow(clippy::type_complexity)]
const CONTAINER_FAMILIES: &[(SeriesDescriptor, fn(&ContainerUsage) -> f64)] = &[
    (
        gauge(
            "container_spec_memory_limit_bytes",
            "Memory limit for the container.",
        ),
        |c| c.memory_limit_bytes as f64,
    ),
    (
        gauge(
            "container_fs_usage_bytes",
            "Number of bytes that are consumed by the container on this filesystem.",
        ),
        |c| c.fs_usage_bytes as f64,
    ),
    (
        gauge(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds.",
        ),
        |c| c.started_at_ns as f64 / NS,
    ),
];

const LAST_SEEN: SeriesDescriptor = gauge(
    "container_last_seen",
    "Last time a container was seen by the exporter",
);

/// The pod network namespace's families, per interface.
#[allow(clippy::type_complexity)]
const NETWORK_FAMILIES: &[(SeriesDescriptor, fn(&crate::InterfaceStats) -> f64)] = &[
    (
        SeriesDescriptor {
            name: "container_network_receive_bytes_total",
            help: "Cumulative count of bytes received",
            kind: SeriesKind::Counter,
            label_keys: NET_LABELS,
        },
        |i| i.rx_bytes as f64,
    ),
    (
        SeriesDescriptor {
            name: "container_network_transmit_bytes_total",
            help: "Cumulative count of bytes transmitted",
            kind: SeriesKind::Counter,
            label_keys: NET_LABELS,
        },
        |i| i.tx_bytes as f64,
    ),
];

/// Every family berth exports from a usage snapshot, without values:
/// CRI's `ListMetricDescriptors`.
pub fn usage_descriptors() -> Vec<SeriesDescriptor> {
    CGROUP_FAMILIES
        .iter()
        .map(|(d, _)| *d)
        .chain(CONTAINER_FAMILIES.iter().map(|(d, _)| *d))
        .chain([LAST_SEEN])
        .chain(NETWORK_FAMILIES.iter().map(|(d, _)| *d))
        .collect()
}

impl Usage {
    /// The snapshot as series, one family per descriptor of
    /// [`usage_descriptors`], in that order (a family may have no series).
    pub fn families(&self) -> Vec<UsageFamily> {
        let last_seen = self.taken_at_ns as f64 / NS;
        let mut out = Vec::new();
        for (descriptor, value) in CGROUP_FAMILIES {
            let containers = self.containers.iter().map(|c| {
                series(
                    descriptor,
                    &c.sandbox_id,
                    &c.id,
                    &c.labels,
                    None,
                    value(&c.cgroup),
                )
            });
            out.push(family(descriptor, containers));
        }
        for (descriptor, value) in CONTAINER_FAMILIES {
            let containers = self
                .containers
                .iter()
                .map(|c| series(descriptor, &c.sandbox_id, &c.id, &c.labels, None, value(c)));
            out.push(family(descriptor, containers));
        }
        let containers = self
            .containers
            .iter()
            .map(|c| series(&LAST_SEEN, &c.sandbox_id, &c.id, &c.labels, None, last_seen));
        out.push(family(&LAST_SEEN, containers));
        for (descriptor, value) in NETWORK_FAMILIES {
            let interfaces = self.pods.iter().flat_map(|p: &PodUsage| {
                p.interfaces
                    .iter()
                    .map(move |i| series(descriptor, &p.id, "", &p.labels, Some(&i.name), value(i)))
            });
            out.push(family(descriptor, interfaces));
        }
        out
    }
}

fn family(descriptor: &SeriesDescriptor, series: impl Iterator<Item = UsageSeries>) -> UsageFamily {
    UsageFamily {
        descriptor: *descriptor,
        series: series.collect(),
    }
}

/// One series, its label values in `descriptor.label_keys`' order.
fn series(
    descriptor: &SeriesDescriptor,
    sandbox_id: &str,
    container_id: &str,
    labels: &UsageLabels,
    interface: Option<&str>,
    value: f64,
) -> UsageSeries {
    let label_values = descriptor
        .label_keys
        .iter()
        .map(|key| {
            match *key {
                "container" => &labels.container,
                "id" => &labels.cgroup,
                "image" => &labels.image,
                "name" => &labels.name,
                "namespace" => &labels.namespace,
                "pod" => &labels.pod,
                "cpu" => "total",
                "interface" => interface.unwrap_or_default(),
                _ => "",
            }
            .to_string()
        })
        .collect();
    UsageSeries {
        sandbox_id: sandbox_id.to_string(),
        container_id: container_id.to_string(),
        label_values,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{ContainerUsage, PodUsage};
    use crate::InterfaceStats;

    fn snapshot() -> Usage {
        let pod_labels = UsageLabels {
            cgroup: "/kubepods/pod-a".into(),
            pod: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        Usage {
            taken_at_ns: 2_000_000_000,
            containers: vec![ContainerUsage {
                id: "c1".into(),
                sandbox_id: "p1".into(),
                labels: UsageLabels {
                    cgroup: "/kubepods/pod-a/c1".into(),
                    name: "c1".into(),
                    image: "busybox:latest".into(),
                    container: "busy".into(),
                    ..pod_labels.clone()
                },
                cgroup: CgroupStats {
                    cpu_usage_ns: 1_500_000_000,
                    memory_working_set_bytes: 4096,
                    ..Default::default()
                },
                memory_limit_bytes: 1 << 20,
                ..Default::default()
            }],
            pods: vec![PodUsage {
                id: "p1".into(),
                labels: pod_labels,
                interfaces: vec![InterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn find<'a>(families: &'a [UsageFamily], name: &str) -> &'a UsageFamily {
        families
            .iter()
            .find(|f| f.descriptor.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn families_follow_the_descriptors_and_name_their_labels() {
        let families = snapshot().families();
        let names: Vec<_> = families.iter().map(|f| f.descriptor).collect();
        assert_eq!(names, usage_descriptors());
        for f in &families {
            let d = f.descriptor;
            assert!(d.name.starts_with("container_"), "{}", d.name);
            assert_eq!(
                d.kind == SeriesKind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            let mut sorted = d.label_keys.to_vec();
            sorted.sort();
            assert_eq!(sorted, d.label_keys, "{}: sorted label names", d.name);
            for s in &f.series {
                assert_eq!(s.label_values.len(), d.label_keys.len());
            }
        }
        let cpu = find(&families, "container_cpu_usage_seconds_total");
        assert_eq!(cpu.series.len(), 1, "the container's only");
        assert_eq!(
            cpu.series[0].label_values,
            [
                "busy",
                "total",
                "/kubepods/pod-a/c1",
                "busybox:latest",
                "c1",
                "default",
                "web"
            ]
        );
        assert_eq!(cpu.series[0].value, 1.5);
        let rx = find(&families, "container_network_receive_bytes_total");
        assert_eq!(
            rx.series[0].label_values,
            ["", "/kubepods/pod-a", "", "eth0", "", "default", "web"]
        );
        assert_eq!(rx.series[0].value, 10.0);
        let limit = find(&families, "container_spec_memory_limit_bytes");
        assert_eq!(limit.series.len(), 1, "containers only");
        assert_eq!(limit.series[0].value, 1048576.0);
        assert_eq!(find(&families, "container_last_seen").series[0].value, 2.0);
    }
}
