//! Seccomp profiles: the built-in default (equivalent to Docker's default
//! profile, `profiles/seccomp/default.json` in moby) and profile files from
//! the host (Kubernetes `Localhost` profiles).
//!
//! Both go through one converter from the *Docker profile format* — the OCI
//! `linux.seccomp` object plus `archMap`, and per-rule `includes` /
//! `excludes` conditions on capabilities, architectures and kernel version —
//! to the OCI object for one container: a rule is kept only when the
//! container's bounding set, the node's architecture and its kernel satisfy
//! the conditions. A plain OCI object is valid Docker format, so either kind
//! of file works.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::caps::{self, CapSet};

/// A profile in Docker's format.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Option<Vec<Arch>>,
    /// Native architecture → the sub-architectures to add with it.
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    pub listener_path: Option<PathBuf>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Old single-name form; exclusive with `names`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    /// Keep the rule only if all of these hold.
    #[serde(default)]
    pub includes: Option<Filter>,
    /// Drop the rule if any of these holds.
    #[serde(default)]
    pub excludes: Option<Filter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capability names (`CAP_SYS_ADMIN`), checked in the bounding set.
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    /// Go-style architecture names (`amd64`, `arm64`, `x86`, ...).
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    /// `major.minor`.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What a profile's conditions are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Go-style name of the node's architecture (`amd64`, `arm64`, ...).
    pub arch: &'static str,
    /// The native seccomp architecture, if berth knows it.
    pub native: Option<Arch>,
    /// `(major, minor)` of the running kernel.
    pub kernel: (u32, u32),
}

impl Host {
    /// This node.
    pub fn current() -> Host {
        let (arch, native) = if cfg!(target_arch = "x86_64") {
            ("amd64", Some(Arch::ScmpArchX86_64))
        } else if cfg!(target_arch = "aarch64") {
            ("arm64", Some(Arch::ScmpArchAarch64))
        } else if cfg!(target_arch = "x86") {
            ("x86", Some(Arch::ScmpArchX86))
        } else if cfg!(target_arch = "arm") {
            ("arm", Some(Arch::ScmpArchArm))
        } else if cfg!(target_arch = "s390x") {
            ("s390x", Some(Arch::ScmpArchS390x))
        } else if cfg!(target_arch = "riscv64") {
            ("riscv64", Some(Arch::ScmpArchRiscv64))
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            ("ppc64le", Some(Arch::ScmpArchPpc64le))
        } else if cfg!(target_arch = "loongarch64") {
            ("loong64", Some(Arch::ScmpArchLoongarch64))
        } else {
            ("unknown", None)
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| parse_kernel(&r))
            .unwrap_or((0, 0));
        Host {
            arch,
            native,
            kernel,
        }
    }
}

/// `6.1.0-13-amd64` → `(6, 1)`.
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor))
}

