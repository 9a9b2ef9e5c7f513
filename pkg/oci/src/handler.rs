//! Runtime handlers: the CRI `runtime_handler` (a RuntimeClass) names one.

use std::path::{Path, PathBuf};

use berth_cgroups::Mode;

/// How to invoke one OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandler {
    /// The RuntimeClass handler name; `""` is the default handler.
    pub name: String,
    /// The program to execute (the runtime, or a wrapper in front of it).
    pub program: PathBuf,
    /// Arguments placed before the runtime's own global flags.
    pub argv_prefix: Vec<String>,
    /// The runtime's state directory (`--root`).
    pub root: PathBuf,
    /// The runtime binary itself, when `program` + `argv_prefix` is the
    /// hybrid-host wrapper around it (a private mount namespace with an
    /// empty `/sys/fs/cgroup/unified`). `start`, `kill` and `state` set up
    /// no cgroups and run it directly; the monitor makes that namespace
    /// itself before `create`. Each saves the wrapper's three processes.
    pub direct: Option<PathBuf>,
}

/// The shell step that hides the v2 tree from crun on a hybrid host. `$0`
/// is the crun binary, `$@` its arguments. The mount is private to the
/// namespace `unshare` made, so the host's hierarchies are never touched.
const HIDE_UNIFIED: &str = "mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec \"$0\" \"$@\"";

fn find(binary: &str) -> Option<PathBuf> {
    [
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
    ]
    .iter()
    .map(|d| Path::new(d).join(binary))
    .find(|p| p.is_file())
}

/// The handlers this host can offer: `crun` (wrapped on hybrid hosts) and
/// `runc` when installed, each with a state root under `state_dir`; the
/// default handler `""` is crun when present, else runc.
pub fn default_handlers(mode: Mode, state_dir: &Path) -> Vec<RuntimeHandler> {
    let mut out = Vec::new();
    if let Some(crun) = find("crun") {
        let root = state_dir.join("crun");
        let handler = if mode == Mode::Hybrid {
            RuntimeHandler {
                name: "crun".into(),
                program: find("unshare").unwrap_or_else(|| "unshare".into()),
                argv_prefix: vec![
                    "--mount".into(),
                    "--propagation".into(),
                    "private".into(),
                    "/bin/sh".into(),
                    "-c".into(),
                    HIDE_UNIFIED.into(),
                    crun.display().to_string(),
                ],
                root,
                direct: Some(crun),
            }
        } else {
            RuntimeHandler {
                name: "crun".into(),
                program: crun,
                argv_prefix: Vec::new(),
                root,
                direct: None,
            }
        };
        out.push(handler);
    }
    if let Some(runc) = find("runc") {
        out.push(RuntimeHandler {
            name: "runc".into(),
            program: runc,
            argv_prefix: Vec::new(),
            root: state_dir.join("runc"),
            direct: None,
        });
    }
    if let Some(first) = out.first() {
        out.insert(
            0,
            RuntimeHandler {
                name: String::new(),
                ..first.clone()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crun_is_wrapped_only_on_hybrid_hosts() {
        let dir = Path::new("/run/berth-test");
        let hybrid = default_handlers(Mode::Hybrid, dir);
        let legacy = default_handlers(Mode::Unified, dir);
        if let Some(crun) = hybrid.iter().find(|h| h.name == "crun") {
            assert!(crun.program.ends_with("unshare"));
            assert!(crun.argv_prefix.iter().any(|a| a == HIDE_UNIFIED));
            let plain = legacy.iter().find(|h| h.name == "crun").unwrap();
            assert!(plain.program.ends_with("crun"));
            assert!(plain.argv_prefix.is_empty());
            assert_eq!(hybrid[0].name, "", "crun is the default handler");
            assert_eq!(hybrid[0].program, crun.program);
        }
        for h in &hybrid {
            assert!(h.root.starts_with(dir));
        }
    }
}
