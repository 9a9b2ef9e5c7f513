//! The figures the core and the front doors push through
//! `berth_core::Recorder`, under STYLE.md's names.

use std::sync::Arc;
use std::time::Duration;

use berth_core::{PullOutcome, Recorder, Service};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// kubelet's `runtime_operations_duration_seconds` buckets,
/// `ExponentialBuckets(.005, 2.5, 14)`: 5 ms to about 12 minutes, so
/// berth's histograms line up with kubelet's.
pub const DURATION_BUCKETS: [f64; 14] = {
    let mut b = [0.005; 14];
    let mut i = 1;
    while i < 14 {
        b[i] = b[i - 1] * 2.5;
        i += 1;
    }
    b
};

/// The pushed figures, registered on one registry.
pub struct AgentMetrics {
    operations: IntCounterVec,
    operation_duration: HistogramVec,
    pod_start: HistogramVec,
    container_start: HistogramVec,
    image_pulls: IntCounterVec,
    image_pull_duration: Histogram,
    image_pull_bytes: IntCounterVec,
    monitor_exits_unexpected: IntCounter,
}

impl AgentMetrics {
    pub fn register(registry: &Registry) -> Result<Arc<AgentMetrics>, prometheus::Error> {
        let metrics = AgentMetrics {
            operations: IntCounterVec::new(
                Opts::new(
                    "berth_operations_total",
                    "Operations answered by berthd's front doors, by service (cri, docker, stream), operation and code (gRPC code name or HTTP status).",
                ),
                &["service", "operation", "code"],
            )?,
            operation_duration: HistogramVec::new(
                duration(
                    "berth_operation_duration_seconds",
                    "Time berthd took to answer an operation, by service and operation.",
                ),
                &["service", "operation"],
            )?,
            pod_start: HistogramVec::new(
                duration(
                    "berth_pod_start_duration_seconds",
                    "Time from a pod sandbox run request to the sandbox ready.",
                ),
                &["runtime_handler"],
            )?,
            container_start: HistogramVec::new(
                duration(
                    "berth_container_start_duration_seconds",
                    "Time to start a created container.",
                ),
                &["runtime_handler"],
            )?,
            image_pulls: IntCounterVec::new(
                Opts::new(
                    "berth_image_pulls_total",
                    "Image pulls, by result (success, failure) and failure reason.",
                ),
                &["result", "reason"],
            )?,
            image_pull_duration: Histogram::with_opts(duration(
                "berth_image_pull_duration_seconds",
                "Time an image pull took, successful or not.",
            ))?,
            image_pull_bytes: IntCounterVec::new(
                Opts::new(
                    "berth_image_pull_bytes_total",
                    "Compressed layer bytes pulls needed: fetched from a registry (cached=\"false\") or already stored (cached=\"true\").",
                ),
                &["cached"],
            )?,
            monitor_exits_unexpected: IntCounter::new(
                "berth_monitor_exits_unexpected_total",
                "Container monitors that went away without recording their container's exit.",
            )?,
        };
        registry.register(Box::new(metrics.operations.clone()))?;
        registry.register(Box::new(metrics.operation_duration.clone()))?;
        registry.register(Box::new(metrics.pod_start.clone()))?;
        registry.register(Box::new(metrics.container_start.clone()))?;
        registry.register(Box::new(metrics.image_pulls.clone()))?;
        registry.register(Box::new(metrics.image_pull_duration.clone()))?;
        registry.register(Box::new(metrics.image_pull_bytes.clone()))?;
        registry.register(Box::new(metrics.monitor_exits_unexpected.clone()))?;
        Ok(Arc::new(metrics))
    }
}

fn duration(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec())
}

impl Recorder for AgentMetrics {
    fn operation(&self, service: Service, operation: &str, code: &str, took: Duration) {
        let service = service.as_str();
        self.operations
            .with_label_values(&[service, operation, code])
            .inc();
        self.operation_duration
            .with_label_values(&[service, operation])
            .observe(took.as_secs_f64());
    }

    fn pod_started(&self, runtime_handler: &str, took: Duration) {
        self.pod_start
            .with_label_values(&[runtime_handler])
            .observe(took.as_secs_f64());
    }

    fn container_started(&self, runtime_handler: &str, took: Duration) {
        self.container_start
            .with_label_values(&[runtime_handler])
            .observe(took.as_secs_f64());
    }

    fn image_pulled(&self, outcome: PullOutcome, took: Duration) {
        let (result, reason) = outcome.labels();
        self.image_pulls.with_label_values(&[result, reason]).inc();
        self.image_pull_duration.observe(took.as_secs_f64());
    }

    fn image_pull_bytes(&self, cached: bool, bytes: u64) {
        self.image_pull_bytes
            .with_label_values(&[if cached { "true" } else { "false" }])
            .inc_by(bytes);
    }

    fn monitor_exit_unexpected(&self) {
        self.monitor_exits_unexpected.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_kubelets() {
        assert_eq!(DURATION_BUCKETS.len(), 14);
        assert_eq!(DURATION_BUCKETS[0], 0.005);
        assert!((DURATION_BUCKETS[1] - 0.0125).abs() < 1e-12);
        assert!((DURATION_BUCKETS[13] - 0.005 * 2.5f64.powi(13)).abs() < 1e-6);
    }

    #[test]
    fn an_operation_counts_and_times_under_its_labels() {
        let registry = Registry::new();
        let agent = AgentMetrics::register(&registry).unwrap();
        agent.operation(
            Service::Cri,
            "RunPodSandbox",
            "OK",
            Duration::from_millis(30),
        );
        agent.operation(
            Service::Cri,
            "RunPodSandbox",
            "OK",
            Duration::from_millis(3),
        );
        agent.operation(Service::Docker, "ContainerList", "200", Duration::ZERO);
        let text = crate::serve::encode_text(&registry.gather());
        assert!(text.contains(
            "berth_operations_total{code=\"OK\",operation=\"RunPodSandbox\",service=\"cri\"} 2"
        ));
        assert!(text.contains(
            "berth_operation_duration_seconds_bucket{operation=\"RunPodSandbox\",service=\"cri\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "berth_operations_total{code=\"200\",operation=\"ContainerList\",service=\"docker\"} 1"
        ));
    }
}
