//! OCI runtime handlers and the driver for their command-line contract
//! (`create`, `start`, `state`, `kill`, `delete`), the same for crun, runc
//! or any other OCI runtime.
//!
//! A handler is *binary + argv prefix + root dir*, plus whether the runtime
//! runs in a private mount namespace whose `/sys/fs/cgroup/unified` is an
//! empty tmpfs: crun 1.8 refuses hybrid-cgroup hosts otherwise. That
//! namespace is made between fork and exec, with no wrapper process or
//! script. See docs/dev/architecture.md for the figures.

mod caps;
mod devices;
mod handler;
mod mounts;
pub mod passwd;
mod resources;
mod runtime;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod spec;

pub use handler::{default_handlers, hide_cgroup2, RuntimeHandler};
pub use mounts::{parse_mountinfo, MadeDirs};
pub use runtime::{ContainerState, OciRuntime};
