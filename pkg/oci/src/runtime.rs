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

/// A container id as runc accepts one (`^[\w+\-.]+$`, not `.` or `..`),
/// and not starting with `-`: the id is joined to the runtime's root and
/// passed as an argument, so it must neither leave the root nor read as a
/// flag.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "container id {id:?} is not valid: it must be letters, digits, '_', '+', '-' and '.', not start with '-', and not be '.' or '..'"
        )))
    }
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
        check_id(id)?;
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
        check_id(id)?;
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

    /// Freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.require(id)?;
        self.run("pause", id, self.command().arg("pause").arg(id))
            .map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.require(id)?;
        self.run("resume", id, self.command().arg("resume").arg(id))
            .map(drop)
    }

    /// Host pids of the container's processes.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        self.require(id)?;
        let out = self.run(
            "ps",
            id,
            self.command().arg("ps").arg("--format").arg("json").arg(id),
        )?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::internal(format!(
                "{} ps {id}: unreadable answer: {e}",
                self.handler.program.display()
            ))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_leave_the_root_or_read_as_flags_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let runtime = OciRuntime::new(RuntimeHandler {
            name: "test".into(),
            // Never run: a bad id is refused before anything is.
            program: root.path().join("no-such-runtime"),
            argv_prefix: Vec::new(),
            root: root.path().join("state"),
            hide_cgroup2: false,
            allowed_annotations: Vec::new(),
        });
        std::fs::create_dir(root.path().join("state")).unwrap();
        let file = root.path().join("f");
        for id in [
            "", ".", "..", "../state", "/etc", "a/b", "-h", "--force", "a b", "a\nb",
        ] {
            let results = [
                (
                    "create",
                    runtime.create(id, &file, &file, Stdio::null(), Stdio::null()),
                ),
                ("start", runtime.start(id)),
                ("kill", runtime.kill(id, "KILL")),
                ("delete", runtime.delete(id, true)),
                ("state", runtime.state(id).map(drop)),
                (
                    "exec",
                    runtime.exec_command(id, &file, &file, None).map(drop),
                ),
                ("update", runtime.update(id, &file)),
            ];
            for (verb, result) in results {
                let e = result.unwrap_err();
                assert_eq!(e.kind, ErrorKind::InvalidArgument, "{verb} {id:?}: {e}");
                assert!(
                    e.message
                        .contains(&format!("container id {id:?} is not valid")),
                    "{verb} {id:?}: {e}"
                );
            }
        }
        // A well-formed id gets as far as the runtime's state directory.
        let e = runtime.start("abc-1.2_x+y").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }
}