fn min_kernel(value: &str) -> Result<(u32, u32)> {
    let bad = || Error::invalid(format!("seccomp profile: invalid minKernel {value:?}"));
    let (major, minor) = value.trim().split_once('.').ok_or_else(bad)?;
    let minor = minor.split('.').next().unwrap_or(minor);
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

impl Profile {
    /// The OCI object for a container whose bounding set is `bounding`, on
    /// `host`.
    pub fn resolve(&self, host: &Host, bounding: &Capabilities) -> Result<LinuxSeccomp> {
        self.resolve_for(host, CapSet::from_oci(bounding))
    }

    pub(crate) fn resolve_for(&self, host: &Host, bounding: CapSet) -> Result<LinuxSeccomp> {
        let has_cap = |name: &String| caps::parse(name).is_some_and(|c| bounding.contains(c));
        let architectures = match (&self.architectures, &self.arch_map) {
            (Some(a), Some(m)) if !a.is_empty() && !m.is_empty() => {
                return Err(Error::invalid(
                    "seccomp profile: 'architectures' and 'archMap' are exclusive",
                ))
            }
            (_, Some(map)) if !map.is_empty() => map
                .iter()
                .filter(|m| Some(m.architecture) == host.native)
                .flat_map(|m| {
                    std::iter::once(m.architecture)
                        .chain(m.sub_architectures.iter().flatten().copied())
                })
                .collect(),
            (Some(a), _) => a.clone(),
            _ => Vec::new(),
        };

        let mut syscalls = Vec::new();
        'rules: for rule in self.syscalls.iter().flatten() {
            let names = match (&rule.name, &rule.names) {
                (Some(_), Some(n)) if !n.is_empty() => {
                    return Err(Error::invalid(
                        "seccomp profile: a rule has both 'name' and 'names'",
                    ))
                }
                (Some(n), _) => vec![n.clone()],
                (None, Some(n)) => n.clone(),
                (None, None) => Vec::new(),
            };
            if names.is_empty() {
                return Err(Error::invalid("seccomp profile: a rule names no syscall"));
            }
            if let Some(ex) = &rule.excludes {
                if ex.arches.iter().flatten().any(|a| a == host.arch)
                    || ex.caps.iter().flatten().any(has_cap)
                {
                    continue 'rules;
                }
                if let Some(k) = &ex.min_kernel {
                    if host.kernel >= min_kernel(k)? {
                        continue 'rules;
                    }
                }
            }
            if let Some(inc) = &rule.includes {
                let arches = inc.arches.as_deref().unwrap_or_default();
                if !arches.is_empty() && !arches.iter().any(|a| a == host.arch) {
                    continue 'rules;
                }
                if !inc.caps.iter().flatten().all(has_cap) {
                    continue 'rules;
                }
                if let Some(k) = &inc.min_kernel {
                    if host.kernel < min_kernel(k)? {
                        continue 'rules;
                    }
                }
            }
            let mut call = LinuxSyscall::default();
            call.set_names(names);
            call.set_action(rule.action);
            call.set_errno_ret(rule.errno_ret);
            call.set_args(rule.args.clone().filter(|a| !a.is_empty()));
            syscalls.push(call);
        }

        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures(Some(architectures).filter(|a| !a.is_empty()));
        out.set_flags(self.flags.clone());
        out.set_listener_path(self.listener_path.clone());
        out.set_listener_metadata(self.listener_metadata.clone());
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }
}

/// Syscalls Docker's default profile allows unconditionally.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only when the bounding set holds a capability.
const CAP_GATED: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Syscalls allowed only on some architectures.
const ARCH_GATED: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// `personality(2)` values a container may set: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32 and the 0xffffffff query.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags `clone(2)` may not carry without CAP_SYS_ADMIN:
/// NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

fn rule(names: &[&str], action: LinuxSeccompAction) -> Rule {
    Rule {
        name: None,
        names: Some(names.iter().map(|n| n.to_string()).collect()),
        action,
        errno_ret: None,
        args: None,
        includes: None,
        excludes: None,
    }
}

fn allow(names: &[&str]) -> Rule {
    rule(names, LinuxSeccompAction::ScmpActAllow)
}

fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op)
        .build()
        .expect("every field of a seccomp argument is set")
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

