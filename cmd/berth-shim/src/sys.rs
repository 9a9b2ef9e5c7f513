//! Thin, safe wrappers over the few system calls the shim needs. Every fd
//! made here is close-on-exec, so nothing leaks into the runtime or the
//! container except what `spawn` places on 0, 1 and 2 on purpose.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a freshly returned descriptor.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor has no memory-safety preconditions.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor has no memory-safety preconditions.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Whether `fd` is an open descriptor.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Adopts an inherited descriptor (such as the report pipe on fd 3).
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub unsafe fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Closes every descriptor from `first` up (inherited leftovers).
pub fn close_from(first: RawFd) {
    // SAFETY: close_range only affects this process's descriptor table;
    // nothing in the shim owns a descriptor at or above `first` yet.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r < 0 {
        for fd in first..1024 {
            // SAFETY: as above; EBADF for closed slots is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

pub fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })
}

/// Points 0, 1 and 2 at /dev/null.
pub fn stdio_to_devnull() -> io::Result<()> {
    // SAFETY: the path is NUL-terminated.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) })?;
    for target in 0..3 {
        if fd != target {
            // SAFETY: dup2 onto the standard descriptors, which the shim
            // does not use as Rust-owned fds.
            cvt(unsafe { libc::dup2(fd, target) })?;
        }
    }
    if fd > 2 {
        // SAFETY: `fd` is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// `read(2)`, retried on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `buf` to a blocking descriptor.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    Ok(())
}

/// Sends on a non-blocking socket without raising SIGPIPE; returns how many
/// bytes went out.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write(2)` once, retried on EINTR (on a non-blocking descriptor a full
/// pipe or tty gives `WouldBlock`).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `head` then `body` in one `sendmsg(2)` on a socket, without
/// blocking or raising SIGPIPE; returns how many bytes went out.
pub fn send2_nonblocking(fd: RawFd, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at two iovecs over live buffers; sendmsg
        // only reads them.
        let n =
            unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sockaddr_un(path: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A non-blocking listening unix stream socket at `path` (relative paths
/// are resolved against the working directory, which keeps them short),
/// with the socket file's mode set to `mode`.
pub fn listen_unix(path: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr_un(path.to_bytes())?;
    // SAFETY: plain socket creation.
    let fd = owned(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // A stale file from an earlier shim would make bind fail.
    // SAFETY: `path` is NUL-terminated.
    unsafe { libc::unlink(path.as_ptr()) };
    // SAFETY: `addr` is a valid sockaddr_un of length `len`. The umask
    // gives the socket file its mode from its creation on (no window, and
    // no chmod by path that a swapped-in symlink could redirect).
    let bound = unsafe {
        let old = libc::umask(!mode & 0o777);
        let r = libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len);
        libc::umask(old);
        r
    };
    cvt(bound)?;
    // SAFETY: plain listen on our socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
    Ok(fd)
}

/// Accepts one connection, non-blocking and close-on-exec; `None` when no
/// connection is waiting.
pub fn accept(listener: RawFd) -> io::Result<Option<OwnedFd>> {
    loop {
        // SAFETY: null address pointers are allowed by accept4.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor owned by nobody else.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => match e.raw_os_error() {
                // The peer went away before we accepted: try the next one.
                Some(libc::ECONNABORTED) | Some(libc::EPROTO) => continue,
                _ => return Err(e),
            },
        }
    }
}

/// What one `recvmsg` on the console socket gave.
pub enum Received {
    /// A descriptor passed with SCM_RIGHTS.
    Fd(OwnedFd),
    /// Data without a descriptor (ignored by the caller).
    Nothing,
    WouldBlock,
    Eof,
}

/// Receives a descriptor sent with SCM_RIGHTS (the runtime's
/// `--console-socket` protocol: the pty master plus a little data).
pub fn recv_fd(sock: RawFd) -> io::Result<Received> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for a few descriptors, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers of the declared sizes.
        let n = unsafe {
            libc::recvmsg(
                sock,
                &raw mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
            _ => return Err(e),
        }
    };
    let mut got: Option<OwnedFd> = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled,
    // bounded by msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                let count = bytes / std::mem::size_of::<libc::c_int>();
                let first = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(first.add(i));
                    // Keep the first; close any extra (closed on drop).
                    let fd = OwnedFd::from_raw_fd(fd);
                    if got.is_none() {
                        got = Some(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    match got {
        Some(fd) => Ok(Received::Fd(fd)),
        None if n == 0 => Ok(Received::Eof),
        None => Ok(Received::Nothing),
    }
}

pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &raw const ws) })?;
    Ok(())
}

