//! A Docker container started again after a node reboot: the reboot took
//! its sandbox's pinned namespaces, network and cgroup (recovery marked
//! the sandbox NotReady) and its rootfs mount, while its records, pod
//! files and writable layer stayed under the root dir. They are made
//! again in place, at the same paths the container's spec names, as
//! dockerd makes a container's network and rootfs again at its start.

use berth_errdefs::{Error, Result};

use crate::local_driver::is_mount_point;
use crate::model::{ContainerRecord, Owner, SandboxState};
use crate::{rootfs, Containers};

impl Containers {
    /// Makes again what a reboot took from `record`'s sandbox and rootfs;
    /// nothing when all is there. The caller holds the container's lock.
    pub(crate) async fn revive_after_reboot(&self, record: &ContainerRecord) -> Result<()> {
        if record.owner != Owner::Docker {
            return Ok(());
        }
        let Some(sandbox) = self.sandbox_entry(&record.sandbox_id) else {
            return Ok(());
        };
        let _pod_guard = sandbox.lock.lock().await;
        let old = sandbox.record();
        let (core, r, entry) = (self.clone(), record.clone(), sandbox.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            if old.owner == Owner::Docker && old.state == SandboxState::NotReady {
                let made = core.sandboxes().make_sandbox(
                    &old.id,
                    Owner::Docker,
                    old.config.clone(),
                    &revived_wiring(&old),
                );
                let made = match made {
                    Ok(m) => m,
                    Err(e) => {
                        // What it pinned before it failed goes again.
                        let _ = core.release_pod_namespaces(&old.id, old.shm.as_deref());
                        return Err(e.context(format!("make sandbox {} again", old.id)));
                    }
                };
                let made = crate::model::SandboxRecord {
                    created_at_ns: old.created_at_ns,
                    ..made
                };
                core.persist_sandbox(&made)?;
                entry.set(made);
                core.refresh_all_dns();
                tracing::info!(sandbox = %old.id, "pod sandbox made again after a reboot");
            }
            core.remount_rootfs(&r)
        })
        .await
        .map_err(|e| Error::internal(format!("container revive task: {e}")))?
    }

    /// Mounts the container's overlay rootfs again if it is not mounted.
    fn remount_rootfs(&self, record: &ContainerRecord) -> Result<()> {
        let dir = self.container_dir(&record.id);
        let bundle = dir.join("bundle");
        let rootfs_dir = bundle.join("rootfs");
        // A user-namespaced rootfs lives elsewhere; and a mounted one stays.
        if !rootfs_dir.is_dir() || is_mount_point(&rootfs_dir) {
            return Ok(());
        }
        let image = self.images.resolve(&record.image_id)?.ok_or_else(|| {
            Error::not_found(format!(
                "the image {} of container {} is gone",
                record.image_id, record.id
            ))
        })?;
        let layers = self.images.layer_dirs(&image)?;
        rootfs::mount_overlay(&layers, &dir.join("upper"), &dir.join("work"), &rootfs_dir)
            .map_err(|e| e.context(format!("mount the rootfs of {} again", record.id)))
    }
}

/// How a sandbox the reboot took is wired again: as it was made.
fn revived_wiring(old: &crate::model::SandboxRecord) -> crate::networks::Wiring {
    use crate::networks::{UserJoin, Wiring};
    if old.no_network {
        return Wiring::Loopback;
    }
    if old.lost_endpoints.is_empty() {
        return Wiring::Node;
    }
    Wiring::User(
        old.lost_endpoints
            .iter()
            .map(|e| UserJoin {
                network_id: e.network_id.clone(),
                aliases: e.aliases.clone(),
                names: e.names.clone(),
                ip: e.address,
            })
            .collect(),
    )
}
