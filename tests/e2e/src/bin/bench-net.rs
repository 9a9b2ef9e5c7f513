//! Pod network benchmark: setup and teardown of one pod's network by the
//! default backend (in-process netlink, berthd's IPAM; no host ports),
//! interleaved with the floor measured in the same run: the same links made
//! by `ip -batch` (one batch on the host, one in the pod's namespace) and
//! removed by `ip link del`. Then 50 pods networked concurrently.
//!
//! Run with `hack/bench-net.sh` (release build, root).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use berth_e2e::bench::{ms, percentile};
use berth_net::{AttachRequest, BridgeConfig, BridgeNetwork, PodNetwork};
use berth_testkit::TestNetwork;

const RUNS: usize = 50;
const CONCURRENT: usize = 50;

/// A pinned network namespace, as berthd makes for a pod.
struct Netns {
    dir: PathBuf,
    path: PathBuf,
}

impl Netns {
    fn new(root: &std::path::Path, n: usize) -> Netns {
        let dir = root.join(format!("ns{n}"));
        let path = berth_ns::pin_netns(&dir).expect("pin netns");
        Netns { path, dir }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = berth_ns::unpin(&self.dir);
    }
}

fn ip_batch(netns: Option<&str>, commands: &str) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write batch");
    assert!(
        child.wait().expect("wait ip").success(),
        "ip -batch failed: {commands}"
    );
}

fn request(n: usize, netns: &Netns) -> AttachRequest {
    AttachRequest {
        sandbox_id: format!("{n:04x}{}", "b".repeat(60)),
        netns: netns.path.clone(),
        pod_name: format!("bench-{n}"),
        pod_namespace: "bench".into(),
        pod_uid: format!("uid-{n}"),
        ports: Vec::new(),
    }
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(berth_store::Store::open(&tmp.path().join("store")).expect("store"));
    let test_net = TestNetwork::pick(0);
    let (bridge, subnet) = (test_net.bridge.clone(), test_net.subnet);
    // A /24 leaves room for 253 pods; the floor uses the top of the range.
    let net = BridgeNetwork::open(
        BridgeConfig {
            bridge: bridge.clone(),
            subnet,
            mtu: None,
        },
        store,
    )
    .expect("open bridge network");
    let gateway = subnet.gateway();
    let base = u32::from(subnet.network());

    let (mut setup, mut teardown, mut floor_setup, mut floor_teardown) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..RUNS {
        let ns = Netns::new(tmp.path(), n);
        let req = request(n, &ns);
        let t = Instant::now();
        let attachment = net.attach(&req).expect("attach");
        setup.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        net.detach(&req.sandbox_id, Some(&ns.path), Some(&attachment))
            .expect("detach");
        teardown.push(t.elapsed().as_secs_f64());
        drop(ns);

        // The floor: `ip netns add` is not timed (berthd pins before, too).
        let name = format!("bench-floor-{}-{n}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(status.expect("ip netns add").success());
        let veth = format!("vf{}x{n}", std::process::id() % 100000);
        let ip = std::net::Ipv4Addr::from(base + 200);
        let t = Instant::now();
        ip_batch(
            None,
            &format!("link add {veth} type veth peer name eth0 netns {name}\nlink set {veth} master {bridge} up\n"),
        );
        ip_batch(
            Some(&name),
            &format!(
                "addr add {ip}/{} dev eth0\nlink set eth0 up\nroute add default via {gateway}\n",
                subnet.prefix()
            ),
        );
        floor_setup.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ip_batch(None, &format!("link del {veth}\n"));
        floor_teardown.push(t.elapsed().as_secs_f64());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }

    // Concurrent: every pod's setup at once, then every teardown.
    let pods: Vec<Netns> = (0..CONCURRENT)
        .map(|n| Netns::new(tmp.path(), 1000 + n))
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for (n, ns) in pods.iter().enumerate() {
            let net = &net;
            s.spawn(move || net.attach(&request(1000 + n, ns)).expect("attach"));
        }
    });
    let concurrent_setup = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::thread::scope(|s| {
        for (n, ns) in pods.iter().enumerate() {
            let net = &net;
            s.spawn(move || {
                let id = request(1000 + n, ns).sandbox_id;
                net.detach(&id, None, None).expect("detach")
            });
        }
    });
    let concurrent_teardown = t.elapsed().as_secs_f64();
    drop(pods);
    let left = net.leftovers().expect("leftovers");
    berth_net::remove_bridge_network(&bridge).expect("remove bridge");

    let line = |what: &str, berth: &[f64], floor: &[f64]| {
        let (b, f) = (percentile(berth, 0.5), percentile(floor, 0.5));
        println!(
            "{what:<10} berth p50 {} (p90 {})   ip -batch floor p50 {} (p90 {})   ratio {:.2}x",
            ms(b),
            ms(percentile(berth, 0.9)),
            ms(f),
            ms(percentile(floor, 0.9)),
            b / f
        );
    };
    println!("pod network, bridge backend, {RUNS} pods one at a time:");
    line("setup", &setup, &floor_setup);
    line("teardown", &teardown, &floor_teardown);
    println!(
        "{CONCURRENT} pods concurrently: setup {} wall, teardown {} wall",
        ms(concurrent_setup),
        ms(concurrent_teardown)
    );
    assert!(left.is_empty(), "left behind: {left:?}");
    println!("left behind after teardown: nothing");
}
