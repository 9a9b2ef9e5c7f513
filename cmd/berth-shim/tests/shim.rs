//! The built `berth-shim` against real crun (through the hybrid-host
//! wrapper) and runc, on a busybox rootfs: the report on fd 3, the CRI log,
//! exit codes, surviving its spawner, the control socket, the tty, set-up
//! and start failures and the monitor's memory.

mod support;

use std::process::Command;

use support::{need_root, process_gone, runtimes, wait_for, Container, Entry, BIN};

fn is(stream: &str, tag: &str, msg: &str) -> impl Fn(&Entry) -> bool {
    let (stream, tag, msg) = (stream.to_string(), tag.to_string(), msg.to_string());
    move |e: &Entry| e.stream == stream && e.tag == tag && e.msg == msg
}

fn stream_entries(log: &[Entry], stream: &str) -> Vec<(String, String)> {
    log.iter()
        .filter(|e| e.stream == stream)
        .map(|e| (e.tag.clone(), e.msg.clone()))
        .collect()
}

fn entry(tag: &str, msg: &str) -> (String, String) {
    (tag.to_string(), msg.to_string())
}

#[test]
fn stdout_and_stderr_are_logged_in_cri_format() {
    need_root();
    let script = r#"echo out1; echo err1 >&2; echo; printf 'crlf\r\n'; printf '%020000d\n' 0; echo err2 >&2; printf 'last words'"#;
    for rt in runtimes() {
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.create();
        c.start();
        let exit = c.wait_exit();
        assert_eq!(exit["exit_code"], 0, "{}: {exit}", rt.name);
        let log = c.log();
        let long = "0".repeat(20_000);
        assert_eq!(
            stream_entries(&log, "stdout"),
            vec![
                entry("F", "out1"),
                entry("F", ""),
                entry("F", "crlf"),
                entry("P", &long[..16_384]),
                entry("F", &long[16_384..]),
                entry("P", "last words"),
            ],
            "{}",
            rt.name
        );
        assert_eq!(
            stream_entries(&log, "stderr"),
            vec![entry("F", "err1"), entry("F", "err2")],
            "{}",
            rt.name
        );
        // Timestamps (checked for shape by parse_log) do not go backwards
        // within a stream and are about now.
        for stream in ["stdout", "stderr"] {
            let times: Vec<&str> = log
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.time.as_str())
                .collect();
            let mut sorted = times.clone();
            sorted.sort_by_key(|t| pad_fraction(t));
            assert_eq!(times, sorted, "{}", rt.name);
        }
        let year = &log[0].time[..4];
        assert!(year >= "2024", "{}", log[0].time);
        c.finish();
    }
}

/// Makes RFC3339Nano strings of one day comparable as text.
fn pad_fraction(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    match t.split_once('.') {
        Some((s, f)) => format!("{s}.{f:0<9}"),
        None => format!("{t}.000000000"),
    }
}

#[test]
fn exit_codes_are_recorded() {
    need_root();
    for rt in runtimes() {
        // A plain exit status.
        let mut c = Container::new(&rt, &["sh", "-c", "exit 3"], false);
        let before = support::unix_nanos();
        c.create();
        c.start();
        let exit = c.wait_exit();
        let after = support::unix_nanos();
        assert_eq!(exit["exit_code"], 3, "{}: {exit}", rt.name);
        assert_eq!(exit["signal"], 0, "{}: {exit}", rt.name);
        assert_eq!(exit["oom_killed"], false, "{}: {exit}", rt.name);
        let at = exit["finished_at_ns"].as_u64().unwrap() as u128;
        assert!(before <= at && at <= after, "{}: {exit}", rt.name);
        let shim = c.shim_pid.unwrap();
        wait_for("the shim to exit", || process_gone(shim).then_some(()));
        assert!(!c.state().join("control.sock").exists());
        c.finish();

        // Killed by a signal: 128 + 9.
        let mut c = Container::new(&rt, &["sleep", "1000"], false);
        c.create();
        c.start();
        c.kill("KILL");
        let exit = c.wait_exit();
        assert_eq!(exit["exit_code"], 137, "{}: {exit}", rt.name);
        assert_eq!(exit["signal"], 9, "{}: {exit}", rt.name);
        c.finish();

        // Cancelled without ever being started: recorded as a kill, and
        // the runtime never saw it.
        let mut c = Container::new(&rt, &["sleep", "1000"], false);
        c.create();
        assert_eq!(c.control(&["cancel"]), vec!["ok\n"], "{}", rt.name);
        let exit = c.wait_exit();
        assert_eq!(exit["exit_code"], 137, "{}: {exit}", rt.name);
        assert_eq!(exit["signal"], 9, "{}: {exit}", rt.name);
        let listed = c.runtime(&["list"]);
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains(&c.id),
            "{}: the runtime knows it",
            rt.name
        );
        c.finish();

        // Once started, `cancel` and a second `start` are refused.
        let mut c = Container::new(&rt, &["sleep", "1000"], false);
        c.create();
        c.start();
        assert_eq!(
            c.control(&["cancel", "start"]),
            vec![
                "error cancel: the container has started\n",
                "error start: the container has started\n"
            ],
            "{}",
            rt.name
        );
        c.kill("KILL");
        assert_eq!(c.wait_exit()["exit_code"], 137, "{}", rt.name);
        c.finish();
    }
}

