//! A harness for driving the built `berth-shim` against real runtimes (crun
//! through the hybrid-host `unshare` wrapper, and runc) on a busybox rootfs.
//! Each [`Container`] has its own directory, runtime root and cgroup parent,
//! and removes them all (plus the runtime's container and the shim) when
//! dropped; [`Container::finish`] does the same and asserts it worked.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-shim");
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Hides the v2 tree from crun on a hybrid host (see pkg/oci/src/handler.rs).
const HIDE_UNIFIED: &str = "mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec \"$0\" \"$@\"";

pub const DEADLINE: Duration = Duration::from_secs(20);

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test unless running as root: a test that cannot run
/// must not pass silently (CI runs the suite as root).
pub fn need_root() {
    assert!(is_root(), "needs root: run the suite as root");
}

fn find(binary: &str) -> Option<PathBuf> {
    [
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
    ]
    .iter()
    .map(|d| Path::new(d).join(binary))
    .find(|p| p.is_file())
}

/// One way of invoking an OCI runtime: program plus argument prefix.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub name: &'static str,
    pub program: String,
    pub args: Vec<String>,
}

/// crun (wrapped for this hybrid cgroup host) and runc; both must exist.
pub fn runtimes() -> Vec<Runtime> {
    let crun = find("crun").expect("crun is installed");
    let runc = find("runc").expect("runc is installed");
    let unshare = find("unshare").expect("unshare is installed");
    let hybrid = Path::new(CGROUP_ROOT).join("unified").is_dir();
    let crun = if hybrid {
        Runtime {
            name: "crun",
            program: unshare.display().to_string(),
            args: [
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                HIDE_UNIFIED,
                &crun.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    } else {
        Runtime {
            name: "crun",
            program: crun.display().to_string(),
            args: Vec::new(),
        }
    };
    vec![
        crun,
        Runtime {
            name: "runc",
            program: runc.display().to_string(),
            args: Vec::new(),
        },
    ]
}

/// Polls `f` until it gives a value or the deadline passes.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub msg: String,
}

/// Parses a CRI log, asserting every line's shape.
pub fn parse_log(text: &str) -> Vec<Entry> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log ends mid-line: {text:?}"
    );
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let e = Entry {
                time: parts.next().unwrap_or_default().to_string(),
                stream: parts.next().unwrap_or_default().to_string(),
                tag: parts.next().unwrap_or_default().to_string(),
                msg: parts
                    .next()
                    .unwrap_or_else(|| panic!("no message field: {line:?}"))
                    .to_string(),
            };
            assert!(is_rfc3339nano_utc(&e.time), "bad timestamp in {line:?}");
            assert!(
                e.stream == "stdout" || e.stream == "stderr",
                "bad stream in {line:?}"
            );
            assert!(e.tag == "F" || e.tag == "P", "bad tag in {line:?}");
            e
        })
        .collect()
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?Z$` — Go's
/// RFC3339Nano in UTC, fraction without trailing zeros.
pub fn is_rfc3339nano_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let head = (0..4).all(digit)
        && at(4, b'-')
        && digit(5)
        && digit(6)
        && at(7, b'-')
        && digit(8)
        && digit(9)
        && at(10, b'T')
        && digit(11)
        && digit(12)
        && at(13, b':')
        && digit(14)
        && digit(15)
        && at(16, b':')
        && digit(17)
        && digit(18);
    if !head || !s.ends_with('Z') {
        return false;
    }
    let rest = &s[19..s.len() - 1];
    if rest.is_empty() {
        return true;
    }
    let Some(frac) = rest.strip_prefix('.') else {
        return false;
    };
    (1..=9).contains(&frac.len())
        && frac.bytes().all(|c| c.is_ascii_digit())
        && !frac.ends_with('0')
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Whether `pid` is gone (or a zombie waiting for its reaper).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Field `key` of /proc/PID/status, e.g. `VmRSS` (value in kB).
pub fn proc_status_kb(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The parent pid of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Makes a pipe whose write end the child gets as fd 3.
fn report_pipe(cmd: &mut Command) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new descriptors owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let raw = w.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(raw, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    (r, w)
}

/// Reads the report: up to the first newline, or EOF.
fn read_report(r: &OwnedFd) -> String {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "no report within {DEADLINE:?}: {out:?}");
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is valid for its length.
        let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..got as usize]);
        if out.contains(&b'\n') {
            break;
        }
    }
    String::from_utf8(out).expect("report is UTF-8")
}

/// A test container and everything made for it.
pub struct Container {
    pub rt: Runtime,
    pub id: String,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    pub shim_pid: Option<i32>,
    /// Extra shim arguments (`--tty`, `--stdin`, ...).
    pub shim_flags: Vec<String>,
}

impl Container {
    /// Makes a bundle running `args` (through the spec's `process.args`).
    pub fn new(rt: &Runtime, args: &[&str], tty: bool) -> Container {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("bst-{pid}-{n}-{}", rt.name);
        let dir = PathBuf::from(format!("/tmp/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Container {
            rt: rt.clone(),
            id: name.clone(),
            dir,
            cgroup_parent: format!("berth-shim-test-{pid}-{n}"),
            shim_pid: None,
            shim_flags: if tty {
                vec!["--tty".into()]
            } else {
                Vec::new()
            },
        };
        let rootfs = c.rootfs();
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::create_dir_all(c.state()).unwrap();
        std::fs::create_dir_all(c.dir.join("logs")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        let ok = Command::new(find("runc").unwrap())
            .arg("spec")
            .current_dir(c.bundle())
            .status()
            .unwrap();
        assert!(ok.success(), "runc spec");
        let path = c.bundle().join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["process"]["terminal"] = tty.into();
        spec["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        spec["linux"]["cgroupsPath"] = format!("/{}/ctr", c.cgroup_parent).into();
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        c
    }

    /// Changes the bundle's config.json.
    pub fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        let path = self.bundle().join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    }

    /// Kills the processes left in the container's cgroup (this test's
    /// own) and waits until they are gone.
    pub fn kill_leftovers(&self) {
        wait_for("leftover processes to die", || {
            let procs = self.cgroup_procs();
            for pid in &procs {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: signalling a process this test's container made.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            procs.is_empty().then_some(())
        });
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("logs/0.log")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The shim's command line, per the contract.
    pub fn shim_args(&self) -> Vec<String> {
        let mut a = vec![
            "--id".to_string(),
            self.id.clone(),
            "--bundle".into(),
            self.bundle().display().to_string(),
            "--dir".into(),
            self.state().display().to_string(),
            "--log".into(),
            self.log_path().display().to_string(),
            "--runtime".into(),
            self.rt.program.clone(),
        ];
        for arg in &self.rt.args {
            a.push("--runtime-arg".into());
            a.push(arg.clone());
        }
        a.push("--runtime-root".into());
        a.push(self.runtime_root().display().to_string());
        a.extend(self.shim_flags.iter().cloned());
        a
    }

    /// Runs the shim with a report pipe on fd 3 as berthd does; asserts
    /// that the spawned process exits 0 at once; returns the report line.
    pub fn spawn_shim(&mut self) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(self.shim_args());
        let (report, mut child) = self.spawn_through(cmd);
        let status = child.wait().unwrap();
        assert!(status.success(), "the shim's first process: {status}");
        report
    }

    /// Runs `cmd` (the shim, or a spawner that runs it) with the report
    /// pipe on fd 3; returns the report line and the spawned process.
    pub fn spawn_through(&mut self, mut cmd: Command) -> (String, std::process::Child) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (r, w) = report_pipe(&mut cmd);
        let child = cmd.spawn().unwrap();
        drop(w);
        let report = read_report(&r);
        self.shim_pid = std::fs::read_to_string(self.state().join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        (report, child)
    }

    /// Spawns the shim and asserts it reported that it is ready.
    pub fn create(&mut self) {
        let report = self.spawn_shim();
        assert_eq!(
            report.trim_end(),
            "{\"ready\":true}",
            "{}: set-up failed",
            self.rt.name
        );
        assert!(self.shim_pid.is_some(), "shim.pid written");
    }

    pub fn runtime(&self, args: &[&str]) -> Output {
        Command::new(&self.rt.program)
            .args(&self.rt.args)
            .arg("--root")
            .arg(self.runtime_root())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `start` on the control socket; the answer, trimmed.
    pub fn start_answer(&self) -> String {
        let answer = self.control(&["start"]).remove(0);
        answer.trim_end().to_string()
    }

    /// Starts the container through the shim; returns the init's pid.
    pub fn start(&self) -> i32 {
        let answer = self.start_answer();
        answer
            .strip_prefix("ok ")
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("{} start: {answer}", self.rt.name))
    }

    pub fn kill(&self, signal: &str) {
        let out = self.runtime(&["kill", &self.id, signal]);
        assert!(
            out.status.success(),
            "{} kill: {}",
            self.rt.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits for exit.json and parses it.
    pub fn wait_exit(&self) -> Value {
        let path = self.state().join("exit.json");
        let text = wait_for(&format!("{} exit.json", self.id), || {
            std::fs::read_to_string(&path).ok()
        });
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("exit.json {text:?}: {e}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log(&self) -> Vec<Entry> {
        parse_log(&self.log_text())
    }

    /// Waits until an entry matches.
    pub fn wait_log(&self, what: &str, f: impl Fn(&Entry) -> bool) {
        wait_for(what, || {
            // A line may be mid-write: only look at complete ones.
            let text = self.log_text();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            parse_log(complete).iter().any(&f).then_some(())
        })
    }

    /// Sends control commands on one connection; returns the answers.
    pub fn control(&self, lines: &[&str]) -> Vec<String> {
        let mut s = UnixStream::connect(self.state().join("control.sock")).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        // One write: the shim may close a connection after an over-long
        // line, and a second write would then fail.
        let payload: String = lines.iter().map(|l| format!("{l}\n")).collect();
        s.write_all(payload.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let answers = lines
            .iter()
            .map(|_| {
                let mut answer = String::new();
                r.read_line(&mut answer).unwrap();
                answer
            })
            .collect();
        // Done: once the shim has closed its side too, its descriptor
        // for this client is gone (tests count the shim's descriptors).
        let _ = r.get_ref().shutdown(std::net::Shutdown::Write);
        let _ = std::io::Read::read_to_end(&mut r, &mut Vec::new());
        answers
    }

    /// Processes in the container's cgroup (any hierarchy).
    pub fn cgroup_procs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in std::fs::read_dir(CGROUP_ROOT).unwrap().flatten() {
            let base = h.path().join(&self.cgroup_parent);
            let mut stack = vec![base];
            while let Some(d) = stack.pop() {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    out.extend(procs.lines().map(|l| l.to_string()));
                }
                if let Ok(entries) = std::fs::read_dir(&d) {
                    stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
            }
        }
        out
    }

    /// Processes whose command line names this container (shim, runtime).
    pub fn processes_naming_me(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me && !process_gone(pid))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        c.split(|&b| b == 0)
                            .any(|a| a == self.id.as_bytes() || a.ends_with(self.id.as_bytes()))
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.runtime_root().join(&self.id).exists() {
            let out = self.runtime(&["delete", "--force", &self.id]);
            if !out.status.success() {
                problems.push(format!(
                    "delete --force: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        if let Some(pid) = self.shim_pid {
            let start = Instant::now();
            while !process_gone(pid) && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !process_gone(pid) {
                problems.push(format!("shim {pid} still running"));
                // SAFETY: killing the shim this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for h in std::fs::read_dir(CGROUP_ROOT).unwrap().flatten() {
            let base = h.path().join(&self.cgroup_parent);
            if base.exists() {
                if let Err(e) = remove_cgroup_tree(&base) {
                    problems.push(format!("{}: {e}", base.display()));
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("{}: {e}", self.dir.display()));
            }
        }
        problems
    }

    /// Deletes the container, checks the shim exited, removes cgroups and
    /// files, and asserts all of that worked.
    pub fn finish(mut self) {
        let problems = self.cleanup();
        self.shim_pid = None;
        assert!(problems.is_empty(), "{}: {problems:?}", self.id);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let problems = self.cleanup();
        if !problems.is_empty() {
            eprintln!("cleanup of {}: {problems:?}", self.id);
        }
    }
}

/// Removes a cgroup directory and its children in one hierarchy. Right
/// after the last task left, rmdir can still say EBUSY for a moment.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}
