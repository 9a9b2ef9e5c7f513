//! Start-up: reload every sandbox and container from the store, reconnect
//! to live monitors, record exits that happened while berthd was down, and
//! clean up what no record owns (half-made objects of a crash). A record
//! that cannot be read is moved aside and counted, never fatal: the node
//! keeps running everything else.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use berth_errdefs::Result;
use berth_store::Batch;
use serde::de::DeserializeOwned;

use crate::container::{self, CONTAINERS};
use crate::model::*;
use crate::sandbox::{self, SANDBOXES};
use crate::{Containers, Shared};

impl Shared {
    pub(crate) fn recover(self: &Arc<Self>) -> Result<()> {
        let sandboxes: Vec<SandboxRecord> = self.readable(SANDBOXES)?;
        let containers: Vec<ContainerRecord> = self.readable(CONTAINERS)?;
        let mut known_pods = BTreeSet::new();
        let mut records = Vec::new();
        for mut record in sandboxes {
            let id = record.id.clone();
            if record.state == SandboxState::Ready && !pins_alive(&record.namespaces) {
                tracing::warn!(sandbox = %id, "pinned namespaces are gone; the pod is not ready");
                if let Err(e) = self.detach_network(
                    &id,
                    record.namespaces.net.as_ref(),
                    record.network.as_ref(),
                ) {
                    tracing::warn!(sandbox = %id, "detach pod network: {e}");
                }
                // The pins that remain go too: a NotReady pod holds none
                // (StopPodSandbox has nothing left to release).
                if let Err(e) = self.release_pod_namespaces(&id, record.shm.as_deref()) {
                    tracing::warn!(sandbox = %id, "release the remaining namespaces: {e}");
                }
                record.state = SandboxState::NotReady;
                record.network = None;
                // Kept aside for a Docker container started again later.
                let lost = std::mem::take(&mut record.endpoints);
                if !lost.is_empty() {
                    record.lost_endpoints = lost;
                }
                self.persist_sandbox(&record)?;
            }
            records.push(record.clone());
            let mut objects = self.objects();
            objects
                .names
                .insert(sandbox::name_key(&record.config), id.clone());
            objects
                .sandboxes
                .insert(id.clone(), sandbox::Entry::new(record));
            known_pods.insert(id);
        }
        let mut known_containers = BTreeSet::new();
        for record in containers {
            let id = record.id.clone();
            let Some(pod) = self.sandbox_entry(&record.sandbox_id) else {
                tracing::warn!(container = %id, "its pod sandbox is gone; removing it");
                self.kill_leftover_container(&id);
                self.store.write(Batch::new().delete(CONTAINERS, &id))?;
                continue;
            };
            let live = record.state.is_live();
            let entry = container::Entry::new(record.clone());
            {
                let mut objects = self.objects();
                objects.names.insert(
                    container::name_key(&record.config, &pod.record().config),
                    id.clone(),
                );
                objects.containers.insert(id.clone(), entry.clone());
            }
            if live {
                match self.monitors.live(&self.container_state_dir(&id), &id) {
                    Some(pid) => Containers::new(self.clone()).watch_monitor(&id, pid),
                    None => {
                        let r = self.apply_exit(&entry);
                        entry.exited.send_replace(true);
                        tracing::info!(container = %id, exit_code = r.exit_code,
                            "container exited while berthd was down");
                        if let Ok(runtime) = self.runtime(&r.runtime_handler) {
                            let _ = runtime.delete(&id, true);
                        }
                    }
                }
            }
            known_containers.insert(id);
        }
        self.collect_leftovers(&known_pods, &known_containers);
        // After the leftovers: their networks were detached by id already.
        if let Err(e) = self.recover_network(&records) {
            tracing::warn!("remove orphaned pod networks: {e}");
        }
        self.start_all_dns();
        crate::build::remove_leftovers(&self.config.root);
        self.resume_docker_cleanup();
        Ok(())
    }

    /// The records of `table` that decode; each one that does not is
    /// logged, counted and moved aside (its bytes kept for an admin).
    fn readable<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for (key, bytes) in self.store.list_raw(table)? {
            match serde_json::from_slice(&bytes) {
                Ok(record) => out.push(record),
                Err(e) => {
                    self.unreadable_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(table, key = %key,
                        "unreadable record ({e}): moved aside, the node keeps running the rest");
                    if let Err(e) = self.store.move_aside(table, &key) {
                        tracing::error!(table, key = %key, "move the unreadable record aside: {e}");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes directories (and what they hold) that no record owns.
    fn collect_leftovers(&self, pods: &BTreeSet<String>, containers: &BTreeSet<String>) {
        let unknown = |dir: &Path, known: &BTreeSet<String>| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| !known.contains(n))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut stray: BTreeSet<String> = unknown(&self.config.root.join("containers"), containers)
            .into_iter()
            .collect();
        stray.extend(unknown(&self.config.state_dir.join("c"), containers));
        for id in stray {
            tracing::warn!(container = %id, "removing a container left half-made");
            self.kill_leftover_container(&id);
        }
        let mut stray: BTreeSet<String> = unknown(&self.config.root.join("pods"), pods)
            .into_iter()
            .collect();
        stray.extend(unknown(&self.config.state_dir.join("pods"), pods));
        for id in stray {
            tracing::warn!(sandbox = %id, "removing a pod sandbox left half-made");
            self.remove_leftover_sandbox(&id);
        }
    }

    fn kill_leftover_container(&self, id: &str) {
        for runtime in self.runtimes.values() {
            let _ = runtime.delete(id, true);
        }
        self.remove_container_files(id, "");
    }
}

/// Whether every namespace the pod pinned is still pinned.
fn pins_alive(ns: &SandboxNamespaces) -> bool {
    [&ns.net, &ns.ipc, &ns.uts, &ns.pid]
        .into_iter()
        .flatten()
        .all(|p| berth_ns::is_pinned(p))
}
