//! `berth-shim exec`, the reaper of detached terminal execs, driven with a
//! shell standing in for the runtime: like `runc exec --detach`, it starts
//! the process, writes its pid and leaves before the process ends.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth-shim");
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs the reaper over `sh -c <runtime>`, with `$0` as the pid file.
fn reaper(pid_file: &Path, runtime: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("exec")
        .arg("--pid-file")
        .arg(pid_file)
        .args(["--", "sh", "-c", runtime])
        .arg(pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    let child = cmd.spawn().expect("start the reaper");
    child.wait_with_output().expect("wait for the reaper")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| {
        panic!(
            "the reaper died of signal {:?}: {}",
            out.status.signal(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The parent pid of `pid`, from /proc.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_detached_process_is_adopted_and_its_exit_code_returned() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("exec.pid");
    // The "runtime" exits 0 at once; its process ends 0.3 s later.
    let out = output(&mut reaper(
        &pid_file,
        r#"sh -c 'sleep 0.3; exit 7' & echo $! > "$0""#,
    ));
    assert_eq!(code(&out), 7, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_death_by_signal_is_128_plus_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("exec.pid");
    let out = output(&mut reaper(
        &pid_file,
        r#"sh -c 'sleep 0.2; kill -KILL $$' & echo $! > "$0""#,
    ));
    assert_eq!(code(&out), 128 + libc::SIGKILL);
}

#[test]
fn a_failing_runtime_passes_on_its_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("exec.pid");
    let out = output(&mut reaper(
        &pid_file,
        "echo 'exec failed: boom' >&2; exit 5",
    ));
    assert_eq!(code(&out), 5);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "exec failed: boom\n");
}

#[test]
fn a_runtime_that_did_not_detach_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("exec.pid");
    // It waited for its process itself: the pid is nobody's child now.
    let out = output(&mut reaper(
        &pid_file,
        r#"sh -c 'exit 0' & echo $! > "$0"; wait"#,
    ));
    assert_eq!(code(&out), 255);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not this reaper's child"), "{said}");

    let out = output(&mut reaper(&dir.path().join("missing.pid"), "exit 0"));
    assert_eq!(code(&out), 255);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot read") && said.contains("missing.pid"),
        "{said}"
    );
}

#[test]
fn sigterm_to_the_reaper_reaches_the_exec_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("exec.pid");
    let mut child = reaper(&pid_file, r#"sleep 30 & echo $! > "$0""#)
        .spawn()
        .unwrap();
    let reaper_pid = child.id();
    // Wait until the sleep has been adopted by the reaper.
    let start = Instant::now();
    loop {
        let adopted = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .and_then(ppid)
            == Some(reaper_pid);
        if adopted {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the sleep was never adopted");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling the reaper this test started.
    unsafe { libc::kill(reaper_pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(BIN)
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pid-file is required"));
}