/// The terminal's end-of-file character (`VEOF`, normally ^D), unless
/// disabled.
pub fn veof(fd: RawFd) -> Option<u8> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid out pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return None;
    }
    // _POSIX_VDISABLE is 0 on Linux.
    t.c_cc.get(libc::VEOF).copied().filter(|&c| c != 0)
}

/// Ignores the signals that must not kill the monitor, blocks SIGCHLD and
/// returns a signalfd for it.
pub fn signals() -> io::Result<OwnedFd> {
    for sig in [libc::SIGPIPE, libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        // SAFETY: setting a disposition to SIG_IGN installs no handler code.
        if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    // An inherited SIG_IGN for SIGCHLD would make the kernel reap children
    // itself, and their exit statuses would be lost.
    // SAFETY: as above.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset/sigprocmask then
    // use the initialised set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGCHLD);
        cvt(libc::sigprocmask(
            libc::SIG_BLOCK,
            set.as_ptr(),
            std::ptr::null_mut(),
        ))?;
        owned(libc::signalfd(
            -1,
            set.as_ptr(),
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))
    }
}

/// Empties a signalfd.
pub fn drain_signalfd(fd: RawFd) {
    let mut buf = [0u8; 4 * std::mem::size_of::<libc::signalfd_siginfo>()];
    while let Ok(n) = read(fd, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// `waitpid(-1, WNOHANG)`: `Some((pid, status))` for one reaped child.
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Whether `pid` is a child of this process (alive or a zombie not yet
/// reaped), without reaping it.
pub fn is_child(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out pointer; WNOWAIT leaves the child as is.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == 0
}

/// `(seconds, nanoseconds)` of a clock.
pub fn clock(id: libc::clockid_t) -> (i64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec, ts.tv_nsec as u32)
}

pub fn now_realtime() -> (i64, u32) {
    clock(libc::CLOCK_REALTIME)
}

/// Monotonic milliseconds.
pub fn monotonic_ms() -> i64 {
    let (s, ns) = clock(libc::CLOCK_MONOTONIC);
    s.saturating_mul(1000)
        .saturating_add(i64::from(ns / 1_000_000))
}

/// Forks and runs `argv` (looked up in PATH when not a path) with the given
/// descriptors as its 0, 1 and 2, default signal dispositions and an empty
/// signal mask. Returns the child's pid once the exec has succeeded, or the
/// exec's error.
/// `keep_propagation` (with `hide_cgroup2`): make only the hidden mount
/// private, so a container's shared and slave mounts still reach the host;
/// without it the whole namespace is private, which makes the runtime's own
/// mounts cheaper (nothing to propagate).
pub fn spawn(
    argv: &[CString],
    stdio: [RawFd; 3],
    hide_cgroup2: bool,
    keep_propagation: bool,
) -> io::Result<libc::pid_t> {
    let Some(program) = argv.first() else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (err_r, err_w) = pipe()?;

    // SAFETY: the shim is single-threaded, so the child may run any code;
    // it still only makes async-signal-safe calls before exec or _exit.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: in the child; see above. Every pointer used is valid
        // (prepared before the fork).
        unsafe {
            for sig in [
                libc::SIGPIPE,
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGCHLD,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            // The monitor's own umask (077) is not the runtime's business:
            // it, and the container unless its spec says otherwise, get
            // the conventional 022.
            libc::umask(0o022);
            let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            let mut ok = true;
            if hide_cgroup2 {
                // crun 1.8 refuses a hybrid host unless the empty v2 tree is
                // out of sight. The tmpfs must stay here: either that one
                // mount is made private (a container with bidirectional or
                // host-to-container mounts needs the rest to propagate), or
                // all of them (cheaper for the runtime: ~6 ms per create).
                let (target, flags) = if keep_propagation {
                    (c"/sys/fs/cgroup/unified", libc::MS_PRIVATE)
                } else {
                    (c"/", libc::MS_REC | libc::MS_PRIVATE)
                };
                ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        c"tmpfs".as_ptr(),
                        c"/sys/fs/cgroup/unified".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) == 0;
            }
            for (target, &src) in stdio.iter().enumerate() {
                let target = target as libc::c_int;
                if src == target {
                    ok &= libc::fcntl(src, libc::F_SETFD, 0) == 0;
                } else {
                    ok &= libc::dup2(src, target) == target;
                }
            }
            if ok {
                libc::execvp(program.as_ptr(), ptrs.as_ptr());
            }
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(err_w);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match read(err_r.as_raw_fd(), buf.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    if got == buf.len() {
        let mut status = 0;
        // SAFETY: reaping our own child, which is exiting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    Ok(pid)
}

pub fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// One `poll(2)` call, retried on EINTR (returns 0 then).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}
