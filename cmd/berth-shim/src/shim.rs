//! The monitor's life: start-up, the report on fd 3, the runtime's `run`
//! at `start`, the poll loop while the container runs, and the exit record.

use std::ffi::{CString, OsStr};
use std::fmt::Display;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::args::Config;
use crate::attach;
use crate::control::{self, Answer, Client, Command, Step};
use crate::crilog::{self, LineSplitter, LogFile};
use crate::{json, sys};

/// Files in STATEDIR (the shim's working directory after start-up).
const SHIM_PID: &str = "shim.pid";
const SHIM_LOG: &str = "shim.log";
const RUNTIME_LOG: &str = "runtime.log";
const CONTAINER_PID: &str = "container.pid";
const CONSOLE_SOCK: &str = "console.sock";
const CONTROL_SOCK: &str = "control.sock";
const ATTACH_SOCK: &str = "attach.sock";
const EXIT_JSON: &str = "exit.json";
/// Mode of every file the monitor makes: berthd reads them as root, and
/// nobody else has any business with them.
const PRIVATE: u32 = 0o600;

/// How long output is still read after the container exited, for pipes
/// that a leftover process keeps open.
const DRAIN_MS: i64 = 1000;
/// Bytes of the runtime's stderr kept for an error report.
const CAPTURE_MAX: usize = 4096;
/// Size of the read buffer (on the stack).
const READ_BUF: usize = 32 * 1024;
/// How long the runtime's init may take to become the shim's child
/// after the runtime exited.
const ADOPT_MS: i64 = 2000;
/// Console-socket connections served at once (the runtime makes one).
const MAX_CONSOLE_CONNS: usize = 4;
/// How long attach clients get to take their last output and the exit
/// frame before the shim exits.
const EXIT_FLUSH_MS: i64 = 1000;

/// Appends one line to STATEDIR/shim.log (stderr is /dev/null).
pub fn note(msg: impl Display) {
    let (secs, nanos) = sys::now_realtime();
    let mut ts = [0u8; crilog::TIMESTAMP_MAX];
    let n = crilog::rfc3339nano(secs, nanos, &mut ts);
    let line = format!(
        "{} berth-shim[{}]: {msg}\n",
        String::from_utf8_lossy(ts.get(..n).unwrap_or_default()),
        std::process::id()
    );
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(SHIM_LOG);
    if let Ok(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The report pipe (fd 3): one JSON line, then closed.
struct Reporter {
    fd: Option<OwnedFd>,
}

impl Reporter {
    fn send(&mut self, line: &str) {
        if let Some(fd) = self.fd.take() {
            if let Err(e) = sys::write_all(fd.as_raw_fd(), line.as_bytes()) {
                note(format_args!(
                    "cannot write the report ({}): {e}",
                    line.trim_end()
                ));
            }
        }
    }

    fn error(&mut self, msg: &str) {
        let mut line = String::from("{\"error\":");
        json::push_str(&mut line, msg);
        line.push_str("}\n");
        self.send(&line);
    }

    /// Set up and waiting for `start` on the control socket.
    fn ready(&mut self) {
        self.send("{\"ready\":true}\n");
    }
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let mut reporter = Reporter { fd: None };
    if sys::fd_is_open(3) {
        let _ = sys::set_cloexec(3);
        // SAFETY: fd 3 is open and nothing else in this process owns it.
        reporter.fd = Some(unsafe { sys::adopt(3) });
    }
    let cfg = match crate::args::parse(std::env::args_os().skip(1)) {
        Ok(cfg) => absolute(cfg),
        Err(e) => {
            let msg = format!("berth-shim: {e}");
            eprintln!("{msg}");
            reporter.error(&msg);
            return 2;
        }
    };
    // SAFETY: single-threaded; the parent only calls _exit.
    match unsafe { libc::fork() } {
        -1 => {
            let msg = format!("berth-shim: fork: {}", io::Error::last_os_error());
            eprintln!("{msg}");
            reporter.error(&msg);
            return 1;
        }
        0 => {}
        // SAFETY: the parent leaves at once without running destructors
        // (the report pipe stays open in the child).
        _ => unsafe { libc::_exit(0) },
    }
    sys::close_from(4);
    // SAFETY: plain process-attribute calls without pointers.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Private by default; the runtime gets the usual 022 back (see
        // `sys::spawn`), so the container's umask is unchanged.
        libc::umask(0o077);
    }
    let _ = sys::stdio_to_devnull();
    if let Err(e) = std::env::set_current_dir(&cfg.dir) {
        reporter.error(&format!(
            "berth-shim: cannot enter state directory {}: {e}",
            cfg.dir.display()
        ));
        return 1;
    }
    let mut setup = Setup {
        cfg: &cfg,
        reporter,
        made: Vec::new(),
    };
    match setup.run() {
        Ok(code) => code,
        Err(msg) => setup.fail(&msg),
    }
}

/// Makes relative paths absolute against the starting directory (the shim
/// moves to STATEDIR).
fn absolute(mut cfg: Config) -> Config {
    for p in [
        &mut cfg.bundle,
        &mut cfg.dir,
        &mut cfg.log,
        &mut cfg.runtime_root,
    ] {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    cfg
}

fn cstr(s: &OsStr) -> Result<CString, String> {
    sys::cstring(s.as_bytes()).map_err(|_| format!("argument {s:?} contains a NUL byte"))
}

fn path_cstr(p: &Path) -> Result<CString, String> {
    cstr(p.as_os_str())
}

/// Writes a small file atomically: a temporary file, renamed over `name`.
fn write_atomic(name: &str, content: &[u8], durable: bool) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    // A leftover of a crash (or anything planted there) goes first: the
    // new file is made afresh, never opened through a symlink.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(content)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, name)?;
    if durable {
        std::fs::File::open(".")?.sync_all()?;
    }
    Ok(())
}

/// Moves the shim into the cgroup it is already in (`procs` is that
/// cgroup's `cgroup.procs`). Nothing moves, but the write takes the
/// kernel's cgroup-migration lock (`cgroup_threadgroup_rwsem`), and the
/// first taker after a quiet spell waits for an RCU grace period: 8-12 ms
/// on the test VM, on v1 and v2 alike unless the hierarchy is mounted with
/// `favordynmods`. Called right after the runtime is spawned, that wait
/// runs while the runtime execs and reads its spec, and the runtime's own
/// move of the container into its cgroup, moments later, finds the lock
/// warm. A failed write changes nothing, so errors are ignored.
fn prime_cgroup_lock(procs: &Path) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(procs)
    else {
        return;
    };
    let _ = f.write_all(std::process::id().to_string().as_bytes());
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Start-up until the report; owns the files to remove if it fails.
struct Setup<'a> {
    cfg: &'a Config,
    reporter: Reporter,
    /// STATEDIR files to remove on failure.
    made: Vec<&'static str>,
}

