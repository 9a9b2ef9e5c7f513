//! Containers: an overlayfs rootfs, an OCI bundle, and a monitor
//! (`berth-shim`), spawned at create, that runs the container through the
//! runtime's `run` at start and outlives berthd.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_errdefs::{Error, ErrorKind, Result};
use berth_oci::spec as oci;
use berth_store::Batch;
use tokio::sync::watch;

use crate::events::Action;
use crate::model::*;
use crate::standalone::CreateExtras;
use crate::{idmap, monitor, new_id, podfiles, rootfs, to_completion, validate, Shared};

pub(crate) const CONTAINERS: &str = "containers";

/// The exit reason of a container the kernel's OOM killer ended.
const OOM_KILLED: &str = "OOMKilled";

/// How long a monitor may take to exit after its container did.
const MONITOR_EXIT: Duration = Duration::from_secs(10);

/// Under the container's state dir: the staging mounts of its recursive
/// read-only mounts, one directory (or file) each, while it is created.
const STAGING: &str = "rro";

pub(crate) struct Entry {
    /// Serialises the operations on one container.
    pub lock: tokio::sync::Mutex<()>,
    record: Mutex<ContainerRecord>,
    /// Becomes true once the container has exited and that is recorded.
    pub exited: watch::Sender<bool>,
    /// Becomes true once the container is removed (Docker's wait).
    pub removed: watch::Sender<bool>,
}

impl Entry {
    pub fn new(record: ContainerRecord) -> Arc<Entry> {
        let exited = record.state.has_exited();
        Arc::new(Entry {
            lock: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
            exited: watch::Sender::new(exited),
            removed: watch::Sender::new(false),
        })
    }

    /// The two fields a census needs, without copying the record.
    pub fn state_and_owner(&self) -> (ContainerState, Owner) {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        (record.state, record.owner)
    }

    pub fn record(&self) -> ContainerRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the record in memory and returns the new value.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ContainerRecord)) -> ContainerRecord {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r);
        r.clone()
    }
}

/// A container's unique name: kubelet's (`name_pod_namespace_uid_attempt`)
/// in a Kubernetes pod, else its own.
pub(crate) fn name_key(config: &ContainerConfig, pod: &PodConfig) -> String {
    match &pod.kubernetes {
        Some(k) => format!(
            "ctr/{}_{}_{}_{}_{}",
            config.name, pod.name, k.namespace, k.uid, config.attempt
        ),
        None => format!("ctr/{}", config.name),
    }
}

crate::service_handle! {
    /// The containers service. A cheap handle.
    Containers
}

impl Containers {
    pub(crate) fn sandboxes(&self) -> crate::Sandboxes {
        crate::Sandboxes::new(self.shared.clone())
    }

    pub(crate) fn networks(&self) -> crate::Networks {
        crate::Networks::new(self.shared.clone())
    }

    /// Creates a container in a ready sandbox: all of it, or nothing. The
    /// work runs to its end even when the caller stops waiting, so the
    /// container is either made and recorded or not made at all.
    pub async fn create(&self, sandbox_id: &str, config: ContainerConfig) -> Result<String> {
        if config.name.is_empty() {
            return Err(Error::invalid("container metadata needs a name"));
        }
        validate::container(&config)?;
        self.ready_sandbox(sandbox_id)?;
        let (core, sandbox_id) = (self.clone(), sandbox_id.to_string());
        to_completion(async move {
            core.create_detached(&sandbox_id, config, CreateExtras::default())
                .await
        })
        .await
    }

    pub(crate) async fn create_detached(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        extras: CreateExtras,
    ) -> Result<String> {
        let (sandbox, _) = self.ready_sandbox(sandbox_id)?;
        let _pod_guard = sandbox.lock.lock().await;
        let (_, pod) = self.ready_sandbox(sandbox_id)?;
        let image = self.images.resolve(&config.image)?.ok_or_else(|| {
            Error::not_found(format!("image {:?} not found: pull it first", config.image))
        })?;
        let id = extras.id.clone().unwrap_or_else(new_id);
        let key = name_key(&config, &pod.config);
        self.reserve_name(&key, &id)?;
        let core = self.clone();
        let container_id = id.clone();
        // Made, recorded and (on failure) undone exactly once, off the
        // async workers.
        let made = tokio::task::spawn_blocking(move || -> Result<ContainerRecord> {
            let handler = pod.config.runtime_handler.clone();
            let mounts = config.mounts.clone();
            let stored = core
                .make_container(&container_id, &pod, config, &image)
                .map(|r| extras.apply(r))
                .and_then(|r| core.persist_container(&r).map(|()| r));
            if stored.is_err() {
                core.remove_container_files(&container_id, &handler);
                core.release_volumes(&container_id, &mounts);
            }
            stored
        })
        .await
        .map_err(|e| Error::internal(format!("container setup task: {e}")))
        .and_then(|r| r);
        let record = match made {
            Ok(r) => r,
            Err(e) => {
                self.release_name(&key, &id);
                return Err(e);
            }
        };
        let shim_pid = record.shim_pid;
        self.objects()
            .containers
            .insert(id.clone(), Entry::new(record.clone()));
        self.watch_monitor(&id, shim_pid);
        self.container_event(&record, Action::Create);
        Ok(id)
    }

