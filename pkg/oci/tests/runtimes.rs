//! Every runtime handler this host offers runs a busybox container through
//! the driver: create, start, state, delete; errors name what went wrong;
//! nothing is left in the cgroup hierarchies afterwards.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_errdefs::ErrorKind;
use berth_oci::{default_handlers, OciRuntime};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Unpacks the busybox test image's layer as a rootfs.
fn busybox_rootfs(dest: &Path) {
    berth_testkit::test_images().unpack("busybox", dest);
}

/// A default spec from runc, made to print one line and exit.
fn write_spec(bundle: &Path, cgroups_path: &str) {
    let ok = Command::new("runc")
        .arg("spec")
        .current_dir(bundle)
        .status()
        .unwrap();
    assert!(ok.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "echo hello from $(id -u)"]);
    spec["linux"]["cgroupsPath"] = cgroups_path.into();
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

fn cgroup_leftovers(name: &str) -> Vec<String> {
    std::fs::read_dir(CGROUP_ROOT)
        .unwrap()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn each_handler_runs_a_container_and_cleans_up() {
    // CI runs as root; returning early would pass without checking anything.
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "needs root: run the suite as root");
    let mode = berth_cgroups::detect(Path::new(CGROUP_ROOT)).unwrap();
    let cgroups = berth_cgroups::open(Path::new(CGROUP_ROOT)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let handlers = default_handlers(mode, &work.path().join("state"));
    assert!(
        handlers.iter().any(|h| h.name == "crun") && handlers.iter().any(|h| h.name == "runc"),
        "crun and runc are installed by hack/install-deps.sh: {handlers:?}"
    );
    let parent = format!("berth-oci-test-{}", std::process::id());

    for handler in handlers.into_iter().filter(|h| !h.name.is_empty()) {
        let name = handler.name.clone();
        let runtime = OciRuntime::new(handler);
        let bundle = work.path().join(&name);
        busybox_rootfs(&bundle.join("rootfs"));
        write_spec(&bundle, &format!("/{parent}/{name}"));
        let out_path = bundle.join("output");
        let out = std::fs::File::create(&out_path).unwrap();
        let id = format!("berth-test-{name}");

        runtime
            .create(
                &id,
                &bundle,
                &bundle.join("pid"),
                Stdio::from(out.try_clone().unwrap()),
                Stdio::from(out),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{name} create: {e}: {}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                )
            });
        assert_eq!(runtime.state(&id).unwrap().status, "created", "{name}");
        runtime.start(&id).unwrap();
        let start = Instant::now();
        while runtime.state(&id).unwrap().status != "stopped" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: never stopped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&out_path).unwrap().trim(),
            "hello from 0",
            "{name}"
        );
        runtime.delete(&id, false).unwrap();
        let gone = runtime.state(&id).unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound, "{name}: {gone}");
        let missing = runtime.delete("no-such-container", false).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound, "{name}: {missing}");
        assert!(missing.message.contains("no-such-container"), "{missing}");
    }
    // Runtimes remove the container's cgroup but not the parents they made.
    cgroups.remove(&format!("/{parent}")).unwrap();
    assert!(
        cgroup_leftovers(&parent).is_empty(),
        "{:?}",
        cgroup_leftovers(&parent)
    );
}
