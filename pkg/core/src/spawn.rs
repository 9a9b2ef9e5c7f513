//! Starting a helper process with `posix_spawn` (glibc: `clone(CLONE_VM |
//! CLONE_VFORK)` then exec), never a fork of berthd: a fork copies the
//! page tables of the whole daemon, and std's `Command` falls back to fork
//! as soon as a `pre_exec` hook is needed to place a descriptor.

use std::ffi::{CString, OsStr, OsString};
#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `program args..` with stdin, stdout and stderr on `/dev/null`, `fd3`
/// as its descriptor 3 and every other descriptor of ours closed (they all
/// are close-on-exec), the signal mask empty and SIGPIPE default (as std's
/// `Command` leaves them). Returns the child's pid; reap it with [`wait`].
pub(crate) fn spawn_with_fd3(
    program: &Path,
    args: &[OsString],
    fd3: BorrowedFd<'_>,
) -> std::io::Result<libc::pid_t> {
    // dup2 onto itself would leave close-on-exec set: keep the source off 3.
    let moved;
    let source = if fd3.as_raw_fd() == 3 {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
        let fd = unsafe { libc::fcntl(3, libc::F_DUPFD_CLOEXEC, 4) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        moved = unsafe { OwnedFd::from_raw_fd(fd) };
        moved.as_raw_fd()
    } else {
        fd3.as_raw_fd()
    };
    let program_c = c_string(program.as_os_str())?;
    let argv_c = std::iter::once(Ok(program_c.clone()))
        .chain(args.iter().map(|a| c_string(a)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let env_c = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            c_string(&kv)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let argv = null_terminated(&argv_c);
    let envp = null_terminated(&env_c);
    let mut actions = FileActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.open(1, c"/dev/null", libc::O_WRONLY)?;
    actions.open(2, c"/dev/null", libc::O_WRONLY)?;
    actions.dup2(source, 3)?;
    let attr = SpawnAttr::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call; argv and envp are
    // NUL-terminated arrays of NUL-terminated strings that outlive it.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program_c.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(pid)
}

/// Reaps our child `pid`; its exit status as `waitpid` gives it.
pub(crate) fn wait(pid: libc::pid_t) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on a child of ours.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn c_string(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> std::io::Result<FileActions> {
        // SAFETY: init fills the zeroed struct, destroyed in Drop.
        unsafe {
            let mut a = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut a))?;
            Ok(FileActions(a))
        }
    }

    fn open(
        &mut self,
        fd: libc::c_int,
        path: &'static std::ffi::CStr,
        flags: i32,
    ) -> std::io::Result<()> {
        // SAFETY: the path is static; the struct was initialised.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn dup2(&mut self, from: libc::c_int, to: libc::c_int) -> std::io::Result<()> {
        // SAFETY: the struct was initialised.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    /// Empty signal mask, SIGPIPE back to default (berthd ignores it).
    fn new() -> std::io::Result<SpawnAttr> {
        // SAFETY: init fills the zeroed struct (destroyed in Drop); the
        // signal sets are plain values filled by sigemptyset/sigaddset.
        unsafe {
            let mut a = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut a))?;
            let attr = SpawnAttr(a);
            let mut a = attr;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut a.0, &empty))?;
            let mut default: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut a.0, &default))?;
            check(libc::posix_spawnattr_setflags(
                &mut a.0,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            Ok(a)
        }
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in new.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The child sees the pipe as fd 3, /dev/null as stdin, and none of
    /// our close-on-exec descriptors.
    #[test]
    fn child_gets_fd3_and_null_stdio() {
        let (r, w) = std::io::pipe().unwrap();
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
        let extra = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 200) };
        assert!(extra >= 200);
        // SAFETY: fresh descriptor.
        let extra = unsafe { OwnedFd::from_raw_fd(extra) };
        let script = format!(
            "echo hello >&3; readlink /proc/$$/fd/0 >&3; [ -e /proc/$$/fd/{} ] || echo closed >&3",
            extra.as_raw_fd()
        );
        let args = ["-c", &script].map(OsString::from);
        let pid = spawn_with_fd3(Path::new("/bin/sh"), &args, w.as_fd()).unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(OwnedFd::from(r))
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(wait(pid).unwrap(), 0);
        assert_eq!(out, "hello\n/dev/null\nclosed\n");
    }

    #[test]
    fn missing_program_is_an_error() {
        let (_r, w) = std::io::pipe().unwrap();
        let e = spawn_with_fd3(Path::new("/nonexistent/berth-shim"), &[], w.as_fd()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