/// Docker's default profile, as data.
pub fn docker_default() -> Profile {
    use LinuxSeccompAction::ScmpActErrno;
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpMaskedEq, ScmpCmpNe};

    let mut rules = vec![allow(ALLOWED)];
    // Since 4.8 seccomp runs after ptrace, so ptrace cannot bypass it.
    rules.push(Rule {
        includes: Some(Filter {
            min_kernel: Some("4.8".into()),
            ..Filter::default()
        }),
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    });
    // socket(2) except AF_VSOCK (40).
    rules.push(Rule {
        args: Some(vec![arg(0, 40, ScmpCmpNe)]),
        ..allow(&["socket"])
    });
    for p in PERSONALITIES {
        rules.push(Rule {
            args: Some(vec![arg(0, p, ScmpCmpEq)]),
            ..allow(&["personality"])
        });
    }
    for (arches, names) in ARCH_GATED {
        rules.push(Rule {
            includes: Some(Filter {
                arches: strings(arches),
                ..Filter::default()
            }),
            ..allow(names)
        });
    }
    for (cap, names) in CAP_GATED {
        rules.push(Rule {
            includes: Some(Filter {
                caps: strings(&[cap]),
                ..Filter::default()
            }),
            ..allow(names)
        });
    }
    // Without CAP_SYS_ADMIN: clone without namespace flags (the flags are
    // the second argument on s390), and clone3 fails with ENOSYS so libcs
    // fall back to clone, whose flags seccomp can see.
    rules.push(Rule {
        args: Some(vec![arg(0, CLONE_NAMESPACE_FLAGS, ScmpCmpMaskedEq)]),
        excludes: Some(Filter {
            caps: strings(&["CAP_SYS_ADMIN"]),
            arches: strings(&["s390", "s390x"]),
            ..Filter::default()
        }),
        ..allow(&["clone"])
    });
    rules.push(Rule {
        args: Some(vec![arg(1, CLONE_NAMESPACE_FLAGS, ScmpCmpMaskedEq)]),
        includes: Some(Filter {
            arches: strings(&["s390", "s390x"]),
            ..Filter::default()
        }),
        excludes: Some(Filter {
            caps: strings(&["CAP_SYS_ADMIN"]),
            ..Filter::default()
        }),
        ..allow(&["clone"])
    });
    rules.push(Rule {
        errno_ret: Some(libc::ENOSYS as u32),
        excludes: Some(Filter {
            caps: strings(&["CAP_SYS_ADMIN"]),
            ..Filter::default()
        }),
        ..rule(&["clone3"], ScmpActErrno)
    });

    let map = |a: Arch, subs: &[Arch]| ArchMap {
        architecture: a,
        sub_architectures: Some(subs.to_vec()),
    };
    Profile {
        default_action: ScmpActErrno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: None,
        arch_map: Some(vec![
            map(
                Arch::ScmpArchX86_64,
                &[Arch::ScmpArchX86, Arch::ScmpArchX32],
            ),
            map(Arch::ScmpArchAarch64, &[Arch::ScmpArchArm]),
            map(
                Arch::ScmpArchMips64,
                &[Arch::ScmpArchMips, Arch::ScmpArchMips64n32],
            ),
            map(
                Arch::ScmpArchMips64n32,
                &[Arch::ScmpArchMips, Arch::ScmpArchMips64],
            ),
            map(
                Arch::ScmpArchMipsel64,
                &[Arch::ScmpArchMipsel, Arch::ScmpArchMipsel64n32],
            ),
            map(
                Arch::ScmpArchMipsel64n32,
                &[Arch::ScmpArchMipsel, Arch::ScmpArchMipsel64],
            ),
            map(Arch::ScmpArchS390x, &[Arch::ScmpArchS390]),
            map(Arch::ScmpArchRiscv64, &[]),
        ]),
        flags: None,
        listener_path: None,
        listener_metadata: None,
        syscalls: Some(rules),
    }
}

/// The default profile for a container whose bounding set is `bounding`,
/// on this node.
pub fn default_profile(bounding: &Capabilities) -> LinuxSeccomp {
    docker_default()
        .resolve(&Host::current(), bounding)
        .expect("the built-in profile is valid")
}

/// The largest Localhost profile read: Docker's default is about 20 KiB.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// A profile file from the host (OCI `linux.seccomp` JSON or Docker's
/// format), resolved for a container whose bounding set is `bounding`.
///
/// The path comes from a CRI request, so it is checked before anything is
/// read (see `read_profile`). Each refusal is an `InvalidArgument` naming
/// the path and the reason.
pub fn load_profile(
    path: &Path,
    root: Option<&Path>,
    bounding: &Capabilities,
) -> Result<LinuxSeccomp> {
    let data = read_profile(path, root)?;
    let profile: Profile = serde_json::from_slice(&data).map_err(|e| {
        Error::invalid(format!(
            "seccomp profile {}: not a valid profile: {e}",
            path.display()
        ))
    })?;
    profile
        .resolve(&Host::current(), bounding)
        .map_err(|e| e.context(format!("seccomp profile {}", path.display())))
}

