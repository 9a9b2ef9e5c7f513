//! Commands in a running container through the runtime's `exec`:
//! `ExecSync` (run to completion, output collected, a deadline) and the
//! streaming exec behind CRI `Exec` (pipes or a terminal, for a client).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::pty::{ConsoleSocket, Pty};

use crate::{new_id, Containers};

/// How long a terminal exec whose process already ended may still take to
/// hand over its terminal.
const CONSOLE_AFTER_EXIT: Duration = Duration::from_secs(2);

/// kubelet's cap on what ExecSync returns per stream.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// Read size while collecting ExecSync output.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    /// The command wrote more than the cap on stdout; the rest was dropped.
    pub stdout_truncated: bool,
    /// Likewise for stderr.
    pub stderr_truncated: bool,
}

impl ExecOutput {
    /// A line for a front door without a truncation flag of its own (CRI's
    /// ExecSyncResponse) to append to stderr, when anything was dropped.
    pub fn truncation_marker(&self) -> Option<String> {
        let which = match (self.stdout_truncated, self.stderr_truncated) {
            (false, false) => return None,
            (true, false) => "stdout",
            (false, true) => "stderr",
            (true, true) => "stdout and stderr",
        };
        Some(format!(
            "[berth: {which} truncated at {} MiB]\n",
            MAX_OUTPUT >> 20
        ))
    }
}

/// A streaming exec (CRI `Exec`, Docker's exec): which stdio the client
/// wants, and what it changes from the container's process.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// `KEY=value` set over the container's environment (same key
    /// replaced; a bare `KEY` unsets it).
    pub env: Vec<String>,
    /// An absolute working directory instead of the container's.
    pub cwd: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the
    /// container's `/etc/passwd` and `/etc/group` like a container's user.
    pub user: Option<String>,
    /// Every capability the host can give (Docker's `exec --privileged`).
    pub privileged: bool,
}

impl ExecSpec {
    fn options(&self) -> berth_oci::spec::ExecOptions {
        berth_oci::spec::ExecOptions {
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            privileged: self.privileged,
        }
    }
}

/// How long the runtime (or the tty reaper) of an exec that is being
/// ended gets to reap the killed process and exit before it is killed too.
const REAP_GRACE: Duration = Duration::from_secs(10);
/// How often the pid file of an exec being ended is looked for while the
/// runtime has not written it yet.
const PID_POLL: Duration = Duration::from_millis(10);

/// The process file and pid file of one exec; removed when dropped.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
}

/// The pid the runtime wrote to `file`, once it has.
fn read_pid(file: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
}

impl ExecFiles {
    /// The runtime only relays: the exec'd process itself must be killed.
    /// False while the runtime has not written the pid yet.
    fn kill_process(&self) -> bool {
        let Some(pid) = read_pid(&self.pid) else {
            return false;
        };
        // SAFETY: kill with a pid the runtime just wrote; no memory involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    }
}

/// The host pid of an exec'd process, from the pid file its runtime
/// writes; kept once read, since the file goes with the exec.
#[derive(Debug, Clone)]
pub struct ExecPid {
    file: PathBuf,
    known: Arc<std::sync::OnceLock<u32>>,
}

impl ExecPid {
    /// None while the runtime has not written it (or after the exec ended
    /// without it ever being read).
    pub fn get(&self) -> Option<u32> {
        if let Some(&pid) = self.known.get() {
            return Some(pid);
        }
        let pid = read_pid(&self.file)?.unsigned_abs();
        Some(*self.known.get_or_init(|| pid))
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.process);
        let _ = std::fs::remove_file(&self.pid);
    }
}

/// A runtime `exec` (or the tty reaper running one, see
/// [`Core::exec_stream`]) with the files of its exec. Dropped before its
/// exit was collected (a deadline, a client gone, a cancelled call), it
/// ends the exec in the background: see [`end_exec`].
struct RunningExec {
    child: Option<tokio::process::Child>,
    files: Option<ExecFiles>,
}

