//! Pod sandboxes: pinned namespaces (no pause container), the pod's shared
//! files, its /dev/shm and its cgroup parent.

use std::sync::{Arc, Mutex};

use berth_errdefs::{Error, ErrorKind, Result};
use berth_store::Batch;

use crate::events::Action;
use crate::model::*;
use crate::networks::Wiring;
use crate::{
    gone_is_done, idmap, new_id, podfiles, rootfs, to_completion, validate, CgroupDriver,
    Containers, Shared,
};

pub(crate) const SANDBOXES: &str = "sandboxes";

pub(crate) struct Entry {
    /// Serialises the operations on one sandbox.
    pub lock: tokio::sync::Mutex<()>,
    record: Mutex<SandboxRecord>,
}

impl Entry {
    pub fn new(record: SandboxRecord) -> Arc<Entry> {
        Arc::new(Entry {
            lock: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
        })
    }

    /// The two fields a census needs, without copying the record.
    pub fn state_and_owner(&self) -> (SandboxState, Owner) {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        (record.state, record.owner)
    }

    pub fn record(&self) -> SandboxRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, record: SandboxRecord) {
        *self.record.lock().unwrap_or_else(|p| p.into_inner()) = record;
    }
}

/// The pod's total limits (CRI `resources` plus `overhead`), if it has any.
fn pod_limits(config: &PodConfig) -> Option<berth_cgroups::Resources> {
    let r = config.resources.as_ref()?;
    let o = config.overhead.clone().unwrap_or_default();
    let positive = |v: i64| (v > 0).then_some(v);
    Some(berth_cgroups::Resources {
        cpu_shares: positive(r.cpu_shares + o.cpu_shares).map(|v| v as u64),
        cpu_quota: positive(r.cpu_quota).map(|q| q + o.cpu_quota.max(0)),
        cpu_period: positive(r.cpu_period).map(|v| v as u64),
        memory_limit: positive(r.memory_limit_in_bytes).map(|m| m + o.memory_limit_in_bytes.max(0)),
        ..Default::default()
    })
}

pub(crate) fn name_key(config: &PodConfig) -> String {
    format!("pod/{}", config.full_name())
}

crate::service_handle! {
    /// The pod sandboxes service. A cheap handle.
    Sandboxes
}