impl Setup<'_> {
    fn fail(&mut self, msg: &str) -> i32 {
        note(format_args!("start failed: {msg}"));
        // Clean up first: when berthd reads the error, the files are gone.
        for f in &self.made {
            let _ = std::fs::remove_file(f);
        }
        self.reporter.error(msg);
        1
    }

    /// The runtime invocation prefix with its global flags.
    fn runtime_argv(&self) -> Result<Vec<CString>, String> {
        let cfg = self.cfg;
        let mut argv = vec![cstr(&cfg.runtime)?];
        for a in &cfg.runtime_args {
            argv.push(cstr(a)?);
        }
        argv.push(c"--root".into());
        argv.push(path_cstr(&cfg.runtime_root)?);
        Ok(argv)
    }

    fn run(&mut self) -> Result<i32, String> {
        let cfg = self.cfg;
        let dir = &cfg.dir;
        self.made.push(SHIM_PID);
        write_atomic(SHIM_PID, std::process::id().to_string().as_bytes(), false)
            .map_err(|e| format!("berth-shim: cannot write {SHIM_PID}: {e}"))?;
        let sigfd = sys::signals().map_err(|e| format!("berth-shim: signalfd: {e}"))?;
        let log = LogFile::open(path_cstr(&cfg.log)?).map_err(|e| format!("berth-shim: {e}"))?;
        let devnull = sys::open(c"/dev/null", libc::O_RDWR, 0)
            .map_err(|e| format!("berth-shim: /dev/null: {e}"))?;
        let io_err = |what: &str, e: io::Error| format!("berth-shim: {what}: {e}");

        // The container's stdio. With a tty the runtime's own stdout and
        // stderr still go to a pipe, logged as stderr, so its messages are
        // captured either way.
        let (err_r, err_w) = sys::pipe().map_err(|e| io_err("pipe", e))?;
        let mut keep_for_child: Vec<OwnedFd> = Vec::new();
        let mut out_r = None;
        let mut stdin_w = None;
        let mut console = None;
        let stdio: [RawFd; 3];
        if cfg.tty {
            self.made.push(CONSOLE_SOCK);
            let c_path = sys::cstring(CONSOLE_SOCK).map_err(|e| io_err("console", e))?;
            console = Some(
                sys::listen_unix(&c_path, 0o600)
                    .map_err(|e| io_err("cannot listen on console.sock", e))?,
            );
            stdio = [devnull.as_raw_fd(), err_w.as_raw_fd(), err_w.as_raw_fd()];
        } else {
            let (r, w) = sys::pipe().map_err(|e| io_err("pipe", e))?;
            sys::set_nonblocking(r.as_raw_fd()).map_err(|e| io_err("pipe", e))?;
            out_r = Some(r);
            let stdin_r = if cfg.stdin {
                let (sr, sw) = sys::pipe().map_err(|e| io_err("pipe", e))?;
                stdin_w = Some(sw);
                let raw = sr.as_raw_fd();
                keep_for_child.push(sr);
                raw
            } else {
                devnull.as_raw_fd()
            };
            stdio = [stdin_r, w.as_raw_fd(), err_w.as_raw_fd()];
            keep_for_child.push(w);
        }
        sys::set_nonblocking(err_r.as_raw_fd()).map_err(|e| io_err("pipe", e))?;

        self.made.push(CONTROL_SOCK);
        let c_path = sys::cstring(CONTROL_SOCK).map_err(|e| io_err("control", e))?;
        let control = sys::listen_unix(&c_path, 0o600)
            .map_err(|e| io_err("cannot listen on control.sock", e))?;
        self.made.push(ATTACH_SOCK);
        let a_path = sys::cstring(ATTACH_SOCK).map_err(|e| io_err("attach", e))?;
        let attach_listener = sys::listen_unix(&a_path, 0o600)
            .map_err(|e| io_err("cannot listen on attach.sock", e))?;
        let stdin = match stdin_w {
            Some(fd) => Some(attach::Stdin::new(fd).map_err(|e| io_err("stdin pipe", e))?),
            None => None,
        };

        private_runtime_log()
            .map_err(|e| format!("berth-shim: cannot create {RUNTIME_LOG}: {e}"))?;
        let mut argv = self.runtime_argv()?;
        argv.push(c"--log".into());
        argv.push(path_cstr(&dir.join(RUNTIME_LOG))?);
        argv.push(c"--log-format".into());
        argv.push(c"json".into());
        argv.push(c"run".into());
        argv.push(c"--detach".into());
        argv.push(c"--bundle".into());
        argv.push(path_cstr(&cfg.bundle)?);
        argv.push(c"--pid-file".into());
        argv.push(path_cstr(&dir.join(CONTAINER_PID))?);
        if cfg.tty {
            argv.push(c"--console-socket".into());
            argv.push(path_cstr(&dir.join(CONSOLE_SOCK))?);
        }
        argv.push(cstr(&cfg.id)?);
        keep_for_child.extend([err_w, devnull]);

        let mut shim = Shim {
            log,
            sigfd,
            out: out_r.map(|fd| Stream::new(fd, b"stdout")),
            err: Some(Stream::new(err_r, b"stderr")),
            master: None,
            stdin,
            tty: cfg.tty,
            want_stdin: cfg.stdin,
            stdin_once: cfg.stdin_once,
            stdin_owner: None,
            stdin_ended: false,
            attach: Some(attach_listener),
            attached: Vec::new(),
            next_client: 0,
            console,
            console_conns: Vec::new(),
            control: Some(control),
            clients: Vec::new(),
            capture: None,
            runtime_pid: 0,
            runtime_status: None,
            container_pid: None,
            exited: None,
            early: Vec::new(),
            pending: Some(Pending {
                argv,
                stdio,
                _child_fds: keep_for_child,
            }),
            start_asked: false,
        };
        self.reporter.ready();
        self.await_start(&mut shim);
        Ok(shim.monitor())
    }

    /// Serves clients until the container runs (`start`) or is given up
    /// (`cancel`, recorded as a SIGKILL; attach clients get that exit).
    fn await_start(&self, shim: &mut Shim) {
        while shim.pending.is_some() {
            if shim.start_asked {
                let answer = self.start(shim);
                shim.start_asked = false;
                shim.answer_start(answer);
                continue;
            }
            if let Err(e) = shim.poll_once(-1) {
                note(format_args!("poll: {e}; giving up before the start"));
                shim.cancel();
            }
        }
    }

    /// The runtime's `run --detach`, serving the console socket and the
    /// pipes while it runs; the init's pid, or the runtime's own error
    /// (the shim then stays ready for another `start`).
    fn start(&self, shim: &mut Shim) -> Result<libc::pid_t, String> {
        let cfg = self.cfg;
        let Some(pending) = shim.pending.as_ref() else {
            return Err("the container has started already".into());
        };
        let log_offset = std::fs::metadata(RUNTIME_LOG).map_or(0, |m| m.len());
        let runtime_pid = sys::spawn(
            &pending.argv,
            pending.stdio,
            cfg.hide_cgroup2,
            cfg.mount_propagation,
        )
        .map_err(|e| {
            format!(
                "cannot execute runtime {}: {e}",
                Path::new(&cfg.runtime).display()
            )
        })?;
        if let Some(procs) = &cfg.own_cgroup_procs {
            prime_cgroup_lock(procs);
        }
        shim.runtime_pid = runtime_pid;
        shim.runtime_status = None;
        shim.capture = Some(Vec::new());
        while shim.runtime_status.is_none() {
            if let Err(e) = shim.poll_once(-1) {
                sys::kill(runtime_pid, libc::SIGKILL);
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(runtime_pid, &mut status, 0) };
                self.delete_container();
                return Err(format!("berth-shim: poll: {e}"));
            }
        }
        let status = shim.runtime_status.unwrap_or(0);
        let capture = shim.capture.take().unwrap_or_default();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            // Whatever half of the container the runtime left goes.
            self.delete_container();
            shim.forget_children();
            return Err(runtime_error(&cfg.runtime, log_offset, &capture, status));
        }
        if cfg.tty {
            // Everything the runtime sent is queued by now.
            shim.serve_console();
            if shim.master.is_none() {
                self.delete_container();
                shim.forget_children();
                return Err(format!(
                    "{} run exited without sending a pty master to the console socket",
                    Path::new(&cfg.runtime).display()
                ));
            }
        }
        let pid = match read_pid(CONTAINER_PID) {
            Ok(pid) => pid,
            Err(e) => {
                self.delete_container();
                shim.forget_children();
                return Err(format!("berth-shim: cannot read {CONTAINER_PID}: {e}"));
            }
        };
        match shim.adopt(pid) {
            Adoption::Child => {}
            Adoption::Exited(status, at) => shim.exited = Some((status, at)),
            Adoption::NotChild => {
                self.delete_container();
                shim.forget_children();
                return Err(format!(
                    "berth-shim: container init {pid} is not a child of the shim; \
                     the runtime must leave it to its parent's subreaper"
                ));
            }
        }
        shim.container_pid = Some(pid);
        shim.early = Vec::new();
        shim.console = None;
        shim.console_conns.clear();
        let _ = std::fs::remove_file(CONSOLE_SOCK);
        // Only the container holds its ends of the pipes now.
        shim.pending = None;
        Ok(pid)
    }

    /// Best effort, after `run` failed half-way or the shim cannot go on.
    fn delete_container(&self) {
        let Ok(mut argv) = self.runtime_argv() else {
            return;
        };
        argv.push(c"delete".into());
        argv.push(c"--force".into());
        let Ok(id) = cstr(&self.cfg.id) else {
            return;
        };
        argv.push(id);
        let Ok(null) = sys::open(c"/dev/null", libc::O_RDWR, 0) else {
            return;
        };
        let n = null.as_raw_fd();
        if let Ok(pid) = sys::spawn(&argv, [n, n, n], self.cfg.hide_cgroup2, false) {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

/// Makes `runtime.log` exist with the monitor's private mode before the
/// runtime (whose umask is 022) appends to it.
fn private_runtime_log() -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(RUNTIME_LOG)?;
    // A file left by an older monitor may be world-readable.
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE))
}