/// The bytes of the profile file at `path`, which must be absolute and, when
/// `root` is given, lie under it once the symlinks and `..` of its
/// directories are resolved. The last component must be a regular file of
/// at most [`MAX_PROFILE_BYTES`]: a symlink there is not followed, and a
/// FIFO or device is only looked at (`O_PATH`), never opened for reading,
/// so it can neither block nor be triggered. The directories are the node
/// admin's and trusted not to change while this runs.
fn read_profile(path: &Path, root: Option<&Path>) -> Result<Vec<u8>> {
    let refuse = |why: String| Error::invalid(format!("seccomp profile {}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(refuse("must be an absolute path".into()));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refuse("does not name a file".into()));
    };
    let cannot_read = |e: std::io::Error| refuse(format!("cannot read: {e}"));
    // The file is opened in the directory that was checked.
    let dir = std::fs::canonicalize(parent).map_err(cannot_read)?;
    if let Some(root) = root {
        if !root.is_absolute() {
            return Err(refuse(format!(
                "the seccomp profile root {} must be an absolute path",
                root.display()
            )));
        }
        let real_root = std::fs::canonicalize(root).map_err(|e| {
            refuse(format!(
                "the seccomp profile root {} cannot be resolved: {e}",
                root.display()
            ))
        })?;
        if !dir.starts_with(&real_root) {
            return Err(refuse(format!(
                "is outside the seccomp profile root {}",
                root.display()
            )));
        }
    }
    let file = dir.join(name);
    let open = |flags: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&file)
            .map_err(cannot_read)
    };
    let probe = open(libc::O_PATH)?.metadata().map_err(cannot_read)?;
    let kind = probe.file_type();
    if kind.is_symlink() {
        return Err(refuse("is a symbolic link, which is not followed".into()));
    }
    if !kind.is_file() {
        return Err(refuse(format!(
            "is not a regular file (it is {})",
            describe(kind)
        )));
    }
    let too_large = || refuse(format!("is larger than {MAX_PROFILE_BYTES} bytes"));
    if probe.len() > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    // Should the entry have been swapped since, O_NOFOLLOW and O_NONBLOCK
    // keep a link from being followed and a FIFO from blocking, and the
    // inode must be the one checked.
    let f = open(libc::O_RDONLY | libc::O_NONBLOCK)?;
    let meta = f.metadata().map_err(cannot_read)?;
    if (meta.dev(), meta.ino()) != (probe.dev(), probe.ino()) {
        return Err(refuse("was replaced while it was opened".into()));
    }
    // The file may grow after the size check: read no more than the cap + 1.
    let mut data = Vec::new();
    f.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(cannot_read)?;
    if data.len() as u64 > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    Ok(data)
}

