//! User networks through the real docker CLI: containers on one network
//! reach each other by name, short id and alias through the network's
//! DNS responder; `network connect` gives a running container an
//! interface it can use and `disconnect` takes it away; removal in use,
//! overlapping subnets, unknown and built-in networks are refused as
//! dockerd refuses them; networks outlive a SIGKILLed berthd; nothing
//! (bridge, rule, lease) is left after removal. Subnets: 10.123.x.0/24,
//! which no other test uses.

use std::process::Command;
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};

/// A /24 in 10.123/16 no host route overlaps; `n` separates the ones a
/// test takes.
fn free_subnet(n: u32) -> String {
    let routes =
        berth_net::host_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
    (0..250u32)
        .map(|i| (std::process::id().wrapping_mul(13) + n * 41 + i) % 250)
        .map(|x| format!("10.123.{x}.0/24"))
        .find(|s| {
            let subnet: berth_net::Subnet = s.parse().unwrap();
            routes.iter().all(|(_, r)| !r.overlaps(&subnet))
        })
        .expect("a free /24 in 10.123.0.0/16")
}

fn prefix_of(subnet: &str) -> String {
    subnet.trim_end_matches("0/24").to_string()
}

/// The Linux links whose names start with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Firewall rules that name `subnet`.
fn rules_naming(subnet: &str) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["nat", "filter"] {
        let dump = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .unwrap();
        out.extend(
            String::from_utf8_lossy(&dump.stdout)
                .lines()
                .filter(|l| l.contains(subnet))
                .map(str::to_string),
        );
    }
    out
}

/// Removes what a failed test left of a network on the machine.
struct NetworkGuard(Vec<String>);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = berth_net::remove_bridge_network(&berth_net::user_bridge_name(id));
        }
    }
}

fn create_network(d: &TestDaemon, guard: &mut NetworkGuard, args: &[&str]) -> String {
    let mut cmd = vec!["network", "create"];
    cmd.extend_from_slice(args);
    let id = d.docker_ok(&cmd).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    guard.0.push(id.clone());
    id
}

/// A busybox web server answering `body` on port 8080.
fn web_server(body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www")
}