/// Reads the pid file the runtime wrote (with its umask, 022) and makes it
/// private like the monitor's own files.
fn read_pid(path: &str) -> io::Result<libc::pid_t> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    match text.trim().parse::<libc::pid_t>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a pid: {:?}", text.trim()),
        )),
    }
}

/// The runtime's own words for a failed `create`: the last error entry of
/// its JSON log, else what it printed on stderr, else its exit status.
fn runtime_error(program: &OsStr, log_offset: u64, capture: &[u8], status: libc::c_int) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(RUNTIME_LOG) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = log_offset.max(len.saturating_sub(64 * 1024));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.take(64 * 1024).read_to_end(&mut text);
        }
    }
    if let Some(msg) = json::last_runtime_error(&String::from_utf8_lossy(&text)) {
        return msg;
    }
    let said = String::from_utf8_lossy(capture);
    let said = said.trim();
    if !said.is_empty() {
        return said.to_string();
    }
    format!(
        "{} run failed ({}) without an error message",
        PathBuf::from(program).display(),
        describe(status)
    )
}

/// The runtime's init, once the runtime has exited.
enum Adoption {
    /// A child of the shim, monitored from now on.
    Child,
    /// Already reaped: its wait status and time.
    Exited(libc::c_int, (i64, u32)),
    /// Not the shim's child in time: it cannot be monitored.
    NotChild,
}

