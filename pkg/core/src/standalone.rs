//! Docker's containers ("standalone", `Owner::Docker`): a container made
//! with a sandbox of its own in one call, and the verbs Docker has that
//! CRI's state machine lacks: start again after an exit (same writable
//! layer, same log file), kill with any signal, wait, rename, restart,
//! removal with its sandbox, and auto-remove. Kubernetes containers never
//! take these paths (kill and wait excepted, which change no state).
//!
//! A Docker sandbox is named by the id of the container it was made for:
//! it is never renamed and never collides with another's (a container
//! sharing it through `container:<id>` may outlive the one it was made
//! for). Its containers' logs live in their own directories, so they go
//! with them.

use std::sync::Arc;

use berth_errdefs::{Error, ErrorKind, Result};

use crate::container::{name_key, Entry};
use crate::events::{attr, Action, Attrs};
use crate::model::*;
use crate::networks::Wiring;
use crate::{gone_is_done, new_id, to_completion, validate, Containers};

/// What a Docker create asks of the container record beyond the config.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreateExtras {
    /// The id to give it (chosen before its sandbox is made).
    pub id: Option<String>,
    pub auto_remove: bool,
    /// Overrides the image's stop signal.
    pub stop_signal: Option<i32>,
    pub stop_timeout_s: Option<i64>,
    pub restart_policy: RestartPolicy,
}

impl CreateExtras {
    pub fn apply(&self, mut record: ContainerRecord) -> ContainerRecord {
        record.auto_remove = self.auto_remove;
        record.restart_policy = self.restart_policy;
        record.stop_timeout_s = self.stop_timeout_s;
        if let Some(signal) = self.stop_signal {
            record.stop_signal = signal;
        }
        record
    }
}

/// Files a monitor leaves in the container's state dir that the next
/// one makes again (a stale `exit.json` would end the new run at once).
const MONITOR_FILES: [&str; 5] = [
    "exit.json",
    "shim.pid",
    "control.sock",
    "attach.sock",
    "console.sock",
];

/// Under `<root>/containers`: a Docker container's log file.
const DOCKER_LOG: &str = "container.log";

/// The name of signal `n` (`SIGTERM`), as `docker inspect` shows it.
pub fn signal_name(n: i32) -> Option<String> {
    berth_oci::spec::signal_name(n)
}

/// A signal by name (`TERM`, `SIGTERM`, `RTMIN+1`) or number; empty is
/// SIGKILL (Docker's default for kill).
pub fn parse_signal(signal: &str) -> Result<i32> {
    if signal.is_empty() {
        return Ok(libc::SIGKILL);
    }
    let invalid = || Error::invalid(format!("invalid signal: {signal}"));
    let n = berth_oci::spec::parse_signal(signal).map_err(|_| invalid())?;
    match (1..=libc::SIGRTMAX()).contains(&n) {
        true => Ok(n),
        false => Err(invalid()),
    }
}

