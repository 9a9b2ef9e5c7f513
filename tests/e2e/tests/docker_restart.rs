//! Docker's restart policies end to end with the real docker CLI:
//! `on-failure:N` restarts exactly N times, `docker stop` is not undone by
//! `always`, an exit while berthd was down is restarted when it comes
//! back, `docker update --restart` changes the policy, and after a node
//! reboot `always` containers come back while the others stay down.

use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};

fn inspect(d: &TestDaemon, name: &str, format: &str) -> String {
    d.docker_ok(&["inspect", "-f", format, name])
        .trim()
        .to_string()
}

/// How many times `docker events` saw `name` start up to now.
fn starts(d: &TestDaemon, name: &str, since: &str) -> usize {
    d.docker_ok(&[
        "events",
        "--since",
        since,
        "--until",
        "0s",
        "--filter",
        &format!("container={name}"),
        "--filter",
        "event=start",
    ])
    .lines()
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_exactly_n_times_and_stop_is_not_undone() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let since = d.docker_ok(&["version", "-f", "{{.Server.Os}}"]); // warm-up
    assert_eq!(since.trim(), "linux");
    let since = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );

    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:3",
        &image,
        "sh",
        "-c",
        "exit 1",
    ]);
    eventually("three restarts", Duration::from_secs(20), || {
        (inspect(&d, "flaky", "{{.RestartCount}} {{.State.Status}}") == "3 exited").then_some(())
    })
    .await;
    assert_eq!(
        inspect(&d, "flaky", "{{json .HostConfig.RestartPolicy}}"),
        r#"{"Name":"on-failure","MaximumRetryCount":3}"#
    );
    // A fourth would come 800 ms after the third exit (the back-off
    // doubles from 100 ms): over a window twice that long, none does.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(inspect(&d, "flaky", "{{.RestartCount}}"), "3");
    assert_eq!(
        starts(&d, "flaky", &since),
        4,
        "the first start and three restarts"
    );

    // `always` brings back what exits, but not what was stopped by hand.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "steady",
        "--restart",
        "always",
        &image,
        "sleep",
        "600",
    ]);
    d.docker_ok(&["stop", "-t", "0", "steady"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        inspect(&d, "steady", "{{.State.Status}} {{.RestartCount}}"),
        "exited 0",
        "docker stop stays stopped"
    );
    // A start by hand and an exit of its own: the policy applies again.
    d.docker_ok(&["update", "--restart", "on-failure:1", "steady"]);
    assert_eq!(
        inspect(&d, "steady", "{{.HostConfig.RestartPolicy.Name}}"),
        "on-failure"
    );
    d.docker_ok(&["start", "steady"]);
    let pid: i32 = inspect(&d, "steady", "{{.State.Pid}}").parse().unwrap();
    // SIGKILL from outside (not `docker kill`): a failure of its own.
    // SAFETY: kill(2) on a pid this test's container runs; no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    eventually(
        "the one restart on-failure:1 allows",
        Duration::from_secs(20),
        || {
            (inspect(&d, "steady", "{{.RestartCount}} {{.State.Status}}") == "1 running")
                .then_some(())
        },
    )
    .await;

    // update changes the limits it is given and keeps the others.
    d.docker_ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "64m",
        "steady",
    ]);
    assert_eq!(
        inspect(
            &d,
            "steady",
            "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}"
        ),
        "67108864 on-failure"
    );

    // Bad policies, in dockerd's words.
    let bad = d.docker(&["run", "-d", "--restart", "sometimes", &image, "true"]);
    assert!(
        bad.stderr.contains("invalid restart policy"),
        "{}",
        bad.stderr
    );
    let both = d.docker(&["run", "-d", "--rm", "--restart", "always", &image, "true"]);
    assert_ne!(both.status, Some(0), "--rm with --restart is refused");
    d.docker_ok(&["rm", "-f", "flaky", "steady"]);
    eventually("all removed", Duration::from_secs(10), || {
        d.docker_ok(&["ps", "-aq"]).trim().is_empty().then_some(())
    })
    .await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_while_berthd_is_down_is_restarted_when_it_comes_back() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let signals = d.dir().join("signals");
    std::fs::create_dir_all(&signals).unwrap();
    // The first run waits for a file from the host, then fails; the
    // second (its writable layer remembers the first) just runs.
    let script = "if [ -f /ran ]; then exec sleep 600; fi; touch /ran; \
                  while [ ! -f /sig/go ]; do sleep 0.05; done; exit 3";
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "back",
        "--restart",
        "unless-stopped",
        "-v",
        &format!("{}:/sig", signals.display()),
        &image,
        "sh",
        "-c",
        script,
    ]);
    let pid: i32 = inspect(&d, "back", "{{.State.Pid}}").parse().unwrap();
    d.kill9();
    std::fs::write(signals.join("go"), b"").unwrap();
    eventually("the first run ends", Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    d.start_again().await;
    // Started at berthd's start, as dockerd's restore does: its count
    // begins again.
    eventually("restarted by its policy", Duration::from_secs(20), || {
        (inspect(&d, "back", "{{.State.Status}} {{.RestartCount}}") == "running 0").then_some(())
    })
    .await;
    d.docker_ok(&["rm", "-f", "back"]);
    eventually("removed", Duration::from_secs(10), || {
        d.docker_ok(&["ps", "-aq"]).trim().is_empty().then_some(())
    })
    .await;
    d.assert_no_leaks();
}