/// What the runtime's `run` needs until the container starts.
struct Pending {
    argv: Vec<CString>,
    stdio: [RawFd; 3],
    /// The descriptors behind `stdio`; the container holds them once
    /// it runs, and then the shim must not (or no stream would end).
    _child_fds: Vec<OwnedFd>,
}

/// One output stream of the container.
struct Stream {
    fd: OwnedFd,
    name: &'static [u8],
    split: LineSplitter,
}

impl Stream {
    fn new(fd: OwnedFd, name: &'static [u8]) -> Self {
        Stream {
            fd,
            name,
            split: LineSplitter::new(),
        }
    }
}

struct Shim {
    log: LogFile,
    sigfd: OwnedFd,
    /// stdout pipe, or the pty master with a tty.
    out: Option<Stream>,
    /// stderr pipe (with a tty: the runtime's own output).
    err: Option<Stream>,
    /// The pty master (a duplicate of `out`'s fd), for `resize`.
    master: Option<OwnedFd>,
    /// The container's stdin (`--stdin`), fed by attach clients: the
    /// pipe's write end, or a duplicate of the pty master.
    stdin: Option<attach::Stdin>,
    tty: bool,
    /// `--stdin`: a tty's stdin sink is made when the master arrives.
    want_stdin: bool,
    /// Close stdin for good when its first user is done with it.
    stdin_once: bool,
    /// The first attach client that wrote or closed stdin.
    stdin_owner: Option<u64>,
    /// Stdin was closed for good (stdin-once).
    stdin_ended: bool,
    attach: Option<OwnedFd>,
    attached: Vec<attach::Client>,
    next_client: u64,
    console: Option<OwnedFd>,
    console_conns: Vec<OwnedFd>,
    control: Option<OwnedFd>,
    clients: Vec<Client>,
    /// stderr bytes kept while `create` runs, for its error message.
    capture: Option<Vec<u8>>,
    runtime_pid: libc::pid_t,
    runtime_status: Option<libc::c_int>,
    container_pid: Option<libc::pid_t>,
    /// Wait status and time of the container's exit.
    exited: Option<(libc::c_int, (i64, u32))>,
    /// Children reaped before the container's pid was known.
    early: Vec<(libc::pid_t, libc::c_int, (i64, u32))>,
    /// Until the container runs.
    pending: Option<Pending>,
    /// A client asked for the start; its answer waits for the runtime.
    start_asked: bool,
}