impl Containers {
    /// Makes a Docker container with a sandbox of its own (or in the
    /// sandbox of the container `NetworkMode::Container` names): all of
    /// it, or nothing (no sandbox, namespace, veth, cgroup or record). A
    /// name in use is AlreadyExists naming its holder.
    pub async fn create_standalone(&self, spec: StandaloneSpec) -> Result<String> {
        let StandaloneSpec {
            mut container,
            pod,
            network,
            auto_remove,
            stop_signal,
            stop_timeout_s,
            restart_policy,
        } = spec;
        if container.name.is_empty() {
            return Err(Error::invalid("a Docker container needs a name"));
        }
        let id = new_id();
        // In its own directory, so that it goes with the container.
        container.log_path = format!("{id}/{DOCKER_LOG}");
        validate::container(&container)?;
        let extras = CreateExtras {
            id: Some(id.clone()),
            auto_remove,
            stop_signal: stop_signal.as_deref().map(parse_signal).transpose()?,
            stop_timeout_s,
            restart_policy,
        };
        if auto_remove && restart_policy != RestartPolicy::No {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a container with auto-remove cannot have a restart policy",
            ));
        }
        self.check_docker_name(&container.name)?;
        let shared_sandbox = match &network {
            NetworkMode::Container(other) => Some(self.docker_container(other)?.sandbox_id),
            _ => None,
        };
        let (wiring, pod) = match &network {
            NetworkMode::None => (Wiring::Loopback, pod),
            NetworkMode::User(join) => {
                let (join, gateway) = self.networks().resolve_join(join, &container.name, &id)?;
                // Names resolve through the network's own DNS responder.
                let mut dns = pod.dns.clone().unwrap_or_default();
                dns.servers = vec![gateway.to_string()];
                let pod = PodConfig {
                    dns: Some(dns),
                    ..pod
                };
                (Wiring::User(vec![join]), pod)
            }
            _ => (Wiring::Node, pod),
        };
        let pod = match shared_sandbox {
            Some(_) => None,
            None => Some(self.sandboxes().check_run(
                Owner::Docker,
                PodConfig {
                    // Docker's default: the container's short id.
                    hostname: match pod.hostname.is_empty() {
                        true => id[..12].to_string(),
                        false => pod.hostname.clone(),
                    },
                    name: id.clone(),
                    kubernetes: None,
                    log_directory: self.config.root.join("containers").display().to_string(),
                    namespaces: NamespaceOptions {
                        network: match network {
                            NetworkMode::Host => NamespaceMode::Node,
                            _ => NamespaceMode::Pod,
                        },
                        ..pod.namespaces
                    },
                    ..pod
                },
            )?),
        };
        let core = self.clone();
        to_completion(async move {
            let Some(pod) = pod else {
                let sandbox = shared_sandbox.unwrap_or_default();
                return core.create_detached(&sandbox, container, extras).await;
            };
            let sandbox = core
                .sandboxes()
                .run_detached(Owner::Docker, pod, wiring)
                .await?;
            let made = core.create_detached(&sandbox, container, extras).await;
            if made.is_err() {
                if let Err(e) = core.sandboxes().remove(&sandbox).await {
                    tracing::error!(sandbox = %sandbox, "undo a Docker container's sandbox: {e}");
                }
            }
            made
        })
        .await
    }

    /// A Docker container's name must be free among Docker's and must not
    /// be the name Docker shows for a Kubernetes container (dockershim's
    /// `k8s_…`).
    fn check_docker_name(&self, name: &str) -> Result<()> {
        let objects = self.objects();
        let holder = objects.names.get(&format!("ctr/{name}")).cloned();
        let holder = holder.or_else(|| {
            objects
                .containers
                .values()
                .map(|c| c.record())
                .filter(|c| c.owner == Owner::Kubernetes)
                .find(|c| {
                    objects.sandboxes.get(&c.sandbox_id).is_some_and(|pod| {
                        dockershim_name(c, &pod.record().config).as_deref() == Some(name)
                    })
                })
                .map(|c| c.id)
        });
        match holder {
            Some(holder) => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("name {name:?} is reserved for {holder}"),
            )),
            None => Ok(()),
        }
    }

    /// A Docker container's record; a Kubernetes one is refused (kubelet
    /// owns its lifecycle).
    pub(crate) fn docker_container(&self, id: &str) -> Result<ContainerRecord> {
        let record = self.require_container(id)?.record();
        match record.owner {
            Owner::Docker => Ok(record),
            Owner::Kubernetes => Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} belongs to a Kubernetes pod: kubelet manages it"),
            )),
        }
    }

    /// Runs an exited Docker container again on the same writable layer
    /// and bundle, appending to the same log. The caller holds its lock.
    pub(crate) async fn start_again(&self, entry: &Arc<Entry>) -> Result<()> {
        let record = entry.record();
        let id = record.id.clone();
        self.revive_after_reboot(&record).await?;
        self.ready_sandbox(&record.sandbox_id)?;
        let runtime = self.runtime(&record.runtime_handler)?;
        let core = self.clone();
        let r = record.clone();
        let (shim_pid, pid) = tokio::task::spawn_blocking(move || -> Result<(u32, u32)> {
            // What the last run left: the runtime's state (deleted at
            // the exit, unless berthd stopped first) and the monitor's files.
            gone_is_done(runtime.delete(&r.id, true))?;
            let dir = core.container_state_dir(&r.id);
            for f in MONITOR_FILES {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let log = (!r.log_path.as_os_str().is_empty()).then_some(r.log_path.as_path());
            core.hold_volumes(&r.id, &r.config.mounts)?;
            let made = core
                .spawn_monitor(&r.id, runtime.as_ref(), &r.config, log)
                .and_then(|shim_pid| match core.run_container(&r.id) {
                    Ok(pid) => Ok((shim_pid, pid)),
                    Err(e) => {
                        // The monitor, still waiting to run it, goes.
                        let _ = core.monitors.control(&dir, &r.id, "cancel");
                        Err(e)
                    }
                });
            if made.is_err() {
                core.release_volumes(&r.id, &r.config.mounts);
            }
            made
        })
        .await
        .map_err(|e| Error::internal(format!("container start task: {e}")))??;
        let record = entry.update(|r| {
            r.state = ContainerState::Running;
            r.shim_pid = shim_pid;
            r.pid = pid;
            r.started_at_ns = now_ns();
            r.exit_code = 0;
            r.reason.clear();
            r.message.clear();
        });
        entry.exited.send_replace(false);
        self.watch_monitor(&id, shim_pid);
        // Recorded after the monitor is followed: an exit before the write
        // still lands (apply_exit persists again).
        self.persist_container(&record)?;
        self.container_event(&record, Action::Start);
        Ok(())
    }

    /// Sends `signal` (a name or number; empty: SIGKILL) to a running
    /// container's first process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let signal = parse_signal(signal)?;
        let entry = self.require_container(id)?;
        let record = entry.record();
        record.state.check_running(id)?;
        if record.paused && signal != libc::SIGKILL {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} is paused: unpause it before killing it"),
            ));
        }
        let runtime = self.runtime(&record.runtime_handler)?;
        let cid = id.to_string();
        if record.owner == Owner::Docker {
            // As dockerd: a container killed by hand stays down.
            self.persist_container(&entry.update(|r| r.stopped_by_user = true))?;
        }
        // Told before the signal lands, or its `die` could come first (as
        // a stop tells each signal it sends).
        self.container_event(&record, Action::Kill { signal });
        tokio::task::spawn_blocking(move || runtime.kill(&cid, &signal.to_string()))
            .await
            .map_err(|e| Error::internal(format!("container kill task: {e}")))??;
        // SIGKILL lands once the cgroup thaws.
        let _guard = entry.lock.lock().await;
        self.thaw(&entry).await
    }

    /// Waits for `condition` and returns the container's exit code then.
    pub async fn wait(&self, id: &str, condition: WaitCondition) -> Result<i32> {
        let entry = self.require_container(id)?;
        let mut exited = entry.exited.subscribe();
        let mut removed = entry.removed.subscribe();
        let gone = || Error::internal(format!("container {id}: its state went away"));
        match condition {
            // By the exit flag, not the state: an exit is recorded (state,
            // then runtime delete, then the flag) before the flag is up.
            WaitCondition::NotRunning => {
                if entry.record().state != ContainerState::Created {
                    exited.wait_for(|e| *e).await.map_err(|_| gone())?;
                }
            }
            WaitCondition::NextExit => {
                if *exited.borrow_and_update() {
                    exited.wait_for(|e| !*e).await.map_err(|_| gone())?;
                }
                exited.wait_for(|e| *e).await.map_err(|_| gone())?;
            }
            WaitCondition::Removed => {
                removed.wait_for(|r| *r).await.map_err(|_| gone())?;
            }
        }
        Ok(entry.record().exit_code)
    }

    /// Stops a Docker container (if it runs) and starts it again.
    pub async fn restart(&self, id: &str, timeout_s: i64) -> Result<()> {
        self.docker_container(id)?;
        let (core, id) = (self.clone(), id.to_string());
        to_completion(async move {
            let entry = core.require_container(&id)?;
            let _guard = entry.lock.lock().await;
            if !*entry.exited.borrow() {
                entry.update(|r| r.stopped_by_user = true);
                core.kill_and_wait(&entry, timeout_s).await?;
                core.container_event(&entry.record(), Action::Stop);
            }
            entry.update(|r| core.reset_restart_policy(r));
            core.start_again(&entry).await?;
            core.container_event(&entry.record(), Action::Restart);
            Ok(())
        })
        .await
    }

    /// Gives a Docker container a new name (free among Docker's).
    pub async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let record = self.docker_container(id)?;
        if new_name.is_empty() {
            return Err(Error::invalid("a Docker container needs a name"));
        }
        let old = record.config.name.clone();
        if old == new_name {
            return Err(Error::invalid(format!(
                "renaming container {id}: the new name is its current name {old:?}"
            )));
        }
        self.check_docker_name(new_name)?;
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        let pod = self
            .sandbox_entry(&record.sandbox_id)
            .map(|p| p.record().config);
        let pod = pod.unwrap_or_default();
        let renamed = ContainerConfig {
            name: new_name.to_string(),
            ..record.config.clone()
        };
        let new_key = name_key(&renamed, &pod);
        self.reserve_name(&new_key, id)?;
        let record = entry.update(|r| r.config.name = new_name.to_string());
        if let Err(e) = self.persist_container(&record) {
            entry.update(|r| r.config.name = old.clone());
            self.release_name(&new_key, id);
            return Err(e);
        }
        self.release_name(&name_key(&record_named(&record, &old), &pod), id);
        self.networks()
            .rename_member(&record.sandbox_id, &old, new_name)
            .await;
        self.container_event_with(
            &record,
            Action::Rename,
            Attrs::new().set(attr::OLD_NAME, format!("/{old}")),
        );
        Ok(())
    }

    /// Removes a Docker container, and its sandbox when no container is
    /// left in it. A running one needs `force` (it is killed).
    pub async fn remove_standalone(&self, id: &str, force: bool) -> Result<()> {
        self.docker_container(id)?;
        let (core, id) = (self.clone(), id.to_string());
        to_completion(async move { core.remove_standalone_now(&id, force, false).await }).await
    }

    async fn remove_standalone_now(&self, id: &str, force: bool, only_exited: bool) -> Result<()> {
        let entry = self.require_container(id)?;
        let sandbox_id = {
            let _guard = entry.lock.lock().await;
            let record = entry.record();
            if only_exited && !record.state.has_exited() {
                // Started again (restart) before its auto-removal ran.
                return Ok(());
            }
            if !force && record.state == ContainerState::Running {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("container {id} is running: stop it first or force its removal"),
                ));
            }
            self.remove_unannounced(&entry, id).await?;
            record.sandbox_id
        };
        // `wait?condition=removed` (`docker run --rm`) returns once the
        // sandbox went too: nothing of the container is left then.
        let released = self.release_docker_sandbox(&sandbox_id).await;
        entry.removed.send_replace(true);
        released
    }

    /// Removes a Docker sandbox no container uses any more.
    pub(crate) async fn release_docker_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let docker = self
            .sandbox_entry(sandbox_id)
            .is_some_and(|s| s.record().owner == Owner::Docker);
        if docker && self.containers_of(sandbox_id).is_empty() {
            gone_is_done(self.sandboxes().remove(sandbox_id).await)?;
        }
        Ok(())
    }

    /// Docker's `--rm`: removes an exited container and its sandbox, off
    /// the caller's task.
    pub(crate) fn auto_remove(&self, id: &str) {
        self.auto_remove_when(id, true);
    }

    /// Docker's `--rm` for a container whose start failed: it never ran.
    pub(crate) fn auto_remove_unstarted(&self, id: &str) {
        self.auto_remove_when(id, false);
    }

    fn auto_remove_when(&self, id: &str, only_exited: bool) {
        let (core, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            match core.remove_standalone_now(&id, false, only_exited).await {
                Err(e) if e.kind != ErrorKind::NotFound => {
                    tracing::warn!(container = %id, "auto-remove: {e}")
                }
                _ => {}
            }
        });
    }
}

