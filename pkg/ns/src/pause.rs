//! The pause process: pid 1 of a pod's PID namespace.
//!
//! A PID namespace dies with its init process, so a pinned PID namespace
//! needs a process that lives as long as the pod. It is made without a pause
//! image and without a separate binary: `clone(CLONE_NEWPID | SIGCHLD)` of the
//! calling process, on a small stack of its own, running [`child`] and never
//! returning to Rust code that allocates or locks.
//!
//! A clone without `exec` starts as a copy-on-write copy of berthd. Left as
//! is, it would keep every page berthd later writes or frees (a snapshot of
//! berthd's heap per pod, tens of MiB). So the child drops all its private
//! writable memory (`MADV_DONTNEED` over every `rw-p` mapping but its own
//! stack) and from then on runs only raw system calls on that stack. What is
//! left is its own stack, page tables and berthd's read-only, file-backed
//! mappings (shared with the page cache).
//!
//! Before it reports ready (one byte on a pipe), the child:
//! - resets every signal disposition to the default and ignores `SIGCHLD`,
//!   so processes reparented to it (orphans of the pod) are reaped by the
//!   kernel; with no handlers, as init of its namespace it cannot be killed
//!   from inside the pod, and from the host only `SIGKILL` (or `SIGSTOP`)
//!   reaches it;
//! - unblocks all signals, starts a new session, changes to `/`;
//! - names itself `berth-pause` (`comm`) and points its command line at
//!   `berth-pause <dir>` (best effort: `PR_SET_MM` needs `CAP_SYS_RESOURCE`;
//!   without it the command line reads empty), so `ps` shows which pod it
//!   belongs to and a half-made pin can be found after a crash;
//! - closes every file descriptor it inherited (`close_range`).
//!
//! It stays in the cgroup of the process that called [`crate::pin`]
//! (berthd's), not in any container's cgroup.

use std::ffi::c_void;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// The `comm` of every pause process.
pub const PAUSE_NAME: &str = "berth-pause";

/// Room for `berth-pause\0<dir>\0`.
const CMDLINE_MAX: usize = 4096 + 16;
/// Stack of the child (the memory release reads /proc/self/maps through a
/// 4 KiB buffer; everything else is a few words).
const STACK_SIZE: usize = 128 * 1024;
/// How long `start` waits for the child to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the child needs, placed at the top of its own mapping so that it
/// survives the memory release.
#[repr(C)]
struct Args {
    /// The child's mapping (guard page, stack, these args): never released.
    keep_start: usize,
    keep_end: usize,
    ready_fd: i32,
    cmdline_len: usize,
    cmdline: [u8; CMDLINE_MAX],
}

/// The kernel's `struct sigaction` (x86_64, aarch64 and the generic layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Starts a pause process in a new PID namespace and waits until it is
/// ready. Returns its host pid. The process is a child of the caller.
/// `flags` are more `CLONE_NEW*` flags for namespaces made with it (with
/// `CLONE_NEWUSER`, every one of them is owned by the new user namespace).
/// `cloned` runs as soon as the pid is known (to record it); if it fails,
/// the process is killed.
pub(crate) fn start(
    dir: &Path,
    flags: libc::c_int,
    cloned: impl FnOnce(libc::pid_t) -> io::Result<()>,
) -> io::Result<libc::pid_t> {
    let mut cmdline = Vec::with_capacity(CMDLINE_MAX);
    cmdline.extend_from_slice(PAUSE_NAME.as_bytes());
    cmdline.push(0);
    cmdline.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    cmdline.push(0);
    let dir_bytes = dir.as_os_str().as_encoded_bytes();
    if cmdline.len() > CMDLINE_MAX || dir_bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "directory path too long or contains NUL",
        ));
    }

    let (read_end, write_end) = pipe()?;
    let region = Region::new()?;
    let args_addr = (region.end() - size_of::<Args>()) & !15;
    let stack_top = args_addr & !15;
    let args = args_addr as *mut Args;
    // SAFETY: args_addr lies inside the fresh read-write mapping, is 16-byte
    // aligned and the mapping is larger than Args plus the guard page.
    unsafe {
        std::ptr::addr_of_mut!((*args).keep_start).write(region.start());
        std::ptr::addr_of_mut!((*args).keep_end).write(region.end());
        std::ptr::addr_of_mut!((*args).ready_fd).write(write_end.as_raw_fd());
        std::ptr::addr_of_mut!((*args).cmdline_len).write(cmdline.len());
        let dst = std::ptr::addr_of_mut!((*args).cmdline) as *mut u8;
        std::ptr::copy_nonoverlapping(cmdline.as_ptr(), dst, cmdline.len());
    }

    // SAFETY: the child runs `pause_main` on its own stack inside `region`
    // (a private copy after the clone) and only makes raw system calls.
    let pid = unsafe {
        libc::clone(
            pause_main,
            stack_top as *mut c_void,
            flags | libc::CLONE_NEWPID | libc::SIGCHLD,
            args as *mut c_void,
        )
    };
    let clone_err = io::Error::last_os_error();
    drop(write_end);
    drop(region);
    if pid < 0 {
        return Err(clone_err);
    }
    if let Err(e) = cloned(pid).and_then(|()| wait_ready(&read_end)) {
        // SAFETY: pid is our fresh child; kill and reap it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    Ok(pid)
}

