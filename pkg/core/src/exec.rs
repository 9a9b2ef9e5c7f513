//! `ExecSync`: a command run to completion in a running container through
//! the runtime's `exec`, with its output collected and a deadline.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Error, ErrorKind, Result};
use tokio::io::AsyncReadExt;

use crate::model::ContainerState;
use crate::{new_id, Core};

/// kubelet's cap on what ExecSync returns per stream.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Core {
    /// Runs `cmd` in container `id`; `timeout` of zero means none.
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        let record = self.container_status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} is not running"),
            ));
        }
        let runtime = self.runtime(&record.runtime_handler)?;
        let bundle = self.container_dir(id).join("bundle");
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)
                .map_err(|e| Error::internal(format!("bundle config of {id}: {e}")))?;
        let process = berth_oci::spec::exec_process(&spec, cmd, false);
        let exec_id = &new_id()[..16];
        let dir = self.container_state_dir(id);
        let process_file = dir.join(format!("exec-{exec_id}.json"));
        let pid_file = dir.join(format!("exec-{exec_id}.pid"));
        let process = serde_json::to_vec(&process)
            .map_err(|e| Error::internal(format!("exec process of {id}: {e}")))?;
        berth_store::write_atomic(&process_file, &process)?;
        let result = run(
            runtime.exec_command(id, &process_file, &pid_file)?,
            &pid_file,
            timeout,
        )
        .await;
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        result.map_err(|e| e.context(format!("exec in container {id}")))
    }
}

async fn run(
    cmd: std::process::Command,
    pid_file: &std::path::Path,
    timeout: Duration,
) -> Result<ExecOutput> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take().expect("piped").take(MAX_OUTPUT);
    let mut stderr = child.stderr.take().expect("piped").take(MAX_OUTPUT);
    let work = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        a?;
        b?;
        Ok::<_, std::io::Error>((out, err, status?))
    };
    let finished = if timeout.is_zero() {
        Ok(work.await)
    } else {
        tokio::time::timeout(timeout, work).await
    };
    match finished {
        Ok(done) => {
            let (stdout, stderr, status) = done?;
            use std::os::unix::process::ExitStatusExt;
            let exit_code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(255);
            Ok(ExecOutput {
                stdout,
                stderr,
                exit_code,
            })
        }
        Err(_) => {
            // The runtime only relays: the exec'd process itself must go.
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                // SAFETY: kill with a pid the runtime just wrote; no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("command timed out after {timeout:?}"),
            ))
        }
    }
}