/// `wget` from a fresh container on `network` until it answers.
async fn fetch(d: &TestDaemon, image: &str, network: &str, url: &str) -> String {
    eventually(
        &format!("{url} from {network}"),
        Duration::from_secs(20),
        || {
            let out = d.docker(&[
                "run",
                "--rm",
                "--network",
                network,
                image,
                "wget",
                "-q",
                "-O",
                "-",
                url,
            ]);
            (out.status == Some(0)).then_some(out.stdout)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_a_user_network_reach_each_other_by_name_and_alias() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let mut guard = NetworkGuard(Vec::new());
    let (subnet, subnet2) = (free_subnet(0), free_subnet(1));
    assert_ne!(subnet, subnet2);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();

    let id = create_network(
        &d,
        &mut guard,
        &["--subnet", &subnet, "--label", "t=net", "n1"],
    );
    let bridge = berth_net::user_bridge_name(&id);
    assert_eq!(
        links(&bridge),
        std::slice::from_ref(&bridge),
        "its own bridge"
    );
    let gateway = format!("{}1", prefix_of(&subnet));
    assert_eq!(
        d.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels}}",
            "n1",
        ])
        .trim(),
        format!("bridge {subnet} {gateway} map[t:net]")
    );

    let port = free_port();
    let published = format!("127.0.0.1:{port}:8080");
    let web = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "--network-alias",
        "www",
        "-p",
        &published,
        &image,
        "sh",
        "-c",
        &web_server("hello"),
    ]);
    let web = web.trim();
    for name in ["web", "www", &web[..12]] {
        let body = fetch(&d, &image, "n1", &format!("http://{name}:8080/")).await;
        assert_eq!(body, "hello\n", "by {name}");
    }

    // Its published port is forwarded on the network's own bridge.
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).await,
        "hello"
    );

    // `--ip`: that address, or a clear refusal and nothing made.
    let fixed_ip = format!("{}200", prefix_of(&subnet));
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "n1",
        "--ip",
        &fixed_ip,
        &image,
        "sleep",
        "600",
    ]);
    let got = d.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"n1\").IPAddress}}",
        "fixed",
    ]);
    assert_eq!(got.trim(), fixed_ip);
    let taken = d.docker(&[
        "run",
        "-d",
        "--name",
        "fixed2",
        "--network",
        "n1",
        "--ip",
        &fixed_ip,
        &image,
        "true",
    ]);
    assert!(
        taken
            .stderr
            .contains(&format!("Address already in use: {fixed_ip}")),
        "{}",
        taken.stderr
    );
    assert!(!d
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
        .contains("fixed2"));

    // A renamed container answers to its new name.
    d.docker_ok(&["rename", "fixed", "pinned"]);
    let ping = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        &image,
        "ping",
        "-c1",
        "-W2",
        "pinned",
    ]);
    assert!(ping.contains(&fixed_ip), "{ping}");
    let old = d.docker(&[
        "run",
        "--rm",
        "--network",
        "n1",
        &image,
        "ping",
        "-c1",
        "-W2",
        "fixed",
    ]);
    assert_ne!(
        old.status,
        Some(0),
        "the old name still answers: {}",
        old.stdout
    );
    d.docker_ok(&["rm", "-f", "pinned"]);

    // Inspect: the network lists the container with its address, and
    // the container the network.
    let web_ip = d.docker_ok(&[
        "inspect", "-f",
        "{{with index .NetworkSettings.Networks \"n1\"}}{{.IPAddress}} {{.Gateway}} {{.MacAddress}} {{.NetworkID}} {{.Aliases}}{{end}}",
        "web",
    ]);
    let fields: Vec<&str> = web_ip.split_whitespace().collect();
    assert!(fields[0].starts_with(&prefix_of(&subnet)), "{web_ip}");
    assert_eq!(fields[1], gateway, "{web_ip}");
    assert!(fields[2].starts_with("02:42:"), "{web_ip}");
    assert_eq!(fields[3], id, "{web_ip}");
    assert!(web_ip.contains("www"), "{web_ip}");
    let members = d.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range $id, $c := .Containers}}{{$id}} {{$c.Name}} {{$c.IPv4Address}}{{end}}",
        "n1",
    ]);
    assert_eq!(members.trim(), format!("{web} web {}/24", fields[0]));
    assert!(
        d.docker_ok(&["ps", "--format", "{{.Names}} {{.Networks}}"])
            .contains("web n1"),
        "ps NETWORKS column"
    );
    let on_n1 = d.docker_ok(&["ps", "-q", "--no-trunc", "--filter", "network=n1"]);
    assert_eq!(on_n1.trim(), web);

    // In use: refused with dockerd's reason.
    let rm = d.docker(&["network", "rm", "n1"]);
    assert_ne!(rm.status, Some(0));
    assert!(
        rm.stderr.contains(&format!(
            "error while removing network: network n1 id {id} has active endpoints"
        )),
        "{}",
        rm.stderr
    );

    // The default bridge has no name DNS.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        &image,
        "sh",
        "-c",
        &web_server("plain"),
    ]);
    let by_name = d.docker(&[
        "run",
        "--rm",
        &image,
        "wget",
        "-q",
        "-O",
        "-",
        "http://plain:8080/",
    ]);
    assert_ne!(
        by_name.status,
        Some(0),
        "resolved on the default bridge: {}",
        by_name.stdout
    );

    // Connect a running container to a second network: it gains eth1
    // and can use it; disconnect takes it away.
    let id2 = create_network(&d, &mut guard, &["--subnet", &subnet2, "n2"]);
    d.docker_ok(&["run", "-d", "--name", "sleeper", &image, "sleep", "600"]);
    d.docker_ok(&["network", "connect", "n2", "sleeper"]);
    d.docker_ok(&["network", "connect", "--alias", "w2", "n2", "web"]);
    let eth1 = d.docker_ok(&["exec", "sleeper", "ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains(&prefix_of(&subnet2)), "{eth1}");
    let web_on_n2 = d.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"n2\").IPAddress}}",
        "web",
    ]);
    let url = format!("http://{}:8080/", web_on_n2.trim());
    let body = d.docker_ok(&["exec", "sleeper", "wget", "-q", "-O", "-", &url]);
    assert_eq!(body, "hello\n");
    // Networks are isolated from each other: a container only on n1
    // cannot reach sleeper's address on n2.
    let sleeper_on_n2 = d.docker_ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"n2\").IPAddress}}",
        "sleeper",
    ]);
    let across = d.docker(&[
        "run",
        "--rm",
        "--network",
        "n1",
        &image,
        "ping",
        "-c1",
        "-W2",
        sleeper_on_n2.trim(),
    ]);
    assert_ne!(across.status, Some(0), "n1 reached n2: {}", across.stdout);
    // The network's DNS knows the alias given at connect.
    assert_eq!(fetch(&d, &image, "n2", "http://w2:8080/").await, "hello\n");
    d.docker_ok(&["network", "disconnect", "n2", "sleeper"]);
    let gone = d.docker(&["exec", "sleeper", "ip", "addr", "show", "eth1"]);
    assert_ne!(gone.status, Some(0), "eth1 still there: {}", gone.stdout);
    let left = d.docker_ok(&["network", "inspect", "-f", "{{len .Containers}}", &id2]);
    assert_eq!(left.trim(), "1", "web only");

    // Bad input: nothing made.
    let bridges_before = links("br-");
    let overlap = d.docker(&["network", "create", "--subnet", &subnet, "n3"]);
    assert_ne!(overlap.status, Some(0));
    assert!(
        overlap.stderr.contains("overlaps") && overlap.stderr.contains("n1"),
        "{}",
        overlap.stderr
    );
    let node = d.network.subnet.to_string();
    let route = d.docker(&["network", "create", "--subnet", &node, "n4"]);
    assert_ne!(route.status, Some(0));
    assert!(
        route.stderr.contains("host route") && route.stderr.contains(&d.network.bridge),
        "{}",
        route.stderr
    );
    assert_eq!(links("br-"), bridges_before, "no bridge made");
    let names = d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["bridge", "host", "n1", "n2", "none"]);
    let dup = d.docker(&["network", "create", "n1"]);
    assert!(
        dup.stderr.contains("network with name n1 already exists"),
        "{}",
        dup.stderr
    );
    let unknown = d.docker(&["network", "inspect", "nope"]);
    assert!(
        unknown.stderr.contains("network nope not found"),
        "{}",
        unknown.stderr
    );
    let run_unknown = d.docker(&["run", "--rm", "--network", "nope", &image, "true"]);
    assert!(
        run_unknown.stderr.contains("network nope not found"),
        "{}",
        run_unknown.stderr
    );
    let builtin = d.docker(&["network", "rm", "bridge"]);
    assert!(
        builtin
            .stderr
            .contains("bridge is a pre-defined network and cannot be removed"),
        "{}",
        builtin.stderr
    );
    let custom = d.docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "type=custom",
        "--no-trunc",
    ]);
    let mut custom: Vec<&str> = custom.lines().collect();
    custom.sort();
    let mut want = vec![id.as_str(), id2.as_str()];
    want.sort();
    assert_eq!(custom, want);

    // Removal leaves nothing: no bridge, no rule naming the subnets.
    d.docker_ok(&["rm", "-f", "web", "plain", "sleeper"]);
    d.docker_ok(&["network", "rm", "n1", "n2"]);
    // A second past now: the listing ends at once instead of following.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = d.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=network",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    for want in [
        "create n1",
        "connect n2",
        "disconnect n2",
        "destroy n1",
        "destroy n2",
    ] {
        assert!(events.lines().any(|l| l == want), "{want} in {events}");
    }
    assert!(links(&bridge).is_empty(), "bridge {bridge} left");
    assert!(links(&berth_net::user_bridge_name(&id2)).is_empty());
    for s in [&subnet, &subnet2] {
        assert_eq!(rules_naming(s), Vec::<String>::new(), "rules of {s}");
        assert_eq!(
            rules_naming(&prefix_of(s)),
            Vec::<String>::new(),
            "host-port rules of {s}"
        );
    }
    d.stop();
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_networks_survive_a_killed_berthd() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let mut guard = NetworkGuard(Vec::new());
    let subnet = free_subnet(2);
    let id = create_network(&d, &mut guard, &["--subnet", &subnet, "kept"]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "kept",
        &image,
        "sh",
        "-c",
        &web_server("kept"),
    ]);
    assert_eq!(
        fetch(&d, &image, "kept", "http://web:8080/").await,
        "kept\n"
    );

    d.kill9();
    d.start_again().await;
    let listed = d.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "name=kept",
        "--format",
        "{{.ID}} {{.Name}}",
    ]);
    assert_eq!(listed.trim(), format!("{} kept", &id[..12]));
    // The builtin ids are the same after a restart too.
    let bridge_id = d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "bridge"]);
    assert_eq!(bridge_id.trim(), berth_net::builtin_network_id("bridge"));
    // A container started after the restart resolves the old one, and
    // gets an address the old one does not hold.
    assert_eq!(
        fetch(&d, &image, "kept", "http://web:8080/").await,
        "kept\n"
    );

    d.docker_ok(&["rm", "-f", "web"]);
    d.docker_ok(&["network", "rm", "kept"]);
    assert!(links(&berth_net::user_bridge_name(&id)).is_empty());
    assert_eq!(rules_naming(&subnet), Vec::<String>::new());
    d.stop();
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_whose_bridge_a_reboot_removed_is_made_again_at_start() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let mut guard = NetworkGuard(Vec::new());
    let subnet = free_subnet(3);
    let id = create_network(&d, &mut guard, &["--subnet", &subnet, "boot"]);
    let bridge = berth_net::user_bridge_name(&id);

    // A reboot: berthd gone, and the bridge and its rules with it.
    d.kill9();
    berth_net::remove_bridge_network(&bridge).unwrap();
    assert!(links(&bridge).is_empty());
    assert!(rules_naming(&subnet).is_empty());
    d.start_again().await;
    assert_eq!(
        links(&bridge),
        std::slice::from_ref(&bridge),
        "bridge made again"
    );
    assert!(!rules_naming(&subnet).is_empty(), "masquerade made again");
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "boot",
        &image,
        "sh",
        "-c",
        &web_server("again"),
    ]);
    assert_eq!(
        fetch(&d, &image, "boot", "http://web:8080/").await,
        "again\n"
    );

    d.docker_ok(&["rm", "-f", "web"]);
    d.docker_ok(&["network", "prune", "-f"]);
    assert!(links(&bridge).is_empty(), "pruned");
    d.stop();
    d.assert_no_leaks();
}