#[test]
fn the_shim_outlives_its_spawner() {
    need_root();
    for rt in runtimes() {
        let script = "while :; do echo tick; sleep 0.05; done";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        // A spawner that runs the shim, then lives on without fd 3 (as
        // berthd would) until it is killed.
        let mut spawner = Command::new("/bin/sh");
        spawner
            .arg("-c")
            .arg(r#""$@"; exec sleep 1000 3>&-"#)
            .arg("sh")
            .arg(BIN)
            .args(c.shim_args());
        let (report, mut spawner) = c.spawn_through(spawner);
        assert_eq!(report.trim_end(), "{\"ready\":true}", "{}", rt.name);
        let shim = c.shim_pid.expect("shim.pid");
        c.start();
        c.wait_log("a first tick", |e| e.msg == "tick");

        spawner.kill().unwrap();
        spawner.wait().unwrap();
        // What a dying berthd or a closing terminal might send.
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
            // SAFETY: signalling the shim this test started.
            assert_eq!(unsafe { libc::kill(shim, sig) }, 0);
        }
        // Still logging afterwards: more ticks arrive.
        let seen = c.log().len();
        wait_for("ticks after the spawner died", || {
            (c.log().len() >= seen + 5).then_some(())
        });
        assert!(!process_gone(shim), "{}: the shim died", rt.name);
        let parent = support::ppid(shim).unwrap();
        assert_ne!(parent, spawner.id() as i32, "{}", rt.name);
        assert_ne!(parent, std::process::id() as i32, "{}", rt.name);
        let state = c.runtime(&["state", &c.id]);
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
        assert_eq!(state["status"], "running", "{}: {state}", rt.name);
        // The shim is a session leader of its own.
        let stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
        let sid: i32 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sid, shim, "{}", rt.name);

        c.kill("KILL");
        assert_eq!(c.wait_exit()["exit_code"], 137, "{}", rt.name);
        c.finish();
    }
}

#[test]
fn reopen_log_after_rotation_and_control_errors() {
    need_root();
    for rt in runtimes() {
        let script = "echo one; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.create();
        c.start();
        c.wait_log("line one", is("stdout", "F", "one"));

        let mode = |p: std::path::PathBuf| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(c.state().join("control.sock")), 0o600, "{}", rt.name);
        assert_eq!(mode(c.log_path()), 0o600, "{}", rt.name);

        let rotated = c.dir.join("logs/0.log.1");
        std::fs::rename(c.log_path(), &rotated).unwrap();
        let answers = c.control(&[
            "reopen-log",
            "resize 100 40",
            "bogus",
            "resize 1",
            "",
            "reopen-log",
        ]);
        assert_eq!(answers[0], "ok\n", "{}", rt.name);
        for a in &answers[1..5] {
            assert!(
                a.starts_with("error ") && a.ends_with('\n'),
                "{}: {a:?}",
                rt.name
            );
        }
        assert!(answers[1].contains("tty"), "{answers:?}");
        assert_eq!(answers[5], "ok\n", "{}", rt.name);
        // A line that is too long gets an error; other clients still work.
        let long = "x".repeat(300);
        let answer = c.control(&[&long]);
        assert!(answer[0].starts_with("error "), "{answer:?}");
        assert_eq!(c.control(&["reopen-log"]), vec!["ok\n"]);

        std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
        c.wait_exit();
        let old = support::parse_log(&std::fs::read_to_string(&rotated).unwrap());
        let new = c.log();
        assert_eq!(
            stream_entries(&old, "stdout"),
            vec![entry("F", "one")],
            "{}",
            rt.name
        );
        assert_eq!(
            stream_entries(&new, "stdout"),
            vec![entry("F", "two")],
            "{}",
            rt.name
        );
        c.finish();
    }
}

