//! The real docker CLI aimed at a `TestDaemon`'s Docker API socket.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::TestDaemon;

/// What a docker command printed and how it ended.
#[derive(Debug)]
pub struct DockerRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl DockerRun {
    pub fn from(output: Output) -> DockerRun {
        DockerRun {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl TestDaemon {
    /// The Docker API socket: berthd's default, under its state dir.
    pub fn docker_socket(&self) -> PathBuf {
        self.state_dir.join("docker.sock")
    }

    /// `docker` with `DOCKER_HOST` at this daemon and a client config dir
    /// of its own (no contexts, credentials or plugins of the machine).
    pub fn docker_command(&self) -> Command {
        let config = self.dir().join("docker-config");
        let _ = std::fs::create_dir_all(&config);
        let mut cmd = Command::new("docker");
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}", self.docker_socket().display()),
        )
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_API_VERSION");
        cmd
    }

    /// Runs `docker args…` to its end.
    pub fn docker(&self, args: &[&str]) -> DockerRun {
        let output = self
            .docker_command()
            .args(args)
            .output()
            .expect("run the docker CLI (is it on PATH?)");
        DockerRun::from(output)
    }

    /// Runs `docker args…`, fails the test unless it exits 0, and returns
    /// its standard output.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let run = self.docker(args);
        assert_eq!(
            run.status,
            Some(0),
            "docker {args:?} failed: {}\n{}",
            run.stderr,
            self.log_tail()
        );
        run.stdout
    }

    /// Runs `docker args…` with `input` on its standard input, closed
    /// once written.
    pub fn docker_piped(&self, args: &[&str], input: &[u8]) -> DockerRun {
        let mut child = self
            .docker_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the docker CLI (is it on PATH?)");
        let mut stdin = child.stdin.take().expect("the CLI's stdin");
        let input = input.to_vec();
        // A writer of its own: the CLI may answer before reading it all.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let output = child.wait_with_output().expect("wait for the docker CLI");
        let _ = writer.join();
        DockerRun::from(output)
    }

    /// A shell command line under a pseudo-terminal (util-linux
    /// `script`), with the docker CLI's environment; returns how it ended
    /// and what the terminal showed.
    pub fn docker_under_pty(&self, command: &str) -> DockerRun {
        let docker = self.docker_command();
        let mut cmd = Command::new("script");
        cmd.args(["-qec", command, "/dev/null"]);
        for (k, v) in docker.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // Stdin stays open (a user who types nothing) until the command
        // ends: at EOF script(1) would end the session on its own.
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script(1) from util-linux");
        let held = child.stdin.take();
        let output = child.wait_with_output().expect("wait for script(1)");
        drop(held);
        DockerRun::from(output)
    }

    /// The last lines of berthd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