/// A child that only holds the namespaces it was cloned into, until
/// dropped: their maker when a pod has a user namespace but no PID
/// namespace of its own (a thread cannot make a user namespace: `unshare`
/// refuses `CLONE_NEWUSER` in a multithreaded process). It waits for the
/// end of a pipe whose other end only the caller holds, so it also goes
/// when the caller dies.
pub(crate) struct Holder {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
}

/// What the holder needs, at the top of its own mapping.
#[repr(C)]
struct HoldArgs {
    wait_fd: i32,
}

impl Holder {
    /// Clones the holder with `flags` (`CLONE_NEW*`).
    pub(crate) fn start(flags: libc::c_int) -> io::Result<Holder> {
        let (read_end, write_end) = pipe()?;
        let region = Region::new()?;
        let args_addr = (region.end() - size_of::<HoldArgs>()) & !15;
        let args = args_addr as *mut HoldArgs;
        // SAFETY: args_addr lies inside the fresh read-write mapping, aligned.
        unsafe { std::ptr::addr_of_mut!((*args).wait_fd).write(read_end.as_raw_fd()) };
        // SAFETY: the child runs `hold_main` on its own stack inside `region`
        // (a private copy after the clone) and only makes raw system calls.
        let pid = unsafe {
            libc::clone(
                hold_main,
                args_addr as *mut c_void,
                flags | libc::SIGCHLD,
                args as *mut c_void,
            )
        };
        let clone_err = io::Error::last_os_error();
        drop(read_end);
        drop(region);
        if pid < 0 {
            return Err(clone_err);
        }
        Ok(Holder {
            pid,
            release: Some(write_end),
        })
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.release.take());
        // SAFETY: pid is our own child; kill and reap it (it may already
        // be on its way out after the end of the pipe).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Entry point of the holder: closes every fd but its end of the pipe,
/// waits for that pipe's end, exits. Raw system calls only.
extern "C" fn hold_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: arg points at the HoldArgs written by `Holder::start`, in the
    // child's private copy of the region.
    unsafe {
        let fd = (*(arg as *const HoldArgs)).wait_fd as usize;
        close_from_to(0, fd.wrapping_sub(1), fd);
        close_from_to(fd + 1, u32::MAX as usize, fd);
        let mut b = 0u8;
        while sys::call4(libc::SYS_read, fd, &mut b as *mut u8 as usize, 1, 0)
            == -(libc::EINTR as isize)
        {}
        loop {
            sys::call4(libc::SYS_exit_group, 0, 0, 0, 0);
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn wait_ready(fd: &OwnedFd) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "pause process did not report ready",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut b = 0u8;
        // SAFETY: reads at most one byte into b.
        let r = unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        if r == 1 && b == b'k' {
            // Ready; wait for the child's last close (EOF) so that it holds
            // no fd at all once we return.
            ready = true;
            continue;
        }
        if r == 0 && ready {
            return Ok(());
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Err(io::Error::other("pause process exited before it was ready"));
    }
}

/// The child's mapping: a guard page at the bottom, then the stack, then
/// [`Args`] at the top. Unmapped in the parent on drop.
struct Region {
    start: usize,
    len: usize,
}

impl Region {
    fn new() -> io::Result<Self> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => 4096,
        };
        let want = STACK_SIZE + size_of::<Args>() + page;
        let len = want.div_ceil(page) * page;
        // SAFETY: a fresh anonymous private mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Region {
            start: p as usize,
            len,
        };
        // SAFETY: the first page belongs to this mapping.
        if unsafe { libc::mprotect(p, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(region)
    }

    fn start(&self) -> usize {
        self.start
    }

    fn end(&self) -> usize {
        self.start + self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.start as *mut c_void, self.len);
        }
    }
}

