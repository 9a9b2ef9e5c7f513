//! The Docker API through a second, independent client: docker-py
//! (tests/e2e/clients/docker_py.py), so that what the docker CLI
//! tolerates is not all berth answers correctly.

use std::process::Command;

use berth_e2e::*;
use berth_testkit::TestDaemon;
use serde_json::Value;

/// Runs one docker-py flow against `d`; its JSON answer.
fn docker_py(d: &TestDaemon, flow: &[&str]) -> Value {
    let script = berth_testkit::workspace_root().join("tests/e2e/clients/docker_py.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(d.docker_socket())
        .args(flow)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "docker-py flow {flow:?} failed (is python3-docker installed? hack/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("docker-py client JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_negotiates_and_reads_the_node() {
    let d = TestDaemon::start().await;
    let v = docker_py(&d, &["system"]);
    assert_eq!(v["ping"], true, "{v}");
    assert_eq!(v["api_version"], "1.41", "{v}");
    assert_eq!(v["server_api"], "1.41", "{v}");
    assert_eq!(v["os"], "linux", "{v}");
    assert_eq!(v["cgroup_version"], "1", "{v}");
    assert_eq!(v["containers"], 0, "{v}");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_sees_a_kubernetes_container() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let pod = run_pod(&mut rt, pod_config("py", &d.dir().join("logs/py")), "").await;
    let image = reg.image("busybox");
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("app", &image, &["sleep", "600"]),
    )
    .await;
    let name = "k8s_app_py_default_uid-py_0";
    let v = docker_py(&d, &["inspect", name]);
    assert_eq!(v["id"], ctr.as_str(), "{v}");
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["path"], "sleep", "{v}");
    assert_eq!(v["args"], serde_json::json!(["600"]), "{v}");
    assert_eq!(v["ip"], pod_ip(&mut rt, &pod).await.as_str(), "{v}");
    assert!(
        v["listed"].as_array().unwrap().iter().any(|n| n == name),
        "{v}"
    );
    let missing = docker_py(&d, &["inspect", "nope"]);
    assert_eq!(missing["error"], 404, "{missing}");
    assert_eq!(
        missing["explanation"], "No such container: nope",
        "{missing}"
    );
    teardown(&mut rt, &pod).await;
    d.assert_no_leaks();
}
