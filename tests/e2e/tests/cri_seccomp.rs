//! Seccomp precompiled once (issue 18) is exactly as strict as the profile
//! the runtime compiles itself: a probe inside containers calls syscalls
//! Docker's default profile denies and allows, under crun with berth's
//! precompiled filter, under runc compiling the spec's profile, and
//! unconfined as the control that shows seccomp is what refuses them.

use std::collections::BTreeMap;
use std::path::Path;

use berth_e2e::*;
use berth_testkit::TestDaemon;
use k8s_cri::v1 as api;

const PROBE: &str = env!("CARGO_BIN_EXE_syscall-probe");

/// The probe and the host's libc, bound read-only into the container.
fn probe_mounts() -> Vec<api::Mount> {
    let ro = |host: &str, ctr: &str| api::Mount {
        container_path: ctr.into(),
        host_path: host.into(),
        readonly: true,
        ..Default::default()
    };
    let mut mounts = vec![ro(PROBE, "/probe")];
    for lib in ["/lib/x86_64-linux-gnu", "/lib64"] {
        assert!(
            Path::new(lib).exists(),
            "{lib} missing: the probe needs the host's libc"
        );
        mounts.push(ro(lib, lib));
    }
    mounts
}

/// Runs the probe in a new container of a pod on `handler`; returns its
/// `name=errno` lines and the `Seccomp:` mode of the container's first
/// process.
async fn probe(
    rt: &mut Runtime,
    d: &TestDaemon,
    image: &str,
    handler: &str,
    profile: api::security_profile::ProfileType,
) -> (BTreeMap<String, String>, String) {
    let name = format!(
        "probe-{}-{}",
        if handler.is_empty() { "crun" } else { handler },
        profile as i32
    );
    let pod = run_pod(rt, pod_config(&name, &d.dir().join("logs")), handler).await;
    let mut cc = container_config(&name, image, &["sleep", "3600"]);
    cc.mounts = probe_mounts();
    cc.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            run_as_user: Some(api::Int64Value { value: 0 }),
            seccomp: Some(api::SecurityProfile {
                profile_type: profile as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ctr = run_container(rt, &pod, cc).await;
    let out = exec_out(rt, &ctr, &["/probe"]).await;
    let init = exec_out(rt, &ctr, &["cat", "/proc/1/status"]).await;
    teardown(rt, &pod).await;
    let results = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let init_mode = init
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    (results, init_mode)
}

/// `cc` asking for the runtime's default seccomp profile.
fn runtime_default(mut cc: api::ContainerConfig) -> api::ContainerConfig {
    cc.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            seccomp: Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cc
}

/// The spec crun was given for the one container under `root`.
fn specs_under(root: &Path) -> Vec<serde_json::Value> {
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(root.join("containers"))
        .unwrap()
        .flatten()
    {
        let file = entry.path().join("bundle/config.json");
        if let Ok(bytes) = std::fs::read(&file) {
            specs.push(serde_json::from_slice(&bytes).unwrap());
        }
    }
    specs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_precompiled_default_profile_is_as_strict_as_the_runtimes_own() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    use api::security_profile::ProfileType;

    // crun is handed the filter precompiled, not the profile.
    let pod = run_pod(&mut rt, pod_config("spec", &d.dir().join("logs")), "").await;
    let cc = container_config("spec", &image, &["sleep", "3600"]);
    let ctr = run_container(&mut rt, &pod, runtime_default(cc)).await;
    let specs = specs_under(&d.root);
    assert_eq!(specs.len(), 1);
    let bpf = specs[0]["annotations"][berth_oci::seccomp_bpf::BPF_ANNOTATION]
        .as_str()
        .expect("crun's spec carries the precompiled filter");
    assert!(bpf.len() > 1000, "a filter of {} base64 bytes", bpf.len());
    assert!(
        specs[0]["linux"]["seccomp"].is_null(),
        "crun would compile it again"
    );
    let status = exec_out(&mut rt, &ctr, &["cat", "/proc/1/status"]).await;
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    teardown(&mut rt, &pod).await;

    let (crun, crun_init) = probe(&mut rt, &d, &image, "", ProfileType::RuntimeDefault).await;
    let (runc, runc_init) = probe(&mut rt, &d, &image, "runc", ProfileType::RuntimeDefault).await;
    let (open, open_init) = probe(&mut rt, &d, &image, "", ProfileType::Unconfined).await;

    let eperm = libc::EPERM.to_string();
    let expected: BTreeMap<String, String> = [
        ("getpid", "0".to_string()),
        ("uname", "0".to_string()),
        ("personality_query", "0".to_string()),
        ("personality_no_randomize", eperm.clone()),
        ("keyctl", eperm.clone()),
        ("add_key", eperm.clone()),
        ("kexec_load", eperm.clone()),
        ("mount", eperm.clone()),
        ("clone3", libc::ENOSYS.to_string()),
        ("unshare_user", eperm.clone()),
        ("seccomp", "2".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(crun, expected, "crun with the precompiled filter");
    assert_eq!(runc, expected, "runc compiling the spec's profile");
    assert_eq!((crun_init.as_str(), runc_init.as_str()), ("2", "2"));

    // The control: unconfined, the same calls get other answers, so the
    // refusals above are seccomp's.
    assert_eq!(open["seccomp"], "0");
    assert_eq!(open_init, "0");
    for name in ["personality_no_randomize", "keyctl", "add_key", "clone3"] {
        assert_ne!(open[name], crun[name], "{name} unconfined: {open:?}");
    }
    d.assert_no_leaks();
}

/// `--seccomp-precompile false` (the benchmark's "before"): crun gets the
/// profile to compile itself, and the container is just as confined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_precompilation_crun_compiles_the_profile_itself() {
    let reg = berth_testkit::TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::builder()
        .arg("--seccomp-precompile")
        .arg("false")
        .start()
        .await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    let image = reg.image("busybox");
    let pod = run_pod(&mut rt, pod_config("own", &d.dir().join("logs")), "").await;
    let cc = container_config("own", &image, &["sleep", "3600"]);
    let ctr = run_container(&mut rt, &pod, runtime_default(cc)).await;
    let specs = specs_under(&d.root);
    assert_eq!(specs.len(), 1);
    assert!(
        specs[0]["annotations"][berth_oci::seccomp_bpf::BPF_ANNOTATION].is_null(),
        "no precompiled filter when precompilation is off"
    );
    let syscalls = specs[0]["linux"]["seccomp"]["syscalls"].as_array();
    assert!(
        syscalls.is_some_and(|s| !s.is_empty()),
        "the profile is left in the spec for crun: {}",
        specs[0]["linux"]["seccomp"]
    );
    let status = exec_out(&mut rt, &ctr, &["cat", "/proc/1/status"]).await;
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    let denied = exec_out(
        &mut rt,
        &ctr,
        &["sh", "-c", "/bin/busybox unshare -U true; echo rc=$?"],
    )
    .await;
    assert!(
        denied.contains("rc=1"),
        "unshare -U under the default profile: {denied}"
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}