/// Entry point of the child (called by glibc's `clone` on the new stack).
extern "C" fn pause_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: arg points at the Args written by `start`, in the child's
    // private copy of the region, which is never released.
    unsafe { child(&*(arg as *const Args)) }
}

/// Runs in the cloned child: only raw system calls, no allocation, no
/// locks, no thread-local storage. Never returns.
unsafe fn child(a: &Args) -> ! {
    // SAFETY: runs in the pause child, see `child`.
    unsafe {
        // Signals: defaults everywhere (berthd's handlers must not run here),
        // SIGCHLD ignored so the kernel reaps orphans of the pod, nothing blocked.
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let mut sig = 1;
        while sig <= 64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                sys::call4(
                    libc::SYS_rt_sigaction,
                    sig as usize,
                    &dfl as *const _ as usize,
                    0,
                    8,
                );
            }
            sig += 1;
        }
        let ign = KernelSigaction {
            handler: libc::SIG_IGN,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        sys::call4(
            libc::SYS_rt_sigaction,
            libc::SIGCHLD as usize,
            &ign as *const _ as usize,
            0,
            8,
        );
        let empty: u64 = 0;
        sys::call4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
        );

        sys::call4(libc::SYS_setsid, 0, 0, 0, 0);
        sys::call4(libc::SYS_chdir, c"/".as_ptr() as usize, 0, 0, 0);

        // Name and command line.
        let name = b"berth-pause\0";
        sys::call4(
            libc::SYS_prctl,
            libc::PR_SET_NAME as usize,
            name.as_ptr() as usize,
            0,
            0,
        );
        let arg_start = a.cmdline.as_ptr() as usize;
        let arg_end = arg_start + a.cmdline_len;
        if set_mm(libc::PR_SET_MM_ARG_START, arg_start) != 0 {
            // The new range lies above the old one: move the end first.
            set_mm(libc::PR_SET_MM_ARG_END, arg_end);
            set_mm(libc::PR_SET_MM_ARG_START, arg_start);
        } else {
            set_mm(libc::PR_SET_MM_ARG_END, arg_end);
        }

        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        release_memory(a.keep_start, a.keep_end);

        // File descriptors: keep only the ready pipe, report, close it.
        let fd = a.ready_fd as usize;
        close_from_to(0, fd.wrapping_sub(1), fd);
        close_from_to(fd + 1, u32::MAX as usize, fd);
        let ok = b"k";
        sys::call4(libc::SYS_write, fd, ok.as_ptr() as usize, 1, 0);
        sys::call4(libc::SYS_close, fd, 0, 0, 0);

        loop {
            sys::call4(
                libc::SYS_rt_sigsuspend,
                &empty as *const u64 as usize,
                8,
                0,
                0,
            );
        }
    }
}

unsafe fn set_mm(what: libc::c_int, addr: usize) -> isize {
    // SAFETY: runs in the pause child, see `child`.
    unsafe {
        sys::call5(
            libc::SYS_prctl,
            libc::PR_SET_MM as usize,
            what as usize,
            addr,
            0,
            0,
        )
    }
}

/// Closes fds `lo..=hi` (`hi` may be below `lo`: nothing to do). `keep` is
/// never closed by the fallback loop.
unsafe fn close_from_to(lo: usize, hi: usize, keep: usize) {
    // SAFETY: runs in the pause child, see `child`.
    unsafe {
        if lo > hi || hi == usize::MAX {
            return;
        }
        let r = sys::call4(libc::SYS_close_range, lo, hi, 0, 0);
        if r == -(libc::ENOSYS as isize) {
            let mut fd = lo;
            while fd <= hi && fd < 65536 {
                if fd != keep {
                    sys::call4(libc::SYS_close, fd, 0, 0, 0);
                }
                fd += 1;
            }
        }
    }
}

