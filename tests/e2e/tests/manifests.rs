//! The files an operator deploys berth with stay valid: Prometheus' own
//! checker accepts the scrape config and the rules, the Grafana dashboard
//! is JSON with a query in every panel, and every metric the rules and the
//! dashboard read is one berth exports (its own `berth_*` and process
//! names, and cAdvisor's container names).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

/// `promtool ARGS…` must succeed (promtool comes from Debian's
/// `prometheus`, installed by hack/install-deps.sh).
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool (Debian package prometheus; hack/install-deps.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The metric names a PromQL expression reads: identifiers directly
/// followed by a selector or a range (`name{`, `name[`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let follows = bytes.get(i).copied();
            // Not a label inside a selector (`code!="OK"`, `le`): those
            // come after `{` or `,`, never before one.
            let in_selector = expr[..start].rfind('{') > expr[..start].rfind('}');
            if matches!(follows, Some(b'{') | Some(b'[')) && !in_selector {
                names.insert(expr[start..i].to_string());
            }
        } else if c == b'"' {
            // Skip a string, which may hold braces.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

/// What berthd's /metrics serves (issue 15, DESIGN.md's metric names).
const EXPORTED: &[&str] = &[
    "berth_operations_total",
    "berth_operation_duration_seconds_bucket",
    "berth_operation_duration_seconds_count",
    "berth_pod_start_duration_seconds_bucket",
    "berth_pod_start_duration_seconds_count",
    "berth_container_start_duration_seconds_bucket",
    "berth_image_pulls_total",
    "berth_image_pull_duration_seconds_bucket",
    "berth_image_pull_bytes_total",
    "berth_containers",
    "berth_sandboxes",
    "berth_monitor_exits_unexpected_total",
    "berth_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_transmit_bytes_total",
];

/// Names the rules themselves record, and Prometheus' own `up`.
fn known(recorded: &BTreeSet<String>, name: &str) -> bool {
    EXPORTED.contains(&name) || recorded.contains(name) || name == "up"
}

#[test]
fn the_prometheus_config_and_rules_pass_promtool() {
    let dir = manifests().join("prometheus");
    let config = promtool(&[
        "check",
        "config",
        dir.join("prometheus.yml").to_str().unwrap(),
    ]);
    assert!(config.contains("SUCCESS: 1 rule files found"), "{config}");
    let rules = promtool(&[
        "check",
        "rules",
        dir.join("berth.rules.yml").to_str().unwrap(),
    ]);
    assert!(rules.contains("SUCCESS"), "{rules}");

    let text = std::fs::read_to_string(dir.join("berth.rules.yml")).unwrap();
    let recorded: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_string)
        .collect();
    assert!(recorded.len() >= 5, "{recorded:?}");
    let mut read = BTreeSet::new();
    for line in text.lines() {
        read.extend(metric_names(line));
    }
    let unknown: Vec<_> = read.iter().filter(|n| !known(&recorded, n)).collect();
    assert!(
        unknown.is_empty(),
        "rules read metrics berth does not export: {unknown:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_exported_metrics_in_every_panel() {
    let path = manifests().join("grafana/berth-node.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let graphs: Vec<_> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 10, "{} panels", graphs.len());
    let mut read = BTreeSet::new();
    for p in &graphs {
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            read.extend(metric_names(t["expr"].as_str().expect("expr")));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            read.extend(metric_names(&q.replace("label_values(", "(")));
        }
    }
    let none = BTreeSet::new();
    let unknown: Vec<_> = read.iter().filter(|n| !known(&none, n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard reads metrics berth does not export: {unknown:?}"
    );
    for name in [
        "berth_pod_start_duration_seconds_bucket",
        "container_cpu_usage_seconds_total",
    ] {
        assert!(read.contains(name), "the dashboard shows no {name}");
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"sum by (le) (rate(berth_x_bucket{code!="OK", a="{b["}[5m])) / up{job="berth"} or foo:bar"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["berth_x_bucket", "up"]
    );
}
