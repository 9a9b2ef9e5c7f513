//! The harness every end-to-end test uses: it builds nothing, it starts the
//! berthd binary that `cargo build` made in a temporary root with its own
//! sockets, talks to it over the real CRI socket, and checks on teardown
//! that nothing was left behind.

mod daemon;
mod docker;
mod network;
mod registry;
mod token;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use daemon::{
    berthd_bin, cgroups_under, pauses_of, processes_mentioning, shim_bin, unix_channel, TestDaemon,
    TestDaemonBuilder,
};
pub use docker::DockerRun;
pub use network::TestNetwork;
pub use registry::{test_images, TestImages, TestRegistry};
pub use token::TokenServer;

/// The workspace checkout (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Polls `check` until it returns `Some`, or panics naming `what` at the deadline.
pub async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Mount points under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}
