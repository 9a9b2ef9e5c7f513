//! `berth_sandboxes{state,owner}` and `berth_containers{state,owner}`:
//! counted from the core each time they are scraped, so they are never
//! stale and cost nothing between scrapes. The core's census copies its
//! object handles under its lock and reads each record after, so a
//! scrape never holds a lock a CRI call waits on for long.

use berth_core::Core;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts, Registry};

/// The two gauges, set from a fresh census on every collect.
struct Census {
    core: Core,
    sandboxes: IntGaugeVec,
    containers: IntGaugeVec,
}

/// Registers the census of `core`'s objects on `registry`.
pub fn register(registry: &Registry, core: Core) -> Result<(), prometheus::Error> {
    let census = Census {
        core,
        sandboxes: IntGaugeVec::new(
            Opts::new(
                "berth_sandboxes",
                "Pod sandboxes, by state (ready, notready) and owner (kubernetes, docker).",
            ),
            &["state", "owner"],
        )?,
        containers: IntGaugeVec::new(
            Opts::new(
                "berth_containers",
                "Containers, by state (created, running, exited, unknown) and owner (kubernetes, docker).",
            ),
            &["state", "owner"],
        )?,
    };
    registry.register(Box::new(census))
}

impl Collector for Census {
    fn desc(&self) -> Vec<&Desc> {
        self.sandboxes
            .desc()
            .into_iter()
            .chain(self.containers.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let census = self.core.census();
        for (state, owner, n) in census.sandboxes {
            self.sandboxes
                .with_label_values(&[state.as_str(), owner.as_str()])
                .set(n as i64);
        }
        for (state, owner, n) in census.containers {
            self.containers
                .with_label_values(&[state.as_str(), owner.as_str()])
                .set(n as i64);
        }
        let mut families = self.sandboxes.collect();
        families.extend(self.containers.collect());
        families
    }
}
