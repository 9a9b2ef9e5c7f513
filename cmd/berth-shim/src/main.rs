//! `berth-shim`: the per-container monitor (the role of conmon or
//! containerd-shim). berthd starts one per container when the container is
//! created. Told to start it, the monitor runs the OCI runtime's `run
//! --detach`; it holds the container's stdio, writes the container log
//! in the CRI format, records the exit status and time, and keeps running
//! when berthd stops, is killed or restarts. It is one thread with one
//! `poll(2)` loop and only `libc` as a dependency, to stay small in memory.
//!
//! # Command line
//!
//! ```text
//! berth-shim --id ID --bundle DIR --dir STATEDIR --log PATH \
//!     --runtime PROGRAM [--runtime-arg ARG]... --runtime-root DIR \
//!     [--tty] [--stdin] [--stdin-once] [--hide-cgroup2] [--mount-propagation] \
//!     [--own-cgroup-procs FILE]
//! ```
//!
//! With `--own-cgroup-procs`, FILE is the `cgroup.procs` of the cgroup the
//! shim starts in; right after spawning the runtime the shim writes its own
//! pid there (a move that moves nothing) so the kernel's wait for the
//! cgroup-migration lock overlaps the runtime's start-up.
//!
//! With `--hide-cgroup2` the runtime (for `run`, and the shim's own
//! clean-up `delete`) runs in a private mount namespace of its own whose
//! `/sys/fs/cgroup/unified` is an empty tmpfs (with `--mount-propagation`
//! only that mount is private, so the container's shared and slave mounts
//! keep propagating; without it the whole namespace is): what the hybrid-host wrapper
//! (`unshare` + `sh` + `mount`) does for crun 1.8, without its processes.
//!
//! (`--flag=value` is accepted too.) Relative paths are taken against the
//! caller's working directory. `PROGRAM` followed by every `--runtime-arg`
//! in order is the runtime invocation prefix (for example
//! `/usr/bin/unshare --mount --propagation private sh -c '...' /usr/bin/crun`);
//! the shim appends `--root <runtime-root>` and then the subcommand. At
//! `start` it runs exactly:
//!
//! ```text
//! PROGRAM ARGS... --root R --log STATEDIR/runtime.log --log-format json \
//!     run --detach --bundle DIR --pid-file STATEDIR/container.pid \
//!     [--console-socket STATEDIR/console.sock] ID
//! ```
//!
//! One `run` rather than `create` at creation and `start` later: the
//! runtime is executed once per container, not twice, which measured
//! 5-9 ms less per pod start (docs/dev/architecture.md).
//!
//! (`PROGRAM` without a `/` is looked up in `PATH`.) Both runc and crun
//! accept the global `--log`/`--log-format json` flags.
//!
//! # The exec reaper (`berth-shim exec`)
//!
//! ```text
//! berth-shim exec --pid-file PATH -- PROGRAM [ARG]...
//! ```
//!
//! A second, separate mode for berthd's terminal execs. runc refuses
//! `--console-socket` unless it detaches, and a detached runtime leaves
//! before its process ends, so the exit status must be collected by
//! someone else; berthd itself must not become a subreaper. This mode
//! does not fork away, touch STATEDIR or write anything: it becomes a
//! child subreaper, runs `PROGRAM ARG...` (the runtime's `exec --detach
//! --pid-file PATH ...`, with the caller's stdio and default signal
//! dispositions), and when the runtime exits:
//!
//! - non-zero (or killed): exits with its code (128 + signal); the
//!   runtime's message is on the shared stderr;
//! - zero: reads the exec'd process's pid from PATH, waits for it (it is
//!   this process's child now) and exits with its exit status, or 128 +
//!   the signal that killed it. Every other adopted child is reaped and
//!   ignored, so nothing is left a zombie.
//!
//! SIGTERM, SIGINT and SIGHUP are passed to the exec'd process (to the
//! runtime before it is known). Exit 255 (with a message on stderr) when
//! the pid file is unreadable or names a process that is not its child;
//! 2 for bad arguments.
//!
//! # Start-up and the report on fd 3
//!
//! berthd starts the shim with **fd 3** open on the write end of a pipe
//! (the report pipe). The shim forks at once; the first process exits 0
//! immediately (berthd reaps it). The second one calls `setsid()`, becomes
//! a child subreaper, changes to STATEDIR, points its own stdin, stdout and
//! stderr at `/dev/null`, closes any other inherited descriptor (fd 4 and
//! up), writes `STATEDIR/shim.pid`, opens the log, makes the container's
//! pipes, creates `STATEDIR/control.sock` and `STATEDIR/attach.sock` (and
//! `console.sock` with `--tty`). Then it writes **one line** of JSON to
//! fd 3 and closes it:
//!
//! - `{"ready":true}`: set up, the sockets listen, and the shim waits for
//!   `start` (or `cancel`) on the control socket. Attach clients may
//!   connect already: they get all the container's output.
//! - `{"error":"<message>"}` otherwise (bad arguments, a socket that
//!   cannot be made, ...), and the shim exits non-zero. Before exiting
//!   it removes the files it made (`shim.pid`, `control.sock`,
//!   `attach.sock`, `console.sock`); STATEDIR itself stays (berthd
//!   removes it).
//!
//! Bad arguments are reported on fd 3 (and stderr) by the first process,
//! which then exits 2 without forking. EOF on fd 3 without a line means the
//! shim died (berthd should treat it as an error; if `shim.pid` exists,
//! that process may be killed).
//!
//! # Start
//!
//! `start` on the control socket runs the runtime's `run --detach` with
//! the container's stdio (serving the console socket and the pipes
//! meanwhile) and is answered when the runtime is done:
//!
//! - `ok <pid>`: the container runs, with init pid `<pid>` (a child of the
//!   shim, which now monitors it); `console.sock` is gone.
//! - `error <message>`: the runtime's own words (the last error entry of
//!   `runtime.log` written by this `run`, else what it printed on stderr,
//!   else its exit status), or the shim's reason (the runtime could not be
//!   executed, no pty master came). The shim runs `<runtime> delete
//!   --force ID` to clear what the failed `run` left and stays ready: a
//!   later `start` may try again.
//!
//! `cancel`, while the container has not started, gives it up: the shim
//! records the exit as a SIGKILL (`exit_code` 137, what killing a created
//! container records) and ends as below, so attach clients get that exit
//! too. `cancel` during or after a start, and `start` after a start or
//! while one runs, are answered with an error and change nothing.
//!
//! # stdio
//!
//! - Without `--tty`: the container's stdout and stderr are two pipes read
//!   by the shim. With `--stdin`, its stdin is a pipe whose write end the
//!   shim holds open and feeds from attach clients (see below); without,
//!   stdin is `/dev/null`.
//! - With `--tty`: the shim listens on `STATEDIR/console.sock`, passes
//!   `--console-socket` to `run`, and receives the pty master by
//!   SCM_RIGHTS; it sets 80x24 if the runtime left the size at 0x0, and logs
//!   what the master gives as `stdout`. The runtime's own stdout and
//!   stderr go to a pipe logged as `stderr` (normally empty).
//!
//! The runtime's messages printed during `run` (non-tty) reach the
//! container log as `stderr` entries too.
//!
//! # The container log
//!
//! The file at `--log` is opened `O_APPEND|O_CREAT|O_NOFOLLOW`, mode 0600
//! (its parent directory must exist). A symlink at that path is refused
//! (`ELOOP`, on create and on `reopen-log`) rather than followed, and so is
//! anything but a regular file. One entry per line, in the CRI format:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F hello
//! ```
//!
//! The timestamp is UTC in Go's `time.RFC3339Nano` (the fraction without
//! trailing zeros, no dot when it is zero). Lines are cut like containerd's
//! CRI logger: the `\n` and one `\r` before it are dropped; content longer
//! than 16 KiB becomes `P` entries of 16384 bytes then an `F` entry with the
//! rest; an empty line is an `F` entry with an empty message; a last line
//! without `\n` at end of stream is a `P` entry. Each entry is one
//! `writev(2)`.
//!
//! # Files in STATEDIR
//!
//! Every file the shim makes is mode 0600 (its umask is 077; it makes no
//! directories), opened without following symlinks. The runtime runs with
//! umask 022 as before; `runtime.log` is made 0600 by the shim before the
//! runtime appends to it, and `container.pid` is made 0600 once read.
//!
//! | file | written by | content |
//! |---|---|---|
//! | `shim.pid` | shim, at start (tmp + rename) | the monitor's pid in decimal, no newline |
//! | `shim.log` | shim, appended | the shim's own errors, one timestamped line each |
//! | `runtime.log` | the runtime (`--log`, JSON lines) | kept |
//! | `container.pid` | the runtime (`--pid-file`) | the container init's pid |
//! | `console.sock` | shim (`--tty` only) | removed once the pty master arrived |
//! | `control.sock` | shim, mode 0600 | the control socket; removed when the shim exits |
//! | `attach.sock` | shim, mode 0600 | the attach socket; removed when the shim exits |
//! | `exit.json` | shim, at the end (tmp + fsync + rename + dir fsync) | see below |
//!
//! # Exit
//!
//! The init becomes the shim's child once the runtime exits (subreaper);
//! the shim also reaps every other child (the runtime, orphaned
//! grandchildren) without mistaking them for the container. When the
//! container exits, the shim reads its output until EOF, but for at most
//! 1 s after the exit (a leftover process may keep a pipe open), writes
//! pending partial lines, then writes `exit.json`:
//!
//! ```text
//! {"exit_code":N,"signal":S,"finished_at_ns":T,"oom_killed":false}
//! ```
//!
//! `exit_code` is the exit status, or 128 + the signal number for a death
//! by signal (what CRI and Docker report); `signal` is that signal or 0;
//! `finished_at_ns` is the reaping time in Unix nanoseconds; `oom_killed`
//! is always false (berthd decides OOM from the cgroup). There is no
//! `started_at_ns` (berthd records the start).
//! The shim then sends attach clients the exit frame (giving them at most
//! 1 s more to take their pending output), closes them, removes
//! `attach.sock` and `control.sock` and exits 0. So `exit.json` appearing
//! means the log is complete.
//!
//! # Control socket
//!
//! `STATEDIR/control.sock`, a unix stream socket (mode 0600), listening
//! before the `{"ready":true}` report and until the shim exits. Several clients
//! may be connected (16 at once; more get `error too many clients` and are
//! closed). One command per line (`\n`, at most 128 bytes); each is answered
//! with `ok\n` (`ok <text>\n` for `start`) or `error <message>\n` (at
//! most 1024 bytes in all), in order; a client's next command is not read
//! before its `start` is answered:
//!
//! - `start`, `cancel`: see Start above.
//!
//! - `reopen-log`: open the log path again and write there from now on
//!   (after rotation renamed the file). If opening fails, the old file stays
//!   in use and the answer is an error.
//! - `resize <cols> <rows>`: `TIOCSWINSZ` on the pty master; an error
//!   without `--tty` or once the tty is closed.
//!
//! Unknown or malformed lines get `error ...`; a line over 128 bytes gets an
//! error and the connection is closed, as is a client that does not read
//! its answers. The shim never blocks on a client.
//!
//! # Attach socket
//!
//! `STATEDIR/attach.sock`, a unix stream socket (mode 0600), listening from
//! before the `{"ready":true}` report until the shim exits. Up to 64 clients
//! may be attached at once (more are closed at once). Both ways, the
//! stream is a sequence of frames:
//!
//! ```text
//! [kind: u8][len: u32 big-endian][len bytes of payload]
//! ```
//!
//! shim → client:
//!
//! - kind 1: stdout bytes; kind 2: stderr bytes. With `--tty` all output is
//!   kind 1. Each frame carries what one read of the container's pipe (or
//!   pty master) gave, the same bytes the log gets, unsplit. Output made
//!   before the client connected is not replayed (the log has it); a
//!   client whose `connect` returned before the container wrote gets it.
//! - kind 3: the container exited; the payload is its exit code (as in
//!   `exit.json`) in ASCII decimal. It is the last frame: the shim then
//!   closes the connection.
//!
//! client → shim:
//!
//! - kind 0: bytes for the container's stdin, at most 1 MiB per frame.
//!   Forwarded only with `--stdin` (to the pipe, or with `--tty` to the pty
//!   master); otherwise, and once stdin is closed, they are dropped.
//! - kind 4, empty: this client is done with stdin (its later kind 0 frames
//!   are dropped). End of stream from the client (a shutdown of its writing
//!   side) means the same; it still gets output until it closes.
//!
//! Any other kind, a longer stdin frame or a kind 4 with a payload is
//! malformed: the shim closes that client. Without `--stdin-once` the
//! container's stdin stays open whatever clients do. With `--stdin-once`,
//! the first client that sends kind 0 or kind 4 owns stdin; when it sends
//! kind 4, ends its stream, disconnects or is dropped, the shim closes the
//! container's stdin for good once what was written is delivered. A pipe is
//! closed (the container reads EOF); a tty cannot be closed without hanging
//! up its output, so it gets its end-of-file character (`VEOF`, normally
//! ^D) instead and no more input.
//!
//! The shim never waits for a client. Output goes to each client without
//! blocking; up to 64 KiB more than its socket buffer holds is queued for
//! it, and a client further behind is dropped (closed; its last frame may
//! be cut short). While the container does not take its stdin, up to 8 KiB
//! of it waits in the shim and clients' input is not read (nor their
//! hang-ups noticed) until it is taken. A client going away
//! affects neither the container nor other clients (except that stdin's
//! owner leaving closes stdin with `--stdin-once`).
//!
//! # Signals
//!
//! SIGPIPE, SIGHUP, SIGINT and SIGTERM are ignored (berthd's death or a
//! terminal must not stop the monitor; containers are stopped through the
//! runtime). The runtime is started with default dispositions and an
//! empty signal mask. SIGKILL of the shim leaves the container running
//! unmonitored; no exit.json is then written.

mod args;
mod attach;
mod control;
mod crilog;
mod exec;
mod json;
mod shim;
mod sys;

fn main() {
    let mut args = std::env::args_os().skip(1).peekable();
    let code = if args.peek().is_some_and(|a| a == "exec") {
        exec::main(args.skip(1))
    } else {
        shim::main()
    };
    std::process::exit(code);
}
