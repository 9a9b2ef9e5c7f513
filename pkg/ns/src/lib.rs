//! Pinned pod namespaces: a pod sandbox without a pause container.
//!
//! A pod's shared namespaces are made once by [`pin`] and kept alive by bind
//! mounts of their nsfs files, so containers join them by path (OCI
//! `linux.namespaces[].path`) and nothing has to run for net, ipc and uts.
//! A PID namespace cannot outlive its init process, so a shared PID namespace
//! also gets a tiny pause process (see below). [`unpin`] undoes all of it and
//! needs nothing but the directory, so it works after a berthd restart.
//!
//! # Files kept under the pin directory
//!
//! | file        | what                                                          |
//! |-------------|---------------------------------------------------------------|
//! | `net`       | bind mount of the pod's network namespace (loopback `lo` up)  |
//! | `ipc`       | bind mount of the pod's IPC namespace                         |
//! | `uts`       | bind mount of the pod's UTS namespace (hostname set)          |
//! | `pid`       | bind mount of the pod's PID namespace                         |
//! | `user`      | bind mount of the pod's user namespace (its id maps written)  |
//! | `pause.pid` | host pid of the pause process (decimal, newline), with `pid`  |
//!
//! Each pin file is an empty regular file (mode 0444) with an nsfs bind mount
//! on top. Only the files asked for exist. The directory must hold nothing
//! else: [`unpin`] removes it with `rmdir`.
//!
//! # How the namespaces are made
//!
//! - net, ipc, uts: a short-lived thread calls `unshare(2)` (these flags are
//!   per thread, so this is safe in a multithreaded tokio process), sets the
//!   hostname, brings `lo` up with `SIOCSIFFLAGS`, bind-mounts
//!   `/proc/thread-self/ns/<kind>` onto the pin files and exits. The
//!   namespaces live on through the mounts.
//! - pid: the pause process is `clone(CLONE_NEWPID)` of the caller, pid 1 of
//!   the new namespace, named `berth-pause` (`comm`; its command line is
//!   `berth-pause <dir>` where the caller has `CAP_SYS_RESOURCE`, else
//!   empty). It holds no fds, no cwd, no private copy of the caller's memory,
//!   ignores `SIGCHLD` (the kernel reaps the pod's orphans) and dies only of
//!   `SIGKILL` from the host. Its pid goes to `pause.pid` right after the
//!   clone, then `/proc/<pid>/ns/pid` is bind-mounted onto `<dir>/pid`. A
//!   crash between the clone and `pause.pid` leaves a pause process no file
//!   refers to: [`orphaned_pauses`] finds those at start. A blocking call
//!   (about a millisecond; more with net): from async code use
//!   `spawn_blocking`. It stays in the caller's cgroup (berthd's):
//!   a service manager that kills berthd's whole cgroup on stop would kill
//!   it (run berthd with systemd `KillMode=process`, as containerd does), and
//!   the caller may move it into the pod's cgroup by writing
//!   [`Pinned::pause_pid`] to `cgroup.procs`.
//! - user (with any of the others): a namespace is owned by the user
//!   namespace of the process that makes it, and an OCI runtime that joins
//!   the pod's user namespace first (runc and crun do) can then only join
//!   namespaces that user namespace owns. So one `clone(CLONE_NEWUSER |
//!   CLONE_NEWNET | ...)` makes them all: the pause process when the pod
//!   has a PID namespace, else a holder child that lives only while [`pin`]
//!   runs (`unshare(CLONE_NEWUSER)` is refused to a multithreaded process).
//!   The caller writes the child's `uid_map` and `gid_map` (as root of the
//!   parent namespace, no `setgroups` deny is needed), bind-mounts
//!   `/proc/<child>/ns/*`, and a thread that `setns`es into the new uts and
//!   net namespaces sets the hostname and brings `lo` up (root of the
//!   initial user namespace has every capability in the namespaces below
//!   it). The pause process of such a pod is pid 1 of a PID namespace owned
//!   by the pod's user namespace; without `CAP_SYS_RESOURCE` there its
//!   command line reads empty, and it is found by name and namespace.
//!
//! # Joining the pins
//!
//! OCI runtimes join by path (`linux.namespaces[].path`), from a mount
//! namespace of their own made after the pin (verified with runc 1.1.5 and
//! with crun 1.8.1 under `unshare --mount --propagation private`). A runtime
//! sets `hostname` from the spec inside the joined UTS namespace, so a
//! container spec that joins `<dir>/uts` must leave `hostname` unset (or
//! equal to the pod's). A process joining `<dir>/pid` sees the pause process
//! as pid 1.
//!
//! # Mount propagation
//!
//! A mount namespace created after a pin (an OCI runtime's, `unshare -m`, a
//! systemd service with `PrivateTmp=`) starts with a copy of the pin mounts,
//! so runtimes can join `<dir>/net` by path. The copy also holds the
//! namespace: if the pin directory sits on a private mount, such a copy
//! survives [`unpin`] for as long as that mount namespace lives. Call
//! [`make_shared`] once on the root under which pin directories live (as
//! `ip netns` does for `/run/netns`): unmounts then propagate to copies that
//! are slaves or peers (systemd's sandboxing). Copies made private
//! (`unshare -m`'s default) are beyond reach; OCI runtimes drop theirs
//! when they pivot into the container root.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_errdefs::{Error, ErrorKind, Result};

