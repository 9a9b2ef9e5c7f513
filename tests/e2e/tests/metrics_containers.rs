//! Per-container metrics end to end, under cAdvisor's names: a real berthd
//! running a busy-looping container in a pod with a network, scraped over
//! HTTP, asked through CRI's `ListPodSandboxMetrics`, and scraped by a real
//! Prometheus server whose query API must see the container use a core.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_e2e::scrape::{http_get, promtool_check, series};
use berth_e2e::*;
use berth_testkit::{TestDaemon, TestRegistry};
use k8s_cri::v1 as api;

type Labels = BTreeMap<String, String>;

/// A pod `name` with one container `busy` spinning on a core.
async fn busy_pod(
    rt: &mut Runtime,
    d: &TestDaemon,
    reg: &TestRegistry,
    name: &str,
) -> (String, String) {
    let logs = d.dir().join(format!("logs/{name}"));
    let pod = run_pod(rt, pod_config(name, &logs), "").await;
    let ctr = run_container(
        rt,
        &pod,
        container_config(
            "busy",
            &reg.image("busybox"),
            &["sh", "-c", "while :; do :; done"],
        ),
    )
    .await;
    (pod, ctr)
}

async fn scrape(d: &TestDaemon) -> String {
    let answer = http_get(d.metrics_address, "/metrics", &[]).await;
    assert_eq!(answer.status, 200);
    answer.text()
}

