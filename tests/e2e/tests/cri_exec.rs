//! Exec end to end on both runtime handlers (issue 12): an ExecSync that
//! times out leaves neither a zombie in the container nor a runtime on the
//! host, and terminal execs (kubectl exec -it) work with runc, whose
//! `--console-socket` needs `--detach`, as with crun: output, echoed input,
//! exit codes, and the process ended when the client goes away.

use std::time::Duration;

use berth_e2e::k8s::{self, StreamOptions};
use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use tonic::Code;

const HANDLERS: [&str; 2] = ["", "runc"];
const WAIT: Duration = Duration::from_secs(20);

fn need_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root: run the suite as root"
    );
}

/// A pod on `handler` with a container whose init is `sleep`, which never
/// reaps anything, in a pid namespace of its own. Returns the pod, the
/// container and the container init's host pid.
async fn sleeper(
    d: &TestDaemon,
    reg: &TestRegistry,
    rt: &mut Runtime,
    handler: &str,
) -> (String, String, u32) {
    let name = format!("exec-{}", if handler.is_empty() { "crun" } else { handler });
    let pod = run_pod(rt, pod_config(&name, &d.dir().join("logs")), handler).await;
    let c = run_container(
        rt,
        &pod,
        container_config("sleeper", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    let init = verbose_info(rt, &c).await["pid"]
        .as_u64()
        .expect("the container's pid") as u32;
    (pod, c, init)
}

fn pid_ns(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Every process in `init`'s pid namespace but `init` itself, zombies
/// included, as `pid (comm) state`, read from the host's /proc.
fn others_in_pid_ns(init: u32) -> Vec<String> {
    let ns = pid_ns(init).expect("the container init's pid namespace");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != init && pid_ns(pid).as_ref() == Some(&ns))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ..."; comm may hold spaces: split at the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let state = rest.trim_start().chars().next()?;
            Some(format!("{head}) {state}"))
        })
        .collect()
}

/// Host processes running an exec for container `id`: the runtime's
/// `exec` or the exec reaper (`berth-shim exec`).
fn execs_on_host(id: &str) -> Vec<String> {
    berth_testkit::processes_mentioning(id)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter()
                .any(|a| a == "exec")
                .then(|| format!("{pid}: {}", args.join(" ")))
        })
        .collect()
}

fn tty_request(id: &str, cmd: &[&str], stdin: bool) -> api::ExecRequest {
    api::ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: true,
        stdin,
        stdout: true,
        stderr: false,
    }
}

fn tty(stdin: bool) -> StreamOptions {
    StreamOptions {
        stdin,
        stdout: true,
        stderr: false,
        tty: true,
    }
}

/// critest's "execSync with timeout": `pgrep sleep` right after the
/// DeadlineExceeded must find nothing. The runtime's `exec` used to be
/// killed before it reaped the process killed at the deadline, which was
/// then a zombie until some init got round to it (the container's `sleep`
/// never does; this host's init takes seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_sync_timeout_leaves_no_zombie_and_no_runtime() {
    need_root();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    for handler in HANDLERS {
        let (pod, c, init) = sleeper(&d, &reg, &mut rt, handler).await;
        let e = rt
            .exec_sync(api::ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["sleep".into(), "4321".into()],
                timeout: 1,
            })
            .await
            .expect_err("the exec must time out");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{handler:?}: {e:?}");
        assert!(e.message().contains("timed out after 1s"), "{e:?}");
        // Checked at once, as critest does: the answer comes only after
        // the killed process was reaped and its runtime has exited.
        let left = others_in_pid_ns(init);
        assert!(
            left.is_empty(),
            "{handler:?}: processes left in the container after the timeout: {left:?}"
        );
        let runtimes = execs_on_host(&c);
        assert!(
            runtimes.is_empty(),
            "{handler:?}: exec processes left on the host: {runtimes:?}"
        );
        // The container is unharmed and exec works on.
        assert_eq!(exec_out(&mut rt, &c, &["echo", "still"]).await, "still");
        teardown(&mut rt, &pod).await;
    }
    d.assert_no_leaks();
}