#[test]
fn tty_output_and_resize() {
    need_root();
    for rt in runtimes() {
        let script = "echo hello tty; while [ ! -e /tmp/go ]; do sleep 0.02; done; stty size";
        let mut c = Container::new(&rt, &["sh", "-c", script], true);
        c.create();
        c.start();
        assert!(
            !c.state().join("console.sock").exists(),
            "{}: console.sock left",
            rt.name
        );
        c.wait_log("tty output", is("stdout", "F", "hello tty"));
        assert_eq!(c.control(&["resize 100 40"]), vec!["ok\n"], "{}", rt.name);
        std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
        let exit = c.wait_exit();
        assert_eq!(exit["exit_code"], 0, "{}: {exit}", rt.name);
        let log = c.log();
        assert_eq!(
            stream_entries(&log, "stdout"),
            vec![entry("F", "hello tty"), entry("F", "40 100")],
            "{}",
            rt.name
        );
        assert_eq!(stream_entries(&log, "stderr"), vec![], "{}", rt.name);
        c.finish();
    }
}

#[test]
fn a_failed_start_reports_the_runtimes_message_and_can_be_cancelled() {
    need_root();
    for rt in runtimes() {
        // The container's program does not exist.
        let mut c = Container::new(&rt, &["/bin/no-such-program"], false);
        c.create();
        let answer = c.start_answer();
        assert!(answer.starts_with("error "), "{}: {answer}", rt.name);
        assert!(answer.contains("no-such-program"), "{}: {answer}", rt.name);
        // The monitor stays ready: the same failure again, then a cancel.
        assert!(c.start_answer().contains("no-such-program"), "{}", rt.name);
        assert_failure_cancelled(&c);
        c.finish();

        // A bundle that does not exist.
        let mut c = Container::new(&rt, &["true"], false);
        std::fs::remove_dir_all(c.bundle()).unwrap();
        c.create();
        let answer = c.start_answer();
        assert!(answer.starts_with("error "), "{}: {answer}", rt.name);
        assert!(answer.len() > "error ".len(), "{}: {answer}", rt.name);
        assert_failure_cancelled(&c);
        c.finish();
    }
    // A runtime program that does not exist.
    let mut rt = runtimes().remove(0);
    rt.program = "/nonexistent/runtime".into();
    let mut c = Container::new(&rt, &["true"], false);
    c.create();
    let answer = c.start_answer();
    assert!(
        answer.contains("error cannot execute runtime /nonexistent/runtime"),
        "{answer}"
    );
    assert_failure_cancelled(&c);
    c.finish();

    // A set-up failure (the log's directory is missing) is the report's.
    let mut c = Container::new(&runtimes()[0], &["true"], false);
    std::fs::remove_dir_all(c.log_path().parent().unwrap()).unwrap();
    let report = c.spawn_shim();
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let msg = v["error"].as_str().unwrap_or_else(|| panic!("{report}"));
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert_failure_left_nothing(&c);
    c.finish();
}

/// After a failed start: nothing ran, and a cancel ends the monitor.
fn assert_failure_cancelled(c: &Container) {
    assert_eq!(c.cgroup_procs(), Vec::<String>::new(), "{}", c.id);
    assert_eq!(c.control(&["cancel"]), vec!["ok\n"], "{}", c.id);
    assert_eq!(c.wait_exit()["exit_code"], 137, "{}", c.id);
    wait_for("the shim and runtime to go", || {
        c.processes_naming_me().is_empty().then_some(())
    });
    for f in ["control.sock", "attach.sock", "console.sock"] {
        assert!(!c.state().join(f).exists(), "{}: {f} left", c.id);
    }
}

fn assert_failure_left_nothing(c: &Container) {
    wait_for("the shim and runtime to go", || {
        c.processes_naming_me().is_empty().then_some(())
    });
    assert_eq!(c.cgroup_procs(), Vec::<String>::new(), "{}", c.id);
    for f in [
        "shim.pid",
        "control.sock",
        "attach.sock",
        "console.sock",
        "exit.json",
    ] {
        assert!(!c.state().join(f).exists(), "{}: {f} left", c.id);
    }
    assert!(c.state().is_dir(), "STATEDIR stays");
}