/// The record's config under another name (for its old name's key).
fn record_named(record: &ContainerRecord, name: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.to_string(),
        ..record.config.clone()
    }
}

/// The name Docker shows for a Kubernetes container (dockershim's).
fn dockershim_name(c: &ContainerRecord, pod: &PodConfig) -> Option<String> {
    let k = pod.kubernetes.as_ref()?;
    Some(format!(
        "k8s_{}_{}_{}_{}_{}",
        c.config.name, pod.name, k.namespace, k.uid, c.config.attempt
    ))
}

impl crate::Shared {
    /// After recovery: what a berthd that stopped midway left of Docker's
    /// cleanups, finished (auto-removal of exited `--rm` containers, the
    /// removal of Docker sandboxes left without a container).
    pub(crate) fn resume_docker_cleanup(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let containers = Containers::new(self.clone());
        let records: Vec<ContainerRecord> = self
            .objects()
            .containers
            .values()
            .map(|c| c.record())
            .collect();
        // A build berthd stopped in the middle of: its container goes.
        let building = |r: &&ContainerRecord| crate::build::is_build_container(r);
        for r in records.iter().filter(building) {
            let (containers, id) = (containers.clone(), r.id.clone());
            tokio::spawn(async move {
                if let Err(e) = containers.remove_standalone_now(&id, true, false).await {
                    tracing::warn!(container = %id, "remove a leftover build container: {e}");
                }
            });
        }
        for r in records
            .iter()
            .filter(|r| r.state.has_exited() && !building(r))
        {
            match r.auto_remove {
                true => containers.auto_remove(&r.id),
                // An exit while berthd was down (or a reboot), or a
                // restart it did not get to: the policy decides now, as
                // dockerd's does at its start.
                false => containers.restart_at_start(r),
            }
        }
        let empty: Vec<String> = self
            .objects()
            .sandboxes
            .values()
            .map(|s| s.record())
            .filter(|s| s.owner == Owner::Docker && !records.iter().any(|r| r.sandbox_id == s.id))
            .map(|s| s.id)
            .collect();
        for id in empty {
            let containers = containers.clone();
            tokio::spawn(async move {
                if let Err(e) = containers.release_docker_sandbox(&id).await {
                    tracing::warn!(sandbox = %id, "remove an empty Docker sandbox: {e}");
                }
            });
        }
    }
}