impl Sandboxes {
    fn containers(&self) -> Containers {
        Containers::new(self.shared())
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Makes a pod sandbox: all of it, or nothing (the error names the step).
    /// The work runs to its end even when the caller stops waiting (a
    /// kubelet deadline), so a pod is either made and recorded or not made.
    pub async fn run(&self, owner: Owner, config: PodConfig) -> Result<String> {
        let config = self.check_run(owner, config)?;
        let core = self.clone();
        let started = std::time::Instant::now();
        to_completion(async move {
            let handler = config.runtime_handler.clone();
            let metrics = core.metrics.clone();
            let id = core
                .run_detached(owner, config, crate::networks::Wiring::Node)
                .await?;
            metrics.pod_started(&handler, started.elapsed());
            Ok(id)
        })
        .await
    }

    /// What `run` checks before anything is made; returns the config
    /// validated.
    pub(crate) fn check_run(&self, owner: Owner, config: PodConfig) -> Result<PodConfig> {
        check_owner(owner, &config)?;
        if config.namespaces.pid == NamespaceMode::Target
            || config.namespaces.network == NamespaceMode::Target
        {
            return Err(Error::invalid(
                "a pod sandbox cannot take another container's namespace (TARGET)",
            ));
        }
        let config = validate::pod(config)?;
        // A Docker sandbox's log directory is the core's own choice.
        if owner == Owner::Kubernetes {
            self.check_log_directory(&config.log_directory)?;
        }
        self.runtime(&config.runtime_handler)?;
        self.check_user_namespace(&config)?;
        // A parent that can never be used is refused before anything is made.
        self.cgroup_parent_path("", &config)?;
        Ok(config)
    }

    /// Makes a checked sandbox wired as `wiring` says (`Loopback`:
    /// Docker's `--network none`).
    pub(crate) async fn run_detached(
        self,
        owner: Owner,
        config: PodConfig,
        wiring: Wiring,
    ) -> Result<String> {
        let id = new_id();
        let key = name_key(&config);
        self.reserve_name(&key, &id)?;
        let core = self.clone();
        let sandbox_id = id.clone();
        // Made, recorded and (on failure) undone exactly once, all off the
        // async workers.
        let made = tokio::task::spawn_blocking(move || -> Result<SandboxRecord> {
            let record = match core.make_sandbox(&sandbox_id, owner, config, &wiring) {
                Ok(r) => r,
                Err(e) => {
                    core.remove_sandbox_files(&sandbox_id, None);
                    return Err(e);
                }
            };
            if let Err(e) = core.persist_sandbox(&record) {
                // The record knows what to undo, the pod cgroup included.
                core.remove_sandbox_files(&sandbox_id, Some(&record));
                return Err(e);
            }
            Ok(record)
        })
        .await
        .map_err(|e| Error::internal(format!("pod sandbox setup task: {e}")))
        .and_then(|r| r);
        let record = match made {
            Ok(r) => r,
            Err(e) => {
                self.release_name(&key, &id);
                return Err(e);
            }
        };
        self.objects()
            .sandboxes
            .insert(id.clone(), Entry::new(record.clone()));
        self.sandbox_event(&record, Action::Create);
        self.sandbox_event(&record, Action::Start);
        if !record.endpoints.is_empty() {
            self.refresh_all_dns();
        }
        tracing::info!(sandbox = %id, name = %key, "pod sandbox ready");
        Ok(id)
    }

    pub(crate) fn make_sandbox(
        &self,
        id: &str,
        owner: Owner,
        config: PodConfig,
        wiring: &Wiring,
    ) -> Result<SandboxRecord> {
        let started = std::time::Instant::now();
        let host_network = config.namespaces.network == NamespaceMode::Node;
        let host_ipc = config.namespaces.ipc == NamespaceMode::Node;
        let hostname = podfiles::hostname(&config, host_network);
        podfiles::write(&self.pod_dir(id), &config, &hostname, host_network)
            .map_err(|e| e.context("write pod files"))?;
        let state = self.pod_state_dir(id);
        let user = id_mappings(&config.namespaces)?;
        let pinned = berth_ns::pin(&berth_ns::PinRequest {
            dir: state.join("ns"),
            net: !host_network,
            ipc: !host_ipc,
            uts: !host_network,
            pid: config.namespaces.pid == NamespaceMode::Pod,
            hostname: (!host_network).then(|| hostname.clone()),
            user: user.clone(),
        })
        .map_err(|e| e.context("pin pod namespaces"))?;
        let pinned_at = started.elapsed();
        let (network, endpoints) = match (&pinned.net, wiring) {
            (Some(netns), Wiring::Node) => (self.attach_network(id, netns, &config)?, Vec::new()),
            (Some(netns), Wiring::User(joins)) => {
                (None, self.join_user_networks(id, netns, &config, joins)?)
            }
            _ => (None, Vec::new()),
        };
        let first_ip = match (&network, endpoints.first()) {
            (Some(n), _) => n.ips.first().copied(),
            (None, Some(e)) => e.address.map(std::net::IpAddr::V4),
            _ => None,
        };
        if let Some(ip) = first_ip {
            podfiles::add_host(&self.pod_dir(id), ip, &hostname)
                .map_err(|e| e.context("write pod files"))?;
        }
        let wired = started.elapsed();
        let shm = if host_ipc {
            None
        } else {
            let dir = state.join("shm");
            rootfs::mount_shm(&dir, user.as_ref().map(host_root))?;
            Some(dir)
        };
        let shm_at = started.elapsed();
        let (cgroup_parent, owns_cgroup_parent) = self.cgroup_parent(id, &config)?;
        if owns_cgroup_parent {
            // Made here rather than by the runtime inside the first
            // CreateContainer, whose latency the kubelet waits on.
            self.cgroups.create(&cgroup_parent)?;
            if let Some(limits) = pod_limits(&config) {
                // kubelet sizes the pod cgroups it makes; for ours, berth does.
                if let Err(e) = self.cgroups.apply(&cgroup_parent, &limits) {
                    let _ = self.cgroups.remove(&cgroup_parent);
                    return Err(e.context("apply pod resources"));
                }
            }
        }
        tracing::debug!(sandbox = %id, pinned = ?pinned_at, ?wired, shm = ?shm_at,
            cgroup = ?started.elapsed(), "pod sandbox made");
        Ok(SandboxRecord {
            id: id.to_string(),
            owner,
            state: SandboxState::Ready,
            created_at_ns: now_ns(),
            namespaces: SandboxNamespaces {
                net: pinned.net,
                ipc: pinned.ipc,
                uts: pinned.uts,
                pid: pinned.pid,
                pause_pid: pinned.pause_pid,
                user: pinned.user,
            },
            cgroup_parent,
            owns_cgroup_parent,
            shm,
            network,
            no_network: matches!(wiring, Wiring::Loopback),
            endpoints,
            lost_endpoints: Vec::new(),
            config,
        })
    }

    /// A pod's user namespace request, checked before anything is made:
    /// only the node's namespaces besides it are refused (kubelet refuses
    /// `hostUsers: false` with host network, ipc or pid), and the handler
    /// and node must support it.
    fn check_user_namespace(&self, config: &PodConfig) -> Result<()> {
        if id_mappings(&config.namespaces)?.is_none() {
            return Ok(());
        }
        let ns = &config.namespaces;
        for (what, mode) in [("network", ns.network), ("ipc", ns.ipc), ("pid", ns.pid)] {
            if mode == NamespaceMode::Node {
                return Err(Error::invalid(format!(
                    "a pod with a user namespace cannot use the node's {what} namespace"
                )));
            }
        }
        self.user_namespace_support(&config.runtime_handler)
    }

    /// The cgroupfs parent of the pod's containers: kubelet's (a path, or a
    /// slice name with the systemd driver), or one of berth's own.
    fn cgroup_parent(&self, id: &str, config: &PodConfig) -> Result<(String, bool)> {
        let parent = self.cgroup_parent_path(id, config)?;
        let owns = !self.cgroups.exists(&parent);
        Ok((parent, owns))
    }

    /// The absolute cgroupfs path of the pod's parent, checked; touches
    /// nothing on the host.
    fn cgroup_parent_path(&self, id: &str, config: &PodConfig) -> Result<String> {
        let parent = if config.cgroup_parent.is_empty() {
            self.own_cgroup_parent(id)
        } else if self.config.cgroup_driver == CgroupDriver::Systemd
            && config.cgroup_parent.ends_with(".slice")
        {
            berth_cgroups::systemd_slice_path(&config.cgroup_parent)?
        } else {
            config.cgroup_parent.clone()
        };
        if !parent.starts_with('/') || parent.split('/').any(|p| p == "..") {
            return Err(Error::invalid(format!(
                "cgroup parent {:?} must be an absolute path",
                config.cgroup_parent
            )));
        }
        Ok(parent)
    }

    /// Stops the pod's containers and releases its namespaces. Stopping a
    /// stopped sandbox is fine; a missing one is NotFound.
    pub async fn stop(&self, id: &str) -> Result<()> {
        // Runs to its end even if the caller stops waiting.
        let core = self.clone();
        let id = id.to_owned();
        to_completion(async move { core.stop_now(&id).await }).await
    }

    async fn stop_now(&self, id: &str) -> Result<()> {
        let entry = self.require_sandbox(id)?;
        let _guard = entry.lock.lock().await;
        for c in self.containers_of(id) {
            gone_is_done(self.containers().stop(&c, 0).await)?;
        }
        let mut record = entry.record();
        if record.state == SandboxState::NotReady {
            return Ok(());
        }
        let shm = record.shm.clone();
        let core = self.clone();
        let (netns, attachment) = (record.namespaces.net.clone(), record.network.clone());
        let sandbox_id = id.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            // Before the namespace goes: CNI DEL wants it, and a veth
            // deleted first goes synchronously.
            core.detach_network(&sandbox_id, netns.as_ref(), attachment.as_ref())?;
            core.release_pod_namespaces(&sandbox_id, shm.as_deref())
        })
        .await
        .map_err(|e| Error::internal(format!("pod sandbox stop task: {e}")))??;
        record.state = SandboxState::NotReady;
        record.network = None;
        record.endpoints.clear();
        self.persist_sandbox(&record)?;
        self.refresh_all_dns();
        entry.set(record.clone());
        self.sandbox_event(&record, Action::Stop);
        Ok(())
    }

    /// Stops the pod if needed, removes its containers and everything it
    /// made. A missing sandbox is NotFound.
    pub async fn remove(&self, id: &str) -> Result<()> {
        // Runs to its end even if the caller stops waiting.
        let core = self.clone();
        let id = id.to_owned();
        to_completion(async move { core.remove_now(&id).await }).await
    }

    async fn remove_now(&self, id: &str) -> Result<()> {
        let entry = self.require_sandbox(id)?;
        gone_is_done(self.stop_now(id).await)?;
        let _guard = entry.lock.lock().await;
        for c in self.containers_of(id) {
            gone_is_done(self.containers().remove(&c).await)?;
        }
        let record = entry.record();
        {
            let core = self.clone();
            let record = record.clone();
            tokio::task::spawn_blocking(move || {
                core.remove_sandbox_files(&record.id, Some(&record))
            })
            .await
            .map_err(|e| Error::internal(format!("pod sandbox removal task: {e}")))?;
        }
        self.store.write(Batch::new().delete(SANDBOXES, id))?;
        self.objects().sandboxes.remove(id);
        if !record.endpoints.is_empty() {
            self.refresh_all_dns();
        }
        self.release_name(&name_key(&record.config), id);
        self.sandbox_event(&record, Action::Destroy);
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.require_sandbox(id)?.record())
    }

    /// Sandboxes matching the filter (owner included), oldest first.
    pub fn list(&self, filter: &SandboxFilter) -> Vec<SandboxRecord> {
        let mut out: Vec<SandboxRecord> = self
            .objects()
            .sandboxes
            .values()
            .map(|e| e.record())
            .filter(|r| filter.owner.is_none_or(|o| o == r.owner))
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .filter(|r| labels_match(&r.config.labels, &filter.labels))
            .collect();
        out.sort_by_key(|r| r.created_at_ns);
        out
    }
}

