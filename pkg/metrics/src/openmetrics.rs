//! The OpenMetrics 1.0 text format, for scrapers that ask for it
//! (`Accept: application/openmetrics-text`). The `prometheus` crate writes
//! only the 0.0.4 text format; OpenMetrics differs in little: a counter's
//! family is named without `_total` (its samples keep it), untyped is
//! `unknown`, `le`/`quantile` values are floats (`1.0`, not `1`), `HELP`
//! escapes quotes too, and the exposition ends with `# EOF`.

use std::fmt::Write;

use prometheus::proto::{Metric, MetricFamily, MetricType};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        if family.get_metric().is_empty() {
            continue;
        }
        let name = family.name();
        let kind = family.get_field_type();
        let (family_name, type_name) = match kind {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        let _ = writeln!(out, "# TYPE {family_name} {type_name}");
        for metric in family.get_metric() {
            match kind {
                MetricType::COUNTER => sample(
                    &mut out,
                    &format!("{family_name}_total"),
                    metric,
                    None,
                    metric.get_counter().get_value(),
                ),
                MetricType::GAUGE => {
                    sample(&mut out, name, metric, None, metric.get_gauge().get_value())
                }
                // Only the protobuf model had untyped values; berth makes none.
                #[allow(deprecated)]
                MetricType::UNTYPED => sample(
                    &mut out,
                    name,
                    metric,
                    None,
                    metric.get_untyped().get_value(),
                ),
                MetricType::HISTOGRAM => histogram(&mut out, name, metric),
                MetricType::SUMMARY => {
                    let s = metric.get_summary();
                    for q in s.get_quantile() {
                        let quantile = float(q.quantile());
                        sample(
                            &mut out,
                            name,
                            metric,
                            Some(("quantile", &quantile)),
                            q.value(),
                        );
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        metric,
                        None,
                        s.sample_sum(),
                    );
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        metric,
                        None,
                        s.sample_count() as f64,
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram(out: &mut String, name: &str, metric: &Metric) {
    let h = metric.get_histogram();
    let bucket = format!("{name}_bucket");
    let mut inf_seen = false;
    for b in h.get_bucket() {
        let bound = b.upper_bound();
        inf_seen |= bound == f64::INFINITY;
        sample(
            out,
            &bucket,
            metric,
            Some(("le", &float(bound))),
            b.cumulative_count() as f64,
        );
    }
    if !inf_seen {
        sample(
            out,
            &bucket,
            metric,
            Some(("le", "+Inf")),
            h.get_sample_count() as f64,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        metric,
        None,
        h.get_sample_sum(),
    );
    sample(
        out,
        &format!("{name}_count"),
        metric,
        None,
        h.get_sample_count() as f64,
    );
}

fn sample(out: &mut String, name: &str, metric: &Metric, extra: Option<(&str, &str)>, v: f64) {
    out.push_str(name);
    let labels: Vec<(&str, &str)> = metric
        .get_label()
        .iter()
        .map(|l| (l.name(), l.value()))
        .chain(extra)
        .collect();
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", value(v));
}

/// A sample value: integers as integers, the rest as Rust prints them,
/// with OpenMetrics' names for the infinities and NaN.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// A label's float (`le`, `quantile`): always with a fraction, as
/// OpenMetrics' canonical form wants (`1.0`, `0.005`, `+Inf`).
fn float(v: f64) -> String {
    let s = value(v);
    if v.is_finite() && !s.contains(['.', 'e']) {
        format!("{s}.0")
    } else {
        s
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

    #[test]
    fn counters_gauges_and_histograms_read_as_openmetrics() {
        let registry = Registry::new();
        let ops = IntCounterVec::new(Opts::new("x_ops_total", "Ops \"done\"."), &["code"]).unwrap();
        ops.with_label_values(&["a\"b"]).inc_by(3);
        let gauge = IntGauge::new("x_level", "A level.").unwrap();
        gauge.set(7);
        let hist = HistogramVec::new(
            HistogramOpts::new("x_seconds", "Time.").buckets(vec![0.5, 1.0]),
            &["op"],
        )
        .unwrap();
        hist.with_label_values(&["run"]).observe(0.7);
        registry.register(Box::new(ops)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        registry.register(Box::new(hist)).unwrap();

        let text = encode(&registry.gather());
        let want = "\
# HELP x_level A level.
# TYPE x_level gauge
x_level 7
# HELP x_ops Ops \\\"done\\\".
# TYPE x_ops counter
x_ops_total{code=\"a\\\"b\"} 3
# HELP x_seconds Time.
# TYPE x_seconds histogram
x_seconds_bucket{op=\"run\",le=\"0.5\"} 0
x_seconds_bucket{op=\"run\",le=\"1.0\"} 1
x_seconds_bucket{op=\"run\",le=\"+Inf\"} 1
x_seconds_sum{op=\"run\"} 0.7
x_seconds_count{op=\"run\"} 1
# EOF
";
        assert_eq!(text, want);
    }
}
