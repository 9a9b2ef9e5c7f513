//! `docker run` in the foreground, `docker attach` and `pause`
//! end to end with the real docker CLI (v28): the CLI attaches before it
//! starts the container, copies its streams, and exits with the
//! container's exit code.

use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};

/// Every container `docker ps -a` lists, by full id.
fn all_ids(d: &TestDaemon) -> String {
    d.docker_ok(&["ps", "-aq", "--no-trunc"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_the_foreground_returns_the_exit_code_and_both_streams() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    let run = d.docker(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(run.status, Some(3), "{}\n{}", run.stderr, d.log_tail());
    assert_eq!(run.stdout, "out\n");
    assert_eq!(run.stderr, "err\n");
    // --rm: the CLI waited for removal, so nothing is left to list.
    assert_eq!(all_ids(&d), "", "the --rm container is gone");

    // Kept (no --rm): it stays, exited with its code.
    let run = d.docker(&["run", "--name", "kept", &image, "sh", "-c", "exit 0"]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "kept"
        ])
        .trim(),
        "exited 0"
    );
    d.docker_ok(&["rm", "kept"]);

    // Piped stdin with -i reaches the command; its end ends the command.
    let out = d.docker_piped(
        &["run", "-i", "--rm", &image, "sh", "-c", "cat; exit 9"],
        b"piped\n",
    );
    assert_eq!(out.status, Some(9), "{}", out.stderr);
    assert_eq!(out.stdout, "piped\n");

    // A command the image does not have: refused at the start, as by
    // dockerd, in runc's words too, which the CLI turns into 127; and the
    // --rm container goes (the CLI waits for that).
    let run = d.docker(&["run", "--rm", &image, "no-such-command"]);
    assert_eq!(run.status, Some(127), "{}", run.stderr);
    assert!(
        run.stderr.contains("no-such-command"),
        "the error names the command: {}",
        run.stderr
    );
    assert_eq!(all_ids(&d), "");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_it_gives_the_command_a_terminal() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let pty = d.docker_under_pty(&format!(
        "docker run -it --rm {image} sh -c 'tty; echo hello-tty; exit 4'"
    ));
    assert!(
        pty.stdout.contains("/dev/pts/"),
        "no terminal in the container: {:?}\n{}",
        pty.stdout,
        d.log_tail()
    );
    // A terminal's output discipline: lines end in CR LF.
    assert!(pty.stdout.contains("hello-tty\r\n"), "{:?}", pty.stdout);
    assert_eq!(pty.status, Some(4), "{:?}", pty.stdout);
    assert_eq!(all_ids(&d), "");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_joins_a_running_container_and_ends_with_it() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "talk",
        &image,
        "sh",
        "-c",
        "read line; echo got:$line; echo bye >&2; exit 7",
    ]);
    let out = d.docker_piped(&["attach", "talk"], b"hello\n");
    assert_eq!(
        out.status,
        Some(7),
        "attach ends with the container's code: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "got:hello\n");
    assert_eq!(out.stderr, "bye\n");

    // Attaching to a container that has ended is refused, as dockerd does.
    let late = d.docker(&["attach", "talk"]);
    assert_eq!(late.status, Some(1));
    assert!(
        late.stderr
            .contains("You cannot attach to a stopped container, start it first"),
        "{}",
        late.stderr
    );
    d.docker_ok(&["rm", "talk"]);
    d.assert_no_leaks();
}

/// How many lines the container has written so far.
fn lines_logged(d: &TestDaemon, name: &str) -> usize {
    d.docker_ok(&["logs", name]).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_unpause_resumes_and_a_paused_container_stops() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let ticker = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done";
    d.docker_ok(&["run", "-d", "--name", "tick", &image, "sh", "-c", ticker]);
    eventually("the ticker writes", Duration::from_secs(10), || {
        (lines_logged(&d, "tick") > 2).then_some(())
    })
    .await;

    d.docker_ok(&["pause", "tick"]);
    let status = |d: &TestDaemon| {
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "tick",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(status(&d), "paused true");
    let ps = d.docker_ok(&[
        "ps",
        "--filter",
        "status=paused",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(
        ps.starts_with("tick Up ") && ps.trim_end().ends_with("(Paused)"),
        "{ps}"
    );
    // Frozen: over a window 10 ticks long, not one more line.
    let frozen_at = lines_logged(&d, "tick");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lines_logged(&d, "tick"),
        frozen_at,
        "a paused container went on"
    );

    // Pausing twice, killing with a catchable signal: dockerd's 409s.
    let again = d.docker(&["pause", "tick"]);
    assert!(
        again.stderr.contains("is already paused"),
        "{}",
        again.stderr
    );
    let term = d.docker(&["kill", "-s", "TERM", "tick"]);
    assert!(
        term.stderr
            .contains("is paused. Unpause the container before stopping or killing"),
        "{}",
        term.stderr
    );

    d.docker_ok(&["unpause", "tick"]);
    assert_eq!(status(&d), "running false");
    eventually("the ticker goes on", Duration::from_secs(10), || {
        (lines_logged(&d, "tick") > frozen_at).then_some(())
    })
    .await;
    let not_paused = d.docker(&["unpause", "tick"]);
    assert!(
        not_paused.stderr.contains("is not paused"),
        "{}",
        not_paused.stderr
    );

    // A paused container stops: it is thawed so the signals land (sh as
    // pid 1 ignores SIGTERM: SIGKILL after the 1 s).
    d.docker_ok(&["pause", "tick"]);
    d.docker_ok(&["stop", "-t", "1", "tick"]);
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}} {{.State.ExitCode}}",
            "tick"
        ])
        .trim(),
        "exited false 137"
    );
    let stopped = d.docker(&["pause", "tick"]);
    assert!(
        stopped.stderr.contains("is not running"),
        "{}",
        stopped.stderr
    );
    d.docker_ok(&["rm", "tick"]);
    d.assert_no_leaks();
}