#[derive(Clone, Copy)]
enum Which {
    Out,
    Err,
}

const SLOT_SIG: usize = 0;
const SLOT_OUT: usize = 1;
const SLOT_ERR: usize = 2;
const SLOT_CONSOLE: usize = 3;
const SLOT_CONTROL: usize = 4;
const SLOT_ATTACH: usize = 5;
const SLOT_STDIN: usize = 6;
const SLOT_CONSOLE_CONNS: usize = 7;
const SLOT_CLIENTS: usize = SLOT_CONSOLE_CONNS + MAX_CONSOLE_CONNS;
const SLOT_ATTACHED: usize = SLOT_CLIENTS + control::MAX_CLIENTS;
const SLOTS: usize = SLOT_ATTACHED + attach::MAX_CLIENTS;

impl Shim {
    /// From the report to the exit record; returns the exit code.
    fn monitor(mut self) -> i32 {
        while self.exited.is_none() {
            if let Err(e) = self.poll_once(-1) {
                note(format_args!(
                    "poll: {e}; waiting for the container without serving"
                ));
                self.wait_blocking();
            }
        }
        let deadline = sys::monotonic_ms() + DRAIN_MS;
        while self.out.is_some() || self.err.is_some() {
            let left = deadline - sys::monotonic_ms();
            if left <= 0 {
                note("output still open 1s after the container exited; stop reading");
                break;
            }
            if self
                .poll_once(left.min(i64::from(i32::MAX)) as libc::c_int)
                .is_err()
            {
                break;
            }
        }
        for which in [Which::Out, Which::Err] {
            self.close_stream(which);
        }
        let (status, at) = self.exited.unwrap_or((0, sys::now_realtime()));
        let code = match write_exit(status, at) {
            Ok(()) => 0,
            Err(e) => {
                note(format_args!("cannot write {EXIT_JSON}: {e}"));
                1
            }
        };
        self.end_attach(exit_code(status).0);
        self.control = None;
        let _ = std::fs::remove_file(CONTROL_SOCK);
        code
    }

    fn wait_blocking(&mut self) {
        let Some(pid) = self.container_pid else {
            return;
        };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        let status = if r == pid { status } else { 0 };
        self.exited = Some((status, sys::now_realtime()));
    }

    fn poll_once(&mut self, timeout: libc::c_int) -> io::Result<()> {
        let unused = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        let mut fds = [unused; SLOTS];
        let mut watch = |slot: usize, fd: Option<RawFd>, events: libc::c_short| {
            if let (Some(p), Some(fd)) = (fds.get_mut(slot), fd) {
                p.fd = fd;
                p.events = events;
            }
        };
        let stdin_blocked = self.stdin_blocked();
        let stdin_fd = self.stdin.as_ref().map(|s| s.fd.as_raw_fd());
        watch(
            SLOT_STDIN,
            stdin_fd.filter(|_| stdin_blocked),
            libc::POLLOUT,
        );
        watch(
            SLOT_ATTACH,
            self.attach.as_ref().map(|f| f.as_raw_fd()),
            libc::POLLIN,
        );
        for (i, c) in self.attached.iter().enumerate() {
            if let Some(events) = c.poll_events(stdin_blocked) {
                watch(SLOT_ATTACHED + i, Some(c.fd.as_raw_fd()), events);
            }
        }
        let mut set = |slot: usize, fd: Option<RawFd>| watch(slot, fd, libc::POLLIN);
        set(SLOT_SIG, Some(self.sigfd.as_raw_fd()));
        set(SLOT_OUT, self.out.as_ref().map(|s| s.fd.as_raw_fd()));
        set(SLOT_ERR, self.err.as_ref().map(|s| s.fd.as_raw_fd()));
        set(SLOT_CONSOLE, self.console.as_ref().map(|f| f.as_raw_fd()));
        set(SLOT_CONTROL, self.control.as_ref().map(|f| f.as_raw_fd()));
        for (i, c) in self.console_conns.iter().enumerate() {
            set(SLOT_CONSOLE_CONNS + i, Some(c.as_raw_fd()));
        }
        for (i, c) in self.clients.iter().enumerate() {
            // One waiting for its answer is not read (its next line waits).
            set(
                SLOT_CLIENTS + i,
                Some(c.fd.as_raw_fd()).filter(|_| !c.awaiting),
            );
        }
        let used = SLOT_ATTACHED + self.attached.len();
        if sys::poll(fds.get_mut(..used).unwrap_or_default(), timeout)? == 0 {
            return Ok(());
        }
        // Kept with each client: sending output below may drop some.
        for (i, c) in self.attached.iter_mut().enumerate() {
            c.revents = fds.get(SLOT_ATTACHED + i).map_or(0, |p| p.revents);
        }
        let ready = |slot: usize| fds.get(slot).is_some_and(|p| p.revents != 0);
        // New attach clients before output: a client whose connect returned
        // before the container wrote gets what it wrote.
        if ready(SLOT_ATTACH) {
            self.accept_attach();
        }
        // Then output before the rest, so that what a container wrote
        // before exiting is read in this round.
        if ready(SLOT_OUT) {
            self.read_stream(Which::Out);
        }
        if ready(SLOT_ERR) {
            self.read_stream(Which::Err);
        }
        if ready(SLOT_CONSOLE) || (SLOT_CONSOLE_CONNS..SLOT_CLIENTS).any(ready) {
            self.serve_console();
        }
        if ready(SLOT_CONTROL) {
            self.accept_clients();
        }
        if (SLOT_CLIENTS..SLOT_ATTACHED).any(ready) {
            self.serve_clients();
        }
        if ready(SLOT_STDIN) {
            self.flush_stdin();
        }
        self.serve_attached();
        if ready(SLOT_SIG) {
            sys::drain_signalfd(self.sigfd.as_raw_fd());
            self.reap();
        }
        Ok(())
    }

