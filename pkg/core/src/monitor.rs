//! The client side of `berth-shim`, the per-container monitor (its contract
//! is documented in `cmd/berth-shim/src/main.rs`): spawning one, reading its
//! report, waiting for it to exit, and talking to its control socket.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_oci::RuntimeHandler;
use serde::Deserialize;

/// Files the monitor keeps in its state directory.
pub(crate) fn shim_pid_file(dir: &Path) -> PathBuf {
    dir.join("shim.pid")
}
pub(crate) fn exit_file(dir: &Path) -> PathBuf {
    dir.join("exit.json")
}
pub(crate) fn control_socket(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}
pub(crate) fn attach_socket(dir: &Path) -> PathBuf {
    dir.join("attach.sock")
}

pub struct SpawnRequest<'a> {
    pub shim: &'a Path,
    pub handler: &'a RuntimeHandler,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub dir: &'a Path,
    pub log: &'a Path,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// The container has mounts that propagate to or from the host.
    pub mount_propagation: bool,
}

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    error: Option<String>,
}

/// How long the runtime's `run` may take before `start` gives up
/// waiting (the container may still come up; its monitor records it).
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long the other control commands may take.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `exit.json` records.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Exit {
    pub exit_code: i32,
    #[serde(default)]
    pub finished_at_ns: i64,
}

/// Starts a monitor, set up to run the container when told ([`start`]);
/// returns the monitor's pid. `own_cgroup_procs`: the `cgroup.procs` of the
/// cgroup the monitor starts in (the caller's), for the monitor to take
/// the kernel's cgroup-migration lock early with. Blocking: call from a
/// blocking thread.
pub(crate) fn spawn(req: &SpawnRequest, own_cgroup_procs: Option<&Path>) -> Result<u32> {
    std::fs::create_dir_all(req.dir)?;
    let (read_end, write_end) = pipe()?;
    let pid = crate::spawn::spawn_with_fd3(
        req.shim,
        &shim_args(req, own_cgroup_procs),
        write_end.as_fd(),
    )
    .map_err(|e| {
        Error::unavailable(format!(
            "cannot start the container monitor {}: {e}",
            req.shim.display()
        ))
    })?;
    drop(write_end);
    // The first process forks the monitor and exits at once.
    let _ = crate::spawn::wait(pid);
    let mut line = String::new();
    let mut reader = BufReader::new(std::fs::File::from(read_end));
    reader.read_line(&mut line)?;
    let no_report = |why: String| {
        Error::internal(format!(
            "container monitor for {} gave no report ({why}); see {}",
            req.id,
            req.dir.join("shim.log").display()
        ))
    };
    let report: Report = serde_json::from_str(line.trim()).map_err(|e| no_report(e.to_string()))?;
    if let Some(error) = report.error {
        return Err(Error::internal(format!(
            "the monitor of container {} could not be set up: {error}",
            req.id
        )));
    }
    if !report.ready {
        return Err(no_report(format!("{:?}", line.trim())));
    }
    let shim_pid = std::fs::read_to_string(shim_pid_file(req.dir))?
        .trim()
        .parse::<u32>()
        .map_err(|e| Error::internal(format!("monitor pid file of {}: {e}", req.id)))?;
    Ok(shim_pid)
}

/// The monitor's command line (after the program) for `req`.
fn shim_args(req: &SpawnRequest, own_cgroup_procs: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--id".into(),
        req.id.into(),
        "--bundle".into(),
        req.bundle.into(),
        "--dir".into(),
        req.dir.into(),
        "--log".into(),
        req.log.into(),
        "--runtime".into(),
        req.handler.program.clone().into(),
    ];
    for a in &req.handler.argv_prefix {
        args.extend(["--runtime-arg".into(), a.into()]);
    }
    if req.handler.hide_cgroup2 {
        args.push("--hide-cgroup2".into());
        if req.mount_propagation {
            args.push("--mount-propagation".into());
        }
    }
    args.extend(["--runtime-root".into(), req.handler.root.clone().into()]);
    if let Some(procs) = own_cgroup_procs {
        args.extend(["--own-cgroup-procs".into(), procs.into()]);
    }
    for (flag, on) in [
        ("--tty", req.tty),
        ("--stdin", req.stdin),
        ("--stdin-once", req.stdin_once),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    args
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `pid` is the monitor of container `id` (not a reused pid).
pub(crate) fn is_monitor(pid: u32, id: &str) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"berth-shim"))
                && args.contains(&id.as_bytes())
        }
        Err(_) => false,
    }
}

