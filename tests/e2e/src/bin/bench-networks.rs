//! User network benchmark: the docker CLI against berthd, each figure
//! beside its floor measured in the same run, interleaved round by round:
//! - `network create`, `run -d --network`, `network connect`,
//!   `network disconnect`, `network rm`, beside the CLI's own start-up
//!   (`docker ps` against a socket nobody serves) and `run -d` on the
//!   default bridge (the same container without a user network);
//! - a name lookup on a user network (the network's DNS responder) beside
//!   a lookup of the same address by a name in the container's
//!   /etc/hosts: `ping -c1` of each name many times in one `docker exec`
//!   (busybox has no nslookup; ping's round trip is in both), so the
//!   difference per iteration is the lookup's cost;
//! - the responder's round trip from the host (a UDP A query for the
//!   container's name), beside the same query to a UDP echo on loopback.
//!
//! Run with `hack/bench-networks.sh`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::bench::{ms, percentile};
use berth_testkit::{TestDaemon, TestRegistry};

const ROUNDS: usize = 15;
const LOOKUPS: usize = 300;
const QUERIES: usize = 2000;

/// Seconds as microseconds.
fn us(v: f64) -> String {
    format!("{:.0} µs", v * 1e6)
}

fn p50(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Seconds `docker args` took against `d`; it must succeed.
fn time(d: &TestDaemon, args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = d
        .docker_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// A DNS query for `name`'s A record, id `id`.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Round trips of `QUERIES` A queries to `server`, seconds each.
fn query_times(server: SocketAddr, name: &str) -> Vec<f64> {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    (0..QUERIES)
        .map(|i| {
            let q = a_query(i as u16, name);
            let t = Instant::now();
            sock.send_to(&q, server).unwrap();
            let (n, _) = sock.recv_from(&mut buf).expect("an answer");
            assert!(n >= 12 && buf[..2] == q[..2], "a reply to query {i}");
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// A UDP echo on loopback: the floor of any UDP round trip here.
fn echo_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
    addr
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let work = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start().await;
    d.docker_ok(&["pull", &image]);
    let nobody = format!("unix://{}", work.path().join("nobody.sock").display());

    // Lifecycle figures, interleaved with their floors.
    let (mut cli, mut run_default) = (Vec::new(), Vec::new());
    let (mut create, mut run_net, mut connect, mut disconnect, mut rm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    d.docker_ok(&["run", "-d", "--name", "other", &image, "sleep", "600"]);
    for round in 0..ROUNDS {
        let t = Instant::now();
        let _ = Command::new("docker")
            .env("DOCKER_HOST", &nobody)
            .args(["ps"])
            .output();
        cli.push(t.elapsed().as_secs_f64());
        let name = format!("bench{round}");
        create.push(time(&d, &["network", "create", &name]));
        let ctr = format!("c{round}");
        run_net.push(time(
            &d,
            &[
                "run",
                "-d",
                "--name",
                &ctr,
                "--network",
                &name,
                &image,
                "sleep",
                "600",
            ],
        ));
        let plain = format!("p{round}");
        run_default.push(time(
            &d,
            &["run", "-d", "--name", &plain, &image, "sleep", "600"],
        ));
        connect.push(time(&d, &["network", "connect", &name, "other"]));
        disconnect.push(time(&d, &["network", "disconnect", &name, "other"]));
        d.docker_ok(&["rm", "-f", &ctr, &plain]);
        rm.push(time(&d, &["network", "rm", &name]));
    }
    d.docker_ok(&["rm", "-f", "other"]);

    // Lookups: the same address by DNS and by /etc/hosts.
    let net = d.docker_ok(&["network", "create", "lookups"]);
    let gateway = d.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        "lookups",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "target",
        "--network",
        "lookups",
        &image,
        "sleep",
        "600",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "asker",
        "--network",
        "lookups",
        &image,
        "sleep",
        "600",
    ]);
    let target_ip = d.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"lookups\").IPAddress}}",
        "target",
    ]);
    let target_ip = target_ip.trim();
    // Files first, then DNS, as glibc's usual nsswitch.conf says.
    d.docker_ok(&[
        "exec", "asker", "sh", "-c",
        &format!("echo 'hosts: files dns' > /etc/nsswitch.conf && echo '{target_ip} inhosts' >> /etc/hosts"),
    ]);
    let lookup_loop = |name: &str| {
        format!("i=0; while [ $i -lt {LOOKUPS} ]; do ping -c1 -W1 {name} >/dev/null || exit 1; i=$((i+1)); done")
    };
    let (mut by_dns, mut by_hosts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        by_dns.push(
            time(&d, &["exec", "asker", "sh", "-c", &lookup_loop("target")]) / LOOKUPS as f64,
        );
        by_hosts.push(
            time(&d, &["exec", "asker", "sh", "-c", &lookup_loop("inhosts")]) / LOOKUPS as f64,
        );
    }
    let responder: SocketAddr = format!("{}:53", gateway.trim()).parse().unwrap();
    let echo = echo_server();
    let (mut dns_rtt, mut echo_rtt) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        dns_rtt.extend(query_times(responder, "target"));
        echo_rtt.extend(query_times(echo, "target"));
    }
    d.docker_ok(&["rm", "-f", "target", "asker"]);
    d.docker_ok(&["network", "rm", net.trim()]);
    d.stop();
    d.assert_no_leaks();

    let cli = p50(&cli);
    println!(
        "docker CLI start-up (socket nobody serves, p50 of {ROUNDS}): {}",
        ms(cli)
    );
    println!("p50 of {ROUNDS} rounds, berth's part beyond the CLI in brackets:");
    let row = |what: &str, v: &[f64]| {
        let p = p50(v);
        println!("  {what:<34} {:>9}  ({})", ms(p), ms((p - cli).max(0.0)));
        p
    };
    row("network create", &create);
    let on_net = row("run -d --network NAME", &run_net);
    let on_default = row("run -d (default bridge, floor)", &run_default);
    row("network connect (running)", &connect);
    row("network disconnect", &disconnect);
    row("network rm", &rm);
    println!(
        "  run on a user network / on the default bridge: {:.2}x",
        (on_net - cli) / (on_default - cli)
    );
    let (dns, hosts) = (p50(&by_dns), p50(&by_hosts));
    println!(
        "name lookup + ping -c1 inside the container, per iteration ({LOOKUPS} per exec, p50 of 3 execs):"
    );
    println!("  by the network's DNS           {}", us(dns));
    println!("  by /etc/hosts (floor)          {}", us(hosts));
    println!(
        "  DNS lookup's own cost: {} per lookup, ratio {:.2}x",
        us((dns - hosts).max(0.0)),
        dns / hosts
    );
    let (q, e) = (p50(&dns_rtt), p50(&echo_rtt));
    println!(
        "responder round trip from the host, p50 / p99 of {}: {} / {}; UDP echo on loopback (floor): {} / {}; ratio {:.2}x",
        dns_rtt.len(),
        us(q),
        us(percentile(&dns_rtt, 0.99)),
        us(e),
        us(percentile(&echo_rtt, 0.99)),
        q / e
    );
}