/// What a node reboot does to a berthd that was running: berthd, every
/// container process and monitor (this test's own, by pid) die at once,
/// every mount and cgroup goes, the runtime state dir (`/run`) is empty
/// again and the bridge is gone. The root dir (`/var/lib`) stays.
fn reboot(d: &mut TestDaemon, container_pids: &[i32]) {
    d.kill9();
    let dir = d.dir().display().to_string();
    let monitors = berth_testkit::processes_mentioning(&dir);
    for pid in container_pids
        .iter()
        .copied()
        .chain(monitors.iter().map(|p| *p as i32))
    {
        // SAFETY: a container or monitor this test's daemon started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let gone = |pid: i32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !container_pids.iter().all(|p| gone(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "containers still alive"
        );
        std::thread::yield_now();
    }
    let mut mounts = berth_testkit::mounts_under(d.dir());
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let ok = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "unmount {m}");
    }
    let mut cgroups = berth_testkit::cgroups_under(&d.cgroup_root);
    cgroups.sort_by_key(|c| std::cmp::Reverse(c.as_os_str().len()));
    for c in cgroups {
        // Its processes are dead; the kernel may take a moment to let go.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&c).is_err() && c.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "remove {}",
                c.display()
            );
            std::thread::yield_now();
        }
    }
    std::fs::remove_dir_all(&d.state_dir).expect("empty the state dir");
    let _ = berth_net::remove_bridge_network(&d.network.bridge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_reboot_always_comes_back_and_the_rest_stays_down() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let run = |name: &str, policy: &str| {
        d.docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            &image,
            "sleep",
            "600",
        ]);
    };
    run("keeper", "always");
    run("once", "no");
    run("held", "unless-stopped");
    d.docker_ok(&["stop", "-t", "0", "held"]);
    let pid =
        |d: &TestDaemon, name: &str| -> i32 { inspect(d, name, "{{.State.Pid}}").parse().unwrap() };
    let pids = [pid(&d, "keeper"), pid(&d, "once")];
    let started_before = inspect(&d, "keeper", "{{.State.StartedAt}}");

    reboot(&mut d, &pids);
    d.start_again().await;

    // `always`: started again by berthd's start, as dockerd does at its
    // own: a new StartedAt and a RestartCount from zero.
    eventually("keeper runs again", Duration::from_secs(20), || {
        (inspect(&d, "keeper", "{{.State.Status}}") == "running").then_some(())
    })
    .await;
    let state = inspect(
        &d,
        "keeper",
        "{{.RestartCount}} {{.State.Running}} {{.State.StartedAt}}",
    );
    let fields: Vec<&str> = state.split(' ').collect();
    assert_eq!(fields[..2], ["0", "true"], "{state}");
    assert!(
        fields[2] > started_before.as_str(),
        "{state} vs {started_before}"
    );
    let new_pid = pid(&d, "keeper");
    assert!(new_pid > 0 && !pids.contains(&new_pid));
    assert_eq!(
        d.docker_ok(&["exec", "keeper", "echo", "alive"]).trim(),
        "alive"
    );

    // `no`: exited, with a sane state, and it can be started by hand.
    let once = inspect(
        &d,
        "once",
        "{{.State.Status}} {{.State.Running}} {{.State.Pid}} {{.State.ExitCode}} {{.RestartCount}}",
    );
    assert_eq!(once, "exited false 0 255 0");
    assert!(!inspect(&d, "once", "{{.State.FinishedAt}}").starts_with("0001"));
    // `unless-stopped`, stopped by hand before the reboot: still stopped.
    assert_eq!(
        inspect(&d, "held", "{{.State.Status}} {{.RestartCount}}"),
        "exited 0"
    );
    d.docker_ok(&["start", "once"]);
    assert_eq!(inspect(&d, "once", "{{.State.Status}}"), "running");

    d.docker_ok(&["rm", "-f", "keeper", "once", "held"]);
    d.assert_no_leaks();
}
