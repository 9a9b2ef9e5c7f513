//! OCI runtime handlers and the driver for their command-line contract
//! (`create`, `start`, `state`, `kill`, `delete`), the same for crun, runc
//! or any other OCI runtime.
//!
//! A handler is *binary + argv prefix + root dir*: that is enough to run
//! crun on a hybrid-cgroup host (crun 1.8 refuses those) inside a private
//! mount namespace whose `/sys/fs/cgroup/unified` is an empty tmpfs, without
//! shipping a wrapper script. See docs/dev/architecture.md for the figures.

mod caps;
mod devices;
mod handler;
mod mounts;
mod passwd;
mod resources;
mod runtime;
pub mod seccomp;
pub mod spec;

pub use handler::{default_handlers, RuntimeHandler};
pub use runtime::{ContainerState, OciRuntime};