mod pause;

pub use pause::PAUSE_NAME;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;

/// How long [`unpin`] waits for a killed pause process to go away.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What to pin, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinRequest {
    /// Directory for the pin files (created if missing): `<dir>/net`,
    /// `<dir>/ipc`, `<dir>/uts`, `<dir>/pid`.
    pub dir: PathBuf,
    /// New network namespace, with loopback `lo` brought up.
    pub net: bool,
    /// New IPC namespace.
    pub ipc: bool,
    /// New UTS namespace, with the hostname set if `hostname` is `Some`.
    pub uts: bool,
    /// New PID namespace, kept alive by a pause process.
    pub pid: bool,
    /// Hostname of the new UTS namespace (needs `uts`; at most 64 bytes).
    pub hostname: Option<String>,
    /// A new user namespace with these id maps, owning every other
    /// namespace made here.
    pub user: Option<IdMappings>,
}

/// One range of a user namespace's id map: `size` ids from `container_id`
/// inside are `host_id`... outside (a line of `/proc/<pid>/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// The uid and gid maps of a user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMappings {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

/// Most lines a uid or gid map may have (the kernel's limit since 4.15).
pub const MAX_ID_MAP_LINES: usize = 340;

/// Pins a network namespace alone under `dir` (with `lo` up) and returns
/// its pin file: what a pod network backend wires, for tests and benches.
pub fn pin_netns(dir: &Path) -> Result<PathBuf> {
    let pinned = pin(&PinRequest {
        dir: dir.to_path_buf(),
        net: true,
        ..Default::default()
    })?;
    pinned
        .net
        .ok_or_else(|| Error::internal(format!("pin {}: no net pin made", dir.display())))
}

/// The pins made by [`pin`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// Host pid of the PID namespace's pause process.
    pub pause_pid: Option<u32>,
    pub user: Option<PathBuf>,
}

/// The namespace kinds that can be pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
    Pid,
    User,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Net, Kind::Ipc, Kind::Uts, Kind::Pid, Kind::User];

    /// The name used in `/proc/<pid>/ns/` and for the pin file.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Pid => "pid",
            Kind::User => "user",
        }
    }

    fn clone_flag(self) -> libc::c_int {
        match self {
            Kind::Net => libc::CLONE_NEWNET,
            Kind::Ipc => libc::CLONE_NEWIPC,
            Kind::Uts => libc::CLONE_NEWUTS,
            Kind::Pid => libc::CLONE_NEWPID,
            Kind::User => libc::CLONE_NEWUSER,
        }
    }
}

/// `<dir>/<kind>`: where the namespace of `kind` is pinned.
pub fn pin_file(dir: &Path, kind: Kind) -> PathBuf {
    dir.join(kind.name())
}

/// `<dir>/pause.pid`: the host pid of the pause process.
pub fn pause_pid_file(dir: &Path) -> PathBuf {
    dir.join("pause.pid")
}

// ---------------------------------------------------------------------------
// Fault injection (tests only).

static FAIL_AT: Mutex<Option<&'static str>> = Mutex::new(None);

/// Makes the [`pin`] step named `step` fail (tests of the rollback), or no
/// step with `None`. Process-wide.
#[doc(hidden)]
pub fn set_fail_point(step: Option<&'static str>) {
    *FAIL_AT.lock().unwrap_or_else(|e| e.into_inner()) = step;
}

fn fail_point(step: &str) -> io::Result<()> {
    match *FAIL_AT.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(s) if s == step => Err(io::Error::other("injected failure")),
        _ => Ok(()),
    }
}