#[test]
fn stdin_is_a_pipe_held_by_the_shim() {
    need_root();
    for rt in runtimes() {
        let script = r#"read line; echo "got $line""#;
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.shim_flags.push("--stdin".into());
        c.shim_flags.push("--stdin-once".into());
        c.create();
        let init = c.start();
        let shim = c.shim_pid.unwrap();
        let stdin = std::fs::read_link(format!("/proc/{init}/fd/0")).unwrap();
        let stdin = stdin.to_string_lossy().into_owned();
        assert!(stdin.starts_with("pipe:"), "{}: stdin is {stdin}", rt.name);
        // The shim holds the other end: write through it.
        let held = std::fs::read_dir(format!("/proc/{shim}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_link(p).is_ok_and(|l| l.to_string_lossy() == stdin))
            .unwrap_or_else(|| panic!("{}: the shim does not hold {stdin}", rt.name));
        let mut w = std::fs::OpenOptions::new().write(true).open(held).unwrap();
        std::io::Write::write_all(&mut w, b"hello\n").unwrap();
        drop(w);
        let exit = c.wait_exit();
        assert_eq!(exit["exit_code"], 0, "{}: {exit}", rt.name);
        assert_eq!(
            stream_entries(&c.log(), "stdout"),
            vec![entry("F", "got hello")],
            "{}",
            rt.name
        );
        c.finish();

        // Without --stdin the container reads /dev/null.
        let mut c = Container::new(&rt, &["sh", "-c", "exec sleep 1000"], false);
        c.create();
        let init = c.start();
        let stdin = std::fs::read_link(format!("/proc/{init}/fd/0")).unwrap();
        assert_eq!(stdin, std::path::Path::new("/dev/null"), "{}", rt.name);
        c.finish();
    }
}

#[test]
fn output_drain_is_bounded_when_a_leftover_holds_the_pipe() {
    need_root();
    for rt in runtimes() {
        // Without a pid namespace the background sleep outlives the init
        // and keeps stdout open.
        let mut c = Container::new(&rt, &["sh", "-c", "sleep 1000 & echo bye"], false);
        c.edit_spec(|spec| {
            let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
        });
        c.create();
        c.start();
        let exit = c.wait_exit();
        let written = std::fs::metadata(c.state().join("exit.json"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let finished = exit["finished_at_ns"].as_u64().unwrap() as u128;
        let waited_ms = (written.saturating_sub(finished)) / 1_000_000;
        assert!(
            (900..5000).contains(&waited_ms),
            "{}: exit.json {waited_ms} ms after the exit",
            rt.name
        );
        assert_eq!(exit["exit_code"], 0, "{}: {exit}", rt.name);
        assert_eq!(
            stream_entries(&c.log(), "stdout"),
            vec![entry("F", "bye")],
            "{}",
            rt.name
        );
        assert!(
            !c.cgroup_procs().is_empty(),
            "{}: the sleep is gone",
            rt.name
        );
        c.kill_leftovers();
        c.finish();
    }
}

/// Bad arguments are reported on fd 3 by the first process, which exits 2.
#[test]
fn bad_arguments_are_reported() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--id", "x", "--bogus"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

/// The memory target is VmRSS <= 1.5 MiB per monitor. Most of VmRSS is
/// file pages shared with other processes (libc, the binary's own text) and
/// varies with how the kernel maps them; the private part is the real cost
/// per container and is checked separately.
#[test]
fn monitor_rss_is_small() {
    need_root();
    // The tests run the debug build, whose text is ~180 kB larger than the
    // release build's (which measures 1.0-1.2 MiB here).
    let rss_limit_kb = if cfg!(debug_assertions) {
        1536 + 192
    } else {
        1536
    };
    for rt in runtimes() {
        let mut c = Container::new(&rt, &["sh", "-c", "echo started; exec sleep 1000"], false);
        c.create();
        c.start();
        c.wait_log("started", is("stdout", "F", "started"));
        let shim = c.shim_pid.unwrap();
        let rss = support::proc_status_kb(shim, "VmRSS").unwrap();
        let anon = support::proc_status_kb(shim, "RssAnon").unwrap();
        let hwm = support::proc_status_kb(shim, "VmHWM").unwrap();
        eprintln!(
            "{}: berth-shim VmRSS {rss} kB (peak {hwm} kB), private RssAnon {anon} kB",
            rt.name
        );
        assert!(rss <= rss_limit_kb, "{}: VmRSS {rss} kB", rt.name);
        assert!(anon <= 256, "{}: RssAnon {anon} kB", rt.name);
        c.kill("KILL");
        c.wait_exit();
        c.finish();
    }
}
