//! Per-container and per-pod resource use under cAdvisor's names
//! (`container_*`), from the core's usage snapshot at scrape time. The
//! snapshot is taken at most once a second however often it is scraped,
//! and the families are built afresh from it each time: nothing is kept
//! between scrapes, so a removed container's series are simply gone.

use berth_core::{Core, SeriesKind, UsageFamily};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Registry;

struct Containers {
    core: Core,
    descs: Vec<Desc>,
}

/// Registers the per-container collector of `core` on `registry`.
pub fn register(registry: &Registry, core: Core) -> Result<(), prometheus::Error> {
    let descs = berth_core::usage_descriptors()
        .into_iter()
        .map(|d| {
            let labels = d.label_keys.iter().map(|k| k.to_string()).collect();
            Desc::new(d.name.into(), d.help.into(), labels, Default::default())
        })
        .collect::<Result<_, _>>()?;
    registry.register(Box::new(Containers { core, descs }))
}

impl Collector for Containers {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.core.usage().families().iter().map(to_proto).collect()
    }
}

fn to_proto(family: &UsageFamily) -> MetricFamily {
    let d = family.descriptor;
    let mut out = MetricFamily::default();
    out.set_name(d.name.to_string());
    out.set_help(d.help.to_string());
    out.set_field_type(match d.kind {
        SeriesKind::Counter => MetricType::COUNTER,
        SeriesKind::Gauge => MetricType::GAUGE,
    });
    let metrics = family
        .series
        .iter()
        .map(|s| {
            let labels = d
                .label_keys
                .iter()
                .zip(&s.label_values)
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(k.to_string());
                    pair.set_value(v.clone());
                    pair
                })
                .collect();
            let mut metric = Metric::default();
            metric.set_label(labels);
            match d.kind {
                SeriesKind::Counter => {
                    let mut c = Counter::default();
                    c.set_value(s.value);
                    metric.set_counter(c);
                }
                SeriesKind::Gauge => {
                    let mut g = Gauge::default();
                    g.set_value(s.value);
                    metric.set_gauge(g);
                }
            }
            metric
        })
        .collect();
    out.set_metric(metrics);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{SeriesDescriptor, UsageSeries};

    #[test]
    fn a_family_is_written_with_its_labels_and_type() {
        let family = UsageFamily {
            descriptor: SeriesDescriptor {
                name: "container_x_total",
                help: "An x.",
                kind: SeriesKind::Counter,
                label_keys: &["container", "pod"],
            },
            series: vec![UsageSeries {
                sandbox_id: "p".into(),
                container_id: "c".into(),
                label_values: vec!["busy".into(), "web".into()],
                value: 1.5,
            }],
        };
        let text = crate::serve::encode_text(&[to_proto(&family)]);
        assert!(
            text.contains("# TYPE container_x_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("container_x_total{container=\"busy\",pod=\"web\"} 1.5\n"),
            "{text}"
        );
    }
}