impl Shared {
    /// Unpins the pod's namespaces and unmounts its shm (a stop, or a pod
    /// recovery finds NotReady). Blocking.
    pub(crate) fn release_pod_namespaces(
        &self,
        id: &str,
        shm: Option<&std::path::Path>,
    ) -> Result<()> {
        berth_ns::unpin(&self.pod_state_dir(id).join("ns"))?;
        if let Some(shm) = shm {
            rootfs::unmount_all(shm)?;
        }
        Ok(())
    }

    pub(crate) fn sandbox_entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.objects().sandboxes.get(id).cloned()
    }
    fn require_sandbox(&self, id: &str) -> Result<Arc<Entry>> {
        self.sandbox_entry(id)
            .ok_or_else(|| Error::not_found(format!("pod sandbox {id} not found")))
    }
    pub(crate) fn persist_sandbox(&self, record: &SandboxRecord) -> Result<()> {
        self.store
            .write(Batch::new().put(SANDBOXES, &record.id, record)?)
    }
    /// Why pods with a user namespace cannot run on `handler`, if they
    /// cannot: the runtime must join a user namespace by path with its id
    /// maps in the spec (runc ≥ 1.1 and crun ≥ 1.8 do; checked with runc
    /// 1.1.5 and crun 1.8.1, any other program is not assumed to), the
    /// root of the pod's user namespace must be able to reach the rootfs
    /// under `<state>/u` (every directory above it searchable by others),
    /// and the kernel must mount overlayfs over idmapped layers (≥ 5.19)
    /// from berth's root filesystem.
    pub(crate) fn user_namespace_support(&self, handler: &str) -> Result<()> {
        let runtime = self.runtime(handler)?;
        let program = &runtime.handler().program;
        let name = program.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !matches!(name, "runc" | "crun") {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "runtime handler {handler:?} runs {}, which berth does not know to join a user namespace by path (runc and crun do)",
                    program.display()
                ),
            ));
        }
        let base = self.userns_root();
        for dir in self.config.state_dir.ancestors() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o7777)?;
            if mode & 0o001 == 0 {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "{} (mode {mode:04o}) is not searchable by others: the root of a pod's user namespace could not reach container root filesystems under {}",
                        dir.display(),
                        base.display()
                    ),
                ));
            }
        }
        let root = &self.config.root;
        idmap::idmap_probe(&base, &[root.join("images"), root.join("pods")])
    }
    /// Where the root filesystems of containers in pods with a user
    /// namespace are mounted (`<state>/u/<id>/rootfs`): 0711, each
    /// container's directory 0710 with the group of its root.
    pub(crate) fn userns_root(&self) -> std::path::PathBuf {
        self.config.state_dir.join("u")
    }
    /// Cleans up a sandbox found on disk with no record (a crash mid-setup).
    /// The parent berth makes for a pod when kubelet names none.
    pub(crate) fn own_cgroup_parent(&self, id: &str) -> String {
        format!("{}/{id}", self.config.cgroup_root.trim_end_matches('/'))
    }

    pub(crate) fn remove_leftover_sandbox(&self, id: &str) {
        self.remove_sandbox_files(id, None);
        // Without its record only berth's own parent is known: the one a
        // pod gets when kubelet names none. Nothing else lives under it.
        let parent = self.own_cgroup_parent(id);
        if self.cgroups.exists(&parent) {
            if let Err(e) = self.cgroups.remove(&parent) {
                tracing::warn!(sandbox = %id, "remove cgroup parent: {e}");
            }
        }
    }
    /// Undoes everything a sandbox made on the node; missing parts are fine.
    fn remove_sandbox_files(&self, id: &str, record: Option<&SandboxRecord>) {
        let state = self.pod_state_dir(id);
        let netns = berth_ns::pin_file(&state.join("ns"), berth_ns::Kind::Net);
        let attachment = record.and_then(|r| r.network.as_ref());
        if let Err(e) = self.detach_network(id, Some(&netns), attachment) {
            tracing::warn!(sandbox = %id, "detach pod network: {e}");
        }
        if let Err(e) = berth_ns::unpin(&state.join("ns")) {
            tracing::warn!(sandbox = %id, "unpin namespaces: {e}");
        }
        let _ = rootfs::unmount_all(&state.join("shm"));
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(self.pod_dir(id));
        if let Some(r) = record {
            if r.owns_cgroup_parent {
                if let Err(e) = self.cgroups.remove(&r.cgroup_parent) {
                    tracing::warn!(sandbox = %id, "remove cgroup parent: {e}");
                }
            }
        }
    }
    /// The sandbox of a container request, which must be ready.
    pub(crate) fn ready_sandbox(&self, id: &str) -> Result<(Arc<Entry>, SandboxRecord)> {
        let entry = self.require_sandbox(id)?;
        let record = entry.record();
        record.state.check_accepts_containers(id)?;
        Ok((entry, record))
    }
}