    fn make_container(
        &self,
        id: &str,
        pod: &SandboxRecord,
        config: ContainerConfig,
        image: &crate::images::LeafImage,
    ) -> Result<ContainerRecord> {
        let runtime = self.runtime(&pod.config.runtime_handler)?;
        // Host directories the spec builder makes for missing mount
        // sources go again if the container is not made.
        let made_dirs =
            berth_oci::MadeDirs::missing(config.mounts.iter().map(|m| Path::new(&m.host_path)));
        let started = std::time::Instant::now();
        let dir = self.container_dir(id);
        let bundle = dir.join("bundle");
        let layers = self.images.layer_dirs(image)?;
        let userns = pod_userns(pod, &config)?;
        let rootfs_dir = match &userns {
            None => {
                let rootfs_dir = bundle.join("rootfs");
                rootfs::mount_overlay(&layers, &dir.join("upper"), &dir.join("work"), &rootfs_dir)?;
                rootfs_dir
            }
            Some(u) => {
                std::fs::create_dir_all(&bundle)?;
                let rootfs_dir = self.userns_rootfs_dir(id, u.root.1)?;
                idmap::mount_overlay_idmapped(
                    &layers,
                    &dir.join("upper"),
                    &dir.join("work"),
                    &rootfs_dir,
                    &dir.join("layers"),
                    &u.file,
                    u.root,
                )?;
                rootfs_dir
            }
        };
        // Volumes with driver options are mounted first, so that the
        // copy-up lands in what the container sees.
        self.hold_volumes(id, &config.mounts)?;
        if userns.is_none() {
            self.copy_up_volumes(&config.mounts, &rootfs_dir)?;
        }
        let mounted = started.elapsed();
        let defaults = image_defaults(self.images.config(image)?);
        let stop_signal = oci::stop_signal(&defaults);
        let cgroups_path = format!("{}/{id}", pod.cgroup_parent);
        let mut spec = self.container_spec(pod, &config, defaults, rootfs_dir, &cgroups_path)?;
        let staging = self.container_state_dir(id).join(STAGING);
        stage_recursive_readonly(&mut spec, &staging)?;
        let mut spec = oci::build(&spec)?;
        if let Some(u) = &userns {
            idmap_bind_mounts(&mut spec, u, &dir.join("views"), pod.shm.as_deref())?;
            check_ids_mapped(&spec, u)?;
        }
        if self.config.precompile_seccomp && runtime.handler().takes_seccomp_bpf() {
            if let Err(e) = self.seccomp_bpf.precompile(&mut spec) {
                tracing::debug!(container = %id, "seccomp left to the runtime to compile: {e}");
            }
        }
        // What ContainerStatus reports as the first process's identity.
        let user = spec.process().as_ref().map(|p| {
            let u = p.user();
            ContainerUser {
                uid: u.uid(),
                gid: u.gid(),
                supplemental_groups: u.additional_gids().clone().unwrap_or_default(),
            }
        });
        // The command line as resolved against the image (Docker's Path
        // and Args).
        let process_args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        // Not fsynced: containers do not survive a power loss, and the
        // record (written durably after this) is what recovery trusts.
        let spec = serde_json::to_vec(&spec)
            .map_err(|e| Error::internal(format!("serialize the spec of {id}: {e}")))?;
        // 0600: the spec holds the container's env, and so its Secrets.
        write_private(&bundle.join("config.json"), &spec)?;
        let specified = started.elapsed();
        let log_path = log_path(&pod.config, &config)?;
        let shim_pid = self.spawn_monitor(id, runtime.as_ref(), &config, log_path.as_deref())?;
        made_dirs.keep();
        tracing::debug!(container = %id, ?mounted, ?specified, created = ?started.elapsed(),
            "container made: rootfs mounted, spec written, monitor ready");
        Ok(ContainerRecord {
            id: id.to_string(),
            sandbox_id: pod.id.clone(),
            owner: pod.owner,
            image_id: image.id.clone(),
            image_ref: image
                .repo_tags
                .first()
                .or(image.repo_digests.first())
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            state: ContainerState::Created,
            created_at_ns: now_ns(),
            log_path: log_path.unwrap_or_default(),
            shim_pid,
            cgroups_path,
            runtime_handler: pod.config.runtime_handler.clone(),
            stop_signal,
            user,
            process_args,
            config,
            ..Default::default()
        })
    }

    /// Starts the container's monitor, which runs the bundle under the
    /// container's directory when told to ([`Shared::run_container`]);
    /// returns the monitor's pid. Blocking.
    pub(crate) fn spawn_monitor(
        &self,
        id: &str,
        runtime: &dyn crate::RuntimeDriver,
        config: &ContainerConfig,
        log: Option<&Path>,
    ) -> Result<u32> {
        self.monitors.spawn(&monitor::SpawnRequest {
            shim: &self.config.shim,
            handler: runtime.handler(),
            id,
            bundle: &self.container_dir(id).join("bundle"),
            dir: &self.container_state_dir(id),
            log: log.unwrap_or(Path::new("/dev/null")),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            mount_propagation: config
                .mounts
                .iter()
                .any(|m| m.propagation != Propagation::Private),
        })
    }

