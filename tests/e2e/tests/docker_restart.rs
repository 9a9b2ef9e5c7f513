//! Docker's restart policies end to end with the real docker CLI:
//! `on-failure:N` restarts exactly N times, `docker stop` is not undone by
//! `always`, an exit while berthd was down is restarted when it comes
//! back, and `docker update --restart` changes the policy.

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
    eventually("restarted by its policy", Duration::from_secs(20), || {
        (inspect(&d, "back", "{{.State.Status}} {{.RestartCount}}") == "running 1").then_some(())
    })
    .await;
    d.docker_ok(&["rm", "-f", "back"]);
    eventually("removed", Duration::from_secs(10), || {
        d.docker_ok(&["ps", "-aq"]).trim().is_empty().then_some(())
    })
    .await;
    d.assert_no_leaks();
}