impl RunningExec {
    fn spawn(mut cmd: tokio::process::Command, files: ExecFiles) -> Result<RunningExec> {
        // Only a last resort (see `end_exec`): killing the runtime first
        // orphans the exec'd process.
        cmd.kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            Error::unavailable(format!(
                "exec: cannot run {}: {e}",
                cmd.as_std().get_program().to_string_lossy()
            ))
        })?;
        Ok(RunningExec {
            child: Some(child),
            files: Some(files),
        })
    }

    fn child(&mut self) -> &mut tokio::process::Child {
        self.child
            .as_mut()
            .expect("the child is only taken on drop")
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child().wait().await
    }

    /// Kills the exec'd process and waits until it is reaped.
    async fn end(&mut self) {
        if let (Some(child), Some(files)) = (self.child.as_mut(), self.files.as_ref()) {
            end_exec(child, files).await;
        }
    }
}

impl Drop for RunningExec {
    fn drop(&mut self) {
        let (Some(mut child), Some(files)) = (self.child.take(), self.files.take()) else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { end_exec(&mut child, &files).await });
            }
            // No runtime to wait on: kill both (the child on drop).
            Err(_) => {
                files.kill_process();
            }
        }
    }
}

/// Ends an exec: kills the exec'd process by the pid its runtime wrote
/// (waiting for the pid file if the runtime is still starting it), then
/// waits for the runtime to reap it and exit. The runtime is never killed
/// first: its process would be orphaned, and outlive it as a zombie under
/// a container init that does not reap (`sleep`, `top`). A runtime still
/// there after [`REAP_GRACE`] is killed.
async fn end_exec(child: &mut tokio::process::Child, files: &ExecFiles) {
    let deadline = tokio::time::Instant::now() + REAP_GRACE;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if files.kill_process() {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_ok()
            {
                return;
            }
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(PID_POLL).await;
    }
    tracing::warn!(
        pid_file = %files.pid.display(),
        "an exec's runtime did not exit within {REAP_GRACE:?} of its process being killed; killing it"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// A running streaming exec. Dropping it before [`wait`](Self::wait)
/// returned kills the exec'd process (a client that went away).
pub struct ExecProcess {
    exec: RunningExec,
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// The terminal of a `tty` exec, for resizing.
    pub pty: Option<Pty>,
    pid_known: Arc<std::sync::OnceLock<u32>>,
}

impl ExecProcess {
    /// The exec'd process's host pid, readable while and after it runs.
    pub fn pid(&self) -> ExecPid {
        ExecPid {
            file: self
                .exec
                .files
                .as_ref()
                .map(|f| f.pid.clone())
                .unwrap_or_default(),
            known: self.pid_known.clone(),
        }
    }

    /// Waits for the process; its exit code (128 + signal for a signal).
    pub async fn wait(&mut self) -> Result<i32> {
        Ok(exit_code(self.exec.wait().await?))
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// A runtime's `exec` command (which ends with the container id) made
/// detached (`--detach` before the id) and run by the monitor's exec
/// reaper (`berth-shim exec`, see its documentation), which adopts the
/// detached process and exits with its status.
fn under_reaper(
    shim: &std::path::Path,
    runtime: &dyn crate::RuntimeDriver,
    exec: &std::process::Command,
    id: &str,
    pid_file: &std::path::Path,
) -> Result<tokio::process::Command> {
    let mut args: Vec<&std::ffi::OsStr> = exec.get_args().collect();
    if args.pop() != Some(std::ffi::OsStr::new(id)) {
        return Err(Error::internal(format!(
            "exec in container {id}: the runtime command does not end with the container id"
        )));
    }
    let mut cmd = tokio::process::Command::new(shim);
    cmd.arg("exec")
        .arg("--pid-file")
        .arg(pid_file)
        .arg("--")
        .arg(exec.get_program())
        .args(args)
        .arg("--detach")
        .arg(id);
    if runtime.handler().hide_cgroup2 {
        // The reaper and the runtime under it share the private mount
        // namespace the runtime's own command would have made.
        // SAFETY: runs in the forked child before exec.
        unsafe { cmd.pre_exec(|| berth_oci::hide_cgroup2()) };
    }
    Ok(cmd)
}

impl Containers {
    /// The runtime of a running container and the files of a new exec.
    fn prepare_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        options: &berth_oci::spec::ExecOptions,
    ) -> Result<(Arc<dyn crate::RuntimeDriver>, ExecFiles)> {
        if cmd.is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        let record = self.status(id)?;
        record.state.check_running(id)?;
        let runtime = self.runtime(&record.runtime_handler)?;
        let bundle = self.container_dir(id).join("bundle");
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)
                .map_err(|e| Error::internal(format!("bundle config of {id}: {e}")))?;
        let process = berth_oci::spec::exec_process(&spec, cmd, tty, options)
            .map_err(|e| e.context(format!("exec in container {id}")))?;
        let exec_id = &new_id()[..16];
        let dir = self.container_state_dir(id);
        let files = ExecFiles {
            process: dir.join(format!("exec-{exec_id}.json")),
            pid: dir.join(format!("exec-{exec_id}.pid")),
        };
        let process = serde_json::to_vec(&process)
            .map_err(|e| Error::internal(format!("exec process of {id}: {e}")))?;
        // A fresh name read only by the runtime we are about to run: no
        // reader can see it half-written, and a crash leaves nothing that
        // recovery trusts, so it needs neither rename nor fsync (which cost
        // milliseconds per exec on this disk).
        crate::container::write_private(&files.process, &process)?;
        Ok((runtime, files))
    }

    /// Runs `cmd` in container `id`; `timeout` of zero means none.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let (runtime, files) = self.prepare_exec(id, cmd, false, &Default::default())?;
        run(
            runtime.exec_command(id, &files.process, &files.pid, None)?,
            files,
            timeout,
        )
        .await
        .map_err(|e| e.context(format!("exec in container {id}")))
    }

    /// Starts `spec.cmd` in container `id` with the stdio the client asked
    /// for: pipes, or a terminal (stdout only) when `spec.tty`.
    ///
    /// A terminal comes from `--console-socket`, which runc accepts only
    /// with `--detach`: such an exec runs under the monitor's exec reaper
    /// (`berth-shim exec`), a child subreaper that adopts the detached
    /// process and exits with its status, so berthd never becomes a
    /// subreaper itself. Every handler takes this path (crun too), so a
    /// terminal exec behaves alike whatever the runtime.
    pub async fn exec_stream(&self, id: &str, spec: ExecSpec) -> Result<ExecProcess> {
        let (runtime, files) =
            self.prepare_exec(id, spec.cmd.clone(), spec.tty, &spec.options())?;
        let pipe = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        if !spec.tty {
            let mut cmd = tokio::process::Command::from(runtime.exec_command(
                id,
                &files.process,
                &files.pid,
                None,
            )?);
            cmd.stdin(pipe(spec.stdin))
                .stdout(pipe(spec.stdout))
                .stderr(pipe(spec.stderr));
            let mut exec = RunningExec::spawn(cmd, files)?;
            let child = exec.child();
            return Ok(ExecProcess {
                stdin: child.stdin.take().map(|s| Box::new(s) as _),
                stdout: child.stdout.take().map(|s| Box::new(s) as _),
                stderr: child.stderr.take().map(|s| Box::new(s) as _),
                exec,
                pty: None,
                pid_known: Arc::default(),
            });
        }
        // A short path: unix socket addresses hold 107 bytes.
        let dir = self.config.state_dir.join("x");
        private_dir(&dir)?;
        let console = ConsoleSocket::bind(&dir.join(format!("{}.sock", &new_id()[..16])))?;
        let runtime_exec =
            runtime.exec_command(id, &files.process, &files.pid, Some(console.path()))?;
        let mut cmd = under_reaper(
            &self.config.shim,
            runtime.as_ref(),
            &runtime_exec,
            id,
            &files.pid,
        )?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut exec = RunningExec::spawn(cmd, files)?;
        let mut errors = exec.child().stderr.take();
        // The receive is never dropped half-done (it accepts, then reads
        // the descriptor on a blocking thread).
        let receive = console.receive();
        tokio::pin!(receive);
        let master = tokio::select! {
            biased;
            fd = &mut receive => fd?,
            status = exec.wait() => {
                // A quick command (`echo hello`) can be over, and its reaper
                // gone, before the terminal the runtime sent first is in
                // hand: finish receiving it if it is there.
                match tokio::time::timeout(CONSOLE_AFTER_EXIT, &mut receive).await {
                    Ok(Ok(fd)) => fd,
                    _ => {
                        let mut message = String::new();
                        if let Some(mut e) = errors.take() {
                            let _ = e.read_to_string(&mut message).await;
                        }
                        return Err(Error::internal(format!(
                            "exec in container {id} failed ({}): {}", status?, message.trim()
                        )));
                    }
                }
            }
        };
        if let Some(errors) = errors {
            // Kept open and read to its end: a runtime's later warning
            // must not die on a closed pipe (Go exits on EPIPE on fd 2).
            let id = id.to_string();
            tokio::spawn(async move {
                if let Ok((said, _)) = read_capped(errors, 4096).await {
                    let said = String::from_utf8_lossy(&said);
                    if !said.trim().is_empty() {
                        tracing::warn!(container = %id, "exec runtime: {}", said.trim());
                    }
                }
            });
        }
        let pty = Pty::new(master)?;
        Ok(ExecProcess {
            stdin: spec.stdin.then(|| Box::new(pty.clone()) as _),
            stdout: Some(Box::new(pty.clone())),
            stderr: None,
            pty: Some(pty),
            exec,
            pid_known: Arc::default(),
        })
    }
}

async fn run(
    cmd: std::process::Command,
    files: ExecFiles,
    timeout: Duration,
) -> Result<ExecOutput> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut exec = RunningExec::spawn(cmd, files)?;
    let work = collect(exec.child(), MAX_OUTPUT);
    let finished = if timeout.is_zero() {
        Ok(work.await)
    } else {
        tokio::time::timeout(timeout, work).await
    };
    match finished {
        Ok(done) => Ok(done?),
        Err(_) => {
            exec.end().await;
            Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("command timed out after {timeout:?}"),
            ))
        }
    }
}