/// The names of the steps of [`pin`], as they appear in its errors.
pub mod step {
    pub const CREATE_DIR: &str = "create directory";
    pub const CREATE_FILE: &str = "create pin file";
    pub const UNSHARE: &str = "unshare namespaces";
    pub const HOSTNAME: &str = "set hostname";
    pub const LOOPBACK: &str = "bring up lo";
    pub const MOUNT_NET: &str = "bind-mount net namespace";
    pub const MOUNT_IPC: &str = "bind-mount ipc namespace";
    pub const MOUNT_UTS: &str = "bind-mount uts namespace";
    pub const START_PAUSE: &str = "start pause process";
    pub const WRITE_PAUSE_PID: &str = "write pause.pid";
    pub const MOUNT_PID: &str = "bind-mount pid namespace";
    /// With a user namespace and no pid namespace: the child that makes them.
    pub const CLONE_HOLDER: &str = "clone namespace holder";
    pub const WRITE_ID_MAPS: &str = "write id maps";
    pub const MOUNT_USER: &str = "bind-mount user namespace";
    /// Every step of a pin without a user namespace, in order.
    pub const ALL: [&str; 11] = [
        CREATE_DIR,
        CREATE_FILE,
        UNSHARE,
        HOSTNAME,
        LOOPBACK,
        MOUNT_NET,
        MOUNT_IPC,
        MOUNT_UTS,
        START_PAUSE,
        WRITE_PAUSE_PID,
        MOUNT_PID,
    ];
    /// Every step of a pin of all namespaces with a user namespace, in order.
    pub const USERNS_ALL: [&str; 12] = [
        CREATE_DIR,
        CREATE_FILE,
        START_PAUSE,
        WRITE_PAUSE_PID,
        WRITE_ID_MAPS,
        MOUNT_NET,
        MOUNT_IPC,
        MOUNT_UTS,
        MOUNT_USER,
        HOSTNAME,
        LOOPBACK,
        MOUNT_PID,
    ];
}

fn mount_step(kind: Kind) -> &'static str {
    match kind {
        Kind::Net => step::MOUNT_NET,
        Kind::Ipc => step::MOUNT_IPC,
        Kind::Uts => step::MOUNT_UTS,
        Kind::Pid => step::MOUNT_PID,
        Kind::User => step::MOUNT_USER,
    }
}

// ---------------------------------------------------------------------------
// pin

/// Makes the requested namespaces and pins them under `req.dir`.
///
/// All or nothing: on any failure everything already made is undone and the
/// error names the step (`pin <dir>: <step>: <cause>`). The pin files must
/// not exist yet ([`ErrorKind::AlreadyExists`]); call [`unpin`] first.
pub fn pin(req: &PinRequest) -> Result<Pinned> {
    let dir = req.dir.as_path();
    let fail =
        |step: &str, e: io::Error| Error::from(e).context(format!("pin {}: {step}", dir.display()));
    validate(req).map_err(|e| e.context(format!("pin {}", dir.display())))?;

    let mut made = Made::default();
    let result = (|| -> Result<Pinned> {
        // Directory, remembering which levels we create.
        let mut missing = Vec::new();
        let mut p = Some(dir);
        while let Some(d) = p {
            if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        made.dirs = missing;
        fail_point(step::CREATE_DIR).map_err(|e| fail(step::CREATE_DIR, e))?;
        fs::create_dir_all(dir).map_err(|e| fail(step::CREATE_DIR, e))?;

        // Pin files: the directory must not hold pins already.
        for name in ["net", "ipc", "uts", "pid", "user", "pause.pid"] {
            if fs::symlink_metadata(dir.join(name)).is_ok() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "pin {}: {}: {name} already exists; unpin first",
                        dir.display(),
                        step::CREATE_FILE
                    ),
                ));
            }
        }
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| match k {
                Kind::Net => req.net,
                Kind::Ipc => req.ipc,
                Kind::Uts => req.uts,
                Kind::Pid => req.pid,
                Kind::User => req.user.is_some(),
            })
            .collect();
        for &kind in &kinds {
            let path = pin_file(dir, kind);
            fail_point(step::CREATE_FILE).map_err(|e| fail(step::CREATE_FILE, e))?;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&path)
                .map_err(|e| fail(step::CREATE_FILE, e))?;
            made.files.push(path);
        }

        let pause_pid = match &req.user {
            Some(maps) => {
                pin_in_userns(req, &kinds, maps, &mut made).map_err(|(s, e)| fail(s, e))?
            }
            None => {
                // net, ipc, uts: one thread that unshares and pins, then exits.
                let shared: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Pid).collect();
                if !shared.is_empty() {
                    let d = dir.to_path_buf();
                    let hostname = req.hostname.clone();
                    let joined = std::thread::Builder::new()
                        .name("berth-ns-pin".into())
                        .spawn(move || pin_in_thread(&d, &shared, hostname.as_deref()))
                        .map_err(|e| fail("spawn thread", e))?
                        .join();
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err((step, e))) => return Err(fail(step, e)),
                        Err(_) => {
                            return Err(Error::internal(format!(
                                "pin {}: pin thread panicked",
                                dir.display()
                            )))
                        }
                    }
                }
                // pid: the pause process, then its namespace.
                if req.pid {
                    let pid = start_pause(dir, 0, &mut made).map_err(|(s, e)| fail(s, e))?;
                    pin_pid(dir, pid).map_err(|(s, e)| fail(s, e))?;
                    Some(pid as u32)
                } else {
                    None
                }
            }
        };

        let file = |k: Kind| kinds.contains(&k).then(|| pin_file(dir, k));
        Ok(Pinned {
            net: file(Kind::Net),
            ipc: file(Kind::Ipc),
            uts: file(Kind::Uts),
            pid: file(Kind::Pid),
            pause_pid,
            user: file(Kind::User),
        })
    })();
    if result.is_err() {
        made.undo();
    }
    result
}