    fn stream(&mut self, which: Which) -> &mut Option<Stream> {
        match which {
            Which::Out => &mut self.out,
            Which::Err => &mut self.err,
        }
    }

    fn read_stream(&mut self, which: Which) {
        let mut buf = [0u8; READ_BUF];
        let Some(stream) = self.stream(which).as_ref() else {
            return;
        };
        match sys::read(stream.fd.as_raw_fd(), &mut buf) {
            Ok(0) => self.close_stream(which),
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                self.broadcast(which, data);
                if let (Which::Err, Some(cap)) = (which, self.capture.as_mut()) {
                    cap.extend_from_slice(data);
                    if cap.len() > CAPTURE_MAX {
                        let cut = cap.len() - CAPTURE_MAX;
                        cap.drain(..cut);
                    }
                }
                let log = &mut self.log;
                let stream = match which {
                    Which::Out => &mut self.out,
                    Which::Err => &mut self.err,
                };
                if let Some(s) = stream.as_mut() {
                    let name = s.name;
                    s.split
                        .feed(data, &mut |tag, msg| write_entry(log, name, tag, msg));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // EIO from a pty master whose slave side is all closed is its
            // end of stream.
            Err(_) => self.close_stream(which),
        }
    }

    /// End of a stream: what is pending goes out, the fd is closed.
    fn close_stream(&mut self, which: Which) {
        if let Some(mut s) = self.stream(which).take() {
            let log = &mut self.log;
            let name = s.name;
            s.split
                .finish(&mut |tag, msg| write_entry(log, name, tag, msg));
        }
    }

    fn serve_console(&mut self) {
        if let Some(listener) = self.console.as_ref() {
            while let Ok(Some(conn)) = sys::accept(listener.as_raw_fd()) {
                if self.console_conns.len() < MAX_CONSOLE_CONNS {
                    self.console_conns.push(conn);
                }
            }
        }
        let mut conns = std::mem::take(&mut self.console_conns);
        conns.retain(|conn| loop {
            match sys::recv_fd(conn.as_raw_fd()) {
                Ok(sys::Received::Fd(fd)) => {
                    self.take_master(fd);
                    return false;
                }
                Ok(sys::Received::Nothing) => continue,
                Ok(sys::Received::WouldBlock) => return true,
                Ok(sys::Received::Eof) | Err(_) => return false,
            }
        });
        self.console_conns = conns;
    }

    fn take_master(&mut self, fd: OwnedFd) {
        if self.master.is_some() {
            note("a second pty master arrived on the console socket; ignored");
            return;
        }
        let raw = fd.as_raw_fd();
        if let Err(e) = sys::set_nonblocking(raw) {
            note(format_args!("pty master: {e}"));
        }
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize to the pointer.
        let got = unsafe { libc::ioctl(raw, libc::TIOCGWINSZ, &raw mut ws) };
        if got == 0 && ws.ws_row == 0 && ws.ws_col == 0 {
            let _ = sys::set_winsize(raw, 80, 24);
        }
        match dup_cloexec(raw) {
            Ok(dup) => self.master = Some(dup),
            Err(e) => note(format_args!("dup pty master: {e}")),
        }
        if self.want_stdin && !self.stdin_ended {
            match dup_cloexec(raw).and_then(attach::Stdin::new) {
                Ok(sink) => self.stdin = Some(sink),
                Err(e) => note(format_args!("stdin on the pty master: {e}")),
            }
        }
        self.out = Some(Stream::new(fd, b"stdout"));
    }

    fn accept_clients(&mut self) {
        let Some(listener) = self.control.as_ref() else {
            return;
        };
        while let Ok(Some(conn)) = sys::accept(listener.as_raw_fd()) {
            let client = Client::new(conn);
            if self.clients.len() < control::MAX_CLIENTS {
                self.clients.push(client);
            } else {
                client.reply(Err("too many clients".into()));
            }
        }
    }

    fn serve_clients(&mut self) {
        let mut clients = std::mem::take(&mut self.clients);
        let log = &mut self.log;
        let master = self.master.as_ref().map(|m| m.as_raw_fd());
        let tty_open = self.out.is_some();
        let pending = self.pending.is_some();
        let start_asked = &mut self.start_asked;
        let mut cancel_asked = false;
        let mut handle = |cmd: Command| -> Answer {
            let now = |r: Result<(), String>| Answer::Now(r.map(|()| String::new()));
            match cmd {
                Command::ReopenLog => now(log.reopen().map_err(|e| format!("reopen-log: {e}"))),
                Command::Resize { cols, rows } => now(match master {
                    Some(fd) if tty_open => {
                        sys::set_winsize(fd, cols, rows).map_err(|e| format!("resize: {e}"))
                    }
                    Some(_) => Err("resize: the container's tty is closed".into()),
                    None => Err("resize: the container has no tty".into()),
                }),
                Command::Start if !pending => now(Err("start: the container has started".into())),
                Command::Start if *start_asked => now(Err("start: already starting".into())),
                Command::Start => {
                    *start_asked = true;
                    Answer::Later
                }
                Command::Cancel if !pending => now(Err("cancel: the container has started".into())),
                Command::Cancel if *start_asked => {
                    now(Err("cancel: the container is starting".into()))
                }
                Command::Cancel => {
                    cancel_asked = true;
                    now(Ok(()))
                }
            }
        };
        // Clients whose fd was not ready just find nothing to read.
        clients.retain_mut(|c| matches!(c.serve(&mut handle), Step::Open));
        self.clients = clients;
        if cancel_asked {
            self.cancel();
        }
    }

    /// Answers the client that asked for the start, then serves what it
    /// sent after.
    fn answer_start(&mut self, answer: Result<libc::pid_t, String>) {
        let answer = answer.map(|pid| pid.to_string());
        if let Err(e) = &answer {
            note(format_args!("start failed: {e}"));
        }
        self.clients.retain_mut(|c| {
            if !c.awaiting {
                return true;
            }
            c.awaiting = false;
            c.reply(answer.clone())
        });
        self.serve_clients();
    }

    /// Waits (bounded) until the runtime's init `pid` is the shim's child:
    /// crun's `run --detach` forks a second crun whose child the init is,
    /// and that one may still be exiting when the first is reaped.
    fn adopt(&mut self, pid: libc::pid_t) -> Adoption {
        let deadline = sys::monotonic_ms() + ADOPT_MS;
        loop {
            if let Some(i) = self.early.iter().position(|(p, _, _)| *p == pid) {
                let (_, status, at) = self.early.swap_remove(i);
                return Adoption::Exited(status, at);
            }
            if sys::is_child(pid) {
                return Adoption::Child;
            }
            let left = deadline - sys::monotonic_ms();
            // A reaped child (the second runtime) wakes this at once.
            if left <= 0 || self.poll_once(left.min(10) as libc::c_int).is_err() {
                return Adoption::NotChild;
            }
        }
    }

    /// Gives the container up before it ran: recorded as killed.
    fn cancel(&mut self) {
        if self.pending.take().is_some() {
            self.exited = Some((libc::SIGKILL, sys::now_realtime()));
        }
    }

    /// After a failed `run`: what it may have sent or left is dropped.
    fn forget_children(&mut self) {
        self.early.clear();
        if self.tty && self.master.take().is_some() {
            self.out = None;
            self.stdin = None;
        }
    }

    fn stdin_blocked(&self) -> bool {
        self.stdin.as_ref().is_some_and(attach::Stdin::blocked)
    }

    /// Copies output to every attach client, dropping those too far behind.
    fn broadcast(&mut self, which: Which, data: &[u8]) {
        if self.attached.is_empty() {
            return;
        }
        let kind = match which {
            Which::Err if !self.tty => attach::STDERR,
            _ => attach::STDOUT,
        };
        self.retain_attached(|c| c.send(kind, data));
    }

    /// Keeps the attach clients `keep` says yes to. The one that owned
    /// stdin leaving counts as its closing stdin (stdin-once).
    fn retain_attached(&mut self, mut keep: impl FnMut(&mut attach::Client) -> bool) {
        let owner = self.stdin_owner;
        let mut owner_left = false;
        self.attached.retain_mut(|c| {
            let kept = keep(c);
            owner_left |= !kept && Some(c.id) == owner;
            kept
        });
        if owner_left {
            self.owner_done();
        }
    }

    fn accept_attach(&mut self) {
        let Some(listener) = self.attach.as_ref() else {
            return;
        };
        while let Ok(Some(conn)) = sys::accept(listener.as_raw_fd()) {
            // Over the limit the connection is just closed.
            if self.attached.len() < attach::MAX_CLIENTS {
                self.next_client += 1;
                let client = attach::Client::new(conn, self.next_client);
                self.attached.push(client);
            }
        }
    }

    fn serve_attached(&mut self) {
        let mut clients = std::mem::take(&mut self.attached);
        let mut buf = [0u8; attach::READ_CHUNK];
        let mut owner_left = false;
        clients.retain_mut(|c| {
            let kept = self.serve_attached_one(c, &mut buf);
            owner_left |= !kept && Some(c.id) == self.stdin_owner;
            kept
        });
        self.attached = clients;
        if owner_left {
            self.owner_done();
        }
    }

    /// Serves one client after a poll; false to drop it.
    fn serve_attached_one(&mut self, c: &mut attach::Client, buf: &mut [u8]) -> bool {
        let revents = std::mem::take(&mut c.revents);
        if revents == 0 {
            return true;
        }
        if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
            c.flush();
        }
        let readable = revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
        // Another client may have filled the stdin backlog this round.
        if c.input_open && readable && !self.stdin_blocked() {
            let id = c.id;
            let got = c.read(buf, &mut |input| self.stdin_input(id, input));
            match got {
                attach::Got::Data => {}
                attach::Got::Eof if Some(id) == self.stdin_owner => self.owner_done(),
                attach::Got::Eof => {}
                attach::Got::Bad => return false,
            }
        }
        !c.gone(revents)
    }

