//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: the core's usage
//! series (cAdvisor's names, the same the scrape shows) for kubelet's
//! `PodAndContainerStatsFromCRI`, grouped by pod and container. CRI
//! values are whole numbers: seconds are truncated to whole seconds, as
//! CRI-O does.

use std::collections::BTreeMap;

use berth_core::{Owner, SeriesDescriptor, SeriesKind, Usage};
use k8s_cri::v1 as api;

pub fn descriptors() -> Vec<api::MetricDescriptor> {
    berth_core::usage_descriptors()
        .iter()
        .map(|d: &SeriesDescriptor| api::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: d.label_keys.iter().map(|k| k.to_string()).collect(),
        })
        .collect()
}

/// The series of `owner`'s pods, one entry per pod that has any.
pub fn pod_metrics(usage: &Usage, owner: Owner) -> Vec<api::PodSandboxMetrics> {
    let pods: std::collections::HashSet<&str> = usage
        .pods
        .iter()
        .filter(|p| p.owner == owner)
        .map(|p| p.id.as_str())
        .chain(
            usage
                .containers
                .iter()
                .filter(|c| c.owner == owner)
                .map(|c| c.sandbox_id.as_str()),
        )
        .collect();
    let mut out: BTreeMap<String, api::PodSandboxMetrics> = BTreeMap::new();
    let mut containers: BTreeMap<(String, String), Vec<api::Metric>> = BTreeMap::new();
    for family in usage.families() {
        let d = family.descriptor;
        for s in family.series {
            if !pods.contains(s.sandbox_id.as_str()) {
                continue;
            }
            let metric = api::Metric {
                name: d.name.to_string(),
                timestamp: usage.taken_at_ns,
                metric_type: match d.kind {
                    SeriesKind::Counter => api::MetricType::Counter,
                    SeriesKind::Gauge => api::MetricType::Gauge,
                } as i32,
                label_values: s.label_values,
                value: Some(api::UInt64Value {
                    value: s.value.max(0.0) as u64,
                }),
            };
            let pod = out
                .entry(s.sandbox_id.clone())
                .or_insert_with(|| api::PodSandboxMetrics {
                    pod_sandbox_id: s.sandbox_id.clone(),
                    ..Default::default()
                });
            if s.container_id.is_empty() {
                pod.metrics.push(metric);
            } else {
                containers
                    .entry((s.sandbox_id, s.container_id))
                    .or_default()
                    .push(metric);
            }
        }
    }
    for ((sandbox_id, container_id), metrics) in containers {
        if let Some(pod) = out.get_mut(&sandbox_id) {
            pod.container_metrics.push(api::ContainerMetrics {
                container_id,
                metrics,
            });
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{CgroupStats, ContainerUsage};

    #[test]
    fn series_group_by_pod_and_container_and_other_owners_are_left_out() {
        let container = |id: &str, pod: &str, owner| ContainerUsage {
            id: id.into(),
            sandbox_id: pod.into(),
            owner,
            cgroup: CgroupStats {
                cpu_usage_ns: 2_500_000_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let usage = Usage {
            taken_at_ns: 7,
            containers: vec![
                container("c1", "p1", Owner::Kubernetes),
                container("d1", "p2", Owner::Docker),
            ],
            pods: vec![],
        };
        let pods = pod_metrics(&usage, Owner::Kubernetes);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].pod_sandbox_id, "p1");
        let c = &pods[0].container_metrics[0];
        assert_eq!(c.container_id, "c1");
        let cpu = c
            .metrics
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 2, "whole seconds");
        assert_eq!(cpu.metric_type, api::MetricType::Counter as i32);
        assert_eq!(cpu.timestamp, 7);
        let names: Vec<_> = descriptors().into_iter().map(|d| d.name).collect();
        assert!(c.metrics.iter().all(|m| names.contains(&m.name)));
    }
}
