//! `/metrics` end to end: a real berthd with a pod and a running container
//! made through CRI and a Docker API call, scraped over HTTP as Prometheus
//! scrapes it, and the live scrape checked by `promtool check metrics`.

use std::io::Read;
use std::time::Duration;

use berth_e2e::scrape::{http_get, promtool_check, sample, Answer};
use berth_e2e::*;
use berth_testkit::TestDaemon;

/// `GET path` of berthd's metrics listener.
async fn get(d: &TestDaemon, path: &str, headers: &[(&str, &str)]) -> Answer {
    http_get(d.metrics_address, path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_operations_objects_build_and_process_and_passes_promtool() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let logs = d.dir().join("logs/scrape");
    let pod = run_pod(&mut rt, pod_config("scrape", &logs), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("sleeper", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    // A refused call: its code is counted too.
    let missing = rt
        .container_status(k8s_cri::v1::ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .expect_err("an unknown container");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    d.docker_ok(&["ps"]);
    // One exec session through the streaming server, as kubectl makes it.
    let url = exec_url(
        &mut rt,
        k8s_cri::v1::ExecRequest {
            container_id: ctr.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    let opts = k8s::StreamOptions {
        stdin: false,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let session = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, opts)
        .await
        .expect("upgrade");
    assert_eq!(
        session
            .wait(Duration::from_secs(10))
            .await
            .unwrap()
            .exit_code,
        0
    );
    // The server records a session when its side of it ends.
    let exec_sessions = "berth_operations_total{code=\"OK\",operation=\"exec\",service=\"stream\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(&get(&d, "/metrics", &[]).await.text(), exec_sessions) != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "no {exec_sessions}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let scrape = get(&d, "/metrics", &[]).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = scrape.text();

    for op in [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "PullImage",
    ] {
        let count =
            format!("berth_operations_total{{code=\"OK\",operation=\"{op}\",service=\"cri\"}}");
        assert_eq!(sample(&text, &count), Some(1.0), "{count} in:\n{text}");
        let histogram =
            format!("berth_operation_duration_seconds_count{{operation=\"{op}\",service=\"cri\"}}");
        assert_eq!(sample(&text, &histogram), Some(1.0), "{histogram}");
        let inf = format!(
            "berth_operation_duration_seconds_bucket{{operation=\"{op}\",service=\"cri\",le=\"+Inf\"}}"
        );
        assert_eq!(sample(&text, &inf), Some(1.0), "{inf}");
    }
    assert_eq!(
        sample(
            &text,
            "berth_operations_total{code=\"NotFound\",operation=\"ContainerStatus\",service=\"cri\"}"
        ),
        Some(1.0),
        "the refused ContainerStatus"
    );
    // The Docker CLI's `ps`: its ping and its list, by route name.
    assert_eq!(
        sample(
            &text,
            "berth_operations_total{code=\"200\",operation=\"ContainerList\",service=\"docker\"}"
        ),
        Some(1.0),
        "docker ps in:\n{text}"
    );
    assert!(
        !text.contains("operation=\"/"),
        "no raw path as an operation"
    );

    assert_eq!(
        sample(
            &text,
            "berth_sandboxes{owner=\"kubernetes\",state=\"ready\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "berth_sandboxes{owner=\"docker\",state=\"ready\"}"),
        Some(0.0),
        "every pair is listed"
    );
    assert_eq!(
        sample(
            &text,
            "berth_containers{owner=\"kubernetes\",state=\"running\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "berth_pod_start_duration_seconds_count{runtime_handler=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "berth_container_start_duration_seconds_count{runtime_handler=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "berth_image_pulls_total{reason=\"\",result=\"success\"}"
        ),
        Some(1.0)
    );
    let fetched = sample(&text, "berth_image_pull_bytes_total{cached=\"false\"}");
    assert!(
        fetched.is_some_and(|b| b > 0.0),
        "layer bytes fetched: {fetched:?}"
    );
    assert_eq!(
        sample(&text, "berth_monitor_exits_unexpected_total"),
        Some(0.0)
    );

    let build = text
        .lines()
        .find(|l| l.starts_with("berth_build_info{"))
        .expect("berth_build_info");
    assert!(build.ends_with("} 1"), "{build}");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(
        build.contains("commit=\"") && build.contains("rustc=\"rustc "),
        "{build}"
    );

    let rss = sample(&text, "process_resident_memory_bytes").expect("process RSS");
    let own_rss = berth_e2e::bench::rss_kib(d.pid()) as f64 * 1024.0;
    assert!(
        rss > 1e6 && (rss - own_rss).abs() < 8.0 * 1024.0 * 1024.0,
        "berthd's RSS: scraped {rss}, /proc says {own_rss}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&text, name).is_some(), "{name} in:\n{text}");
    }

    let (clean, problems) = promtool_check(&scrape.body);
    assert!(
        clean && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );

    teardown(&mut rt, &pod).await;
    let after = get(&d, "/metrics", &[]).await.text();
    assert_eq!(
        sample(
            &after,
            "berth_sandboxes{owner=\"kubernetes\",state=\"ready\"}"
        ),
        Some(0.0),
        "the census is taken at scrape time"
    );
    assert_eq!(
        sample(
            &after,
            "berth_containers{owner=\"kubernetes\",state=\"running\"}"
        ),
        Some(0.0),
        "{ctr} went with its pod"
    );
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_gzip_and_unknown_paths() {
    let d = TestDaemon::start().await;

    // Prometheus' own Accept header.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = get(&d, "/metrics", &[("Accept", accept)]).await;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = om.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE berth_monitor_exits_unexpected counter\n")
            && text.contains("\nberth_monitor_exits_unexpected_total 0\n"),
        "a counter's family without _total, its sample with it:\n{text}"
    );

    let zipped = get(&d, "/metrics", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_string(&mut unzipped)
        .expect("a gzip body");
    assert!(unzipped.contains("\nberth_build_info{"), "{unzipped}");
    let plain = get(&d, "/metrics", &[]).await;
    assert_eq!(plain.header("content-encoding"), None, "no gzip unasked");
    assert!(zipped.body.len() < plain.body.len());

    for path in ["/", "/metric", "/metrics/x", "/v1/metrics"] {
        let answer = get(&d, path, &[]).await;
        assert_eq!(answer.status, 404, "{path}");
    }
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_address_turns_metrics_off() {
    let d = TestDaemon::builder()
        .arg("--metrics-address")
        .arg("")
        .start()
        .await;
    assert!(
        std::net::TcpStream::connect(d.metrics_address).is_err(),
        "nothing listens on {}",
        d.metrics_address
    );
    assert!(!d.log().contains("serving metrics"), "{}", d.log());
}
