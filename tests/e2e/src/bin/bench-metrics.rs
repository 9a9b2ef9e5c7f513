//! Metrics benchmark: berthd's idle RSS with metrics on; scrape time and
//! size with 100 running containers (each scrape a fresh usage snapshot);
//! and pod start (RunPodSandbox + CreateContainer + StartContainer) p50
//! with a scrape every second beside it and without, in alternating
//! rounds of the same run so the machine's noise hits both alike.
//!
//! Run with `hack/bench-metrics.sh` (release build).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::bench::{ms, percentile, rss_kib};
use berth_e2e::scrape::http_get;
use berth_testkit::{TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const RUNNING: usize = 100;
const SCRAPES: usize = 20;
const ROUNDS: usize = 6;
const PER_ROUND: usize = 8;
/// A little more than the core's usage snapshot lives (`USAGE_MAX_AGE`).
const SNAPSHOT_AGE: Duration = Duration::from_millis(1100);

fn pod_config(n: usize) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("bench-{n}"),
            uid: format!("uid-{n}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{n}"),
        ..Default::default()
    }
}

/// RunPodSandbox + CreateContainer + StartContainer of a busybox sleep;
/// (pod, seconds).
async fn start_pod(rt: &mut RuntimeServiceClient<Channel>, n: usize, image: &str) -> (String, f64) {
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config(n)),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    // No log file and no labels: the bench times the start, not logging.
    let config = api::ContainerConfig {
        log_path: String::new(),
        labels: Default::default(),
        ..berth_e2e::container_config("sleep", image, &["sleep", "3600"])
    };
    let ctr = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config(n)),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest { container_id: ctr })
        .await
        .expect("start");
    (pod, t.elapsed().as_secs_f64())
}

/// One scrape: (seconds, bytes, container_cpu_usage_seconds_total series).
async fn scrape(d: &TestDaemon) -> (f64, usize, usize) {
    let t = Instant::now();
    let answer = http_get(d.metrics_address, "/metrics", &[]).await;
    let took = t.elapsed().as_secs_f64();
    assert_eq!(answer.status, 200);
    let text = answer.text();
    let cpu = text
        .lines()
        .filter(|l| l.starts_with("container_cpu_usage_seconds_total{"))
        .count();
    (took, answer.body.len(), cpu)
}

/// Pod starts of one round, each pod removed after it is measured.
async fn round(rt: &mut RuntimeServiceClient<Channel>, first: usize, image: &str) -> Vec<f64> {
    let mut times = Vec::new();
    for n in first..first + PER_ROUND {
        let (pod, t) = start_pod(rt, n, image).await;
        times.push(t);
        berth_e2e::teardown(rt, &pod).await;
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let d = Arc::new(TestDaemon::start().await);
    d.images()
        .await
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull");
    let mut rt = d.runtime().await;
    let (pod, _) = start_pod(&mut rt, 9999, &image).await;
    berth_e2e::teardown(&mut rt, &pod).await;
    scrape(&d).await;
    let idle_rss = rss_kib(d.pid());

    let mut pods = Vec::new();
    for n in 0..RUNNING {
        pods.push(start_pod(&mut rt, n, &image).await.0);
    }
    let busy_rss = rss_kib(d.pid());
    let mut times = Vec::new();
    let mut sizes = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..SCRAPES {
        // Past the snapshot's age: every scrape collects afresh.
        tokio::time::sleep(SNAPSHOT_AGE).await;
        let (t, size, cpu) = scrape(&d).await;
        assert!(cpu >= RUNNING, "{cpu} cpu series for {RUNNING} containers");
        times.push(t);
        sizes.push(size);
        // At once again: the same snapshot, so this is gathering and
        // encoding alone.
        cached.push(scrape(&d).await.0);
    }
    let gz = http_get(
        d.metrics_address,
        "/metrics",
        &[("Accept-Encoding", "gzip")],
    )
    .await
    .body
    .len();

    // Pod starts with and without a scrape every second, alternating.
    let scraping = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (d, scraping) = (d.clone(), scraping.clone());
        tokio::spawn(async move {
            loop {
                if scraping.load(Ordering::SeqCst) {
                    scrape(&d).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let on = r % 2 == 1;
        scraping.store(on, Ordering::SeqCst);
        let t = round(&mut rt, 1000 + r * PER_ROUND, &image).await;
        if on { &mut with } else { &mut without }.extend(t);
    }
    scraper.abort();
    for pod in &pods {
        berth_e2e::teardown(&mut rt, pod).await;
    }

    let (p_with, p_without) = (percentile(&with, 0.5), percentile(&without, 0.5));
    println!(
        "berthd idle RSS (metrics on, one scrape): {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "berthd RSS with {RUNNING} running containers: {:.1} MiB",
        busy_rss as f64 / 1024.0
    );
    println!(
        "scrape with {RUNNING} containers, fresh snapshot each ({SCRAPES} scrapes): p50 {}, max {}; {} bytes ({gz} gzipped)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 1.0)),
        sizes[sizes.len() - 1]
    );
    println!(
        "scrape from the cached snapshot (encoding only): p50 {}",
        ms(percentile(&cached, 0.5))
    );
    println!(
        "pod start p50 beside {RUNNING} running: {} without scrapes, {} with one a second ({:+.1}%), {} starts each",
        ms(p_without),
        ms(p_with),
        (p_with / p_without - 1.0) * 100.0,
        with.len()
    );
}
