//! The Docker Engine API front door: the docker CLI and SDKs over the
//! berth core. It translates Docker's JSON and streams into calls on
//! `berth_core` services and back, and nothing else; `hack/lint-deps.sh`
//! keeps it off the leaf crates.
//!
//! Modules:
//! - `listen`: the unix socket and TLS listeners, the headers every answer carries;
//! - `router`: the version prefix and the (method, path) table;
//! - `http`, `filters`, `clock`, `error`: bodies, queries, filters,
//!   times and the one error mapping, as dockerd has them;
//! - `version`, `system`: `/_ping`, `/version`, `/info`;
//! - `view`, `containers`: containers as Docker sees them (Kubernetes ones
//!   under dockershim's `k8s_…` names), `ps` and `inspect`;
//! - `create`, `lifecycle`: Docker's own containers (a sandbox each, in
//!   the core): create, start, stop, kill, restart, wait, rename, rm, prune.
//! - `events`, `stats`, `observe` (top, diff), `archive` (cp), `df`:
//!   watching and looking into containers.
//! - `images`, `image_transfer`, `progress`, `registry_auth`, `names`:
//!   images (list, inspect, history, tag, rmi, prune, pull, push), the
//!   JSON progress streams, `X-Registry-Auth`, familiar names.

//! - `logs`, `attach`, `exec`, `hijack`: container I/O, streamed or on a
//!   hijacked connection, framed as dockerd frames it.

#![recursion_limit = "256"]

mod archive;
mod attach;
mod build;
pub mod clock;
mod containers;
mod create;
mod df;
mod error;
mod events;
mod exec;
pub mod filters;
mod hijack;
mod host;
pub mod http;
mod image_changes;
mod image_io;
mod image_transfer;
mod images;
mod lifecycle;
mod listen;
mod logs;
mod mounts;
mod names;
mod networks;
mod observe;
mod progress;
mod registry_auth;
pub mod router;
mod stats;
mod system;
mod version;
mod view;
mod volumes;

pub use error::{ApiError, ApiResult};

/// The front door's own state, shared by every connection: the core, and
/// what only the Docker API keeps (exec instances, for one).
pub struct Door {
    pub core: berth_core::Core,
    /// `docker exec` instances, made by create and run by start.
    pub(crate) execs: exec::Execs,
}

impl Door {
    pub fn new(core: berth_core::Core) -> std::sync::Arc<Door> {
        std::sync::Arc::new(Door {
            core,
            execs: exec::Execs::default(),
        })
    }
}
pub use listen::{serve_tcp_insecure, serve_tls, serve_unix, tls_config};
pub use rustls::ServerConfig as TlsConfig;
pub use version::{MAX_VERSION, MIN_VERSION};
