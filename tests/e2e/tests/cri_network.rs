//! Pod networking end to end through the CRI: pods on the daemon's own
//! test bridge reach each other, the host reaches them, host ports on
//! 127.0.0.1 reach them, host-network pods see the node's interfaces, and
//! after teardown (also across a kill -9 of berthd) no veth, firewall rule
//! or lease is left (the TestDaemon leak check, then the bridge removal).

use std::net::TcpListener;
use std::process::Command;

use berth_e2e::*;
use berth_testkit::{TestDaemon, TestNetwork};
use k8s_cri::v1 as api;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_the_host_reaches_them_and_host_ports_work() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let logs = d.dir().join("logs");
    let net = d.network.clone();
    let cond = network_condition(&mut rt).await;
    assert!(cond.status, "NetworkReady: {cond:?}");

    let port = free_port();
    let mut config_a = with_ports(
        pod_config("net-a", &logs),
        &[(port as i32, 8080, "127.0.0.1")],
    );
    config_a.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let a = run_pod(&mut rt, config_a, "").await;
    let web = run_container(&mut rt, &a, web_server("hello-from-a", &image)).await;
    let b = run_pod(&mut rt, pod_config("net-b", &logs), "").await;
    let client = run_container(
        &mut rt,
        &b,
        container_config("client", &image, &["sleep", "300"]),
    )
    .await;

    let (ip_a, ip_b) = (pod_ip(&mut rt, &a).await, pod_ip(&mut rt, &b).await);
    for ip in [&ip_a, &ip_b] {
        let addr: std::net::Ipv4Addr = ip.parse().expect("pod IP");
        assert!(net.subnet.contains(addr), "{ip} not in {}", net.subnet);
    }
    assert_ne!(ip_a, ip_b);
    assert_eq!(net.veths().len(), 2, "one veth per pod on {}", net.bridge);

    // Inside: eth0 carries the reported address, the default route is the bridge.
    let addrs = exec_out(&mut rt, &web, &["ip", "-o", "-4", "addr", "show", "eth0"]).await;
    assert!(addrs.contains(&format!("{ip_a}/24")), "{addrs}");
    let route = exec_out(&mut rt, &web, &["ip", "route"]).await;
    assert!(
        route.contains(&format!("default via {}", net.subnet.gateway())),
        "{route}"
    );
    let resolv = exec_out(&mut rt, &web, &["cat", "/etc/resolv.conf"]).await;
    assert_eq!(
        resolv,
        "nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5"
    );
    let hosts = exec_out(&mut rt, &web, &["cat", "/etc/hosts"]).await;
    assert!(hosts.contains(&format!("{ip_a}\tnet-a")), "{hosts}");

    // Pod to pod, host to pod, and the host port on 127.0.0.1.
    let url_a = format!("http://{ip_a}:8080/");
    let got = exec_until_ok(&mut rt, &client, &["wget", "-q", "-O", "-", &url_a]).await;
    assert_eq!(got, "hello-from-a");
    assert_eq!(http_get(&url_a).await, "hello-from-a");
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "hello-from-a"
    );
    // The host port is held: nobody else can bind it while the pod lives.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_err());

    // Stop releases the network at once; the pod is still listed.
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: a.clone(),
    })
    .await
    .unwrap();
    assert_eq!(net.veths().len(), 1, "pod a's veth is gone");
    assert!(
        net.pod_rules().is_empty(),
        "host-port rules: {:?}",
        net.pod_rules()
    );
    assert_eq!(pod_ip(&mut rt, &a).await, "");
    TcpListener::bind(("127.0.0.1", port)).expect("the host port is free again");
    teardown(&mut rt, &a).await;
    teardown(&mut rt, &b).await;
    assert!(net.veths().is_empty());
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_see_the_node_and_get_no_pod_ip() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let pod = run_pod(
        &mut rt,
        host_network(pod_config("hostnet", &d.dir().join("logs"))),
        "",
    )
    .await;
    let c = run_container(
        &mut rt,
        &pod,
        container_config("c", &image, &["sleep", "300"]),
    )
    .await;
    let links = exec_out(&mut rt, &c, &["cat", "/proc/net/dev"]).await;
    // The node's own bridge is visible only from the node's namespace.
    assert!(links.contains(&format!("{}:", d.network.bridge)), "{links}");
    assert_eq!(pod_ip(&mut rt, &pod).await, "");
    assert!(d.network.veths().is_empty());
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_survive_a_kill9_and_teardown_after_restart_leaves_nothing() {
    let (mut d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let logs = d.dir().join("logs");
    let port = free_port();
    let pod = run_pod(
        &mut rt,
        with_ports(
            pod_config("survivor", &logs),
            &[(port as i32, 8080, "127.0.0.1")],
        ),
        "",
    )
    .await;
    run_container(&mut rt, &pod, web_server("still-here", &image)).await;
    let ip = pod_ip(&mut rt, &pod).await;
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "still-here"
    );

    d.kill9();
    // The pod keeps serving while berthd is down.
    assert_eq!(http_get(&format!("http://{ip}:8080/")).await, "still-here");
    d.start_again().await;
    let mut rt = d.runtime().await;
    assert_eq!(pod_ip(&mut rt, &pod).await, ip);
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "still-here"
    );
    // The restarted daemon holds the host port again.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_err());
    // A second pod never gets the first one's address.
    let other = run_pod(&mut rt, pod_config("newcomer", &logs), "").await;
    assert_ne!(pod_ip(&mut rt, &other).await, ip);
    teardown(&mut rt, &pod).await;
    teardown(&mut rt, &other).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_host_port_fails_the_pod_and_leaves_nothing() {
    let (d, _reg, mut rt) = daemon_with(&[]).await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port() as i32;
    let logs = d.dir().join("logs");
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(with_ports(
                pod_config("clash", &logs),
                &[(port, 80, "127.0.0.1")],
            )),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(
        e.message().contains(&format!("127.0.0.1:{port}/tcp")),
        "{}",
        e.message()
    );
    let bad = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(with_ports(
                pod_config("badip", &logs),
                &[(8081, 80, "not-an-ip")],
            )),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let pods = list_pods(&mut rt).await;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(d.network.veths().is_empty());
    // The same name works once the port is free: nothing half-made held it.
    drop(taken);
    let pod = run_pod(
        &mut rt,
        with_ports(pod_config("clash", &logs), &[(port, 80, "127.0.0.1")]),
        "",
    )
    .await;
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_subnet_or_bad_backend_is_a_start_up_error() {
    let first = TestDaemon::start().await;
    // The first daemon's bridge route now covers its subnet.
    let log = TestDaemon::builder()
        .arg("--pod-subnet")
        .arg(&first.network.subnet.to_string())
        .start_failure();
    assert!(
        log.contains(&format!("overlaps the host route {}", first.network.subnet))
            && log.contains(&first.network.bridge),
        "{log}"
    );
    let log = TestDaemon::builder()
        .arg("--network-backend")
        .arg("calico")
        .start_failure();
    assert!(
        log.contains("\"calico\" is not one of bridge, netavark, cni, none"),
        "{log}"
    );
    let log = TestDaemon::builder()
        .arg("--pod-subnet")
        .arg("10.214.0.1/24")
        .start_failure();
    assert!(log.contains("did you mean 10.214.0.0/24"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_network_backend_pods_get_loopback_and_network_ready_is_false() {
    let d = TestDaemon::builder()
        .arg("--network-backend")
        .arg("none")
        .start()
        .await;
    let mut rt = d.runtime().await;
    let cond = network_condition(&mut rt).await;
    assert!(!cond.status);
    assert_eq!(cond.reason, "NoPodNetwork");
    let pod = run_pod(&mut rt, pod_config("lonely", &d.dir().join("logs")), "").await;
    assert_eq!(pod_ip(&mut rt, &pod).await, "");
    assert!(Command::new("ip")
        .args(["link", "show", &d.network.bridge])
        .output()
        .map(|o| !o.status.success())
        .unwrap());
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_pod_cidr_is_adopted_while_no_pod_is_attached() {
    let (d, _reg, mut rt) = daemon_with(&[]).await;
    let logs = d.dir().join("logs");
    let cidr = (900..)
        .map(|n| TestNetwork::pick(n).subnet)
        .find(|s| *s != d.network.subnet)
        .unwrap();
    let update = |cidr: String| api::UpdateRuntimeConfigRequest {
        runtime_config: Some(api::RuntimeConfig {
            network_config: Some(api::NetworkConfig { pod_cidr: cidr }),
        }),
    };
    rt.update_runtime_config(update(cidr.to_string()))
        .await
        .unwrap();
    let pod = run_pod(&mut rt, pod_config("cidr", &logs), "").await;
    let ip: std::net::Ipv4Addr = pod_ip(&mut rt, &pod).await.parse().unwrap();
    assert!(cidr.contains(ip), "{ip} not in {cidr}");
    // Moving the network under a live pod is refused, with the reason.
    let e = rt
        .update_runtime_config(update(d.network.subnet.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("1 pod(s) attached"), "{}", e.message());
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}