    /// `<state>/u/<id>/rootfs`, made reachable for the container's root
    /// alone: `u` 0711, `<id>` 0710 with the group of its root (as
    /// containerd does for bundles of containers with a user namespace).
    fn userns_rootfs_dir(&self, id: &str, root_gid: u32) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let base = self.userns_root();
        berth_store::private_dir(&base, 0o711)?;
        let dir = base.join(id);
        let made = std::fs::create_dir(&dir)
            .and_then(|()| std::os::unix::fs::chown(&dir, Some(0), Some(root_gid)))
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)));
        made.map_err(|e| Error::from(e).context(format!("make {}", dir.display())))?;
        Ok(dir.join("rootfs"))
    }

    /// Translates the request into the OCI builder's terms, joining the
    /// pod's namespaces and shared files.
    fn container_spec(
        &self,
        pod: &SandboxRecord,
        config: &ContainerConfig,
        image: oci::ImageDefaults,
        rootfs_dir: PathBuf,
        cgroups_path: &str,
    ) -> Result<oci::ContainerSpec> {
        let join = |p: &Option<PathBuf>| match p {
            Some(p) => oci::Namespace::Join(p.clone()),
            None => oci::Namespace::Host,
        };
        let sec = &config.security;
        let pid = match sec.namespaces.pid {
            NamespaceMode::Node => oci::Namespace::Host,
            NamespaceMode::Container => oci::Namespace::Private,
            NamespaceMode::Pod => match &pod.namespaces.pid {
                Some(p) => oci::Namespace::Join(p.clone()),
                None => oci::Namespace::Private,
            },
            NamespaceMode::Target => {
                let target = self.require_container(&sec.namespaces.target_id)?.record();
                if target.state != ContainerState::Running {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!("target container {} is not running", target.id),
                    ));
                }
                oci::Namespace::Join(format!("/proc/{}/ns/pid", target.pid).into())
            }
        };
        let mut mounts: Vec<oci::Mount> = config
            .mounts
            .iter()
            .map(|m| oci::Mount {
                host_path: m.host_path.clone().into(),
                container_path: m.container_path.clone(),
                readonly: m.readonly,
                propagation: match m.propagation {
                    Propagation::Private => oci::Propagation::Private,
                    Propagation::HostToContainer => oci::Propagation::HostToContainer,
                    Propagation::Bidirectional => oci::Propagation::Bidirectional,
                },
                recursive_readonly: m.recursive_readonly,
                tmpfs: m.tmpfs.clone(),
            })
            .collect();
        let taken =
            |dest: &str, mounts: &[oci::Mount]| mounts.iter().any(|m| m.container_path == dest);
        let pod_dir = self.pod_dir(&pod.id);
        for (file, dest) in [
            (podfiles::HOSTNAME, "/etc/hostname"),
            (podfiles::HOSTS, "/etc/hosts"),
            (podfiles::RESOLV, "/etc/resolv.conf"),
        ] {
            if !taken(dest, &mounts) {
                mounts.push(oci::Mount {
                    host_path: pod_dir.join(file),
                    container_path: dest.to_string(),
                    readonly: sec.readonly_rootfs,
                    propagation: oci::Propagation::Private,
                    recursive_readonly: false,
                    tmpfs: None,
                });
            }
        }
        if let Some(shm) = &pod.shm {
            if !taken("/dev/shm", &mounts) {
                mounts.push(oci::Mount {
                    host_path: shm.clone(),
                    container_path: "/dev/shm".to_string(),
                    readonly: false,
                    propagation: oci::Propagation::Private,
                    recursive_readonly: false,
                    tmpfs: None,
                });
            }
        }
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let uid = |v: Option<i64>, what: &str| -> Result<Option<u32>> {
            v.map(|v| {
                u32::try_from(v).map_err(|_| Error::invalid(format!("{what} {v} is out of range")))
            })
            .transpose()
        };
        let r = &config.resources;
        let positive = |v: i64| (v > 0).then_some(v);
        Ok(oci::ContainerSpec {
            rootfs: rootfs_dir,
            image,
            command: config.command.clone(),
            args: config.args.clone(),
            env: config.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            working_dir: config.working_dir.clone(),
            tty: config.tty,
            stdin: config.stdin,
            user: oci::UserRequest {
                run_as_user: uid(sec.run_as_user, "run_as_user")?,
                run_as_username: (!sec.run_as_username.is_empty())
                    .then(|| sec.run_as_username.clone()),
                run_as_group: uid(sec.run_as_group, "run_as_group")?,
                supplemental_groups: sec
                    .supplemental_groups
                    .iter()
                    .map(|g| uid(Some(*g), "supplemental group").map(Option::unwrap_or_default))
                    .collect::<Result<_>>()?,
                supplemental_groups_policy: match sec.supplemental_groups_policy {
                    SupplementalGroupsPolicy::Merge => oci::SupplementalGroupsPolicy::Merge,
                    SupplementalGroupsPolicy::Strict => oci::SupplementalGroupsPolicy::Strict,
                },
            },
            mounts,
            devices: config
                .devices
                .iter()
                .map(|d| oci::Device {
                    host_path: d.host_path.clone().into(),
                    container_path: d.container_path.clone(),
                    permissions: d.permissions.clone(),
                })
                .collect(),
            privileged: sec.privileged,
            readonly_rootfs: sec.readonly_rootfs,
            no_new_privs: sec.no_new_privs,
            capabilities_add: sec.capabilities_add.clone(),
            capabilities_drop: sec.capabilities_drop.clone(),
            masked_paths: non_empty(&sec.masked_paths),
            readonly_paths: non_empty(&sec.readonly_paths),
            seccomp: match &sec.seccomp {
                SeccompConfig::Unset if self.config.seccomp_default => oci::Seccomp::RuntimeDefault,
                SeccompConfig::Unset => oci::Seccomp::Unconfined,
                SeccompConfig::RuntimeDefault => oci::Seccomp::RuntimeDefault,
                SeccompConfig::Unconfined => oci::Seccomp::Unconfined,
                SeccompConfig::Localhost(p) => oci::Seccomp::Localhost(p.into()),
            },
            seccomp_profile_root: self.config.seccomp_profile_root.clone(),
            apparmor_profile: (!sec.apparmor.is_empty()).then(|| sec.apparmor.clone()),
            resources: oci::Resources {
                cpu_shares: positive(r.cpu_shares).map(|v| v as u64),
                cpu_quota: positive(r.cpu_quota),
                cpu_period: positive(r.cpu_period).map(|v| v as u64),
                cpuset_cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
                cpuset_mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
                memory_limit: positive(r.memory_limit_in_bytes),
                memory_swap_limit: positive(r.memory_swap_limit_in_bytes),
                pids_limit: positive(r.pids_limit),
                hugepage_limits: r.hugepage_limits.clone(),
                unified: r.unified.clone(),
                oom_score_adj: (r.oom_score_adj != 0).then_some(r.oom_score_adj as i32),
            },
            namespaces: oci::Namespaces {
                network: join(&pod.namespaces.net),
                ipc: join(&pod.namespaces.ipc),
                uts: join(&pod.namespaces.uts),
                pid,
                user: pod
                    .namespaces
                    .user
                    .clone()
                    .zip(pod.config.namespaces.user.as_ref())
                    .map(|(path, u)| {
                        let maps = |m: &[IdMapping]| {
                            m.iter()
                                .map(|m| oci::IdMapping {
                                    container_id: m.container_id,
                                    host_id: m.host_id,
                                    size: m.length,
                                })
                                .collect()
                        };
                        oci::UserNamespace {
                            path,
                            uid_mappings: maps(&u.uids),
                            gid_mappings: maps(&u.gids),
                        }
                    }),
            },
            cgroups_path: cgroups_path.to_string(),
            sysctls: pod.config.sysctls.clone(),
            annotations: {
                let runtime = self.runtime(&pod.config.runtime_handler)?;
                let handler = runtime.handler();
                config
                    .annotations
                    .iter()
                    .filter(|(k, _)| handler.allows_annotation(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
            hostname: Some(podfiles::hostname(
                &pod.config,
                pod.config.namespaces.network == NamespaceMode::Node,
            )),
            cgroupns: oci::cgroupns_default(self.cgroups.mode(), sec.privileged),
        })
    }

    /// Follows a container's monitor: when it exits, the exit is recorded.
    pub(crate) fn watch_monitor(&self, id: &str, shim_pid: u32) {
        let core = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = core.monitors.wait_exit(shim_pid).await {
                tracing::warn!(container = %id, "waiting for monitor {shim_pid}: {e}");
            }
            core.record_exit(&id).await;
        });
    }

    /// Records the exit the monitor wrote and releases the runtime's state.
    pub(crate) async fn record_exit(&self, id: &str) {
        let Some(entry) = self.container_entry(id) else {
            return;
        };
        let record = self.apply_exit(&entry);
        if let Ok(runtime) = self.runtime(&record.runtime_handler) {
            let id = id.to_string();
            let _ = tokio::task::spawn_blocking(move || match runtime.delete(&id, true) {
                Err(e) if e.kind != ErrorKind::NotFound => {
                    tracing::warn!(container = %id, "runtime delete after exit: {e}")
                }
                _ => {}
            })
            .await;
        }
        // Told before waiters (stop, remove, the pod's stop) go on, so a
        // container's Stopped never follows its Deleted or its pod's Stopped.
        if record.reason == OOM_KILLED {
            self.container_event(&record, Action::Oom);
        }
        let exit_code = record.exit_code;
        self.container_event(&record, Action::Die { exit_code });
        entry.exited.send_replace(true);
        tracing::info!(container = %id, exit_code = record.exit_code, "container exited");
        if record.auto_remove {
            self.auto_remove(id);
        }
        self.apply_restart_policy(&record);
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        // Runs to its end even if the caller stops waiting.
        let core = self.clone();
        let id = id.to_owned();
        let started = std::time::Instant::now();
        to_completion(async move {
            match core.start_now(&id).await {
                Ok(handler) => {
                    core.metrics.container_started(&handler, started.elapsed());
                    Ok(())
                }
                Err(e) => {
                    core.after_failed_start(&id);
                    Err(e)
                }
            }
        })
        .await
    }

    /// A Docker `--rm` container that never ran goes when its start
    /// fails, as with dockerd (the CLI waits for that removal).
    fn after_failed_start(&self, id: &str) {
        let Some(entry) = self.container_entry(id) else {
            return;
        };
        let r = entry.record();
        if r.auto_remove && r.owner == Owner::Docker && r.state == ContainerState::Created {
            self.auto_remove_unstarted(id);
        }
    }

    /// Starts it; returns its runtime handler (for the start figure).
    async fn start_now(&self, id: &str) -> Result<String> {
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        let record = entry.record();
        if record.owner == Owner::Docker {
            entry.update(|r| self.reset_restart_policy(r));
        }
        if record.owner == Owner::Docker && record.state.has_exited() {
            self.start_again(&entry).await?;
            return Ok(record.runtime_handler);
        }
        record.state.check_start(id)?;
        let core = self.clone();
        let cid = id.to_string();
        let pid = tokio::task::spawn_blocking(move || core.run_container(&cid))
            .await
            .map_err(|e| Error::internal(format!("container start task: {e}")))??;
        let record = entry.update(|r| {
            r.pid = pid;
            r.started_at_ns = now_ns();
            if r.state == ContainerState::Created {
                r.state = ContainerState::Running;
            }
        });
        self.persist_container(&record)?;
        self.container_event(&record, Action::Start);
        Ok(record.runtime_handler)
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout_s`.
    /// Stopping a stopped container is fine; a missing one is NotFound.
    pub async fn stop(&self, id: &str, timeout_s: i64) -> Result<()> {
        // Runs to its end even if the caller stops waiting.
        let core = self.clone();
        let id = id.to_owned();
        to_completion(async move { core.stop_now(&id, timeout_s).await }).await
    }

    async fn stop_now(&self, id: &str, timeout_s: i64) -> Result<()> {
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        let was_running = !*entry.exited.borrow();
        if entry.record().owner == Owner::Docker {
            // Before the exit, which consults the restart policy.
            self.persist_container(&entry.update(|r| r.stopped_by_user = true))?;
        }
        self.kill_and_wait(&entry, timeout_s).await?;
        let record = entry.record();
        if record.owner == Owner::Docker && was_running {
            self.container_event(&record, Action::Stop);
        }
        Ok(())
    }

    pub(crate) async fn kill_and_wait(&self, entry: &Arc<Entry>, timeout_s: i64) -> Result<()> {
        let record = entry.record();
        if *entry.exited.borrow() {
            return Ok(());
        }
        let mut exited = entry.exited.subscribe();
        if record.state == ContainerState::Created {
            // Nothing runs yet: the monitor gives the container up and
            // records that as a kill, as the runtime's kill of a created
            // container would.
            let (core, id) = (self.clone(), record.id.clone());
            let dir = self.container_state_dir(&id);
            tokio::task::spawn_blocking(move || core.monitors.control(&dir, &id, "cancel"))
                .await
                .map_err(|e| Error::internal(format!("container cancel task: {e}")))??;
            return self.await_monitor_exit(&record.id, &mut exited).await;
        }
        let runtime = self.runtime(&record.runtime_handler)?;
        // A frozen process would keep its signals pending until thawed.
        self.thaw(entry).await?;
        // Docker shows each signal a stop sends; CRI's events have none.
        let told = |signal: i32| {
            if record.owner == Owner::Docker {
                self.container_event(&record, Action::Kill { signal });
            }
        };
        if timeout_s > 0 {
            let (rt, id, sig) = (runtime.clone(), record.id.clone(), record.stop_signal);
            told(sig);
            let _ = tokio::task::spawn_blocking(move || rt.kill(&id, &sig.to_string())).await;
            let wait = exited.wait_for(|e| *e);
            if tokio::time::timeout(Duration::from_secs(timeout_s as u64), wait)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        let id = record.id.clone();
        told(libc::SIGKILL);
        let _ = tokio::task::spawn_blocking(move || runtime.kill(&id, "KILL")).await;
        self.await_monitor_exit(&record.id, &mut exited).await
    }

    /// Waits (bounded) for the recorded exit after a SIGKILL or cancel.
    async fn await_monitor_exit(&self, id: &str, exited: &mut watch::Receiver<bool>) -> Result<()> {
        match tokio::time::timeout(MONITOR_EXIT, exited.wait_for(|e| *e)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("container {id} did not exit after SIGKILL"),
            )),
        }
    }

    /// Removes a container (killing it if it runs). A missing one is
    /// NotFound.
    pub async fn remove(&self, id: &str) -> Result<()> {
        // Runs to its end even if the caller stops waiting.
        let core = self.clone();
        let id = id.to_owned();
        to_completion(async move { core.remove_now(&id).await }).await
    }

    async fn remove_now(&self, id: &str) -> Result<()> {
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        self.remove_locked(&entry, id).await
    }

    /// Removes a container whose lock the caller holds.
    pub(crate) async fn remove_locked(&self, entry: &Arc<Entry>, id: &str) -> Result<()> {
        self.remove_unannounced(entry, id).await?;
        entry.removed.send_replace(true);
        Ok(())
    }

    /// Removes a container whose lock the caller holds, without telling
    /// its `removed` waiters: the caller does, once all that went with it
    /// (a Docker container's own sandbox) is gone too.
    pub(crate) async fn remove_unannounced(&self, entry: &Arc<Entry>, id: &str) -> Result<()> {
        self.kill_and_wait(entry, 0).await?;
        let record = entry.record();
        {
            let core = self.clone();
            let (id, handler) = (id.to_string(), record.runtime_handler.clone());
            tokio::task::spawn_blocking(move || core.remove_container_files(&id, &handler))
                .await
                .map_err(|e| Error::internal(format!("container removal task: {e}")))?;
        }
        self.store.write(Batch::new().delete(CONTAINERS, id))?;
        self.objects().containers.remove(id);
        self.release_volumes(id, &record.config.mounts);
        if let Some(pod) = self.sandbox_entry(&record.sandbox_id) {
            self.release_name(&name_key(&record.config, &pod.record().config), id);
        }
        self.cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.container_event(&record, Action::Destroy);
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<ContainerRecord> {
        Ok(self.require_container(id)?.record())
    }

    /// Whether a container with exactly this id exists (nothing cloned).
    pub fn exists(&self, id: &str) -> bool {
        self.container_entry(id).is_some()
    }

    /// The container with exactly this id, if a front door may see it:
    /// one lookup where [`list`](Self::list) clones every record.
    pub fn visible(&self, id: &str) -> Option<ContainerRecord> {
        self.container_entry(id)
            .map(|e| e.record())
            .filter(|r| !crate::build::is_build_container(r))
    }

    /// Containers matching the filter (owner included), oldest first.
    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        let mut out: Vec<ContainerRecord> = self
            .objects()
            .containers
            .values()
            .map(|e| e.record())
            // A build's RUN containers are the builder's own.
            .filter(|r| !crate::build::is_build_container(r))
            .filter(|r| filter.owner.is_none_or(|o| o == r.owner))
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| {
                filter.sandbox_id.is_empty() || r.sandbox_id.starts_with(&filter.sandbox_id)
            })
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .filter(|r| labels_match(&r.config.labels, &filter.labels))
            .collect();
        out.sort_by_key(|r| r.created_at_ns);
        out
    }

    /// Applies new limits to a created or running container. Runs to its
    /// end even if the caller stops waiting, so the record always says
    /// what the runtime applied.
    pub async fn update_resources(&self, id: &str, resources: Resources) -> Result<()> {
        let (core, id) = (self.clone(), id.to_owned());
        to_completion(async move { core.update_resources_now(&id, resources).await }).await
    }

    async fn update_resources_now(&self, id: &str, resources: Resources) -> Result<()> {
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        let record = entry.record();
        record.state.check_update(id)?;
        if record.state == ContainerState::Created {
            // Not in the runtime yet: the spec it will run takes them.
            let bundle_spec = self.container_dir(id).join("bundle/config.json");
            let limits = linux_resources(&resources);
            tokio::task::spawn_blocking(move || merge_resources_into_spec(&bundle_spec, &limits))
                .await
                .map_err(|e| Error::internal(format!("container update task: {e}")))??;
            let record = entry.update(|r| r.config.resources = resources);
            return self.persist_container(&record);
        }
        let runtime = self.runtime(&record.runtime_handler)?;
        let file = self.container_state_dir(id).join("resources.json");
        berth_store::write_atomic(&file, linux_resources(&resources).to_string().as_bytes())?;
        let cid = id.to_string();
        let done = tokio::task::spawn_blocking(move || runtime.update(&cid, &file))
            .await
            .map_err(|e| Error::internal(format!("container update task: {e}")))?;
        done?;
        let record = entry.update(|r| r.config.resources = resources);
        self.persist_container(&record)
    }

    /// Makes the monitor reopen the log file (after kubelet rotated it).
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        self.require_container(id)?
            .record()
            .state
            .check_running(id)?;
        let dir = self.container_state_dir(id);
        let (cid, monitors) = (id.to_string(), self.monitors.clone());
        tokio::task::spawn_blocking(move || monitors.control(&dir, &cid, "reopen-log"))
            .await
            .map_err(|e| Error::internal(format!("reopen log task: {e}")))?
    }
}

impl Shared {
    /// Has the monitor run the created container; returns its init pid.
    /// Blocking.
    pub(crate) fn run_container(&self, id: &str) -> Result<u32> {
        let state = self.container_state_dir(id);
        let pid = self.monitors.start(&state, id)?;
        // The runtime has bound them into the container's own mount
        // namespace: the host needs the staging copies no longer.
        if let Err(e) = rootfs::unmount_staged(&state.join(STAGING)) {
            tracing::warn!(container = %id, "recursive read-only staging: {e}");
        }
        Ok(pid)
    }

    pub(crate) fn container_entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.objects().containers.get(id).cloned()
    }
    pub(crate) fn require_container(&self, id: &str) -> Result<Arc<Entry>> {
        self.container_entry(id)
            .ok_or_else(|| Error::not_found(format!("container {id} not found")))
    }
    pub(crate) fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.objects()
            .containers
            .values()
            .map(|c| c.record())
            .filter(|r| r.sandbox_id == sandbox_id)
            .map(|r| r.id)
            .collect()
    }
    pub(crate) fn persist_container(&self, record: &ContainerRecord) -> Result<()> {
        self.store
            .write(Batch::new().put(CONTAINERS, &record.id, record)?)
    }
    /// Moves the record to Exited with what `exit.json` says (or Unknown
    /// when the monitor left nothing) and persists it.
    pub(crate) fn apply_exit(&self, entry: &Entry) -> ContainerRecord {
        let before = entry.record();
        let id = before.id.clone();
        let exit = self.monitors.read_exit(&self.container_state_dir(&id));
        // Read before the runtime's delete removes the cgroup.
        let oom_killed = exit.is_some_and(|e| e.exit_code == 137)
            && self
                .cgroups
                .stats(&before.cgroups_path)
                .is_ok_and(|s| s.oom_kills > 0);
        let record = entry.update(|r| {
            if r.state.has_exited() {
                return;
            }
            r.state = ContainerState::Exited;
            r.paused = false;
            match exit {
                Some(e) => {
                    r.exit_code = e.exit_code;
                    r.finished_at_ns = if e.finished_at_ns > 0 {
                        e.finished_at_ns
                    } else {
                        now_ns()
                    };
                    r.reason = match (e.exit_code, oom_killed) {
                        (0, _) => "Completed",
                        (_, true) => OOM_KILLED,
                        _ => "Error",
                    }
                    .to_string();
                }
                None => {
                    self.metrics.monitor_exit_unexpected();
                    r.exit_code = 255;
                    r.finished_at_ns = now_ns();
                    r.reason = "Unknown".to_string();
                    r.message = "the container's monitor exited without recording an exit status"
                        .to_string();
                }
            }
        });
        if let Err(e) = self.persist_container(&record) {
            tracing::error!(container = %id, "record exit: {e}");
        }
        self.release_volumes(&id, &record.config.mounts);
        record
    }
    /// Undoes everything a container made on the node; missing parts are fine.
    pub(crate) fn remove_container_files(&self, id: &str, handler: &str) {
        let state = self.container_state_dir(id);
        // A forced delete first: a container made but never recorded (a
        // failed store write) still has a live process.
        if let Ok(runtime) = self.runtime(handler) {
            match runtime.delete(id, true) {
                Err(e) if e.kind != ErrorKind::NotFound => {
                    tracing::warn!(container = %id, "runtime delete: {e}")
                }
                _ => {}
            }
        }
        if let Some(pid) = self.monitors.live(&state, id) {
            // A monitor still waiting to run the container gives it up
            // (one whose container ran refuses: that one is gone already).
            let _ = self.monitors.control(&state, id, "cancel");
            // The container is gone, so its monitor is on its way out.
            let deadline = std::time::Instant::now() + MONITOR_EXIT;
            while self.monitors.is_alive(pid, id) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Staging mounts are host trees: never delete through one.
        if let Err(e) = rootfs::unmount_staged(&state.join(STAGING)) {
            tracing::warn!(container = %id, "recursive read-only staging, left in place: {e}");
            return;
        }
        let dir = self.container_dir(id);
        if let Err(e) = rootfs::unmount_all(&dir.join("bundle/rootfs")) {
            tracing::warn!(container = %id, "{e}");
        }
        // In a pod with a user namespace: the rootfs under <state>/u and
        // idmapped views under the container's directory. Never remove a
        // directory through a live mount: a view of a volume is the volume.
        let userns_dir = self.userns_root().join(id);
        let unmounted = idmap::unmount_under(&dir).and_then(|()| idmap::unmount_under(&userns_dir));
        if let Err(e) = unmounted {
            tracing::warn!(container = %id, "{e}; its directories stay");
            return;
        }
        let _ = std::fs::remove_dir_all(&userns_dir);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&state);
    }
}

/// Gives every recursive read-only mount of `spec` a staging source under
/// `dir`: a recursively read-only copy of its host path, which the
/// runtime's `rbind` carries into the container with each submount's flag.
/// Every mount is checked first, so a refused request stages nothing; on a
/// later failure the caller removes the staging mounts with the container.
fn stage_recursive_readonly(spec: &mut oci::ContainerSpec, dir: &Path) -> Result<()> {
    for m in &spec.mounts {
        oci::check_recursive_readonly(m)?;
        if m.recursive_readonly && !m.host_path.is_absolute() {
            return Err(Error::invalid(format!(
                "mount host_path {} (for {}) must be an absolute path",
                m.host_path.display(),
                m.container_path
            )));
        }
    }
    let staged = spec.mounts.iter_mut().filter(|m| m.recursive_readonly);
    for (n, m) in staged.enumerate() {
        let context = |e: Error| e.context(format!("mount {}", m.container_path));
        // As for every CRI mount, a missing host path becomes a directory
        // (the caller's MadeDirs removes it again if the create fails).
        if !m.host_path.exists() {
            std::fs::create_dir_all(&m.host_path).map_err(|e| context(e.into()))?;
        }
        let src = std::fs::canonicalize(&m.host_path).map_err(|e| context(e.into()))?;
        std::fs::create_dir_all(dir).map_err(|e| context(e.into()))?;
        let target = dir.join(n.to_string());
        let made = if src.is_dir() {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        };
        made.map_err(|e| context(e.into()))?;
        rootfs::mount_recursive_readonly(&src, &target).map_err(context)?;
        m.host_path = target;
    }
    Ok(())
}

/// Writes a file readable by root only, without fsync: for files the
/// runtime reads at once and that recovery never trusts.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::from(e).context(format!("write {}", path.display())))
}

/// Merges `limits` (as [`linux_resources`] makes them) into the
/// `linux.resources` of the OCI spec at `path`, field by field, as the
/// runtime's `update` does for a running container.
fn merge_resources_into_spec(path: &Path, limits: &serde_json::Value) -> Result<()> {
    let bytes = std::fs::read(path)?;
    let mut spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("read {}: {e}", path.display())))?;
    let not_object = || {
        Error::internal(format!(
            "{}: linux.resources is not an object",
            path.display()
        ))
    };
    let resources = member(&mut spec, "linux")
        .and_then(|linux| member(linux, "resources"))
        .ok_or_else(not_object)?;
    for (section, fields) in limits.as_object().into_iter().flatten() {
        let target = member(resources, section)
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(not_object)?;
        for (field, value) in fields.as_object().into_iter().flatten() {
            target.insert(field.clone(), value.clone());
        }
    }
    let bytes = serde_json::to_vec(&spec)
        .map_err(|e| Error::internal(format!("serialize {}: {e}", path.display())))?;
    // Whole or not at all: the monitor runs whatever is there at start.
    berth_store::write_atomic(path, &bytes)
}

/// Member `key` of the JSON object `v`, made an empty object if missing;
/// None when `v` is not an object.
fn member<'a>(v: &'a mut serde_json::Value, key: &str) -> Option<&'a mut serde_json::Value> {
    let object = v.as_object_mut()?;
    Some(object.entry(key).or_insert_with(|| serde_json::json!({})))
}

/// `linux.resources` JSON for `runtime update`.
fn linux_resources(r: &Resources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), r.memory_limit_in_bytes.into());
        let swap = if r.memory_swap_limit_in_bytes > 0 {
            r.memory_swap_limit_in_bytes
        } else {
            r.memory_limit_in_bytes
        };
        memory.insert("swap".into(), swap.into());
    }
    serde_json::json!({ "cpu": cpu, "memory": memory })
}

/// The image config fields a container inherits.
fn image_defaults(c: crate::ImageConfig) -> oci::ImageDefaults {
    oci::ImageDefaults {
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        env: c.env,
        working_dir: c.working_dir,
        user: c.user,
        stop_signal: c.stop_signal,
    }
}

/// The container's log file: the pod's log directory joined with the
/// container's relative path (both checked by `validate`); `None` when
/// either is unset.
fn log_path(pod: &PodConfig, config: &ContainerConfig) -> Result<Option<PathBuf>> {
    if pod.log_directory.is_empty() || config.log_path.is_empty() {
        return Ok(None);
    }
    let dir = validate::absolute_clean("log_directory", &pod.log_directory)?;
    let path = dir.join(validate::relative_file("log_path", &config.log_path)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::from(e).context(format!("create log directory {}", parent.display()))
        })?;
    }
    Ok(Some(path))
}

/// The pod's user namespace, as a container made in it needs it.
struct PodUserns {
    /// The pinned namespace, for idmapped views.
    file: std::fs::File,
    /// Host uid and gid of the container's root.
    root: (u32, u32),
    /// How many ids from 0 are mapped (uids, gids).
    mapped: (u32, u32),
}

/// The user namespace of `pod`, if it has one. A container that names
/// user namespace options must name the pod's (kubelet repeats them).
fn pod_userns(pod: &SandboxRecord, config: &ContainerConfig) -> Result<Option<PodUserns>> {
    let own = |u: Option<&UserNamespace>| u.filter(|u| u.mode != NamespaceMode::Node).cloned();
    let theirs = own(pod.config.namespaces.user.as_ref());
    if config.security.namespaces.user.is_some()
        && own(config.security.namespaces.user.as_ref()) != theirs
    {
        return Err(Error::invalid(format!(
            "the container's user namespace options differ from those of pod sandbox {}",
            pod.id
        )));
    }
    let (Some(path), Some(maps)) = (
        &pod.namespaces.user,
        crate::sandbox::id_mappings(&pod.config.namespaces)?,
    ) else {
        return Ok(None);
    };
    let file = std::fs::File::open(path).map_err(|e| {
        Error::from(e).context(format!("open the pod's user namespace {}", path.display()))
    })?;
    Ok(Some(PodUserns {
        file,
        root: crate::sandbox::host_root(&maps),
        mapped: (maps.uids[0].size, maps.gids[0].size),
    }))
}

/// Replaces the source of every bind mount of `spec` (the container's
/// volumes and the pod's files, not the pod's /dev/shm, whose tmpfs
/// belongs to the pod's root already) by an idmapped view attached under
/// `views/<n>`, so that the pod's root owns what the host's root owns.
fn idmap_bind_mounts(
    spec: &mut oci_spec::runtime::Spec,
    u: &PodUserns,
    views: &Path,
    shm: Option<&Path>,
) -> Result<()> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(src) = m.source().clone() else {
            continue;
        };
        if m.typ().as_deref() != Some("bind") || Some(src.as_path()) == shm {
            continue;
        }
        let dest = m.destination().display().to_string();
        let view = views.join(i.to_string());
        let made = std::fs::create_dir_all(views).and_then(|()| match src.is_dir() {
            true => std::fs::create_dir(&view),
            false => std::fs::File::create(&view).map(drop),
        });
        made.map_err(|e| Error::from(e).context(format!("make {}", view.display())))?;
        idmap::idmapped_bind(&src, &view, &u.file, src.is_dir())
            .map_err(|e| e.context(format!("mount {dest} in a pod with a user namespace")))?;
        m.set_source(Some(view));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// The process's uid, gid and groups must be mapped in the pod's user
/// namespace, or the runtime fails to switch to them.
fn check_ids_mapped(spec: &oci_spec::runtime::Spec, u: &PodUserns) -> Result<()> {
    let Some(user) = spec.process().as_ref().map(|p| p.user()) else {
        return Ok(());
    };
    let unmapped = |what: &str, id: u32, mapped: u32| {
        Err(Error::invalid(format!(
            "{what} {id} is not mapped in the pod's user namespace (container ids 0 to {})",
            mapped - 1
        )))
    };
    if user.uid() >= u.mapped.0 {
        return unmapped("user", user.uid(), u.mapped.0);
    }
    for gid in std::iter::once(user.gid()).chain(user.additional_gids().iter().flatten().copied()) {
        if gid >= u.mapped.1 {
            return unmapped("group", gid, u.mapped.1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_merge_into_the_spec_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {
                "memory": {"limit": 1000, "reservation": 500},
                "cpu": {"shares": 2},
                "pids": {"limit": 7}
            }}
        });
        std::fs::write(&path, spec.to_string()).unwrap();
        let limits = linux_resources(&Resources {
            memory_limit_in_bytes: 4096,
            cpu_shares: 300,
            ..Default::default()
        });
        merge_resources_into_spec(&path, &limits).unwrap();
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            merged["linux"]["resources"],
            serde_json::json!({
                "memory": {"limit": 4096, "swap": 4096, "reservation": 500},
                "cpu": {"shares": 300},
                "pids": {"limit": 7}
            })
        );
        assert_eq!(merged["ociVersion"], "1.0.2");

        // No resources yet: they are made; a malformed spec is an error.
        std::fs::write(&path, "{}").unwrap();
        merge_resources_into_spec(&path, &limits).unwrap();
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(merged["linux"]["resources"]["cpu"]["shares"], 300);
        std::fs::write(&path, r#"{"linux": {"resources": 3}}"#).unwrap();
        let e = merge_resources_into_spec(&path, &limits).unwrap_err();
        assert!(e.message.contains("not an object"), "{e}");
    }
}
