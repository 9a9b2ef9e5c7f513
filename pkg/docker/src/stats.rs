//! `GET /containers/{id}/stats`: the core's cgroup samples in dockerd's
//! stats JSON (stats.txt), each with the sample before it as `precpu`, so
//! the CLI computes CPU% as dockerd's answers let it.

use std::time::Duration;

use berth_core::{ContainerStats, Core, InterfaceStats};
use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use crate::clock::{now_ns, rfc3339_nano, ZERO_TIME};
use crate::error::ApiResult;
use crate::host;
use crate::http::{json_line, json_stream, ok_json, Body, Query};
use crate::view::{self, ContainerView};

/// dockerd's collection interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// One sample: the container's counters and the host's CPU time.
#[derive(Clone)]
struct Sample {
    at_ns: i64,
    stats: ContainerStats,
    system_ns: u64,
    /// Absent with the host's network (dockerd shows none then).
    networks: Option<Vec<InterfaceStats>>,
}

fn sample(core: &Core, v: &ContainerView) -> ApiResult<Sample> {
    let id = &v.record.id;
    let stats = core.containers().stats(id)?;
    let networks = match v.network_mode().as_str() {
        "host" => None,
        _ => core.containers().network_stats(id).ok(),
    };
    Ok(Sample {
        at_ns: now_ns(),
        stats,
        system_ns: system_cpu_ns(),
        networks,
    })
}

fn networks(s: &Sample) -> Option<Value> {
    let interfaces = s.networks.as_ref()?;
    let mut map = serde_json::Map::new();
    for i in interfaces {
        map.insert(
            i.name.clone(),
            json!({
                "rx_bytes": i.rx_bytes, "rx_packets": i.rx_packets,
                "rx_errors": i.rx_errors, "rx_dropped": i.rx_dropped,
                "tx_bytes": i.tx_bytes, "tx_packets": i.tx_packets,
                "tx_errors": i.tx_errors, "tx_dropped": i.tx_dropped,
            }),
        );
    }
    Some(Value::Object(map))
}

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    // The CLI's --no-stream sends stream=0; absent means streaming.
    let stream = query.get("stream").is_none_or(|_| query.flag("stream"));
    let first = sample(core, &v)?;
    if !stream {
        if query.flag("one-shot") {
            return ok_json(&render(&v, &first, None));
        }
        tokio::time::sleep(INTERVAL).await;
        let second = sample(core, &v)?;
        return ok_json(&render(&v, &second, Some(&first)));
    }
    let core = core.clone();
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        use futures::SinkExt;
        let mut previous: Option<Sample> = None;
        let mut current = first;
        loop {
            if tx
                .send(json_line(&render(&v, &current, previous.as_ref())))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(INTERVAL).await;
            match sample(&core, &v) {
                Ok(next) => previous = Some(std::mem::replace(&mut current, next)),
                Err(_) => break,
            }
        }
    });
    Ok(json_stream(rx))
}

fn cpu_stats(s: Option<&Sample>) -> Value {
    let (total, system) = s.map_or((0, 0), |s| (s.stats.cpu_usage_ns, s.system_ns));
    let (user, kernel) = s.map_or((0, 0), |s| (s.stats.cpu_user_ns, s.stats.cpu_system_ns));
    json!({
        "cpu_usage": {
            "total_usage": total,
            "usage_in_kernelmode": kernel,
            "usage_in_usermode": user,
        },
        "system_cpu_usage": system,
        "online_cpus": if s.is_some() { host::cpus() } else { 0 },
        "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
    })
}

fn render(v: &ContainerView, now: &Sample, before: Option<&Sample>) -> Value {
    let st = &now.stats;
    let limit = match v.record.config.resources.memory_limit_in_bytes {
        l if l > 0 => l as u64,
        _ => host::mem_total(),
    };
    // The CLI shows usage minus inactive file pages: the working set.
    let inactive_file = st
        .memory_usage_bytes
        .saturating_sub(st.memory_working_set_bytes);
    json!({
        "read": rfc3339_nano(now.at_ns),
        "preread": before.map_or(ZERO_TIME.to_string(), |b| rfc3339_nano(b.at_ns)),
        "pids_stats": { "current": st.pids },
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(Some(now)),
        "precpu_stats": cpu_stats(before),
        "memory_stats": {
            "usage": st.memory_usage_bytes,
            "stats": { "inactive_file": inactive_file, "anon": st.memory_rss_bytes },
            "limit": limit,
        },
        "networks": networks(now),
        "name": format!("/{}", v.name),
        "id": v.record.id,
    })
}

/// The host's CPU time in nanoseconds, from /proc/stat's `cpu` line (the
/// busy and idle ticks dockerd adds up).
fn system_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_system_cpu(&text) * 1_000_000_000 / clock_ticks()
}

fn parse_system_cpu(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .take(7)
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_cpu_adds_the_first_seven_fields() {
        let text = "cpu  10 1 2 100 3 4 5 6 0 0\ncpu0 1 1 1 1 1 1 1\n";
        assert_eq!(parse_system_cpu(text), 125);
        assert_eq!(parse_system_cpu(""), 0);
    }
}
