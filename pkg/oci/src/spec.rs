//! Builds the OCI runtime spec (`config.json`) of a container from what the
//! core asks for (`ContainerSpec`) and the image's config (`ImageDefaults`),
//! merged the way Kubernetes defines it.
//!
//! The types here are the contract with `berth-core`; they carry no CRI or
//! Docker wire types.
//!
//! [`build`] makes the spec, [`write_bundle_config`] writes it,
//! [`exec_process`] derives the process of an exec and [`stop_signal`]
//! reads the image's stop signal. The parts live beside this file:
//! `caps.rs` (capability sets), `passwd.rs` (users, read safely from the
//! rootfs), `mounts.rs`, `devices.rs`, `resources.rs` and `seccomp.rs`
//! (Docker's default profile as data).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, Result};
use oci_spec::runtime::{
    Linux, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceType, Process, Root, Spec, User,
};

use crate::caps::{self, CapSet};
use crate::{devices, mounts, passwd, resources, seccomp};

pub use crate::mounts::check_recursive_readonly;

/// What the image's config contributes (OCI image config `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid` (names resolved in the rootfs).
    pub user: String,
    pub stop_signal: String,
}

/// How one namespace of the container is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The host's own namespace (no entry in the spec).
    Host,
    /// A new namespace for this container alone.
    Private,
    /// Join the namespace pinned at this path (the pod's).
    Join(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub network: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    pub pid: Namespace,
    /// The pod's user namespace; `None`: the host's.
    pub user: Option<UserNamespace>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            network: Namespace::Private,
            ipc: Namespace::Private,
            uts: Namespace::Private,
            pid: Namespace::Private,
            user: None,
        }
    }
}

/// A range of ids: `size` ids from `container_id` inside are `host_id`...
/// on the host (OCI `LinuxIDMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// A user namespace made (and its id maps written) before the container:
/// joined by path, and its maps repeated in `linux.uidMappings` and
/// `gidMappings`, which runc 1.1 needs even when it joins (to find the
/// container's root on the host) and crun accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    pub path: PathBuf,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `rprivate` (CRI PROPAGATION_PRIVATE).
    #[default]
    Private,
    /// `rslave` (CRI PROPAGATION_HOST_TO_CONTAINER).
    HostToContainer,
    /// `rshared` (CRI PROPAGATION_BIDIRECTIONAL).
    Bidirectional,
}

/// A bind mount from the host (CRI `Mount`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// CRI `recursive_read_only`: submounts read-only too. Needs
    /// `readonly` and private propagation. The runtimes berth drives
    /// (crun 1.8, runc 1.1) know no `rro` option, so the spec only binds
    /// (`rbind`, which keeps each submount's own read-only flag): the
    /// caller must give a `host_path` that is already a recursively
    /// read-only mount (berth-core stages one).
    pub recursive_readonly: bool,
    /// A tmpfs with these mount options (`size=64m`, `mode=1770`, ...)
    /// instead of a bind: `host_path` is not used.
    pub tmpfs: Option<Vec<String>>,
}

/// A device node from the host (CRI `Device`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub host_path: PathBuf,
    pub container_path: String,
    /// cgroup permissions: some of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// The built-in default profile (Docker's allow-list).
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile file on the host (OCI `linux.seccomp` JSON or Docker's
    /// format): an absolute path to a regular file of at most 1 MiB, under
    /// `ContainerSpec::seccomp_profile_root` when that is set.
    Localhost(PathBuf),
}

/// Which groups the first process gets besides its primary one (CRI
/// `SupplementalGroupsPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SupplementalGroupsPolicy {
    /// The requested groups plus the user's groups in the image's
    /// `/etc/group` (Kubernetes' default).
    #[default]
    Merge,
    /// The requested groups only: the image's `/etc/group` adds nothing.
    Strict,
}

/// Who the process runs as. Fields left `None` fall back to the image's
/// `user`, then to root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    pub run_as_user: Option<u32>,
    /// Resolved in the rootfs's `/etc/passwd`.
    pub run_as_username: Option<String>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
}