fn validate(req: &PinRequest) -> Result<()> {
    if req.dir.as_os_str().is_empty() {
        return Err(Error::invalid("empty directory path"));
    }
    let len = req.dir.as_os_str().len();
    if len > 4096 || req.dir.as_os_str().as_bytes().contains(&0) {
        return Err(Error::invalid(format!(
            "directory path of {len} bytes: must be at most 4096 bytes without NUL"
        )));
    }
    if let Some(maps) = &req.user {
        validate_map("uid", &maps.uids)?;
        validate_map("gid", &maps.gids)?;
    }
    if let Some(h) = &req.hostname {
        if !req.uts {
            return Err(Error::invalid(format!(
                "hostname {h:?} needs a new uts namespace"
            )));
        }
        if h.is_empty() || h.len() > HOSTNAME_MAX || h.as_bytes().contains(&0) {
            return Err(Error::invalid(format!(
                "validate hostname: {h:?} must be 1 to {HOSTNAME_MAX} bytes without NUL"
            )));
        }
    }
    Ok(())
}

/// Checks a uid or gid map as the kernel will: 1 to 340 lines, no empty
/// range, no range past the end of the id space, no two ranges
/// overlapping inside or outside.
fn validate_map(what: &str, map: &[IdMap]) -> Result<()> {
    if map.is_empty() || map.len() > MAX_ID_MAP_LINES {
        return Err(Error::invalid(format!(
            "{what} map has {} ranges: must have 1 to {MAX_ID_MAP_LINES}",
            map.len()
        )));
    }
    let end = |start: u32, size: u32| start as u64 + size as u64;
    for (i, m) in map.iter().enumerate() {
        let line = format!(
            "{what} map range {i} (container {} host {} size {})",
            m.container_id, m.host_id, m.size
        );
        if m.size == 0 {
            return Err(Error::invalid(format!("{line}: size must be at least 1")));
        }
        if end(m.container_id, m.size) > 1 << 32 || end(m.host_id, m.size) > 1 << 32 {
            return Err(Error::invalid(format!(
                "{line}: runs past the last id 4294967295"
            )));
        }
        for (j, o) in map.iter().enumerate().take(i) {
            let overlap =
                |a: u32, b: u32| (a as u64) < end(b, o.size) && (b as u64) < end(a, m.size);
            if overlap(m.container_id, o.container_id) || overlap(m.host_id, o.host_id) {
                return Err(Error::invalid(format!("{line}: overlaps range {j}")));
            }
        }
    }
    Ok(())
}