/// A sandbox needs a name; a Kubernetes pod's also its namespace and uid,
/// and only Kubernetes pods carry them.
fn check_owner(owner: Owner, config: &PodConfig) -> Result<()> {
    let complete = |k: &PodMetadata| !k.namespace.is_empty() && !k.uid.is_empty();
    match (owner, &config.kubernetes) {
        _ if config.name.is_empty() => Err(Error::invalid("a pod sandbox needs a name")),
        (Owner::Kubernetes, Some(k)) if complete(k) => Ok(()),
        (Owner::Kubernetes, _) => Err(Error::invalid(
            "pod sandbox metadata needs a name, a namespace and a uid",
        )),
        (_, Some(_)) => Err(Error::invalid(
            "only Kubernetes pod sandboxes carry Kubernetes metadata",
        )),
        (_, None) => Ok(()),
    }
}

/// The id maps of a pod's user namespace (`None`: the node's), checked:
/// mode `POD` with exactly one uid and one gid range from container id 0
/// (what kubelet sends), nothing past the last id.
pub(crate) fn id_mappings(ns: &NamespaceOptions) -> Result<Option<berth_ns::IdMappings>> {
    let Some(user) = &ns.user else {
        return Ok(None);
    };
    let mode = match user.mode {
        NamespaceMode::Pod => "POD",
        NamespaceMode::Node => "NODE",
        NamespaceMode::Container => "CONTAINER",
        NamespaceMode::Target => "TARGET",
    };
    match user.mode {
        NamespaceMode::Node if user.uids.is_empty() && user.gids.is_empty() => return Ok(None),
        NamespaceMode::Node => {
            return Err(Error::invalid(
                "user namespace mode NODE takes no uid or gid mappings",
            ))
        }
        NamespaceMode::Pod => {}
        _ => {
            return Err(Error::invalid(format!(
                "user namespace mode {mode} is not supported: only POD or NODE"
            )))
        }
    }
    let one = |what: &str, maps: &[IdMapping]| -> Result<berth_ns::IdMap> {
        let [m] = maps else {
            return Err(Error::invalid(format!(
                "user namespace: {} {what} mappings given; exactly one is supported",
                maps.len()
            )));
        };
        let fail = |why: &str| {
            Err(Error::invalid(format!(
                "user namespace {what} mapping (container {} host {} length {}): {why}",
                m.container_id, m.host_id, m.length
            )))
        };
        if m.container_id != 0 {
            return fail("must start at container id 0, the pod's root");
        }
        if m.length == 0 {
            return fail("length must be at least 1");
        }
        if m.host_id as u64 + m.length as u64 > 1 << 32 {
            return fail("runs past the last host id 4294967295");
        }
        Ok(berth_ns::IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            size: m.length,
        })
    };
    Ok(Some(berth_ns::IdMappings {
        uids: vec![one("uid", &user.uids)?],
        gids: vec![one("gid", &user.gids)?],
    }))
}