    fn stdin_input(&mut self, client: u64, input: attach::Input) {
        self.stdin_owner.get_or_insert(client);
        match input {
            attach::Input::Stdin(data) => {
                if self.stdin.as_mut().is_some_and(|s| !s.write(data)) {
                    // The container closed its stdin.
                    self.stdin = None;
                }
            }
            attach::Input::CloseStdin if self.stdin_owner == Some(client) => self.owner_done(),
            attach::Input::CloseStdin => {}
        }
    }

    /// The first stdin user is done with it: with `--stdin-once` the
    /// container's stdin closes for good (after what is queued).
    fn owner_done(&mut self) {
        if !self.stdin_once || self.stdin_ended {
            return;
        }
        self.stdin_ended = true;
        if let Some(s) = self.stdin.as_mut() {
            s.close(self.tty);
        }
        self.flush_stdin();
    }

    fn flush_stdin(&mut self) {
        if self.stdin.as_mut().is_some_and(|s| !s.flush() || s.done()) {
            self.stdin = None;
        }
    }

    /// At exit: every attach client gets the exit frame and a bounded time
    /// to take what is pending, then is closed.
    fn end_attach(&mut self, code: i32) {
        self.accept_attach();
        self.attach = None;
        let _ = std::fs::remove_file(ATTACH_SOCK);
        let text = code.to_string();
        self.retain_attached(|c| c.send(attach::EXIT, text.as_bytes()));
        let deadline = sys::monotonic_ms() + EXIT_FLUSH_MS;
        loop {
            let unused = libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            };
            let mut fds = [unused; attach::MAX_CLIENTS];
            let mut waiting = false;
            for (p, c) in fds.iter_mut().zip(&self.attached) {
                if c.has_pending() {
                    p.fd = c.fd.as_raw_fd();
                    p.events = libc::POLLOUT;
                    waiting = true;
                }
            }
            let left = deadline - sys::monotonic_ms();
            if !waiting || left <= 0 {
                break;
            }
            if sys::poll(&mut fds, left.min(i64::from(i32::MAX)) as libc::c_int).is_err() {
                break;
            }
            for (p, c) in fds.iter().zip(self.attached.iter_mut()) {
                if p.revents != 0 {
                    c.flush();
                }
            }
        }
        for c in &mut self.attached {
            c.discard_input();
        }
        self.attached.clear();
    }

    fn reap(&mut self) {
        while let Some((pid, status)) = sys::reap_any() {
            let at = sys::now_realtime();
            if pid == self.runtime_pid && self.runtime_status.is_none() {
                self.runtime_status = Some(status);
            } else if Some(pid) == self.container_pid {
                if self.exited.is_none() {
                    self.exited = Some((status, at));
                }
            } else if self.container_pid.is_none() {
                if self.early.len() >= 64 {
                    self.early.remove(0);
                }
                self.early.push((pid, status, at));
            }
        }
    }
}

fn write_entry(log: &mut LogFile, stream: &[u8], tag: u8, msg: &[u8]) {
    if let Err(e) = log.write_entry(stream, tag, msg) {
        if !log.failing {
            log.failing = true;
            note(format_args!("cannot write the container log: {e}"));
        }
    }
}

/// `(exit code, signal)` of a wait status: 128 + the signal number for a
/// death by signal, as CRI and Docker report it.
fn exit_code(status: libc::c_int) -> (i32, i32) {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), 0)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, sig)
    } else {
        (255, 0)
    }
}

/// A close-on-exec duplicate of `fd`.
fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// `exit.json`, durable, replacing nothing half-written.
fn write_exit(status: libc::c_int, at: (i64, u32)) -> io::Result<()> {
    let (code, signal) = exit_code(status);
    let ns = i128::from(at.0) * 1_000_000_000 + i128::from(at.1);
    let text = format!(
        "{{\"exit_code\":{code},\"signal\":{signal},\"finished_at_ns\":{ns},\"oom_killed\":false}}\n"
    );
    write_atomic(EXIT_JSON, text.as_bytes(), true)
}