/// Starts the pause process (see `pause.rs`) with `flags` more namespaces,
/// recording it in `made` and its pid in `pause.pid`.
fn start_pause(
    dir: &Path,
    flags: libc::c_int,
    made: &mut Made,
) -> std::result::Result<libc::pid_t, (&'static str, io::Error)> {
    fail_point(step::START_PAUSE).map_err(|e| (step::START_PAUSE, e))?;
    // pause.pid is written as soon as the pid is known, so that even
    // a crash before the pid pin leaves a trace for `unpin`.
    let pid_path = pause_pid_file(dir);
    let mut now = step::START_PAUSE;
    let mut wrote = false;
    let started = pause::start(dir, flags, |pid| {
        made.pause = Some(pid);
        now = step::WRITE_PAUSE_PID;
        fail_point(now)?;
        wrote = true;
        fs::write(&pid_path, format!("{pid}\n"))?;
        now = step::START_PAUSE;
        Ok(())
    });
    if wrote {
        made.files.push(pid_path);
    }
    if started.is_err() {
        made.pause = None; // already killed and reaped by pause::start
    }
    started.map_err(|e| (now, e))
}

/// Pins the PID namespace of the pause process `pid`.
fn pin_pid(dir: &Path, pid: libc::pid_t) -> std::result::Result<(), (&'static str, io::Error)> {
    let src = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    fail_point(step::MOUNT_PID).map_err(|e| (step::MOUNT_PID, e))?;
    bind(&src, &pin_file(dir, Kind::Pid)).map_err(|e| (step::MOUNT_PID, e))
}

/// Makes the namespaces of `kinds` (which holds `User`) with one clone,
/// owned by the new user namespace, writes its id maps and pins them all.
/// Returns the pause pid when `req.pid`.
fn pin_in_userns(
    req: &PinRequest,
    kinds: &[Kind],
    maps: &IdMappings,
    made: &mut Made,
) -> std::result::Result<Option<u32>, (&'static str, io::Error)> {
    let dir = req.dir.as_path();
    let flags = kinds
        .iter()
        .filter(|k| **k != Kind::Pid)
        .fold(0, |f, k| f | k.clone_flag());
    // Without a pid namespace the holder goes (killed and reaped) when
    // this returns: the pins keep the namespaces.
    let mut _holder = None;
    let pid = if req.pid {
        start_pause(dir, flags, made)?
    } else {
        fail_point(step::CLONE_HOLDER).map_err(|e| (step::CLONE_HOLDER, e))?;
        let h = pause::Holder::start(flags).map_err(|e| (step::CLONE_HOLDER, e))?;
        let pid = h.pid();
        _holder = Some(h);
        pid
    };
    fail_point(step::WRITE_ID_MAPS).map_err(|e| (step::WRITE_ID_MAPS, e))?;
    write_id_maps(pid, maps).map_err(|e| (step::WRITE_ID_MAPS, e))?;
    for &kind in kinds.iter().filter(|k| **k != Kind::Pid) {
        let step = mount_step(kind);
        fail_point(step).map_err(|e| (step, e))?;
        let src = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.name()));
        bind(&src, &pin_file(dir, kind)).map_err(|e| (step, e))?;
    }
    let net = kinds.contains(&Kind::Net);
    if net || req.hostname.is_some() {
        let hostname = req.hostname.clone();
        let joined = std::thread::Builder::new()
            .name("berth-ns-setup".into())
            .spawn(
                move || -> std::result::Result<(), (&'static str, io::Error)> {
                    if hostname.is_some() {
                        join(pid, Kind::Uts).map_err(|e| (step::HOSTNAME, e))?;
                    }
                    if net {
                        join(pid, Kind::Net).map_err(|e| (step::LOOPBACK, e))?;
                    }
                    hostname_and_lo(hostname.as_deref(), net)
                },
            )
            .map_err(|e| ("spawn thread", e))?
            .join();
        match joined {
            Ok(r) => r?,
            Err(_) => return Err(("setup thread", io::Error::other("panicked"))),
        }
    }
    if req.pid {
        pin_pid(dir, pid)?;
    }
    Ok(req.pid.then_some(pid as u32))
}

/// Writes `uid_map` and `gid_map` of process `pid` (one write each, as the
/// kernel wants).
fn write_id_maps(pid: libc::pid_t, maps: &IdMappings) -> io::Result<()> {
    let text = |map: &[IdMap]| -> String {
        map.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect()
    };
    fs::write(format!("/proc/{pid}/uid_map"), text(&maps.uids))
        .map_err(|e| io::Error::new(e.kind(), format!("uid_map: {e}")))?;
    fs::write(format!("/proc/{pid}/gid_map"), text(&maps.gids))
        .map_err(|e| io::Error::new(e.kind(), format!("gid_map: {e}")))
}

