//! The node service: what the runtime can do here and whether it is ready
//! (CRI `Status`, `RuntimeConfig`, `UpdateRuntimeConfig`; Docker `/info`).

use std::path::Path;

use berth_errdefs::{Error, Result};

use crate::{rootfs, CgroupDriver, Condition, ConditionKind};

crate::service_handle! {
    /// Node-wide facts and settings. A cheap handle.
    Node
}

impl Node {
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.config.cgroup_driver
    }

    /// Names of the configured runtime handlers.
    pub fn runtime_handlers(&self) -> Vec<String> {
        self.runtimes.keys().cloned().collect()
    }

    /// Each runtime handler with the program it runs (Docker `/info`'s
    /// `Runtimes`); `""` is the default handler.
    pub fn runtime_programs(&self) -> Vec<(String, std::path::PathBuf)> {
        self.config
            .handlers
            .iter()
            .map(|h| (h.name.clone(), h.program.clone()))
            .collect()
    }

    /// The cgroup version containers are limited by: 1 on legacy and
    /// hybrid hosts (the v2 tree there holds no controller), 2 on unified.
    pub fn cgroup_version(&self) -> u8 {
        match self.cgroups.mode() {
            berth_cgroups::Mode::Unified => 2,
            berth_cgroups::Mode::Legacy | berth_cgroups::Mode::Hybrid => 1,
        }
    }

    /// Whether containers of `handler` can have recursive read-only mounts.
    /// berth makes them itself (see `stage_recursive_readonly`), so every
    /// configured handler can on a kernel with `mount_setattr`.
    pub fn recursive_read_only_mounts(&self, handler: &str) -> bool {
        self.runtimes.contains_key(handler) && rootfs::recursive_readonly_supported()
    }

    /// Whether pods with a user namespace run on `handler` here (CRI
    /// `RuntimeHandlerFeatures.user_namespaces`).
    pub fn user_namespaces(&self, handler: &str) -> bool {
        self.user_namespace_support(handler).is_ok()
    }

    /// Readiness as it truly is, asked of the runtime handlers, the monitor
    /// binary and the pod network backend.
    pub fn conditions(&self) -> Vec<Condition> {
        let (runtime_ready, reason, message) = if self.runtimes.is_empty() {
            (
                false,
                "NoRuntimeHandler",
                "no OCI runtime (crun, runc) was found".to_string(),
            )
        } else if !self.config.shim.is_file() {
            (
                false,
                "NoContainerMonitor",
                format!(
                    "the container monitor {} is missing",
                    self.config.shim.display()
                ),
            )
        } else {
            (true, "", String::new())
        };
        vec![
            Condition {
                kind: ConditionKind::RuntimeReady,
                ready: runtime_ready,
                reason: reason.to_string(),
                message,
            },
            self.network_condition(),
        ]
    }

    fn network_condition(&self) -> Condition {
        let state = match &self.network.backend {
            None => Err(berth_net::NotReady {
                reason: "NoPodNetwork".into(),
                message: "no pod network is configured (network.backend = \"none\"): pods get loopback only".into(),
            }),
            Some(b) => b.ready(),
        };
        let (ready, reason, message) = match state {
            Ok(()) => (true, String::new(), String::new()),
            Err(n) => (false, n.reason, n.message),
        };
        Condition {
            kind: ConditionKind::NetworkReady,
            ready,
            reason,
            message,
        }
    }

    /// How many records recovery could not read at start (each moved
    /// aside and logged).
    pub fn unreadable_records(&self) -> u64 {
        self.unreadable_records
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// kubelet's pod CIDR (CRI `UpdateRuntimeConfig`).
    pub async fn update_pod_cidr(&self, cidr: &str) -> Result<()> {
        let Some(backend) = self.network.backend.clone() else {
            return Ok(());
        };
        let cidr = cidr.to_string();
        tokio::task::spawn_blocking(move || backend.set_pod_cidr(&cidr))
            .await
            .map_err(|e| Error::internal(format!("pod CIDR task: {e}")))?
    }
}
