//! The Prometheus front door: `GET /metrics` over what the berth core
//! records and counts. Like the other front doors it reaches the node only
//! through `berth-core` (`hack/lint-deps.sh`); the core never depends on
//! it, and records through its own `Recorder` trait, which
//! [`AgentMetrics`] implements.
//!
//! One [`Registry`] is made by berthd and passed down; each part registers
//! itself on it (STYLE.md: no globals):
//! - operations, pod and container starts, image pulls, lost monitors,
//!   pushed as they happen: [`AgentMetrics`] (`agent.rs`);
//! - `berth_sandboxes`/`berth_containers`, counted from the core at
//!   scrape time: [`census::register`];
//! - `container_*` per container and pod under cAdvisor's names, from
//!   the core's usage snapshot at scrape time: [`containers::register`];
//! - `berth_build_info`: [`build::register`];
//! - `process_*` for berthd itself: [`process::register`].
//!
//! Why `prometheus` (tikv) and not `prometheus-client`: STYLE.md's one
//! `prometheus::Registry` passed down, and the process collector
//! (`process_*`) that `prometheus-client` lacks. Its one gap, OpenMetrics
//! output, is `openmetrics.rs`: a short writer over the gathered families.
//! `serve.rs` answers scrapes (text 0.0.4 or OpenMetrics, gzip when asked).

#![forbid(unsafe_code)]

mod agent;
pub mod build;
pub mod census;
pub mod containers;
mod openmetrics;
pub mod process;
mod serve;

pub use agent::{AgentMetrics, DURATION_BUCKETS};
pub use prometheus::Registry;
pub use serve::{serve, DEFAULT_ADDRESS};

/// A registration that failed: a bug (a name registered twice).
pub type Error = prometheus::Error;

/// Everything berthd exports, on a new registry: the agent's figures (to
/// give the core as its recorder), build info and process metrics. Add
/// the census with [`census::register`] once the core is open.
pub fn registry() -> Result<(Registry, std::sync::Arc<AgentMetrics>), Error> {
    let registry = Registry::new();
    let agent = AgentMetrics::register(&registry)?;
    build::register(&registry)?;
    process::register(&registry)?;
    Ok((registry, agent))
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    /// STYLE.md's naming rules, over every family berthd registers.
    #[test]
    fn names_follow_the_rules() {
        let (registry, agent) = super::registry().unwrap();
        // Vectors show up once they have a series.
        use berth_core::Recorder;
        agent.operation(
            berth_core::Service::Cri,
            "Version",
            "OK",
            std::time::Duration::ZERO,
        );
        agent.pod_started("", std::time::Duration::ZERO);
        agent.container_started("", std::time::Duration::ZERO);
        agent.image_pulled(berth_core::PullOutcome::Success, std::time::Duration::ZERO);
        agent.image_pull_bytes(true, 1);
        let families = registry.gather();
        assert!(families.len() >= 10, "{} families", families.len());
        for family in &families {
            let name = family.name();
            assert!(
                !name.contains("_total_total") && !name.contains("_seconds_seconds"),
                "{name}"
            );
            let counter = family.get_field_type() == MetricType::COUNTER;
            assert_eq!(
                counter,
                name.ends_with("_total"),
                "{name}: counters, and only they, end in _total"
            );
            assert!(
                name.starts_with("berth_") || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}