/// Makes `dir` (its parent must exist) a directory only root can enter:
/// the exec console sockets in it hand out a container's terminal.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    // Made by an older berthd with the default mode.
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Reads `reader` to its end, keeping the first `cap` bytes and reading
/// and dropping the rest: a writer must never block on a full pipe
/// because we stopped reading. Returns the bytes and whether any were
/// dropped.
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap.saturating_sub(kept.len());
        truncated |= n > room;
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Collects a child's piped stdout and stderr (at most `cap` bytes each)
/// and waits for it to exit.
async fn collect(child: &mut tokio::process::Child, cap: usize) -> std::io::Result<ExecOutput> {
    async fn drain(
        pipe: Option<impl AsyncRead + Unpin>,
        cap: usize,
    ) -> std::io::Result<(Vec<u8>, bool)> {
        match pipe {
            Some(pipe) => read_capped(pipe, cap).await,
            None => Ok((Vec::new(), false)),
        }
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err, status) = tokio::join!(drain(stdout, cap), drain(stderr, cap), child.wait());
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = (out?, err?);
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code: exit_code(status?),
        stdout_truncated,
        stderr_truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `sh` writing far more than the cap on stdout (and a little on
    /// stderr) must run to its end: the excess is drained and dropped.
    #[tokio::test]
    async fn output_past_the_cap_is_drained_dropped_and_flagged() {
        const CAP: usize = 64 * 1024;
        // 1 MiB: far beyond the cap plus a pipe buffer, so a reader that
        // stops at the cap leaves the writer blocked for good.
        let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo done >&2; exit 7";
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), collect(&mut child, CAP))
            .await
            .expect("the command must finish: output past the cap is drained")
            .unwrap();
        assert_eq!(out.exit_code, 7);
        assert_eq!(out.stdout.len(), CAP);
        assert!(out.stdout.iter().all(|&b| b == b'x'));
        assert!(out.stdout_truncated);
        assert_eq!(out.stderr, b"done\n");
        assert!(!out.stderr_truncated);
        assert_eq!(
            out.truncation_marker().as_deref(),
            Some("[berth: stdout truncated at 16 MiB]\n")
        );
    }

    #[test]
    fn the_exec_console_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("berth-exec-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = base.join("x");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // One left world-readable by an older version is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // A symlink in its place is refused, not followed.
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn terminal_execs_run_detached_under_the_reaper() {
        use std::path::Path;
        let base = std::env::temp_dir().join(format!("berth-exec-reaper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/c1")).unwrap();
        let runtime = berth_oci::OciRuntime::new(berth_oci::RuntimeHandler {
            name: "runc".into(),
            program: "/usr/sbin/runc".into(),
            argv_prefix: Vec::new(),
            root: base.join("root"),
            hide_cgroup2: false,
            allowed_annotations: Vec::new(),
        });
        let (process, pid, socket) = (
            Path::new("/s/p.json"),
            Path::new("/s/p.pid"),
            Path::new("/x/c.sock"),
        );
        let exec = runtime
            .exec_command("c1", process, pid, Some(socket))
            .unwrap();
        let shim = Path::new("/opt/berth-shim");
        let cmd = under_reaper(shim, &runtime, &exec, "c1", pid).unwrap();
        let cmd = cmd.as_std();
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let root = base.join("root").display().to_string();
        assert_eq!(
            argv,
            [
                "/opt/berth-shim",
                "exec",
                "--pid-file",
                "/s/p.pid",
                "--",
                "/usr/sbin/runc",
                "--root",
                &root,
                "exec",
                "--process",
                "/s/p.json",
                "--pid-file",
                "/s/p.pid",
                "--console-socket",
                "/x/c.sock",
                "--detach",
                "c1",
            ]
        );
        // The id must close the runtime's command: --detach goes before it.
        let e = under_reaper(shim, &runtime, &exec, "c2", pid).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.contains("does not end with the container id"),
            "{e:?}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_exec_pid_is_read_once_written_and_kept_after_its_file_goes() {
        let file = std::env::temp_dir().join(format!("berth-exec-pid-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let pid = ExecPid {
            file: file.clone(),
            known: Arc::default(),
        };
        assert_eq!(pid.get(), None, "not written yet");
        std::fs::write(&file, "0").unwrap();
        assert_eq!(pid.get(), None, "0 is no process");
        std::fs::write(&file, "4242").unwrap();
        assert_eq!(pid.clone().get(), Some(4242));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(pid.get(), Some(4242), "kept by every clone");
    }

    #[test]
    fn an_exec_spec_passes_env_cwd_user_and_privileged_on() {
        let spec = ExecSpec {
            env: vec!["A=1".into()],
            cwd: Some("/tmp".into()),
            user: Some("app:50".into()),
            privileged: true,
            ..ExecSpec::default()
        };
        assert_eq!(
            spec.options(),
            berth_oci::spec::ExecOptions {
                env: vec!["A=1".into()],
                cwd: Some("/tmp".into()),
                user: Some("app:50".into()),
                privileged: true,
            }
        );
        assert_eq!(ExecSpec::default().options(), Default::default());
    }

    #[tokio::test]
    async fn output_at_the_cap_is_not_truncated() {
        let (data, truncated) = read_capped(&b"abcd"[..], 4).await.unwrap();
        assert_eq!((data.as_slice(), truncated), (&b"abcd"[..], false));
        let (data, truncated) = read_capped(&b"abcde"[..], 4).await.unwrap();
        assert_eq!((data.as_slice(), truncated), (&b"abcd"[..], true));
        assert_eq!(ExecOutput::default().truncation_marker(), None);
        let both = ExecOutput {
            stdout_truncated: true,
            stderr_truncated: true,
            ..ExecOutput::default()
        };
        assert_eq!(
            both.truncation_marker().as_deref(),
            Some("[berth: stdout and stderr truncated at 16 MiB]\n")
        );
    }
}