/// kubectl exec -it on both handlers, over SPDY and WebSocket: output
/// arrives, typed input is echoed by the terminal and read by the
/// command, and its exit code comes back. runc used to refuse:
/// "cannot use console socket if runc will not detach or allocate tty".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_execs_work_on_both_handlers() {
    need_root();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    for handler in HANDLERS {
        let (pod, c, init) = sleeper(&d, &reg, &mut rt, handler).await;
        let script = ["sh", "-c", "echo ready; read x; echo got:$x; exit 3"];
        for websocket in [false, true] {
            let url = exec_url(&mut rt, tty_request(&c, &script, true)).await;
            let mut s = if websocket {
                k8s::exec_ws(&url, k8s::WS_PROTOCOLS, tty(true)).await
            } else {
                k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, tty(true)).await
            }
            .unwrap_or_else(|e| panic!("{handler:?} websocket={websocket}: {e:?}"));
            s.read_stdout_until(b"ready", WAIT).await.unwrap();
            s.write_stdin(b"hello\n").await.unwrap();
            let seen = s.read_stdout_until(b"got:hello", WAIT).await.unwrap();
            let seen = String::from_utf8_lossy(&seen).into_owned();
            // The echo of the typed line comes first, then the answer.
            assert!(
                seen.contains("ready\r\nhello\r\ngot:hello"),
                "{handler:?} websocket={websocket}: {seen:?}"
            );
            let out = s.wait(WAIT).await.unwrap();
            assert_eq!(
                out.exit_code, 3,
                "{handler:?} websocket={websocket}: {out:?}"
            );
            assert_eq!(out.error.as_ref().unwrap()["reason"], "NonZeroExitCode");
        }
        // A command that is over at once (critest's `echo hello`): its
        // reaper may exit before berthd has the terminal in hand.
        for _ in 0..20 {
            let url = exec_url(&mut rt, tty_request(&c, &["echo", "hello"], true)).await;
            let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, tty(true))
                .await
                .unwrap_or_else(|e| panic!("{handler:?} instant exec: {e:?}"));
            s.read_stdout_until(b"hello", WAIT).await.unwrap();
            let out = s.wait(WAIT).await.unwrap();
            assert_eq!(out.exit_code, 0, "{handler:?}: {out:?}");
        }
        // A terminal without stdin (kubectl exec -t).
        let url = exec_url(
            &mut rt,
            tty_request(&c, &["sh", "-c", "tty; exit 4"], false),
        )
        .await;
        let s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, tty(false))
            .await
            .unwrap();
        let out = s.wait(WAIT).await.unwrap();
        assert!(
            out.stdout_str().starts_with("/dev/pts/"),
            "{handler:?}: {out:?}"
        );
        assert_eq!(out.exit_code, 4, "{handler:?}: {out:?}");
        assert!(
            others_in_pid_ns(init).is_empty(),
            "{handler:?}: {:?}",
            others_in_pid_ns(init)
        );
        assert!(execs_on_host(&c).is_empty(), "{:?}", execs_on_host(&c));
        teardown(&mut rt, &pod).await;
    }
    d.assert_no_leaks();
}

/// A client that goes away mid-exec (a killed kubectl): the terminal
/// exec's process is killed and reaped, and neither the runtime nor the
/// exec reaper is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_exec_ends_when_its_client_goes_away() {
    need_root();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    for handler in HANDLERS {
        let (pod, c, init) = sleeper(&d, &reg, &mut rt, handler).await;
        let url = exec_url(
            &mut rt,
            tty_request(&c, &["sh", "-c", "echo ready; exec sleep 3601"], true),
        )
        .await;
        let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, tty(true))
            .await
            .unwrap();
        s.read_stdout_until(b"ready", WAIT).await.unwrap();
        let running = others_in_pid_ns(init);
        assert!(
            running.iter().any(|p| p.contains("(sleep)")),
            "{handler:?}: the exec'd sleep must run: {running:?}"
        );
        s.abort();
        eventually("the exec'd process to be killed and reaped", WAIT, || {
            others_in_pid_ns(init).is_empty().then_some(())
        })
        .await;
        eventually("the exec's runtime and reaper to exit", WAIT, || {
            execs_on_host(&c).is_empty().then_some(())
        })
        .await;
        teardown(&mut rt, &pod).await;
    }
    d.assert_no_leaks();
}

/// The first byte a terminal exec's command reads is the first byte the
/// client sent: berth adds nothing (no NUL) to the stream when the
/// terminal is set up. (`crictl exec -it` under `script < /dev/null`
/// shows `^@`: that NUL comes from the client's own terminal, see the
/// issue 12 report.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_exec_reads_only_what_the_client_sent() {
    need_root();
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    for handler in HANDLERS {
        let (pod, c, _) = sleeper(&d, &reg, &mut rt, handler).await;
        // Raw mode: the first byte is delivered as is, without waiting for
        // a line, and nothing is echoed.
        let script = "stty raw -echo; echo ready; dd bs=1 count=1 2>/dev/null | od -An -tx1";
        let url = exec_url(&mut rt, tty_request(&c, &["sh", "-c", script], true)).await;
        let mut s = k8s::exec_spdy(&url, k8s::SPDY_PROTOCOLS, tty(true))
            .await
            .unwrap();
        s.read_stdout_until(b"ready", WAIT).await.unwrap();
        s.write_stdin(b"x").await.unwrap();
        let out = s.wait(WAIT).await.unwrap();
        let text = out.stdout_str();
        let first = text
            .split_once("ready")
            .map(|(_, after)| after.split_whitespace().next().unwrap_or_default())
            .unwrap_or_default()
            .to_string();
        assert_eq!(first, "78", "{handler:?}: the command read {text:?}");
        assert_eq!(out.exit_code, 0, "{handler:?}: {out:?}");
        teardown(&mut rt, &pod).await;
    }
    d.assert_no_leaks();
}
