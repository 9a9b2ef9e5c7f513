//! The runtime core. Front doors (CRI, Docker, metrics) translate their wire
//! types into calls on [`Core`] and back; nothing here knows gRPC or JSON
//! wire formats.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_errdefs::Result;
use berth_image::registries::RegistriesConfig;
use berth_image::service::ImageService;
use berth_store::Store;

pub use berth_errdefs::{Error, ErrorKind};

/// The cgroup driver kubelet must match (CRI `RuntimeConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// Settings the core needs, resolved by the daemon from its config file and flags.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Persistent state (`/var/lib/berth`).
    pub root: PathBuf,
    pub registries: RegistriesConfig,
    pub cgroup_driver: CgroupDriver,
}

/// One readiness condition, as CRI `Status` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: ConditionKind,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    RuntimeReady,
    NetworkReady,
}

pub struct Core {
    pub images: Arc<ImageService>,
    config: CoreConfig,
}

impl Core {
    /// Opens the store and the services under `config.root`.
    pub fn open(config: CoreConfig) -> Result<Core> {
        let store = Arc::new(Store::open(&config.root)?);
        let images = Arc::new(ImageService::open(
            &config.root.join("images"),
            store,
            config.registries.clone(),
        )?);
        Ok(Core { images, config })
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.config.cgroup_driver
    }

    /// Readiness as it truly is: this build serves images but does not yet
    /// run pod sandboxes or give them networks, so both conditions say so.
    pub fn conditions(&self) -> Vec<Condition> {
        vec![
            Condition {
                kind: ConditionKind::RuntimeReady,
                ready: false,
                reason: "PodSandboxesNotImplemented".to_string(),
                message: "berthd serves the CRI ImageService; pod sandboxes and containers are not implemented in this build".to_string(),
            },
            Condition {
                kind: ConditionKind::NetworkReady,
                ready: false,
                reason: "NoPodNetwork".to_string(),
                message: "no pod network backend is implemented in this build".to_string(),
            },
        ]
    }
}