/// The host uid and gid of the root of a user namespace with `maps`
/// (checked by [`id_mappings`]: the one range starts at container id 0).
pub(crate) fn host_root(maps: &berth_ns::IdMappings) -> (u32, u32) {
    (maps.uids[0].host_id, maps.gids[0].host_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(
        mode: NamespaceMode,
        uids: &[(u32, u32, u32)],
        gids: &[(u32, u32, u32)],
    ) -> NamespaceOptions {
        let maps = |m: &[(u32, u32, u32)]| {
            m.iter()
                .map(|&(container_id, host_id, length)| IdMapping {
                    container_id,
                    host_id,
                    length,
                })
                .collect()
        };
        NamespaceOptions {
            user: Some(UserNamespace {
                mode,
                uids: maps(uids),
                gids: maps(gids),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn user_namespace_requests_are_kubelets_shape_or_refused() {
        use NamespaceMode::*;
        let good = [(0, 100_000, 65_536)];
        assert_eq!(id_mappings(&NamespaceOptions::default()).unwrap(), None);
        assert_eq!(id_mappings(&ns(Node, &[], &[])).unwrap(), None);
        let maps = id_mappings(&ns(Pod, &good, &[(0, 200_000, 10)]))
            .unwrap()
            .unwrap();
        assert_eq!(host_root(&maps), (100_000, 200_000));
        assert_eq!(maps.gids[0].size, 10);
        for (opts, want) in [
            (
                ns(Node, &good, &[]),
                "mode NODE takes no uid or gid mappings",
            ),
            (ns(Container, &[], &[]), "mode CONTAINER is not supported"),
            (ns(Target, &[], &[]), "mode TARGET is not supported"),
            (ns(Pod, &[], &good), "0 uid mappings given"),
            (
                ns(Pod, &good, &[(0, 1, 1), (1, 2, 1)]),
                "2 gid mappings given; exactly one is supported",
            ),
            (
                ns(Pod, &[(1, 100_000, 65_536)], &good),
                "uid mapping (container 1 host 100000 length 65536): must start at container id 0",
            ),
            (
                ns(Pod, &[(0, 100_000, 0)], &good),
                "length must be at least 1",
            ),
            (
                ns(Pod, &good, &[(0, u32::MAX, 2)]),
                "runs past the last host id",
            ),
        ] {
            let e = id_mappings(&opts).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains(want), "want {want:?}: {e}");
        }
        // The last id itself is fine.
        assert!(id_mappings(&ns(Pod, &[(0, u32::MAX, 1)], &good)).is_ok());
    }
}
