//! The alternative pod network backends end to end through the CRI:
//! standard CNI plugins (Debian's bridge + host-local + portmap, the way a
//! node joins a cluster's network) and the netavark binary. Pods reach each
//! other, the host reaches them, host ports work, and teardown leaves no
//! veth, rule or lease.

use std::process::Command;

use berth_e2e::*;
use berth_testkit::{TestDaemon, TestNetwork, TestRegistry};
use k8s_cri::v1 as api;

/// Every iptables rule that names `needle`.
fn rules_mentioning(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Two pods, one serving HTTP with a host port on 127.0.0.1, the other
/// fetching from it; returns the pod ids and addresses.
async fn two_pods_talking(
    d: &TestDaemon,
    reg: &TestRegistry,
    rt: &mut Runtime,
) -> [(String, String); 2] {
    let image = reg.image("busybox");
    let logs = d.dir().join("logs");
    let port = free_port();
    let a = run_pod(
        rt,
        with_ports(
            pod_config("be-a", &logs),
            &[(port as i32, 8080, "127.0.0.1")],
        ),
        "",
    )
    .await;
    run_container(rt, &a, web_server("hello-backend", &image)).await;
    let b = run_pod(rt, pod_config("be-b", &logs), "").await;
    let client = run_container(
        rt,
        &b,
        container_config("client", &image, &["sleep", "300"]),
    )
    .await;
    let (ip_a, ip_b) = (pod_ip(rt, &a).await, pod_ip(rt, &b).await);
    for ip in [&ip_a, &ip_b] {
        let addr: std::net::Ipv4Addr = ip.parse().expect("pod IP");
        assert!(
            d.network.subnet.contains(addr),
            "{ip} not in {}",
            d.network.subnet
        );
    }
    assert_ne!(ip_a, ip_b);
    let url = format!("http://{ip_a}:8080/");
    assert_eq!(
        exec_until_ok(rt, &client, &["wget", "-q", "-O", "-", &url]).await,
        "hello-backend"
    );
    assert_eq!(http_get(&url).await, "hello-backend");
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "hello-backend"
    );
    [(a, ip_a), (b, ip_b)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_plugins_network_pods_and_report_a_missing_plugin() {
    let net = TestNetwork::pick(700);
    let conf = tempfile::tempdir().unwrap();
    let ipam_dir = conf.path().join("ipam");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("{}-net", net.bridge),
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": true,
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": net.subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    std::fs::write(conf.path().join("10-test.conflist"), conflist.to_string()).unwrap();
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::builder()
        .network(net.clone())
        .arg("--network-backend")
        .arg("cni")
        .arg("--cni-config-dir")
        .arg(conf.path().to_str().unwrap())
        .arg("--cni-plugin-dir")
        .arg("/usr/lib/cni")
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    let cond = network_condition(&mut rt).await;
    assert!(cond.status, "{cond:?}");

    let pods = two_pods_talking(&d, &reg, &mut rt).await;
    let leases = || -> Vec<String> {
        std::fs::read_dir(ipam_dir.join(format!("{}-net", net.bridge)))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect()
    };
    assert_eq!(leases().len(), 2, "host-local holds both pods' addresses");
    for (pod, _) in &pods {
        teardown(&mut rt, pod).await;
    }
    assert!(net.veths().is_empty(), "{:?}", net.veths());
    assert!(leases().is_empty(), "{:?}", leases());
    for (_, ip) in &pods {
        let left = rules_mentioning(ip);
        assert!(left.is_empty(), "rules left for {ip}: {left:?}");
    }

    // A config naming a plugin that is not installed: NetworkReady false
    // with the reason, and a pod fails cleanly.
    let bad = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bad", "plugins": [{ "type": "nosuchplugin" }]
    });
    std::fs::write(conf.path().join("00-bad.conflist"), bad.to_string()).unwrap();
    let cond = network_condition(&mut rt).await;
    assert!(!cond.status);
    assert_eq!(cond.reason, "NetworkPluginNotReady");
    assert!(cond.message.contains("nosuchplugin"), "{}", cond.message);
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config("doomed", &d.dir().join("logs"))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("nosuchplugin"), "{}", e.message());
    std::fs::remove_file(conf.path().join("00-bad.conflist")).unwrap();
    assert!(network_condition(&mut rt).await.status);
    d.assert_no_leaks();
    drop(d);
    let left = rules_mentioning(&net.subnet.to_string());
    assert!(left.is_empty(), "rules left for the subnet: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netavark_networks_pods_and_tears_down_to_nothing() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::builder()
        .arg("--network-backend")
        .arg("netavark")
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    assert!(network_condition(&mut rt).await.status);
    let subnet = d.network.subnet.to_string();
    let pods = two_pods_talking(&d, &reg, &mut rt).await;
    for (pod, _) in &pods {
        teardown(&mut rt, pod).await;
    }
    for (_, ip) in &pods {
        let left = rules_mentioning(ip);
        assert!(left.is_empty(), "rules left for {ip}: {left:?}");
    }
    // netavark removes the bridge with its last pod.
    let bridge = Command::new("ip")
        .args(["link", "show", &d.network.bridge])
        .output()
        .unwrap();
    assert!(
        !bridge.status.success(),
        "bridge {} still there",
        d.network.bridge
    );
    d.assert_no_leaks();
    drop(d);
    let left = rules_mentioning(&subnet);
    assert!(left.is_empty(), "rules left for the subnet: {left:?}");
}