/// Moves the calling thread into the `kind` namespace of process `pid`.
fn join(pid: libc::pid_t, kind: Kind) -> io::Result<()> {
    let f = fs::File::open(format!("/proc/{pid}/ns/{}", kind.name()))?;
    // SAFETY: setns on this thread only, with a valid fd.
    if unsafe { libc::setns(f.as_raw_fd(), kind.clone_flag()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a failing [`pin`] has to undo.
#[derive(Default)]
struct Made {
    /// Directories created, innermost first.
    dirs: Vec<PathBuf>,
    /// Files created (pin files and pause.pid).
    files: Vec<PathBuf>,
    pause: Option<libc::pid_t>,
}

impl Made {
    fn undo(&self) {
        if let Some(pid) = self.pause {
            // Our own fresh child: kill and reap.
            // SAFETY: plain system calls on our child's pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for f in self.files.iter().rev() {
            let _ = unmount_all(f);
            let _ = remove_file(f);
        }
        for d in &self.dirs {
            match fs::remove_dir(d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => break,
                _ => {}
            }
        }
    }
}

/// Body of the pin thread: unshare, hostname, lo, bind mounts.
fn pin_in_thread(
    dir: &Path,
    kinds: &[Kind],
    hostname: Option<&str>,
) -> std::result::Result<(), (&'static str, io::Error)> {
    let flags = kinds.iter().fold(0, |f, k| f | k.clone_flag());
    fail_point(step::UNSHARE).map_err(|e| (step::UNSHARE, e))?;
    // SAFETY: unshare of net/ipc/uts affects only this thread.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err((step::UNSHARE, io::Error::last_os_error()));
    }
    hostname_and_lo(hostname, kinds.contains(&Kind::Net))?;
    for &kind in kinds {
        let step = mount_step(kind);
        fail_point(step).map_err(|e| (step, e))?;
        let src = PathBuf::from(format!("/proc/thread-self/ns/{}", kind.name()));
        bind(&src, &pin_file(dir, kind)).map_err(|e| (step, e))?;
    }
    Ok(())
}

/// Sets the hostname and brings `lo` up in the calling thread's uts and
/// net namespaces.
fn hostname_and_lo(
    hostname: Option<&str>,
    net: bool,
) -> std::result::Result<(), (&'static str, io::Error)> {
    if let Some(h) = hostname {
        fail_point(step::HOSTNAME).map_err(|e| (step::HOSTNAME, e))?;
        // SAFETY: h points to h.len() readable bytes.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
            return Err((step::HOSTNAME, io::Error::last_os_error()));
        }
    }
    if net {
        fail_point(step::LOOPBACK).map_err(|e| (step::LOOPBACK, e))?;
        loopback_up().map_err(|e| (step::LOOPBACK, e))?;
    }
    Ok(())
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(src),
        dst,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

// ---------------------------------------------------------------------------
// unpin

/// Undoes [`pin`]: kills the pause process, unmounts and removes every pin
/// file under `dir`, removes `pause.pid` and `dir`.
///
/// Idempotent, and needs no in-memory state (works after a berthd restart).
/// Missing things are fine. The pause process is killed only if
/// `/proc/<pid>/ns/pid` is the namespace pinned at `<dir>/pid`, so a reused
/// pid is never killed (if `pause.pid` is stale, the init of the pinned
/// namespace is looked up in /proc). A pause process whose pid pin was never
/// made (a crash inside [`pin`]) is killed if `pause.pid` names a
/// `berth-pause` that is init of a PID namespace no mount pins, or if its
/// command line is `berth-pause <dir>`. On
/// failure the remaining steps still run and the first error is returned; the
/// pid pin is kept until its pause process is gone, so a retry can finish.
pub fn unpin(dir: &Path) -> Result<()> {
    let ctx = |what: &str, e: io::Error| {
        Error::from(e).context(format!("unpin {}: {what}", dir.display()))
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx("stat directory", e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::invalid(format!(
                "unpin {}: not a directory",
                dir.display()
            )))
        }
        Ok(_) => {}
    }
    let mut first: Option<Error> = None;
    let mut keep = |r: Result<()>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };

    let pause = stop_pause(dir).map_err(|e| e.context(format!("unpin {}", dir.display())));
    let pause_stopped = pause.is_ok();
    keep(pause);
    for kind in Kind::ALL {
        if kind == Kind::Pid && !pause_stopped {
            continue;
        }
        let f = pin_file(dir, kind);
        keep(unmount_all(&f).map_err(|e| ctx(&format!("unmount {}", f.display()), e)));
        keep(remove_file(&f).map_err(|e| ctx(&format!("remove {}", f.display()), e)));
    }
    if pause_stopped {
        let f = pause_pid_file(dir);
        keep(remove_file(&f).map_err(|e| ctx(&format!("remove {}", f.display()), e)));
    }
    if first.is_none() {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => first = Some(ctx("remove directory", e)),
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Finds and kills the pause process of `dir`, if any, and waits until it is
/// gone.
fn stop_pause(dir: &Path) -> Result<()> {
    let pid_pin = pin_file(dir, Kind::Pid);
    let recorded = read_pause_pid(dir);
    if is_pinned(&pid_pin) {
        let ns = ns_id(&pid_pin).map_err(|e| Error::from(e).context("stat pid pin"))?;
        let same_ns =
            |pid: libc::pid_t| ns_id(Path::new(&format!("/proc/{pid}/ns/pid"))).ok() == Some(ns);
        let pid = match recorded.filter(|&p| same_ns(p)) {
            Some(p) => Some(p),
            // pause.pid missing or stale: find init of the pinned namespace.
            None => scan_proc(|p| same_ns(p) && is_ns_init(p)),
        };
        if let Some(pid) = pid {
            kill_and_wait(pid, || same_ns(pid))?;
        }
    } else if recorded.is_some() || pid_pin.exists() {
        // A pin cut short before the pid bind mount. The pause process is
        // ours if its command line is `berth-pause <dir>` (set where berthd
        // has CAP_SYS_RESOURCE), or if pause.pid names a `berth-pause` that
        // is init of a PID namespace nobody pins.
        let want = pause_cmdline(dir);
        let ours = |p: libc::pid_t| {
            fs::read(format!("/proc/{p}/cmdline")).ok().as_deref() == Some(&want[..])
        };
        let pid = match recorded.filter(|&p| ours(p) || is_unpinned_pause(p)) {
            Some(p) => Some(p),
            None => scan_proc(ours),
        };
        if let Some(pid) = pid {
            kill_and_wait(pid, || ours(pid) || is_unpinned_pause(pid))?;
        }
    }
    Ok(())
}

/// Whether `pid` is a pause process (by name) that is init of a PID
/// namespace no mount in our mount namespace pins.
fn is_unpinned_pause(pid: libc::pid_t) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != PAUSE_NAME || !is_ns_init(pid) {
        return false;
    }
    let Ok((_, ino)) = ns_id(Path::new(&format!("/proc/{pid}/ns/pid"))) else {
        return false;
    };
    let root = format!("pid:[{ino}]");
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    !info
        .lines()
        .any(|l| l.split(' ').nth(3) == Some(root.as_str()))
}

fn pause_cmdline(dir: &Path) -> Vec<u8> {
    let mut v = PAUSE_NAME.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(dir.as_os_str().as_bytes());
    v.push(0);
    v
}

fn read_pause_pid(dir: &Path) -> Option<libc::pid_t> {
    fs::read_to_string(pause_pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p: &libc::pid_t| p > 0)
}

/// Whether `pid` is pid 1 of a PID namespace below the host's
/// (`NSpid: <host pid> ... 1`).
fn is_ns_init(pid: libc::pid_t) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let Some(nspid) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
        return false;
    };
    let ids: Vec<&str> = nspid.split_whitespace().collect();
    ids.len() > 1 && ids.last() == Some(&"1")
}

