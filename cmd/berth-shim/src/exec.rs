//! `berth-shim exec`: the reaper of a detached exec (see the crate
//! documentation). It becomes a child subreaper, runs the runtime's
//! `exec --detach ...`, adopts the exec'd process once the runtime has
//! left, waits for it and exits with its status. One thread, no poll loop:
//! `sigwaitinfo` on the few signals it cares about.

use std::ffi::{CString, OsString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::sys;

/// The signals passed on to the exec'd process (or, before it is known,
/// to the runtime): whoever stops the reaper means to stop the command.
const FORWARDED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub pid_file: PathBuf,
    pub argv: Vec<OsString>,
}

/// Parses `--pid-file PATH -- PROGRAM [ARG]...` (the words after `exec`).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Config, String> {
    let mut args = args.into_iter();
    let mut pid_file = None;
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        }
        if bytes == b"--pid-file" {
            pid_file = Some(PathBuf::from(
                args.next().ok_or("--pid-file needs a value")?,
            ));
        } else if let Some(value) = bytes.strip_prefix(b"--pid-file=") {
            pid_file = Some(PathBuf::from(std::ffi::OsStr::from_bytes(value)));
        } else {
            return Err(format!("exec: unknown argument {arg:?}"));
        }
    }
    let pid_file = pid_file.ok_or("exec: --pid-file is required")?;
    let argv: Vec<OsString> = args.collect();
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err("exec: the runtime command is missing after --".into());
    }
    Ok(Config { pid_file, argv })
}

/// The exit code a wait status stands for: the status, or 128 + signal.
fn code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

fn read_pid(cfg: &Config) -> Result<libc::pid_t, String> {
    let text = std::fs::read_to_string(&cfg.pid_file)
        .map_err(|e| format!("cannot read {}: {e}", cfg.pid_file.display()))?;
    match text.trim().parse::<libc::pid_t>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(format!(
            "{} holds no pid: {:?}",
            cfg.pid_file.display(),
            text.trim()
        )),
    }
}

/// Entry point of `berth-shim exec ...`; returns the exit code. stdio is
/// the caller's and passes to the runtime as is (its messages on stderr).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cfg = match parse(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return 2;
        }
    };
    match run(&cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-shim exec: {e}");
            255
        }
    }
}

fn run(cfg: &Config) -> Result<i32, String> {
    let argv = cfg
        .argv
        .iter()
        .map(|a| sys::cstring(a.as_bytes()).map_err(|e| format!("{a:?}: {e}")))
        .collect::<Result<Vec<CString>, String>>()?;
    let set = blocked_signals()?;
    // SAFETY: a process attribute, no pointers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    let runtime = sys::spawn(&argv, [0, 1, 2], false, false)
        .map_err(|e| format!("cannot run {:?}: {e}", cfg.argv[0]))?;
    let mut reaper = Reaper {
        runtime: Some(runtime),
        target: None,
        early: Vec::new(),
    };
    loop {
        // SAFETY: siginfo_t is plain data; sigwaitinfo fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is an initialised sigset and `info` a valid out pointer.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig != libc::SIGCHLD {
            reaper.forward(sig);
            continue;
        }
        while let Some((pid, status)) = sys::reap_any() {
            if let Some(done) = reaper.reaped(cfg, pid, status)? {
                return Ok(done);
            }
        }
    }
}

/// What the reaper knows: the runtime while it runs, then the exec'd
/// process it adopted.
struct Reaper {
    runtime: Option<libc::pid_t>,
    target: Option<libc::pid_t>,
    /// Children reaped before the runtime's exit named the target (the
    /// order in which zombies are reaped is the kernel's).
    early: Vec<(libc::pid_t, libc::c_int)>,
}

impl Reaper {
    fn forward(&self, sig: libc::c_int) {
        if let Some(pid) = self.target.or(self.runtime) {
            sys::kill(pid, sig);
        }
    }

    /// Takes one reaped child; `Some(exit code)` once the work is done.
    fn reaped(
        &mut self,
        cfg: &Config,
        pid: libc::pid_t,
        status: libc::c_int,
    ) -> Result<Option<i32>, String> {
        if Some(pid) == self.runtime {
            self.runtime = None;
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                // The runtime's own message is already on stderr.
                return Ok(Some(code(status)));
            }
            let target = read_pid(cfg)?;
            if let Some(&(_, status)) = self.early.iter().find(|(p, _)| *p == target) {
                return Ok(Some(code(status)));
            }
            if !sys::is_child(target) {
                // A runtime that did not detach waited for the process
                // itself: nothing left to wait for.
                return Err(format!(
                    "the exec'd process {target} is not this reaper's child: did the runtime ignore --detach?"
                ));
            }
            self.target = Some(target);
            return Ok(None);
        }
        if Some(pid) == self.target {
            return Ok(Some(code(status)));
        }
        if self.target.is_none() {
            self.early.push((pid, status));
        }
        Ok(None)
    }
}

/// Blocks SIGCHLD and the forwarded signals (taken by `sigwaitinfo`; the
/// runtime starts with an empty mask, see `sys::spawn`) and ignores
/// SIGPIPE. Returns the blocked set.
fn blocked_signals() -> Result<libc::sigset_t, String> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set before any other use;
    // signal() installs no handler code.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        // An inherited SIG_IGN would let the kernel reap children itself.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        if libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) != 0 {
            return Err(format!("sigprocmask: {}", std::io::Error::last_os_error()));
        }
        Ok(set.assume_init())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_line() {
        let cfg = parse(args(&[
            "--pid-file",
            "/p",
            "--",
            "runc",
            "exec",
            "--detach",
            "id",
        ]))
        .unwrap();
        assert_eq!(cfg.pid_file, PathBuf::from("/p"));
        assert_eq!(cfg.argv, args(&["runc", "exec", "--detach", "id"]));
        let cfg = parse(args(&["--pid-file=/q", "--", "crun"])).unwrap();
        assert_eq!(cfg.pid_file, PathBuf::from("/q"));
        let e = parse(args(&["--", "runc"])).unwrap_err();
        assert!(e.contains("--pid-file is required"), "{e}");
        let e = parse(args(&["--pid-file", "/p", "--"])).unwrap_err();
        assert!(e.contains("runtime command is missing"), "{e}");
        let e = parse(args(&["--pid-file", "/p", "--tty", "--", "x"])).unwrap_err();
        assert!(e.contains("unknown argument \"--tty\""), "{e}");
        let e = parse(args(&["--pid-file"])).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
    }

    #[test]
    fn exit_codes_follow_cri() {
        assert_eq!(code(3 << 8), 3);
        assert_eq!(code(libc::SIGKILL), 137);
    }
}