/// Limits in OCI units (CRI `LinuxContainerResources`). `None`/0 = unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit: Option<i64>,
    pub memory_swap_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Page size (`2MB`, `1GB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 files (`memory.high` → value).
    pub unified: BTreeMap<String, String>,
    pub oom_score_adj: Option<i32>,
}

/// Everything the core decides about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The mounted rootfs (overlayfs, made by the core).
    pub rootfs: PathBuf,
    pub image: ImageDefaults,
    /// CRI `command` (replaces the image entrypoint when set).
    pub command: Vec<String>,
    /// CRI `args` (replaces the image cmd when set).
    pub args: Vec<String>,
    /// `KEY=value`, applied over the image's env.
    pub env: Vec<String>,
    /// Replaces the image's working dir when non-empty.
    pub working_dir: String,
    pub tty: bool,
    pub stdin: bool,
    pub user: UserRequest,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    /// Capability names with or without `CAP_`, any case; `ALL` allowed.
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `None`: the default masked/read-only paths; `Some(vec![])`: none.
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub seccomp: Seccomp,
    /// Where `Seccomp::Localhost` profiles must lie (berthd's configured
    /// profile root); `None` allows any absolute path.
    pub seccomp_profile_root: Option<PathBuf>,
    pub apparmor_profile: Option<String>,
    pub resources: Resources,
    pub namespaces: Namespaces,
    /// Absolute cgroup path (`/kubepods/pod-x/ctr`) or, with the systemd
    /// driver, `slice:prefix:name`.
    pub cgroups_path: String,
    pub sysctls: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Set only when the container has its own UTS namespace.
    pub hostname: Option<String>,
    /// Give the container a private cgroup namespace. containerd does so
    /// on cgroup v2 hosts for containers that are not privileged; see
    /// [`cgroupns_default`].
    pub cgroupns: bool,
}

/// `PATH` when neither the image nor the container sets one (containerd's
/// `WithDefaultPathEnv`).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether a container gets a private cgroup namespace by default:
/// containerd gives one on cgroup v2 hosts, except to privileged containers.
pub fn cgroupns_default(mode: berth_cgroups::Mode, privileged: bool) -> bool {
    mode == berth_cgroups::Mode::Unified && !privileged
}

/// Builds the runtime spec (`config.json`) of a container.
///
/// Follows containerd's CRI plugin (the references are named where each
/// part is made): command and env merged with the image's, the user
/// resolved in the rootfs, Docker's default capabilities and seccomp
/// profile, containerd's default mounts, masked paths and device rules.
/// `hostname` always gives `HOSTNAME` in the environment, and is the UTS
/// hostname only when the container has a private UTS namespace.
///
/// Bad input is an `InvalidArgument` naming the field and the value. Host
/// state is read (the rootfs's `/etc/passwd` and `/etc/group`, device
/// nodes, mount propagation, this process's capabilities) and missing
/// mount sources are created, as containerd does.
pub fn build(spec: &ContainerSpec) -> Result<Spec> {
    if !spec.rootfs.is_absolute() || !spec.rootfs.is_dir() {
        return Err(Error::invalid(format!(
            "rootfs {} must be an existing directory given by an absolute path",
            spec.rootfs.display()
        )));
    }
    let caps = caps::compute(
        spec.privileged,
        &spec.capabilities_add,
        &spec.capabilities_drop,
        caps::current(),
    )?;
    let process = process(spec, caps)?;
    let mut linux = linux(spec, caps)?;
    // Last, as it creates missing host directories: a request refused for
    // another reason leaves nothing behind.
    let (cri, rootfs_propagation) = mounts::cri_mounts(&spec.mounts)?;
    let mounts = mounts::merge(mounts::default_mounts(spec.privileged), cri);
    linux.set_rootfs_propagation(rootfs_propagation);

    let mut root = Root::default();
    root.set_path(spec.rootfs.clone());
    root.set_readonly(Some(spec.readonly_rootfs));

    let hostname = match spec.namespaces.uts {
        Namespace::Private => spec.hostname.clone().filter(|h| !h.is_empty()),
        _ => None,
    };

    let mut out = Spec::default();
    out.set_version(oci_spec::runtime::VERSION.to_string());
    out.set_root(Some(root));
    out.set_mounts(Some(mounts));
    out.set_process(Some(process));
    out.set_hostname(hostname);
    out.set_domainname(None);
    out.set_hooks(None);
    out.set_annotations(Some(
        spec.annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ));
    out.set_linux(Some(linux));
    Ok(out)
}

/// `process.args`, merged as kubelet and containerd define it: a CRI
/// command replaces the image's entrypoint and drops its cmd; CRI args
/// replace the image's cmd.
fn process_args(spec: &ContainerSpec) -> Result<Vec<String>> {
    let (entrypoint, cmd) = if !spec.command.is_empty() {
        (spec.command.clone(), spec.args.clone())
    } else {
        let cmd = if spec.args.is_empty() {
            spec.image.cmd.clone()
        } else {
            spec.args.clone()
        };
        // `ENTRYPOINT [""]` in a Dockerfile means "no entrypoint".
        let entrypoint = if spec.image.entrypoint == [""] {
            Vec::new()
        } else {
            spec.image.entrypoint.clone()
        };
        (entrypoint, cmd)
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    match args.first() {
        None => Err(Error::invalid(
            "no command specified: neither the container (command, args) nor the image (entrypoint, cmd) gives one",
        )),
        Some(a) if a.is_empty() => Err(Error::invalid(format!(
            "command {args:?}: the program name is empty"
        ))),
        Some(_) => Ok(args),
    }
}

/// Sets `KEY=value` entries over `env` by key, as containerd's
/// `replaceOrAppendEnvValues`; an entry without `=` unsets its key.
fn override_env(env: &mut Vec<String>, overrides: &[String]) {
    for entry in overrides {
        match entry.split_once('=') {
            Some((key, _)) => {
                let prefix = format!("{key}=");
                match env.iter_mut().find(|e| e.starts_with(&prefix)) {
                    Some(e) => e.clone_from(entry),
                    None => env.push(entry.clone()),
                }
            }
            None => {
                let prefix = format!("{entry}=");
                env.retain(|e| !e.starts_with(&prefix));
            }
        }
    }
}

/// The environment: the default `PATH`, `TERM=xterm` with a tty and
/// `HOSTNAME`, then the image's env, then the container's, each overriding
/// by key (containerd's order).
fn environment(spec: &ContainerSpec) -> Result<Vec<String>> {
    for e in &spec.env {
        if e.starts_with('=') || e.is_empty() || e.contains('\0') {
            return Err(Error::invalid(format!(
                "env entry {e:?} is not a valid KEY=value entry"
            )));
        }
    }
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if spec.tty {
        env.push("TERM=xterm".to_string());
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        env.push(format!("HOSTNAME={h}"));
    }
    // runc refuses entries without `=`; an image has no reason to carry one.
    let image: Vec<String> = spec
        .image
        .env
        .iter()
        .filter(|e| e.contains('=') && !e.starts_with('='))
        .cloned()
        .collect();
    override_env(&mut env, &image);
    override_env(&mut env, &spec.env);
    Ok(env)
}

/// The CRI working dir (absolute), else the image's, else `/`.
fn working_dir(spec: &ContainerSpec) -> Result<String> {
    if !spec.working_dir.is_empty() {
        if !spec.working_dir.starts_with('/') {
            return Err(Error::invalid(format!(
                "working_dir {:?} must be an absolute path",
                spec.working_dir
            )));
        }
        return Ok(spec.working_dir.clone());
    }
    let image = spec.image.working_dir.trim();
    Ok(if image.is_empty() {
        "/".to_string()
    } else {
        mounts::clean_path(&format!("/{image}"))
    })
}

fn oci_capabilities(caps: CapSet) -> LinuxCapabilities {
    let set = caps.to_oci();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    // containerd ≥ 1.7 (and Docker) leave inheritable empty
    // (CVE-2022-24769), and the CRI plugin clears ambient.
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

fn process(spec: &ContainerSpec, caps: CapSet) -> Result<Process> {
    let args = process_args(spec)?;
    let env = environment(spec)?;
    let cwd = working_dir(spec)?;
    let resolved = passwd::resolve(&spec.rootfs, &spec.user, &spec.image.user)?;
    if let Some(adj) = spec.resources.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(Error::invalid(format!(
                "oom_score_adj {adj} must be between -1000 and 1000"
            )));
        }
    }

    let mut user = User::default();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_additional_gids(Some(resolved.additional_gids));

    let mut p = Process::default();
    p.set_terminal(Some(spec.tty));
    p.set_console_size(None);
    p.set_user(user);
    p.set_args(Some(args));
    p.set_command_line(None);
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(cwd));
    p.set_capabilities(Some(oci_capabilities(caps)));
    // containerd's CRI plugin sets no rlimits: the runtime's are inherited.
    p.set_rlimits(None);
    p.set_no_new_privileges(Some(spec.no_new_privs));
    p.set_apparmor_profile(spec.apparmor_profile.clone().filter(|a| !a.is_empty()));
    p.set_oom_score_adj(spec.resources.oom_score_adj);
    p.set_selinux_label(None);
    Ok(p)
}

fn namespaces(spec: &ContainerSpec) -> Vec<LinuxNamespace> {
    let ns = &spec.namespaces;
    let mut out = Vec::new();
    // First, as the runtimes join it first: the others are its own.
    if let Some(user) = &ns.user {
        let mut n = LinuxNamespace::default();
        n.set_typ(LinuxNamespaceType::User);
        n.set_path(Some(user.path.clone()));
        out.push(n);
    }
    let mut add = |typ: LinuxNamespaceType, how: &Namespace| {
        let path = match how {
            Namespace::Host => return,
            Namespace::Private => None,
            Namespace::Join(p) => Some(p.clone()),
        };
        let mut n = LinuxNamespace::default();
        n.set_typ(typ);
        n.set_path(path);
        out.push(n);
    };
    add(LinuxNamespaceType::Pid, &ns.pid);
    add(LinuxNamespaceType::Network, &ns.network);
    add(LinuxNamespaceType::Ipc, &ns.ipc);
    add(LinuxNamespaceType::Uts, &ns.uts);
    add(LinuxNamespaceType::Mount, &Namespace::Private);
    if spec.cgroupns {
        add(LinuxNamespaceType::Cgroup, &Namespace::Private);
    }
    out
}

/// `linux`, without the rootfs propagation (which the mounts decide).
fn linux(spec: &ContainerSpec, caps: CapSet) -> Result<Linux> {
    let (nodes, device_rules) = devices::cri_devices(&spec.devices)?;
    let mut rules = devices::default_rules(spec.privileged);
    rules.extend(device_rules);
    let resources = resources::resources(
        &spec.resources,
        rules,
        resources::swap_controller_available(),
    )?;

    let bounding = caps.to_oci();
    let seccomp = if spec.privileged {
        None // containerd: privileged containers are never filtered
    } else {
        match &spec.seccomp {
            Seccomp::RuntimeDefault => Some(seccomp::default_profile(&bounding)),
            Seccomp::Unconfined => None,
            Seccomp::Localhost(path) => Some(seccomp::load_profile(
                path,
                spec.seccomp_profile_root.as_deref(),
                &bounding,
            )?),
        }
    };

    let (masked, readonly) = if spec.privileged {
        (Vec::new(), Vec::new())
    } else {
        let or_default = |paths: &Option<Vec<String>>, default: &[&str]| {
            paths
                .clone()
                .unwrap_or_else(|| default.iter().map(|p| p.to_string()).collect())
        };
        (
            or_default(&spec.masked_paths, &mounts::DEFAULT_MASKED_PATHS),
            or_default(&spec.readonly_paths, &mounts::DEFAULT_READONLY_PATHS),
        )
    };
    for p in masked.iter().chain(&readonly) {
        if !p.starts_with('/') {
            return Err(Error::invalid(format!(
                "masked or read-only path {p:?} must be absolute"
            )));
        }
    }

    for key in spec.sysctls.keys() {
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '=') {
            return Err(Error::invalid(format!("sysctl name {key:?} is not valid")));
        }
    }

    let cgroups_path = spec.cgroups_path.trim();
    if !cgroups_path.is_empty()
        && !cgroups_path.starts_with('/')
        && cgroups_path.matches(':').count() != 2
    {
        return Err(Error::invalid(format!(
            "cgroups_path {cgroups_path:?} must be absolute (/parent/name) or slice:prefix:name"
        )));
    }

    let mut l = Linux::default();
    let id_mappings = |maps: &[IdMapping]| -> Result<Vec<LinuxIdMapping>> {
        maps.iter()
            .map(|m| {
                LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.size)
                    .build()
                    .map_err(|e| Error::internal(format!("id mapping {m:?}: {e}")))
            })
            .collect()
    };
    let user = spec.namespaces.user.as_ref();
    l.set_uid_mappings(user.map(|u| id_mappings(&u.uid_mappings)).transpose()?);
    l.set_gid_mappings(user.map(|u| id_mappings(&u.gid_mappings)).transpose()?);
    l.set_sysctl((!spec.sysctls.is_empty()).then(|| {
        spec.sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }));
    l.set_resources(Some(resources));
    l.set_cgroups_path((!cgroups_path.is_empty()).then(|| PathBuf::from(cgroups_path)));
    l.set_namespaces(Some(namespaces(spec)));
    l.set_devices(Some(nodes));
    l.set_seccomp(seccomp);
    l.set_rootfs_propagation(None);
    l.set_masked_paths(Some(masked));
    l.set_readonly_paths(Some(readonly));
    l.set_mount_label(None);
    Ok(l)
}

/// Writes `config.json` into `bundle` atomically: a temporary file, synced,
/// renamed over the old one, then the directory synced.
pub fn write_bundle_config(spec: &Spec, bundle: &Path) -> Result<()> {
    let target = bundle.join("config.json");
    let tmp = bundle.join(format!(".config.json.{}.tmp", std::process::id()));
    let data = serde_json::to_vec_pretty(spec)
        .map_err(|e| Error::internal(format!("serialize the runtime spec: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(bundle)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::from(e).context(format!("write {}", target.display()))
    })
}

/// What an exec asks for beyond its command and terminal (Docker's
/// `exec --env/--workdir/--user/--privileged`); each left empty keeps the
/// container's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// `KEY=value` set over the container's environment, replacing the
    /// same key; a bare `KEY` unsets it (Docker's `ReplaceOrAppendEnvValues`).
    pub env: Vec<String>,
    /// An absolute working directory.
    pub cwd: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the container's
    /// `/etc/passwd` and `/etc/group` as a container's user is.
    pub user: Option<String>,
    /// Every capability the host can give, as a privileged container has
    /// (dockerd's privileged exec); the container's seccomp filter, masked
    /// paths and devices stay.
    pub privileged: bool,
}

/// The process for `runtime exec --process FILE`: the container's process
/// (env, cwd, user, capabilities, no_new_privileges, apparmor, ...) with
/// new args and terminal, and what `options` replaces; a terminal sets
/// `TERM=xterm`, as containerd's exec does.
pub fn exec_process(
    base: &Spec,
    args: Vec<String>,
    tty: bool,
    options: &ExecOptions,
) -> Result<Process> {
    let mut p = base.process().clone().unwrap_or_default();
    p.set_args(Some(args));
    p.set_command_line(None);
    p.set_terminal(Some(tty));
    p.set_console_size(None);
    let mut overrides = Vec::new();
    if tty {
        overrides.push("TERM=xterm".to_string());
    }
    if let Some(bad) = options
        .env
        .iter()
        .find(|e| e.is_empty() || e.starts_with('='))
    {
        return Err(Error::invalid(format!(
            "invalid environment variable {bad:?}: the name is empty"
        )));
    }
    overrides.extend(options.env.iter().cloned());
    if !overrides.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        override_env(&mut env, &overrides);
        p.set_env(Some(env));
    }
    if let Some(cwd) = options.cwd.as_deref().filter(|c| !c.is_empty()) {
        if !cwd.starts_with('/') {
            return Err(Error::invalid(format!(
                "working directory {cwd:?} must be an absolute path"
            )));
        }
        p.set_cwd(PathBuf::from(mounts::clean_path(cwd)));
    }
    if let Some(user) = options.user.as_deref().filter(|u| !u.is_empty()) {
        let rootfs = base
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::internal("the container's spec has no root"))?;
        p.set_user(resolve_user(&rootfs, &UserRequest::default(), user)?);
    }
    if options.privileged {
        p.set_capabilities(Some(oci_capabilities(caps::current())));
    }
    Ok(p)
}

/// Signal names as Docker and containerd accept them (`moby/sys/signal`),
/// without the `SIG` prefix.
const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("POLL", libc::SIGPOLL),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// Real-time signals as glibc numbers them for applications (moby's table).
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Parses `SIGUSR1`, `usr1`, `10`, `SIGRTMIN+3` or `RTMAX-1` into a signal
/// number; anything else is an `InvalidArgument` naming it.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = || Error::invalid(format!("stop signal {s:?} is not a signal"));
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<i32>() {
            Ok(n) if (1..=SIGRTMAX).contains(&n) => Ok(n),
            _ => Err(bad()),
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Ok(*n);
    }
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let n: i32 = rest.strip_prefix(sign)?.parse().ok()?;
        (1..=(SIGRTMAX - SIGRTMIN)).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return offset(rest, '+').map(|n| SIGRTMIN + n).ok_or_else(bad);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return offset(rest, '-').map(|n| SIGRTMAX - n).ok_or_else(bad);
    }
    Err(bad())
}

/// The name of signal `n` as Docker shows it (`SIGTERM`, `SIGRTMIN+3`).
pub fn signal_name(n: i32) -> Option<String> {
    if let Some((name, _)) = SIGNALS.iter().find(|(_, k)| *k == n) {
        return Some(format!("SIG{name}"));
    }
    match n - SIGRTMIN {
        0 => Some("SIGRTMIN".into()),
        k if (1..=SIGRTMAX - SIGRTMIN).contains(&k) => Some(format!("SIGRTMIN+{k}")),
        _ => None,
    }
}

/// The signal that stops a container: the image's `StopSignal`, else (or
/// when it is not a signal) SIGTERM.
pub fn stop_signal(image: &ImageDefaults) -> i32 {
    if image.stop_signal.trim().is_empty() {
        return libc::SIGTERM;
    }
    parse_signal(&image.stop_signal).unwrap_or(libc::SIGTERM)
}

/// Who a container runs as: uid, gid and additional gids resolved in the
/// rootfs's `/etc/passwd` and `/etc/group` (symlinks never leave the
/// rootfs), as [`build`] puts them in `process.user`.
pub fn resolve_user(rootfs: &Path, user: &UserRequest, image_user: &str) -> Result<User> {
    let r = passwd::resolve(rootfs, user, image_user)?;
    let mut u = User::default();
    u.set_uid(r.uid);
    u.set_gid(r.gid);
    u.set_additional_gids(Some(r.additional_gids));
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;
    use oci_spec::runtime::{Capability, LinuxSeccompAction};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// A rootfs with an /etc/passwd and /etc/group.
    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
        dir
    }

    fn base(root: &Path) -> ContainerSpec {
        ContainerSpec {
            rootfs: root.to_path_buf(),
            image: ImageDefaults {
                cmd: s(&["sh"]),
                ..ImageDefaults::default()
            },
            cgroups_path: "/berth/test".into(),
            ..ContainerSpec::default()
        }
    }

    fn invalid(spec: &ContainerSpec, want: &str) {
        let e = build(spec).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.contains(want), "{e:?} should contain {want:?}");
    }

    fn caps_of(spec: &Spec) -> LinuxCapabilities {
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    #[test]
    fn command_merge_follows_kubelet() {
        // (image entrypoint, image cmd, CRI command, CRI args) → args
        type Row<'a> = [&'a [&'a str]; 5];
        let table: &[Row] = &[
            [&["/ep"], &["c1"], &[], &[], &["/ep", "c1"]],
            [&["/ep"], &["c1"], &[], &["a1"], &["/ep", "a1"]],
            [&["/ep"], &["c1"], &["/cmd"], &[], &["/cmd"]],
            [
                &["/ep"],
                &["c1"],
                &["/cmd"],
                &["a1", "a2"],
                &["/cmd", "a1", "a2"],
            ],
            [&[], &["c1", "x"], &[], &[], &["c1", "x"]],
            [&[], &["c1"], &[], &["a1"], &["a1"]],
            [&[""], &["c1"], &[], &[], &["c1"]],
            [&[], &[], &["/cmd"], &[], &["/cmd"]],
        ];
        for [ep, cmd, command, args, want] in table {
            let spec = ContainerSpec {
                image: ImageDefaults {
                    entrypoint: s(ep),
                    cmd: s(cmd),
                    ..ImageDefaults::default()
                },
                command: s(command),
                args: s(args),
                ..ContainerSpec::default()
            };
            assert_eq!(
                process_args(&spec).unwrap(),
                s(want),
                "{ep:?} {cmd:?} {command:?} {args:?}"
            );
        }
        let e = process_args(&ContainerSpec::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.starts_with("no command specified"), "{e}");
        let e = process_args(&ContainerSpec {
            command: s(&[""]),
            ..ContainerSpec::default()
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn env_merges_by_key() {
        let spec = ContainerSpec {
            image: ImageDefaults {
                env: s(&["PATH=/image/bin", "A=image", "B=image", "BROKEN"]),
                ..ImageDefaults::default()
            },
            env: s(&["B=cri", "C=cri", "A"]),
            hostname: Some("pod-1".into()),
            tty: true,
            ..ContainerSpec::default()
        };
        assert_eq!(
            environment(&spec).unwrap(),
            s(&[
                "PATH=/image/bin",
                "TERM=xterm",
                "HOSTNAME=pod-1",
                "B=cri",
                "C=cri"
            ])
        );
        let plain = environment(&ContainerSpec::default()).unwrap();
        assert_eq!(plain, s(&[DEFAULT_PATH_ENV]));
        let overridden = environment(&ContainerSpec {
            env: s(&["HOSTNAME=mine", "TERM=vt100"]),
            hostname: Some("pod".into()),
            tty: true,
            ..ContainerSpec::default()
        })
        .unwrap();
        assert_eq!(
            overridden,
            s(&[DEFAULT_PATH_ENV, "TERM=vt100", "HOSTNAME=mine"])
        );
        let e = environment(&ContainerSpec {
            env: s(&["=x"]),
            ..ContainerSpec::default()
        })
        .unwrap_err();
        assert!(e.message.contains("\"=x\""), "{e}");
    }

    #[test]
    fn working_dir_prefers_cri_then_image() {
        let mut spec = ContainerSpec::default();
        assert_eq!(working_dir(&spec).unwrap(), "/");
        spec.image.working_dir = "app/".into();
        assert_eq!(working_dir(&spec).unwrap(), "/app");
        spec.working_dir = "/work".into();
        assert_eq!(working_dir(&spec).unwrap(), "/work");
        spec.working_dir = "rel".into();
        let e = working_dir(&spec).unwrap_err();
        assert!(e.message.contains("working_dir \"rel\""), "{e}");
    }

    #[test]
    fn a_default_container() {
        let root = rootfs();
        let mut spec = base(root.path());
        spec.hostname = Some("pod".into());
        spec.annotations.insert("io.x".into(), "y".into());
        spec.sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        let out = build(&spec).unwrap();

        assert_eq!(out.version(), oci_spec::runtime::VERSION);
        let r = out.root().as_ref().unwrap();
        assert_eq!(r.path(), root.path());
        assert_eq!(r.readonly(), Some(false));
        assert_eq!(out.hostname().as_deref(), Some("pod"));
        assert_eq!(out.annotations().as_ref().unwrap()["io.x"], "y");

        let p = out.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &s(&["sh"]));
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.user().uid(), 0);
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![0]);
        assert_eq!(p.no_new_privileges(), Some(false));
        assert!(p.rlimits().is_none());
        assert!(p.apparmor_profile().is_none());

        let c = caps_of(&out);
        let default = CapSet::of(&caps::DEFAULT_CAPS).to_oci();
        assert_eq!(c.bounding().as_ref(), Some(&default));
        assert_eq!(c.effective().as_ref(), Some(&default));
        assert_eq!(c.permitted().as_ref(), Some(&default));
        assert!(c.inheritable().is_none() && c.ambient().is_none());

        let l = out.linux().as_ref().unwrap();
        assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/berth/test")));
        assert_eq!(l.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 11);
        assert!(l
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/sys/devices/virtual/powercap".into()));
        assert_eq!(
            l.readonly_paths().as_ref().unwrap(),
            &s(&[
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ])
        );
        let seccomp = l.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(l.rootfs_propagation().is_none());
        let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = l
            .namespaces()
            .iter()
            .flatten()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert_eq!(
            ns,
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Network, None),
                (LinuxNamespaceType::Ipc, None),
                (LinuxNamespaceType::Uts, None),
                (LinuxNamespaceType::Mount, None),
            ]
        );
        let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(!rules[0].allow());
        let mounts = out.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), 7);

        // The JSON is what runtimes read: camelCase, and it reads back.
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["process"]["noNewPrivileges"], false);
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/test");
        let back: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn a_hardened_user_container() {
        let root = rootfs();
        let host = tempfile::tempdir().unwrap();
        let spec = ContainerSpec {
            user: UserRequest {
                run_as_username: Some("app".into()),
                supplemental_groups: vec![3000],
                ..UserRequest::default()
            },
            readonly_rootfs: true,
            no_new_privs: true,
            tty: true,
            capabilities_drop: s(&["NET_RAW"]),
            apparmor_profile: Some("berth-default".into()),
            mounts: vec![Mount {
                host_path: host.path().to_path_buf(),
                container_path: "/data".into(),
                readonly: true,
                propagation: Propagation::Private,
                recursive_readonly: false,
                tmpfs: None,
            }],
            resources: Resources {
                memory_limit: Some(64 << 20),
                oom_score_adj: Some(500),
                ..Resources::default()
            },
            cgroupns: true,
            ..base(root.path())
        };
        let out = build(&spec).unwrap();
        let p = out.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(
            p.user().additional_gids().as_ref().unwrap(),
            &vec![1000, 2000, 3000]
        );
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.terminal(), Some(true));
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=xterm".to_string()));
        assert_eq!(p.apparmor_profile().as_deref(), Some("berth-default"));
        assert_eq!(p.oom_score_adj(), Some(500));
        assert_eq!(out.root().as_ref().unwrap().readonly(), Some(true));
        let c = caps_of(&out);
        assert!(!c.bounding().as_ref().unwrap().contains(&Capability::NetRaw));
        assert!(c.bounding().as_ref().unwrap().contains(&Capability::Chown));
        let l = out.linux().as_ref().unwrap();
        let mem = l.resources().as_ref().unwrap().memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert!(l
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup));
        let data = out
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert_eq!(
            data.options().as_ref().unwrap(),
            &s(&["rbind", "rprivate", "ro"])
        );
    }

    #[test]
    fn namespaces_and_hostname() {
        let root = rootfs();
        let mut spec = base(root.path());
        spec.hostname = Some("pod".into());
        spec.namespaces = Namespaces {
            network: Namespace::Join("/run/berth/netns/pod".into()),
            ipc: Namespace::Host,
            uts: Namespace::Join("/run/berth/uts/pod".into()),
            pid: Namespace::Private,
            user: None,
        };
        let out = build(&spec).unwrap();
        // Joining the pod's UTS namespace: the pod sets the hostname.
        assert_eq!(out.hostname(), &None);
        assert!(out
            .process()
            .as_ref()
            .unwrap()
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=pod".to_string()));
        let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = out
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert_eq!(
            ns,
            vec![
                (LinuxNamespaceType::Pid, None),
                (
                    LinuxNamespaceType::Network,
                    Some("/run/berth/netns/pod".into())
                ),
                (LinuxNamespaceType::Uts, Some("/run/berth/uts/pod".into())),
                (LinuxNamespaceType::Mount, None),
            ]
        );
        spec.namespaces.uts = Namespace::Host;
        assert_eq!(build(&spec).unwrap().hostname(), &None);
        assert!(!cgroupns_default(berth_cgroups::Mode::Hybrid, false));
        assert!(cgroupns_default(berth_cgroups::Mode::Unified, false));
        assert!(!cgroupns_default(berth_cgroups::Mode::Unified, true));
    }

    #[test]
    fn a_pod_user_namespace_is_joined_first_with_its_maps() {
        let root = rootfs();
        let mut spec = base(root.path());
        let map = |c, h, n| IdMapping {
            container_id: c,
            host_id: h,
            size: n,
        };
        spec.namespaces.network = Namespace::Join("/run/berth/pods/p/ns/net".into());
        spec.namespaces.user = Some(UserNamespace {
            path: "/run/berth/pods/p/ns/user".into(),
            uid_mappings: vec![map(0, 100_000, 65_536)],
            gid_mappings: vec![map(0, 200_000, 65_536)],
        });
        let out = build(&spec).unwrap();
        let linux = out.linux().as_ref().unwrap();
        let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert_eq!(
            ns[..2],
            [
                (
                    LinuxNamespaceType::User,
                    Some("/run/berth/pods/p/ns/user".into())
                ),
                (LinuxNamespaceType::Pid, None),
            ]
        );
        let maps = |m: &Option<Vec<LinuxIdMapping>>| -> Vec<(u32, u32, u32)> {
            m.iter()
                .flatten()
                .map(|m| (m.container_id(), m.host_id(), m.size()))
                .collect()
        };
        assert_eq!(maps(linux.uid_mappings()), vec![(0, 100_000, 65_536)]);
        assert_eq!(maps(linux.gid_mappings()), vec![(0, 200_000, 65_536)]);
        // Without one: no user namespace entry and no maps.
        spec.namespaces.user = None;
        let out = build(&spec).unwrap();
        let linux = out.linux().as_ref().unwrap();
        assert!(linux
            .namespaces()
            .iter()
            .flatten()
            .all(|n| n.typ() != LinuxNamespaceType::User));
        assert_eq!(linux.uid_mappings(), &None);
        assert_eq!(linux.gid_mappings(), &None);
    }

    #[test]
    fn privileged_containers() {
        let root = rootfs();
        let spec = ContainerSpec {
            privileged: true,
            masked_paths: Some(s(&["/proc/kcore"])),
            capabilities_drop: s(&["CHOWN"]),
            ..base(root.path())
        };
        let out = build(&spec).unwrap();
        let c = caps_of(&out);
        assert_eq!(
            CapSet::from_oci(c.bounding().as_ref().unwrap()),
            caps::current()
        );
        let l = out.linux().as_ref().unwrap();
        assert!(l.seccomp().is_none());
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 0);
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 0);
        let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        let sys = out
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    }

    #[test]
    fn seccomp_choices() {
        let root = rootfs();
        let mut spec = base(root.path());
        spec.seccomp = Seccomp::Unconfined;
        assert!(build(&spec)
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .is_none());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profile.json");
        std::fs::write(&file, r#"{"defaultAction":"SCMP_ACT_LOG"}"#).unwrap();
        spec.seccomp = Seccomp::Localhost(file);
        let out = build(&spec).unwrap();
        let sc = out
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .as_ref()
            .unwrap()
            .clone();
        assert_eq!(sc.default_action(), LinuxSeccompAction::ScmpActLog);
        spec.seccomp = Seccomp::Localhost(dir.path().join("missing.json"));
        invalid(&spec, "missing.json");
        // A configured profile root confines Localhost profiles.
        spec.seccomp = Seccomp::Localhost(dir.path().join("profile.json"));
        spec.seccomp_profile_root = Some(dir.path().join("profiles"));
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        invalid(&spec, "is outside the seccomp profile root");
        spec.seccomp_profile_root = Some(dir.path().to_path_buf());
        build(&spec).unwrap();
        // The default profile follows the final bounding set.
        spec.seccomp = Seccomp::RuntimeDefault;
        spec.capabilities_add = s(&["SYS_ADMIN"]);
        let out = build(&spec).unwrap();
        let sc = out
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .as_ref()
            .unwrap()
            .clone();
        assert!(sc
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.names().contains(&"mount".to_string())));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let root = rootfs();
        let ok = base(root.path());
        invalid(
            &ContainerSpec {
                rootfs: "relative".into(),
                ..ok.clone()
            },
            "rootfs relative",
        );
        invalid(
            &ContainerSpec {
                capabilities_add: s(&["FLY"]),
                ..ok.clone()
            },
            "\"FLY\"",
        );
        invalid(
            &ContainerSpec {
                user: UserRequest {
                    run_as_username: Some("nobody-here".into()),
                    ..UserRequest::default()
                },
                ..ok.clone()
            },
            "user \"nobody-here\" not found in /etc/passwd of the image",
        );
        let mut r = ok.clone();
        r.resources.memory_limit = Some(-1);
        invalid(&r, "memory_limit -1");
        let mut r = ok.clone();
        r.resources.oom_score_adj = Some(2000);
        invalid(&r, "oom_score_adj 2000");
        invalid(
            &ContainerSpec {
                cgroups_path: "relative/path".into(),
                ..ok.clone()
            },
            "cgroups_path \"relative/path\"",
        );
        invalid(
            &ContainerSpec {
                devices: vec![Device {
                    host_path: "/no/such/dev".into(),
                    container_path: "/dev/x".into(),
                    permissions: "rw".into(),
                }],
                ..ok.clone()
            },
            "/no/such/dev",
        );
        invalid(
            &ContainerSpec {
                masked_paths: Some(s(&["proc/kcore"])),
                ..ok.clone()
            },
            "\"proc/kcore\"",
        );
        // The systemd form of a cgroup path is accepted.
        assert!(build(&ContainerSpec {
            cgroups_path: "kubepods.slice:berth:abc".into(),
            ..ok
        })
        .is_ok());
    }

    #[test]
    fn bundle_config_is_written_atomically() {
        let root = rootfs();
        let out = build(&base(root.path())).unwrap();
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(bundle.path().join("config.json"), "old").unwrap();
        write_bundle_config(&out, bundle.path()).unwrap();
        let back = Spec::load(bundle.path().join("config.json")).unwrap();
        assert_eq!(back, out);
        let names: Vec<_> = std::fs::read_dir(bundle.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["config.json"]);
        let e = write_bundle_config(&out, &bundle.path().join("missing")).unwrap_err();
        assert!(e.message.contains("missing"), "{e}");
    }

    #[test]
    fn exec_keeps_the_containers_identity() {
        let root = rootfs();
        let spec = ContainerSpec {
            user: UserRequest {
                run_as_user: Some(1000),
                ..UserRequest::default()
            },
            no_new_privs: true,
            working_dir: "/work".into(),
            env: s(&["A=1"]),
            ..base(root.path())
        };
        let out = build(&spec).unwrap();
        let p = exec_process(&out, s(&["ls", "-l"]), true, &ExecOptions::default()).unwrap();
        let c = out.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &s(&["ls", "-l"]));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.user(), c.user());
        assert_eq!(p.cwd(), Path::new("/work"));
        assert_eq!(p.capabilities(), c.capabilities());
        assert_eq!(p.no_new_privileges(), Some(true));
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"TERM=xterm".to_string()));
        let p = exec_process(&out, s(&["true"]), false, &ExecOptions::default()).unwrap();
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.env(), c.env());
    }

    #[test]
    fn exec_options_replace_env_cwd_and_user() {
        let root = rootfs();
        let spec = ContainerSpec {
            env: s(&["A=1", "KEEP=yes", "GONE=x"]),
            ..base(root.path())
        };
        let out = build(&spec).unwrap();
        let options = ExecOptions {
            env: s(&["A=2", "NEW=3", "GONE"]),
            cwd: Some("/tmp/../work".into()),
            user: Some("app".into()),
            privileged: false,
        };
        let p = exec_process(&out, s(&["id"]), true, &options).unwrap();
        let env = p.env().as_ref().unwrap();
        for want in ["A=2", "KEEP=yes", "NEW=3", "TERM=xterm"] {
            assert!(env.contains(&want.to_string()), "{want} in {env:?}");
        }
        assert!(!env
            .iter()
            .any(|e| e.starts_with("A=1") || e.starts_with("GONE")));
        assert_eq!(p.cwd(), Path::new("/work"));
        // By name: uid and gid from passwd, memberships from group.
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(
            p.user().additional_gids().as_ref().unwrap(),
            &vec![1000, 2000]
        );
        let numeric = ExecOptions {
            user: Some("1000:50".into()),
            ..ExecOptions::default()
        };
        let p = exec_process(&out, s(&["id"]), false, &numeric).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 50));
        assert_eq!(
            p.capabilities(),
            out.process().as_ref().unwrap().capabilities()
        );
        let privileged = ExecOptions {
            privileged: true,
            ..ExecOptions::default()
        };
        let p = exec_process(&out, s(&["id"]), false, &privileged).unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding(), &Some(caps::current().to_oci()));
        assert_eq!(caps.effective(), &Some(caps::current().to_oci()));

        let refused = |options: ExecOptions, says: &str| {
            let e = exec_process(&out, s(&["id"]), false, &options).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            assert!(e.message.contains(says), "{says} in {e}");
        };
        refused(
            ExecOptions {
                user: Some("nobody-here".into()),
                ..ExecOptions::default()
            },
            "user \"nobody-here\" not found",
        );
        refused(
            ExecOptions {
                cwd: Some("rel".into()),
                ..ExecOptions::default()
            },
            "working directory \"rel\" must be an absolute path",
        );
        refused(
            ExecOptions {
                env: s(&["=x"]),
                ..ExecOptions::default()
            },
            "the name is empty",
        );
    }

    #[test]
    fn stop_signals_parse() {
        let sig = |s: &str| {
            stop_signal(&ImageDefaults {
                stop_signal: s.into(),
                ..ImageDefaults::default()
            })
        };
        assert_eq!(sig(""), libc::SIGTERM);
        assert_eq!(sig("SIGUSR1"), libc::SIGUSR1);
        assert_eq!(sig("USR1"), libc::SIGUSR1);
        assert_eq!(sig("sigquit"), libc::SIGQUIT);
        assert_eq!(sig("10"), 10);
        assert_eq!(sig("9"), libc::SIGKILL);
        assert_eq!(sig("SIGRTMIN+3"), 37);
        assert_eq!(sig("RTMAX-1"), 63);
        assert_eq!(sig("RTMIN"), 34);
        assert_eq!(sig("SIGNOPE"), libc::SIGTERM);
        assert_eq!(sig("0"), libc::SIGTERM);
        assert_eq!(sig("65"), libc::SIGTERM);
        let e = parse_signal("SIGNOPE").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("SIGNOPE"));
        assert!(parse_signal("RTMIN+99").is_err());
    }

    #[test]
    fn signal_names_round_trip() {
        assert_eq!(signal_name(libc::SIGTERM).as_deref(), Some("SIGTERM"));
        assert_eq!(signal_name(libc::SIGCHLD).as_deref(), Some("SIGCHLD"));
        assert_eq!(signal_name(37).as_deref(), Some("SIGRTMIN+3"));
        assert_eq!(signal_name(0), None);
        // 32 and 33 are glibc's own: no application signal has them.
        for n in (1..=31).chain(34..=64) {
            let name = signal_name(n).unwrap();
            assert_eq!(parse_signal(&name).unwrap(), n, "{name}");
        }
    }

    #[test]
    fn resolve_user_matches_build() {
        let root = rootfs();
        let req = UserRequest {
            run_as_username: Some("app".into()),
            ..UserRequest::default()
        };
        let u = resolve_user(root.path(), &req, "").unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 1000));
        assert_eq!(u.additional_gids().as_ref().unwrap(), &vec![1000, 2000]);
    }
}