/// Drops every private writable page but those in `keep_start..keep_end`:
/// streams /proc/self/maps through a stack buffer, parsing
/// `start-end perms ...` lines byte by byte.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn release_memory(keep_start: usize, keep_end: usize) {
    // SAFETY: runs in the pause child, see `child`.
    unsafe {
        let path = c"/proc/self/maps";
        let fd = sys::call4(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            0,
        );
        if fd < 0 {
            return;
        }
        let fd = fd as usize;
        const BUF: usize = 4096;
        let mut buf = MaybeUninit::<[u8; BUF]>::uninit();
        let p = buf.as_mut_ptr() as *mut u8;
        // 0: start address, 1: end address, 2: perms, 3: rest of line.
        let mut state = 0u8;
        let (mut start, mut end, mut perm_i) = (0usize, 0usize, 0usize);
        let (mut writable, mut private) = (false, false);
        loop {
            let n = sys::call4(libc::SYS_read, fd, p as usize, BUF, 0);
            if n <= 0 {
                break;
            }
            let mut i = 0usize;
            while i < n as usize {
                let b = *p.add(i);
                i += 1;
                match state {
                    0 if b == b'-' => state = 1,
                    0 => start = (start << 4) | hex(b),
                    1 if b == b' ' => state = 2,
                    1 => end = (end << 4) | hex(b),
                    2 => {
                        if perm_i == 1 {
                            writable = b == b'w';
                        }
                        if perm_i == 3 {
                            private = b == b'p';
                        }
                        perm_i += 1;
                        if perm_i == 4 {
                            state = 3;
                            if writable && private && end > start {
                                release_outside(start, end, keep_start, keep_end);
                            }
                        }
                    }
                    _ => {
                        if b == b'\n' {
                            state = 0;
                            start = 0;
                            end = 0;
                            perm_i = 0;
                            writable = false;
                            private = false;
                        }
                    }
                }
            }
        }
        sys::call4(libc::SYS_close, fd, 0, 0, 0);
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn hex(b: u8) -> usize {
    match b {
        b'0'..=b'9' => (b - b'0') as usize,
        b'a'..=b'f' => (b - b'a' + 10) as usize,
        b'A'..=b'F' => (b - b'A' + 10) as usize,
        _ => 0,
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn release_outside(start: usize, end: usize, keep_start: usize, keep_end: usize) {
    // SAFETY: runs in the pause child, see `child`.
    unsafe {
        if start < keep_start {
            let e = if end < keep_start { end } else { keep_start };
            sys::call4(
                libc::SYS_madvise,
                start,
                e - start,
                libc::MADV_DONTNEED as usize,
                0,
            );
        }
        if end > keep_end {
            let s = if start > keep_end { start } else { keep_end };
            sys::call4(
                libc::SYS_madvise,
                s,
                end - s,
                libc::MADV_DONTNEED as usize,
                0,
            );
        }
    }
}

/// Raw system calls that touch neither errno nor any other memory, so they
/// stay safe after the child dropped its copy of berthd's data.
mod sys {
    /// System call `n` with four arguments (the fifth is 0).
    #[inline(always)]
    pub unsafe fn call4(n: libc::c_long, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
        // SAFETY: as for call5.
        unsafe { call5(n, a1, a2, a3, a4, 0) }
    }

    /// Returns the raw result (`-errno` on failure).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn call5(
        n: libc::c_long,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for system call n.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a1,
                in("rsi") a2,
                in("rdx") a3,
                in("r10") a4,
                in("r8") a5,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub unsafe fn call5(
        n: libc::c_long,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for system call n.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a1 as isize => ret,
                in("x1") a2,
                in("x2") a3,
                in("x3") a4,
                in("x4") a5,
                options(nostack),
            );
        }
        ret
    }

    /// Other architectures: glibc's `syscall` (the memory release is
    /// skipped there, so errno stays usable).
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn call5(
        n: libc::c_long,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
    ) -> isize {
        // SAFETY: the caller passes arguments valid for system call n.
        let r = unsafe { libc::syscall(n, a1, a2, a3, a4, a5) } as isize;
        if r == -1 {
            -(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL) as isize)
        } else {
            r
        }
    }
}