/// The first process in /proc for which `matches` holds.
fn scan_proc(matches: impl Fn(libc::pid_t) -> bool) -> Option<libc::pid_t> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .find(|&p| matches(p))
}

/// Sends SIGKILL to `pid` and waits until it is gone: reaped if it is our
/// child, otherwise until `still_there` turns false.
fn kill_and_wait(pid: libc::pid_t, still_there: impl Fn() -> bool) -> Result<()> {
    // SAFETY: plain system call; pid was identified by the caller.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(Error::from(e).context(format!("kill pause process {pid}")));
        }
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    let mut ours = true;
    let mut nap = Duration::from_micros(50);
    loop {
        if ours {
            // SAFETY: waits only for this pid, without blocking.
            let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r == pid {
                return Ok(());
            }
            if r < 0 {
                // ECHILD: not our child (berthd restarted): its new parent
                // reaps it.
                ours = false;
                continue;
            }
        } else if !still_there() || is_zombie(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("pause process {pid} still alive {KILL_TIMEOUT:?} after SIGKILL"),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

fn is_zombie(pid: libc::pid_t) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces and parens.
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
}

/// Unmounts every nsfs mount stacked on `path` (lazily: an open fd keeps the
/// namespace, not the mount). Not a pin: nothing to do.
fn unmount_all(path: &Path) -> io::Result<()> {
    for _ in 0..16 {
        if !is_pinned(path) {
            return Ok(());
        }
        let flags = nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
        match nix::mount::umount2(path, flags) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// queries

/// Whether `path` is a live namespace bind mount (an nsfs file: the mount
/// itself keeps the namespace alive).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Whether the pause process of `dir` is alive and is init of the pinned PID
/// namespace (a PID namespace whose init died can still be entered with
/// `setns` but nothing can be forked in it).
pub fn pause_alive(dir: &Path) -> bool {
    let pid_pin = pin_file(dir, Kind::Pid);
    let (Some(pid), true) = (read_pause_pid(dir), is_pinned(&pid_pin)) else {
        return false;
    };
    match (
        ns_id(&pid_pin),
        ns_id(Path::new(&format!("/proc/{pid}/ns/pid"))),
    ) {
        (Ok(pinned), Ok(running)) => pinned == running && !is_zombie(pid),
        _ => false,
    }
}

/// Pause processes no pin refers to: named `berth-pause`, init of a PID
/// namespace that no mount in the caller's mount namespace pins, not a
/// zombie. Only a crash between the `clone` of a pause process and its
/// `pause.pid` (microseconds), or a pin directory removed by hand, leaves
/// one. Meant for recovery at start, before any [`pin`] runs: a pin in
/// flight (in this or another berthd sharing the mount namespace) has such a
/// pause process for a moment.
pub fn orphaned_pauses() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&p| is_unpinned_pause(p) && !is_zombie(p))
        .map(|p| p as u32)
        .collect()
}

/// Kills the [`orphaned_pauses`] (same caveat) and returns their pids.
pub fn kill_orphaned_pauses() -> Result<Vec<u32>> {
    let pids = orphaned_pauses();
    for &pid in &pids {
        let pid = pid as libc::pid_t;
        kill_and_wait(pid, || is_unpinned_pause(pid))?;
    }
    Ok(pids)
}

/// Identity of a namespace file (follows `/proc/<pid>/ns/*` links).
pub fn ns_id(path: &Path) -> io::Result<(u64, u64)> {
    let m = fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

// ---------------------------------------------------------------------------
// in_netns

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `path` (`setns`), and returns its result. The thread ends with `f`, so no
/// thread is ever left in the wrong namespace. A panic in `f` is resumed in
/// the caller. Blocking: from async code use `spawn_blocking`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let ctx = |what: &str, e: io::Error| {
        Error::from(e).context(format!("enter netns {}: {what}", path.display()))
    };
    let file = fs::File::open(path).map_err(|e| ctx("open", e))?;
    let joined = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || -> io::Result<T> {
            // SAFETY: setns on this thread only, with a valid fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(file);
            Ok(f())
        })
        .map_err(|e| ctx("spawn thread", e))?
        .join();
    match joined {
        Ok(r) => r.map_err(|e| ctx("setns", e)),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---------------------------------------------------------------------------
// mount propagation

/// Makes `root` (created if missing) a shared mount, bind-mounting it onto
/// itself first if it is not a mount point. Idempotent. Call once at start
/// on the directory that holds pin directories, so that [`unpin`]'s
/// unmounts propagate to copies in mount namespaces made in the meantime.
pub fn make_shared(root: &Path) -> Result<()> {
    let ctx = |what: &str, e: io::Error| {
        Error::from(e).context(format!("make {} shared: {what}", root.display()))
    };
    fs::create_dir_all(root).map_err(|e| ctx("create directory", e))?;
    if !is_mount_root(root).map_err(|e| ctx("statx", e))? {
        bind(root, root).map_err(|e| ctx("bind-mount onto itself", e))?;
    }
    nix::mount::mount(
        None::<&str>,
        root,
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| ctx("set propagation", e.into()))
}

fn is_mount_root(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statx fills the zeroed struct we pass.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and stx is writable.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, 0, &mut stx) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & bit == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel does not report STATX_ATTR_MOUNT_ROOT",
        ));
    }
    Ok(stx.stx_attributes & bit != 0)
}
