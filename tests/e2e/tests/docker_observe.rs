//! Watching and looking into containers through the Docker API, end to
//! end: the real docker CLI (v28) against a real berthd, on containers
//! Kubernetes made through the CRI (`docker events`, `stats`, `top`,
//! `diff`, `cp`, `system df`).

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};
use k8s_cri::v1 as api;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A pod with one busybox container running `cmd`; returns (pod, id,
/// the name docker shows).
async fn pod_with(
    d: &TestDaemon,
    rt: &mut Runtime,
    image: &str,
    pod_name: &str,
    cmd: &[&str],
) -> (String, String, String) {
    let logs = d.dir().join("logs").join(pod_name);
    let pod = run_pod(rt, pod_config(pod_name, &logs), "").await;
    let ctr = run_container(rt, &pod, container_config("main", image, cmd)).await;
    let name = format!("k8s_main_{pod_name}_default_uid-{pod_name}_0");
    (pod, ctr, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replay_a_kubernetes_containers_life_and_stream_new_ones() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let since = format!("{:.3}", unix_now() - 1.0);
    let (pod, ctr, name) = pod_with(&d, &mut rt, &image, "ev", &["sh", "-c", "exit 3"]).await;
    wait_state(&mut rt, &ctr, api::ContainerState::ContainerExited).await;

    // Past events only: `until` is already reached, so the CLI returns at
    // once. The exit is recorded a moment before its event: poll.
    let past = eventually(
        "docker events to show the die",
        Duration::from_secs(10),
        || {
            let until = format!("{:.3}", unix_now());
            let out = d.docker_ok(&[
                "events",
                "--since",
                &since,
                "--until",
                &until,
                "--filter",
                &format!("container={name}"),
                "--format",
                "{{.Type}} {{.Action}} {{.Actor.ID}} {{index .Actor.Attributes \"exitCode\"}}",
            ]);
            out.contains(" die ").then_some(out)
        },
    )
    .await;
    let actions: Vec<&str> = past
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(actions, ["create", "start", "die"], "{past}");
    for line in past.lines() {
        let action = line.split(' ').nth(1).unwrap_or_default();
        assert!(
            line.starts_with(&format!("container {action} {ctr}")),
            "{past}"
        );
    }
    assert!(
        past.lines().last().unwrap().ends_with(" 3"),
        "die without exitCode 3: {past}"
    );

    // A future `until`: the stream stays open until then, and ends.
    let started = std::time::Instant::now();
    let until = format!("{:.3}", unix_now() + 1.5);
    let bounded = d.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={ctr}"),
    ]);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "ended early"
    );
    assert_eq!(bounded.lines().count(), 3, "{bounded}");

    // A live stream sees a container made after it started. It replays
    // the first container's events first: once they are out, the stream
    // is subscribed (replay and subscription are one step on the bus).
    let out_path = d.dir().join("events.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = d
        .docker_command()
        .args(["events", "--since", &since, "--filter", "type=container"])
        .args(["--format", "{{.Action}} {{.Actor.ID}}"])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        "docker events to replay the past",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            text.contains(&format!("die {ctr}")).then_some(())
        },
    )
    .await;
    let second = run_container(
        &mut rt,
        &pod,
        container_config("second", &image, &["sleep", "60"]),
    )
    .await;
    let seen = eventually(
        "docker events to show the new container",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            text.contains(&format!("start {second}")).then_some(text)
        },
    )
    .await;
    assert!(seen.contains(&format!("create {second}")), "{seen}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A bad filter is refused with dockerd's words.
    let bad = d.docker(&["events", "--filter", "bogus=1", "--until", "0"]);
    assert_ne!(bad.status, Some(0));
    assert!(
        bad.stderr.contains("Invalid filter 'bogus'"),
        "{}",
        bad.stderr
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_top_diff_and_df_look_into_a_kubernetes_container() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, ctr, name) = pod_with(
        &d,
        &mut rt,
        &image,
        "look",
        &["sh", "-c", "while :; do :; done"],
    )
    .await;

    // CPU% and memory parse; a busy loop shows CPU above zero.
    let line = eventually(
        "docker stats to show CPU use",
        Duration::from_secs(20),
        || {
            let out = d.docker_ok(&[
                "stats",
                "--no-stream",
                "--format",
                "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}",
                &name,
            ]);
            let cpu: f64 = out.split('|').nth(1)?.trim_end_matches('%').parse().ok()?;
            (cpu > 0.0).then_some(out)
        },
    )
    .await;
    let fields: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(fields[0], name, "{line}");
    let (used, limit) = fields[2].split_once(" / ").expect("usage / limit");
    assert!(used.ends_with("iB") || used.ends_with('B'), "{line}");
    assert!(limit.ends_with("GiB") || limit.ends_with("MiB"), "{line}");
    assert!(
        fields[3].trim_end_matches('%').parse::<f64>().is_ok(),
        "{line}"
    );

    // The busy loop spends its CPU in user mode, and the split adds up.
    let raw = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", "--unix-socket"])
        .arg(d.docker_socket())
        .arg(format!(
            "http://d/v1.41/containers/{name}/stats?stream=false"
        ))
        .output()
        .expect("curl");
    let stats: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("stats JSON");
    let usage = &stats["cpu_stats"]["cpu_usage"];
    let (total, user, kernel) = (
        usage["total_usage"].as_u64().unwrap(),
        usage["usage_in_usermode"].as_u64().unwrap(),
        usage["usage_in_kernelmode"].as_u64().unwrap(),
    );
    assert!(user > kernel, "{usage}");
    assert_eq!(user + kernel, total, "{usage}");

    // Network counters from the pod's namespace: a ping is sent.
    let gateway = d.docker_ok(&["inspect", "--format", "{{.NetworkSettings.Gateway}}", &name]);
    exec(
        &mut rt,
        &ctr,
        &["ping", "-c", "1", "-W", "1", gateway.trim()],
    )
    .await;
    let net = d.docker_ok(&["stats", "--no-stream", "--format", "{{.NetIO}}", &name]);
    let (_, sent) = net.trim().split_once(" / ").expect("rx / tx");
    assert_ne!(sent, "0B", "no bytes sent from the pod's namespace: {net}");

    // top: the container's process and nothing of the host's.
    let top = d.docker_ok(&["top", &name]);
    let mut lines = top.lines();
    assert!(lines.next().unwrap().contains("PID"), "{top}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{top}");
    assert!(rows[0].contains("while :; do :; done"), "{top}");
    let pid = status_pid(&d, &name);
    assert!(
        rows[0].split_whitespace().any(|f| f == pid),
        "{top} lacks pid {pid}"
    );

    // diff: an added tree, a changed file, a deleted one.
    exec_out(
        &mut rt,
        &ctr,
        &[
            "sh",
            "-c",
            "mkdir /added && echo x > /added/f && echo y >> /etc/group && rm /bin/uname && rm -rf /home && mkdir /home",
        ],
    )
    .await;
    let diff = d.docker_ok(&["diff", &name]);
    for want in [
        "A /added",
        "A /added/f",
        "C /etc",
        "C /etc/group",
        "D /bin/uname",
        "C /home",
        "D /home/app",
    ] {
        assert!(
            diff.lines().any(|l| l == want),
            "{want:?} missing from:\n{diff}"
        );
    }
    // The runtime's placeholders for the pod's bind-mounted files are not
    // the container's changes (dockerd keeps them in its init layer).
    assert!(!diff.contains("/etc/hosts"), "{diff}");
    assert_eq!(diff.lines().count(), 8, "{diff}");

    // system df counts the image and the container.
    let df = d.docker_ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(df.lines().any(|l| l == "Images 1 1"), "{df}");
    assert!(df.lines().any(|l| l == "Containers 1 1"), "{df}");
    assert!(df.lines().any(|l| l.starts_with("Local Volumes 0")), "{df}");

    teardown(&mut rt, &pod).await;
    let gone = d.docker(&["top", &name]);
    assert!(gone.stderr.contains("No such container"), "{}", gone.stderr);
    d.assert_no_leaks();
}