/// The monitor's pid from its pid file, if that process is still it.
pub(crate) fn live_monitor(dir: &Path, id: &str) -> Option<u32> {
    let pid = std::fs::read_to_string(shim_pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_monitor(pid, id).then_some(pid)
}

pub(crate) fn read_exit(dir: &Path) -> Option<Exit> {
    let bytes = std::fs::read(exit_file(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Waits until process `pid` has exited (it need not be our child).
pub(crate) async fn wait_exit(pid: u32) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(Error::from(e).context(format!("pidfd_open {pid}")));
    }
    // SAFETY: the descriptor was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged
    // until the AsyncFd is dropped.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| Error::from(std::io::Error::from(e)).context(format!("watch pid {pid}")))?;
    let _ = afd.readable().await?;
    Ok(())
}

/// Has the monitor run the container (the runtime's `run --detach`);
/// returns the container init's pid. The runtime's refusal (a missing
/// executable, a bad mount) comes back in its own words.
pub(crate) fn start(dir: &Path, id: &str) -> Result<u32> {
    let answer = exchange(dir, id, "start", START_TIMEOUT)?;
    match answer.strip_prefix("ok ").map(str::parse::<u32>) {
        Some(Ok(pid)) if pid > 0 => Ok(pid),
        _ => Err(refusal(id, "start", &answer)),
    }
}

/// Sends one control command (`reopen-log`, `resize C R`, `cancel`) and
/// reads the answer.
pub(crate) fn control(dir: &Path, id: &str, command: &str) -> Result<()> {
    match exchange(dir, id, command, CONTROL_TIMEOUT)?.as_str() {
        "ok" => Ok(()),
        other => Err(refusal(id, command, other)),
    }
}

fn refusal(id: &str, command: &str, answer: &str) -> Error {
    match answer.strip_prefix("error ") {
        Some(why) if command == "start" => start_refused(id, why),
        _ => Error::internal(format!("monitor of container {id}: {command}: {answer}")),
    }
}

/// A refused start in the runtime's words. A program the image lacks is
/// the caller's mistake (InvalidArgument), also said in runc's words,
/// which dockerd passes on and the docker CLI turns into exit code 127.
fn start_refused(id: &str, why: &str) -> Error {
    let missing = why
        .split_once("executable file `")
        .and_then(|(_, rest)| rest.split_once("` not found in $PATH"))
        .map(|(program, _)| program);
    match missing {
        Some(program) => Error::invalid(format!(
            "container {id} could not start: exec: {program:?}: executable file not found in $PATH ({why})"
        )),
        None if why.contains("executable file not found") => {
            Error::invalid(format!("container {id} could not start: {why}"))
        }
        None => Error::internal(format!("container {id} could not start: {why}")),
    }
}

/// One command and its answer line (trimmed).
fn exchange(dir: &Path, id: &str, command: &str, timeout: std::time::Duration) -> Result<String> {
    let path = control_socket(dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        Error::new(
            ErrorKind::FailedPrecondition,
            format!("monitor of container {id} is not reachable: {e}"),
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with('\n') {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(answer.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_the_callers_mistake_in_runcs_words() {
        let crun = "executable file `nope` not found in $PATH: No such file or directory";
        let e = start_refused("c1", crun);
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            format!(
                "container c1 could not start: exec: \"nope\": executable file not found in $PATH ({crun})"
            )
        );
        let runc = "runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH";
        let e = start_refused("c1", runc);
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.message, format!("container c1 could not start: {runc}"));
        let other = start_refused("c1", "mount: permission denied");
        assert_eq!(other.kind, ErrorKind::Internal);
        assert_eq!(
            other.message,
            "container c1 could not start: mount: permission denied"
        );
    }
}
