//! The OCI runtime command-line contract, through one handler.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_errdefs::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::RuntimeHandler;

/// What `<runtime> state` reports.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    #[serde(default)]
    pub pid: u32,
}

pub struct OciRuntime {
    handler: RuntimeHandler,
}

impl OciRuntime {
    pub fn new(handler: RuntimeHandler) -> Self {
        OciRuntime { handler }
    }

    pub fn handler(&self) -> &RuntimeHandler {
        &self.handler
    }

    /// The runtime with its global flags (and, on hybrid hosts, its private
    /// mount namespace); subcommand arguments follow.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.handler.program);
        cmd.args(&self.handler.argv_prefix)
            .arg("--root")
            .arg(&self.handler.root)
            .stdin(Stdio::null());
        if self.handler.hide_cgroup2 {
            // SAFETY: runs in the forked child before exec.
            unsafe { cmd.pre_exec(|| crate::handler::hide_cgroup2()) };
        }
        cmd
    }

    /// Runtimes word "no such container" differently (crun names a missing
    /// status file); every one keeps a directory per container under its
    /// root, so that is what decides.
    fn require(&self, id: &str) -> Result<()> {
        if self.handler.root.join(id).exists() {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "container {id} not found by runtime handler {:?}",
                self.handler.name
            )))
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        Error::unavailable(format!(
            "runtime handler {:?}: cannot run {}: {e}",
            self.handler.name,
            self.handler.program.display()
        ))
    }

    /// Runs a subcommand to completion, turning a failure into an error that
    /// names the handler, the verb, the container and what the runtime said.
    fn run(&self, verb: &str, id: &str, cmd: &mut Command) -> Result<Output> {
        let out = cmd.output().map_err(|e| self.spawn_error(e))?;
        if out.status.success() {
            return Ok(out);
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "{} {verb} {id}: {said} ({})",
                self.handler.program.display(),
                out.status
            ),
        ))
    }

    /// `create`: the container's init is made and waits for `start`. Its
    /// stdout and stderr are the ones given (the monitor's pipes or files).
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.handler.root)?;
        let status = self
            .command()
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|e| self.spawn_error(e))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "{} create {id} failed ({status}); the runtime's message is in the container's stderr",
                self.handler.program.display()
            )))
        }
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.require(id)?;
        self.run("start", id, self.command().arg("start").arg(id))
            .map(drop)
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.require(id)?;
        self.run("kill", id, self.command().arg("kill").arg(id).arg(signal))
            .map(drop)
    }

    /// Deletes the container; with `force` a running one is killed first.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.require(id)?;
        let mut cmd = self.command();
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        self.run("delete", id, cmd.arg(id)).map(drop)
    }

    pub fn state(&self, id: &str) -> Result<ContainerState> {
        self.require(id)?;
        let out = self.run("state", id, self.command().arg("state").arg(id))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::internal(format!(
                "{} state {id}: unreadable answer: {e}",
                self.handler.program.display()
            ))
        })
    }

    /// The `exec` command for a process described by `process_file` (an OCI
    /// `process` JSON); the caller runs it, with its own stdio and timeout.
    /// The exec'd process's host pid is written to `pid_file`.
    pub fn exec_command(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Result<Command> {
        self.require(id)?;
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--process")
            .arg(process_file)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        Ok(cmd)
    }

    /// Applies new limits (`resources_file`: OCI `linux.resources` JSON).
    pub fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        self.require(id)?;
        self.run(
            "update",
            id,
            self.command()
                .arg("update")
                .arg("--resources")
                .arg(resources_file)
                .arg(id),
        )
        .map(drop)
    }
}