fn status_pid(d: &TestDaemon, name: &str) -> String {
    d.docker_ok(&["inspect", "--format", "{{.State.Pid}}", name])
        .trim()
        .to_string()
}

/// One ustar entry, names written as given (`..` included).
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, mode: u32, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_copies_both_ways_and_never_writes_outside_the_rootfs() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let (pod, ctr, name) = pod_with(&d, &mut rt, &image, "cp", &["sleep", "3600"]).await;
    let host = d.dir().join("cp-host");
    std::fs::create_dir_all(&host).unwrap();

    // Into the container: content and mode kept.
    let script = host.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    d.docker_ok(&["cp", script.to_str().unwrap(), &format!("{name}:/tmp/")]);
    assert_eq!(
        exec_out(&mut rt, &ctr, &["cat", "/tmp/run.sh"])
            .await
            .trim_end(),
        "#!/bin/sh\necho hi"
    );
    assert_eq!(
        exec_out(&mut rt, &ctr, &["stat", "-c", "%a", "/tmp/run.sh"])
            .await
            .trim(),
        "751"
    );

    // Out of it: a file and a directory.
    let out = host.join("out");
    std::fs::create_dir_all(&out).unwrap();
    exec_out(
        &mut rt,
        &ctr,
        &[
            "sh",
            "-c",
            "mkdir -p /data/sub && echo deep > /data/sub/f && chmod 640 /data/sub/f",
        ],
    )
    .await;
    d.docker_ok(&["cp", &format!("{name}:/data"), out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("data/sub/f")).unwrap(),
        "deep\n"
    );
    let mode = std::fs::metadata(out.join("data/sub/f"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o640
    );
    d.docker_ok(&["cp", &format!("{name}:/tmp/run.sh"), out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("run.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );

    // A larger tree streams whole, and an exited container's files are
    // still there to copy (its root stays mounted until removal).
    let done = run_container(
        &mut rt,
        &pod,
        container_config(
            "done",
            &image,
            &["sh", "-c", "mkdir /r && dd if=/dev/urandom of=/r/big bs=1024 count=600 && cat /r/big > /r/copy"],
        ),
    )
    .await;
    wait_state(&mut rt, &done, api::ContainerState::ContainerExited).await;
    let done_name = "k8s_done_cp_default_uid-cp_0";
    d.docker_ok(&["cp", &format!("{done_name}:/r"), out.to_str().unwrap()]);
    let big = std::fs::read(out.join("r/big")).unwrap();
    assert_eq!(big.len(), 600 * 1024);
    assert_eq!(big, std::fs::read(out.join("r/copy")).unwrap());

    // A missing path: dockerd's words.
    let missing = d.docker(&[
        "cp",
        &format!("{name}:/no/such/file"),
        out.to_str().unwrap(),
    ]);
    assert_ne!(missing.status, Some(0));
    assert!(
        missing.stderr.contains(&format!(
            "Could not find the file /no/such/file in container {name}"
        )),
        "{}",
        missing.stderr
    );

    // Escapes: a `..` entry, a symlink out and a file through it, and a
    // symlink in the container pointing at a host directory.
    let marker = host.join("marker");
    std::fs::create_dir_all(&marker).unwrap();
    let depth = "../".repeat(30);
    let rel_marker = format!(
        "{depth}{}",
        marker.display().to_string().trim_start_matches('/')
    );
    let mut evil = Vec::new();
    tar_entry(
        &mut evil,
        &format!("{rel_marker}/dotdot"),
        b'0',
        0o644,
        "",
        b"x",
    );
    evil.extend_from_slice(&[0u8; 1024]);
    let r = d.docker_piped(&["cp", "-", &format!("{name}:/tmp")], &evil);
    assert_ne!(r.status, Some(0), "a `..` entry was accepted");
    assert!(r.stderr.contains("contains \"..\""), "{}", r.stderr);

    let mut evil = Vec::new();
    tar_entry(&mut evil, "esc", b'2', 0o777, marker.to_str().unwrap(), b"");
    tar_entry(&mut evil, "esc/through-link", b'0', 0o644, "", b"x");
    evil.extend_from_slice(&[0u8; 1024]);
    let r = d.docker_piped(&["cp", "-", &format!("{name}:/tmp")], &evil);
    assert_ne!(r.status, Some(0), "a file through a symlink was accepted");
    assert!(
        r.stderr.contains("its parent \"esc\" is a symlink"),
        "{}",
        r.stderr
    );

    exec_out(
        &mut rt,
        &ctr,
        &["ln", "-s", marker.to_str().unwrap(), "/tmp/out"],
    )
    .await;
    let b = d.docker(&[
        "cp",
        script.to_str().unwrap(),
        &format!("{name}:/tmp/out/x"),
    ]);
    let a = d.docker(&["cp", script.to_str().unwrap(), &format!("{name}:/tmp/out/")]);
    assert_ne!(b.status, Some(0));
    assert!(
        b.stderr.contains(&format!(
            "Could not find the file /tmp/out in container {name}"
        )),
        "{}",
        b.stderr
    );
    // The dangling link is replaced by the file, as the CLI asks.
    assert_eq!(a.status, Some(0), "{}", a.stderr);
    let leaked: Vec<_> = std::fs::read_dir(&marker).unwrap().collect();
    assert!(leaked.is_empty(), "written outside the rootfs: {leaked:?}");
    // Nothing half-made inside either.
    let ls = exec_out(&mut rt, &ctr, &["ls", "-a", "/"]).await;
    assert!(!ls.contains(".berth-cp"), "{ls}");

    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}