/// The samples of `name` whose labels include every pair of `want`.
fn matching(text: &str, name: &str, want: &[(&str, &str)]) -> Vec<(Labels, f64)> {
    series(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_container_shows_under_cadvisor_names_and_goes_with_its_removal() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let (pod, ctr) = busy_pod(&mut rt, &d, &reg, "spin").await;
    let image = reg.image("busybox");
    let mine = [
        ("container", "busy"),
        ("pod", "spin"),
        ("namespace", "default"),
        ("name", ctr.as_str()),
    ];

    let first = scrape(&d).await;
    let cpu = matching(&first, "container_cpu_usage_seconds_total", &mine);
    assert_eq!(cpu.len(), 1, "one series for {ctr}:\n{first}");
    let (labels, before) = &cpu[0];
    assert_eq!(labels["image"], image);
    assert_eq!(labels["cpu"], "total");
    assert!(
        labels["id"].ends_with(&ctr) && labels["id"].starts_with('/'),
        "id is the cgroup: {labels:?}"
    );
    let started = Instant::now();
    let before = *before;
    // It spins: its CPU time rises (the snapshot is at most 1 s old).
    let risen = eventually_async(Duration::from_secs(20), || async {
        let text = scrape(&d).await;
        let now = matching(&text, "container_cpu_usage_seconds_total", &mine)
            .first()
            .map(|s| s.1)?;
        (now > before + 0.5).then_some(now)
    })
    .await;
    assert!(
        risen - before <= started.elapsed().as_secs_f64() + 1.5,
        "no more than one core: {before} -> {risen} in {:?}",
        started.elapsed()
    );

    let text = scrape(&d).await;
    for name in [
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_cpu_user_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_spec_memory_limit_bytes",
        "container_fs_usage_bytes",
        "container_fs_writes_bytes_total",
        "container_oom_events_total",
        "container_start_time_seconds",
        "container_last_seen",
    ] {
        let found = matching(&text, name, &mine);
        assert_eq!(found.len(), 1, "{name} for {ctr}:\n{text}");
        assert_eq!(found[0].0["image"], image, "{name}");
    }
    let memory = matching(&text, "container_memory_usage_bytes", &mine)[0].1;
    assert!(memory > 0.0, "memory in use: {memory}");
    let processes = matching(&text, "container_processes", &mine);
    assert_eq!(processes[0].1, 1.0, "sh alone");
    let start = matching(&text, "container_start_time_seconds", &mine)[0].1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 300.0 && start <= now,
        "started {start}, now {now}"
    );
    // The pod's network namespace, per interface, on the pod's series.
    let pod_labels = [("pod", "spin"), ("namespace", "default"), ("container", "")];
    let rx = matching(&text, "container_network_receive_bytes_total", &pod_labels);
    let eth0: Vec<_> = rx
        .iter()
        .filter(|(l, _)| l["interface"] == "eth0")
        .collect();
    assert_eq!(eth0.len(), 1, "eth0 of the pod:\n{text}");
    assert!(!matching(
        &text,
        "container_network_transmit_bytes_total",
        &[("interface", "eth0"), ("pod", "spin")]
    )
    .is_empty());
    assert!(
        !rx.iter().any(|(l, _)| l["interface"] == "lo"),
        "no loopback"
    );
    // The pod cgroup's own CPU and memory are left out (see usage_series.rs).
    assert!(
        matching(&text, "container_cpu_usage_seconds_total", &pod_labels).is_empty(),
        "no pod cgroup series:\n{text}"
    );

    let (clean, problems) = promtool_check(text.as_bytes());
    assert!(
        clean && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );

    // CRI's view: the same series names and labels for the container.
    let descriptors = rt
        .list_metric_descriptors(api::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let keys: BTreeMap<String, Vec<String>> = descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys))
        .collect();
    let text = scrape(&d).await;
    let metrics = rt
        .list_pod_sandbox_metrics(api::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("our pod in ListPodSandboxMetrics");
    let container = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == ctr)
        .expect("our container in it");
    let from_cri: BTreeSet<(String, Vec<(String, String)>)> = container
        .metrics
        .iter()
        .filter(|m| m.name.starts_with("container_cpu") || m.name.starts_with("container_memory"))
        .map(|m| {
            let labels = keys[&m.name]
                .iter()
                .cloned()
                .zip(m.label_values.iter().cloned());
            (m.name.clone(), labels.collect())
        })
        .collect();
    let from_scrape: BTreeSet<(String, Vec<(String, String)>)> = keys
        .keys()
        .filter(|n| n.starts_with("container_cpu") || n.starts_with("container_memory"))
        .flat_map(|n| {
            matching(&text, n, &[("name", ctr.as_str())])
                .into_iter()
                .map(move |(l, _)| (n.clone(), l.into_iter().collect()))
        })
        .collect();
    assert!(from_cri.len() >= 8, "{from_cri:?}");
    assert_eq!(
        from_cri, from_scrape,
        "the same series through CRI and the scrape"
    );
    assert!(
        ours.metrics
            .iter()
            .any(|m| m.name == "container_network_receive_bytes_total"),
        "the pod's network series"
    );

    // PodSandboxStats reads live, after the scrape's snapshot: counters
    // at least the scrape's, the same interfaces.
    let scraped_cpu = matching(&text, "container_cpu_usage_seconds_total", &mine)[0].1;
    let scraped_rx = matching(
        &text,
        "container_network_receive_bytes_total",
        &[("pod", "spin"), ("interface", "eth0")],
    )[0]
    .1;
    let stats = rt
        .pod_sandbox_stats(api::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux pod stats");
    let network = stats.network.expect("the pod's network usage");
    let eth0 = network.default_interface.expect("a default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value as f64 >= scraped_rx);
    let cri_cpu = stats.containers[0].cpu.as_ref().unwrap();
    let cri_cpu = cri_cpu.usage_core_nano_seconds.as_ref().unwrap().value as f64 / 1e9;
    assert!(
        cri_cpu >= scraped_cpu && cri_cpu < scraped_cpu + 10.0,
        "CRI {cri_cpu} s after the scrape's {scraped_cpu} s"
    );

    teardown(&mut rt, &pod).await;
    // Removed: gone from the very next scrape, cached snapshot or not.
    let after = scrape(&d).await;
    assert!(
        !after.contains(&ctr) && !after.contains("pod=\"spin\""),
        "{ctr} and its pod are gone:\n{after}"
    );
    d.assert_no_leaks();
}

/// Polls an async `check` every 200 ms until it answers, or panics.
async fn eventually_async<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Prometheus server of the Debian package, on loopback with its own
/// data directory, stopped (by its pid) when dropped.
struct Prometheus {
    child: Child,
    address: std::net::SocketAddr,
}

impl Prometheus {
    fn start(dir: &std::path::Path, target: std::net::SocketAddr) -> Prometheus {
        let address = free_loopback_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: berthd\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("/usr/bin/prometheus (Debian package prometheus)");
        Prometheus { child, address }
    }

    /// An instant query's first value, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        // Not listening yet: no value yet.
        tokio::net::TcpStream::connect(self.address).await.ok()?;
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let answer = http_get(self.address, &path, &[]).await;
        let json: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        let value = json["data"]["result"].get(0)?["value"][1].as_str()?;
        value.parse().ok().filter(|v: &f64| v.is_finite())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_sees_a_busy_container_and_operation_latencies() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let (pod, _) = busy_pod(&mut rt, &d, &reg, "prom").await;
    let data = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(data.path(), d.metrics_address);

    let deadline = Instant::now() + Duration::from_secs(60);
    let rate = "rate(container_cpu_usage_seconds_total{container=\"busy\",pod=\"prom\"}[5s])";
    let quantile =
        "histogram_quantile(0.9, sum by (le) (rate(berth_operation_duration_seconds_bucket{service=\"cri\"}[30s])))";
    let (mut cores, mut latency) = (None, None);
    while cores.is_none_or(|c| c <= 0.5) || latency.is_none() {
        assert!(
            Instant::now() < deadline,
            "prometheus: rate {cores:?}, p90 {latency:?}; its log:\n{}",
            std::fs::read_to_string(data.path().join("prometheus.log")).unwrap_or_default()
        );
        // Keep CRI operations coming, so the rate of buckets is not 0/0.
        rt.version(api::VersionRequest::default()).await.unwrap();
        cores = prometheus.query(rate).await;
        latency = prometheus.query(quantile).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cores, latency) = (cores.unwrap(), latency.unwrap());
    eprintln!("prometheus: busy container {cores:.3} cores, CRI p90 {latency:.4} s");
    assert!(cores <= 1.2, "one busy loop uses at most a core: {cores}");
    assert!(
        latency > 0.0 && latency < 60.0,
        "a CRI p90 latency: {latency} s"
    );
    drop(prometheus);
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_during_pod_churn_answer_and_never_show_a_removed_container() {
    const PODS: usize = 12;
    let (d, reg, _) = daemon_with(&["busybox"]).await;
    let removed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let churn = {
        let mut rt = d.runtime().await;
        let (image, logs) = (reg.image("busybox"), d.dir().join("logs"));
        let removed = removed.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for n in 0..PODS {
                let started = Instant::now();
                let name = format!("churn-{n}");
                let pod = run_pod(&mut rt, pod_config(&name, &logs.join(&name)), "").await;
                let ctr = run_container(
                    &mut rt,
                    &pod,
                    container_config("sleeper", &image, &["sleep", "3600"]),
                )
                .await;
                slowest = slowest.max(started.elapsed());
                teardown(&mut rt, &pod).await;
                removed.lock().unwrap().push((ctr, Instant::now()));
            }
            slowest
        })
    };
    let mut scrapes = 0;
    while !churn.is_finished() {
        let asked = Instant::now();
        let answer = http_get(d.metrics_address, "/metrics", &[]).await;
        assert_eq!(answer.status, 200, "a scrape during churn");
        let text = answer.text();
        for (ctr, at) in removed.lock().unwrap().iter() {
            assert!(
                *at > asked || !text.contains(ctr.as_str()),
                "{ctr}, removed before the scrape, is in it"
            );
        }
        scrapes += 1;
    }
    let slowest = churn.await.unwrap();
    assert!(scrapes >= PODS, "only {scrapes} scrapes beside {PODS} pods");
    assert!(
        slowest < Duration::from_secs(10),
        "a pod start took {slowest:?} beside the scrapes"
    );
    d.assert_no_leaks();
}