/// What a file that is not a regular file is, for an error message.
fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "of an unknown type"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::DEFAULT_CAPS;
    use berth_errdefs::ErrorKind;
    use oci_spec::runtime::Capability;

    fn amd64(kernel: (u32, u32)) -> Host {
        Host {
            arch: "amd64",
            native: Some(Arch::ScmpArchX86_64),
            kernel,
        }
    }

    fn with(extra: &[Capability]) -> CapSet {
        let mut s = CapSet::of(&DEFAULT_CAPS);
        extra.iter().for_each(|c| s.insert(*c));
        s
    }

    /// The rules that mention `name`.
    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn allowed_unconditionally(p: &LinuxSeccomp, name: &str) -> bool {
        rules_for(p, name)
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
    }

    #[test]
    fn default_profile_shape() {
        let p = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[]))
            .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "futex",
            "arch_prctl",
        ] {
            assert!(allowed_unconditionally(&p, name), "{name}");
        }
        for name in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "kcmp",
            "acct",
        ] {
            assert!(
                rules_for(&p, name).is_empty(),
                "{name} must fall to the default"
            );
        }
        // Other architectures' calls stay out.
        assert!(rules_for(&p, "cacheflush").is_empty());
        assert!(rules_for(&p, "s390_runtime_instr").is_empty());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
    }

    #[test]
    fn arm64_gets_its_arches_and_calls() {
        let host = Host {
            arch: "arm64",
            native: Some(Arch::ScmpArchAarch64),
            kernel: (6, 1),
        };
        let p = docker_default().resolve_for(&host, with(&[])).unwrap();
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(allowed_unconditionally(&p, "cacheflush"));
        assert!(rules_for(&p, "arch_prctl").is_empty());
    }

    #[test]
    fn personality_and_socket_are_argument_checked() {
        let p = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[]))
            .unwrap();
        let values: Vec<u64> = rules_for(&p, "personality")
            .iter()
            .map(|s| {
                let args = s.args().as_ref().unwrap();
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        assert_eq!(values, vec![0, 8, 131072, 131080, 4294967295]);
        let socket = rules_for(&p, "socket");
        assert_eq!(socket.len(), 1);
        let a = socket[0].args().as_ref().unwrap()[0];
        assert_eq!(
            (a.index(), a.value(), a.op()),
            (0, 40, LinuxSeccompOperator::ScmpCmpNe)
        );
    }

    #[test]
    fn clone_is_restricted_without_sys_admin() {
        let p = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[]))
            .unwrap();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let a = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(a.index(), 0);
        assert_eq!(a.value(), 2114060288);
        assert_eq!(a.value_two().unwrap_or(0), 0);
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));

        let admin = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[Capability::SysAdmin]))
            .unwrap();
        assert!(allowed_unconditionally(&admin, "clone"));
        assert!(allowed_unconditionally(&admin, "clone3"));
        assert!(allowed_unconditionally(&admin, "mount"));
        assert!(rules_for(&admin, "clone")
            .iter()
            .all(|s| s.args().is_none()));
        assert!(rules_for(&admin, "clone3")
            .iter()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));

        let s390 = Host {
            arch: "s390x",
            native: Some(Arch::ScmpArchS390x),
            kernel: (6, 1),
        };
        let p = docker_default().resolve_for(&s390, with(&[])).unwrap();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
    }

    #[test]
    fn ptrace_family_is_gated_on_sys_ptrace() {
        // Before 4.8 seccomp could be bypassed with ptrace: only with the cap.
        let old = docker_default()
            .resolve_for(&amd64((4, 4)), with(&[]))
            .unwrap();
        for name in ["ptrace", "process_vm_readv", "kcmp", "pidfd_getfd"] {
            assert!(rules_for(&old, name).is_empty(), "{name}");
        }
        let old_cap = docker_default()
            .resolve_for(&amd64((4, 4)), with(&[Capability::SysPtrace]))
            .unwrap();
        for name in ["ptrace", "process_vm_readv", "kcmp", "pidfd_getfd"] {
            assert!(allowed_unconditionally(&old_cap, name), "{name}");
        }
        // From 4.8 ptrace itself is allowed, as in Docker; kcmp and
        // pidfd_getfd still need the capability.
        let new = docker_default()
            .resolve_for(&amd64((4, 8)), with(&[]))
            .unwrap();
        assert!(allowed_unconditionally(&new, "ptrace"));
        assert!(rules_for(&new, "kcmp").is_empty());
        let new_cap = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[Capability::SysPtrace]))
            .unwrap();
        assert!(allowed_unconditionally(&new_cap, "kcmp"));
    }

    #[test]
    fn other_capabilities_open_their_calls() {
        let cases = [
            (Capability::SysModule, "init_module"),
            (Capability::SysBoot, "reboot"),
            (Capability::SysTime, "settimeofday"),
            (Capability::SysNice, "mbind"),
            (Capability::Bpf, "bpf"),
            (Capability::Perfmon, "perf_event_open"),
            (Capability::DacReadSearch, "open_by_handle_at"),
            (Capability::Syslog, "syslog"),
        ];
        for (cap, name) in cases {
            let without = docker_default()
                .resolve_for(&amd64((6, 1)), with(&[]))
                .unwrap();
            assert!(rules_for(&without, name).is_empty(), "{name}");
            let p = docker_default()
                .resolve_for(&amd64((6, 1)), with(&[cap]))
                .unwrap();
            assert!(allowed_unconditionally(&p, name), "{name}");
        }
        // chroot is in the default set.
        let p = docker_default()
            .resolve_for(&amd64((6, 1)), with(&[]))
            .unwrap();
        assert!(allowed_unconditionally(&p, "chroot"));
        let none = docker_default()
            .resolve_for(&amd64((6, 1)), CapSet::default())
            .unwrap();
        assert!(rules_for(&none, "chroot").is_empty());
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
        assert_eq!(min_kernel("4.8").unwrap(), (4, 8));
        assert_eq!(min_kernel("5.10.3").unwrap(), (5, 10));
        assert!(min_kernel("new").is_err());
        assert!(Host::current().kernel >= (3, 0));
    }

    #[test]
    fn localhost_profiles_load_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let bounding = CapSet::of(&DEFAULT_CAPS).to_oci();

        let oci = dir.path().join("oci.json");
        std::fs::write(
            &oci,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
               "syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        let p = load_profile(&oci, None, &bounding).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.syscalls().as_ref().unwrap().len(), 1);
        assert_eq!(p.architectures().as_ref().unwrap(), &[Arch::ScmpArchX86_64]);

        let docker = dir.path().join("docker.json");
        std::fs::write(
            &docker,
            r#"{"defaultAction":"SCMP_ACT_ERRNO",
               "syscalls":[
                 {"name":"read","action":"SCMP_ACT_ALLOW"},
                 {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
                 {"names":["write"],"action":"SCMP_ACT_ALLOW","comment":"x","excludes":{"caps":null}}
               ]}"#,
        )
        .unwrap();
        let p = load_profile(&docker, None, &bounding).unwrap();
        let names: Vec<&str> = p
            .syscalls()
            .iter()
            .flatten()
            .map(|s| s.names()[0].as_str())
            .collect();
        assert_eq!(names, vec!["read", "write"]);
    }

    /// A profile that loads whenever its file may be read.
    const VALID: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;

    fn bounding() -> Capabilities {
        CapSet::of(&DEFAULT_CAPS).to_oci()
    }

    /// `path` is refused as an InvalidArgument naming it and `reason`.
    fn refused(path: &Path, root: Option<&Path>, reason: &str) {
        let e = load_profile(path, root, &bounding())
            .map(|_| ())
            .expect_err(&format!("{} must be refused ({reason})", path.display()));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message.contains(&path.display().to_string()) && e.message.contains(reason),
            "{e:?} should name {} and say {reason:?}",
            path.display()
        );
    }

    #[test]
    fn localhost_profile_paths_must_be_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, VALID).unwrap();
        // The same file, relative to this process's working directory: it
        // would load if relative paths were resolved at all.
        let up = "../".repeat(std::env::current_dir().unwrap().components().count());
        let relative = PathBuf::from(format!(
            "{up}{}",
            file.display().to_string().trim_start_matches('/')
        ));
        assert!(relative.is_file(), "{}", relative.display());
        refused(&relative, None, "must be an absolute path");
        refused(Path::new("p.json"), None, "must be an absolute path");
        refused(&relative, Some(dir.path()), "must be an absolute path");
    }

    #[test]
    fn localhost_profile_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(load_profile(&path, None, &bounding()).map(|_| ()));
        });
        let result = match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(result) => result,
            Err(_) => {
                // Release the blocked reader before failing: a writer that
                // opens and closes gives it end-of-file.
                let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
                panic!("loading the FIFO {} blocked", fifo.display());
            }
        };
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.contains("fifo.json"), "{e}");
        assert!(e.message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn localhost_profile_symlinks_directories_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, VALID).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        refused(&link, None, "symbolic link");
        refused(dir.path(), None, "not a regular file");
        refused(Path::new("/dev/null"), None, "not a regular file");
        refused(&dir.path().join(".."), None, "does not name a file");
        // The target itself loads.
        load_profile(&file, None, &bounding()).unwrap();
    }

    #[test]
    fn localhost_profiles_larger_than_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Valid JSON padded with white space, exactly at the cap: it loads.
        let mut body = VALID.as_bytes().to_vec();
        body.resize(MAX_PROFILE_BYTES as usize, b' ');
        let at_cap = dir.path().join("at-cap.json");
        std::fs::write(&at_cap, &body).unwrap();
        load_profile(&at_cap, None, &bounding()).unwrap();
        // One byte more is refused before it is parsed.
        body.push(b' ');
        let over = dir.path().join("over.json");
        std::fs::write(&over, &body).unwrap();
        refused(&over, None, "larger than 1048576 bytes");
    }

    #[test]
    fn localhost_profiles_stay_under_the_configured_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("profiles");
        std::fs::create_dir(&root).unwrap();
        let inside = root.join("p.json");
        std::fs::write(&inside, VALID).unwrap();
        let outside = dir.path().join("outside.json");
        std::fs::write(&outside, VALID).unwrap();
        // A directory in the root that leads out of it.
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();

        let r = Some(root.as_path());
        refused(&outside, r, "outside the seccomp profile root");
        refused(
            &root.join("../outside.json"),
            r,
            "outside the seccomp profile root",
        );
        refused(
            &root.join("escape/outside.json"),
            r,
            "outside the seccomp profile root",
        );
        refused(&root.join("escape/profiles/missing.json"), r, "cannot read");
        refused(
            &inside,
            Some(Path::new("profiles")),
            "must be an absolute path",
        );

        let p = load_profile(&inside, r, &bounding()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        // The root may itself be reached through a link.
        let root_link = dir.path().join("root-link");
        std::os::unix::fs::symlink(&root, &root_link).unwrap();
        load_profile(&inside, Some(&root_link), &bounding()).unwrap();
        load_profile(&root_link.join("p.json"), r, &bounding()).unwrap();
        // Without a root, any absolute path is allowed.
        load_profile(&outside, None, &bounding()).unwrap();
    }

    #[test]
    fn bad_localhost_profiles_are_invalid_arguments_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bounding = CapSet::of(&DEFAULT_CAPS).to_oci();
        let missing = dir.path().join("missing.json");
        let e = load_profile(&missing, None, &bounding).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("missing.json"), "{e}");

        let cases = [
            ("garbage.json", "{not json"),
            ("noaction.json", r#"{"syscalls":[]}"#),
            ("badaction.json", r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#),
            (
                "both.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
            ),
            (
                "arches.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
            ),
            (
                "kernel.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"soon"}}]}"#,
            ),
        ];
        for (name, body) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let e = load_profile(&path, None, &bounding).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{name}: {e}");
            assert!(e.message.contains(name), "{name}: {e}");
        }
    }
}
