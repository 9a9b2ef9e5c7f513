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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_pulls_the_image_the_cli_inspects() {
    let reg = berth_testkit::TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    let image = reg.image("busybox");
    let v = docker_py(&d, &["pull", &image]);
    let cli_id = d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &image]);
    assert_eq!(v["id"], cli_id.trim(), "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("sha256:"), "{v}");
    assert_eq!(v["tags"], serde_json::json!([image]), "{v}");
    assert_eq!(docker_py(&d, &["image", &image])["id"], v["id"]);

    // An image that is not there: locally, and in the registry.
    let missing = docker_py(&d, &["image", "nothere:1"]);
    assert_eq!(missing["error"], 404, "{missing}");
    assert_eq!(
        missing["explanation"], "No such image: nothere:1",
        "{missing}"
    );
    let missing = docker_py(&d, &["create", "nothere:1"]);
    assert_eq!(missing["error"], 404, "{missing}");
    assert_eq!(
        missing["explanation"], "No such image: nothere:1",
        "{missing}"
    );
    let made = docker_py(&d, &["create", &image]);
    assert_eq!(made["status"], "created", "{made}");
    let unknown = format!("{}/nothere:1", reg.addr);
    let missing = docker_py(&d, &["pull", &unknown]);
    assert_eq!(missing["error"], 404, "{missing}");
    assert!(
        missing["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("nothere")),
        "{missing}"
    );
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_runs_waits_and_reads_each_stream() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let v = docker_py(&d, &["run", &reg.image("busybox")]);
    assert_eq!(v["wait"]["StatusCode"], 3, "{v}");
    assert_eq!(v["stdout"], "out\n", "{v}");
    assert_eq!(v["stderr"], "err\n", "{v}");
    let both = v["both"].as_str().unwrap();
    assert!(both.contains("out\n") && both.contains("err\n"), "{v}");
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "", "run removed its container");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_execs_stops_a_stubborn_process_and_removes_it() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let started = docker_py(&d, &["start", &reg.image("busybox"), "stubborn"]);
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["id"].as_str().map(str::len), Some(64), "{started}");

    let v = docker_py(&d, &["exec", "stubborn"]);
    assert_eq!(
        v["plain"],
        serde_json::json!({"code": 0, "output": "hello\n"})
    );
    assert_eq!(v["failing"]["code"], 4, "{v}");
    assert_eq!(v["split"]["code"], 7, "{v}");
    assert_eq!(v["split"]["stdout"], "out\n", "{v}");
    assert_eq!(v["split"]["stderr"], "err\n", "{v}");
    // Env (added to the container's, overriding PATH), workdir and user.
    assert_eq!(v["options"]["code"], 0, "{v}");
    assert_eq!(
        v["options"]["output"], "1 two words\n/tmp\n1000\n50\n",
        "{v}"
    );
    assert_eq!(v["by_name"]["output"], "app\n1000\n", "{v}");
    assert_eq!(v["env_list"]["output"], "/bin\n", "{v}");

    let v = docker_py(&d, &["stop", "stubborn"]);
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit_code"], 137, "SIGKILL after the timeout: {v}");
    assert!(v["took"].as_f64().unwrap() >= 1.0, "{v}");
    let gone = docker_py(&d, &["inspect", "stubborn"]);
    assert_eq!(gone["error"], 404, "{gone}");
    assert_eq!(gone["explanation"], "No such container: stubborn", "{gone}");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_shares_a_volume_and_cannot_remove_it_in_use() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let v = docker_py(&d, &["volume", &reg.image("busybox")]);
    assert_eq!(v["read"], "shared\n", "{v}");
    assert_eq!(v["in_use"]["status"], 409, "{v}");
    let why = v["in_use"]["explanation"].as_str().unwrap_or_default();
    let holder = v["holder"].as_str().unwrap();
    assert!(
        why.contains("volume is in use") && why.contains(holder),
        "{v}"
    );
    assert_eq!(v["labelled"], serde_json::json!(["pyvol"]), "{v}");
    assert_eq!(v["driver"], "local", "{v}");
    assert_eq!(
        v["mountpoint"],
        d.root.join("volumes/pyvol/_data").display().to_string(),
        "{v}"
    );
    assert_eq!(v["left"], serde_json::json!([]), "{v}");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_makes_volumes_with_options_tmpfs_mounts_and_prunes() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let v = docker_py(&d, &["volume_options", &reg.image("busybox")]);
    assert_eq!(
        v["options"],
        serde_json::json!({"type": "tmpfs", "device": "tmpfs", "o": "size=16m"}),
        "{v}"
    );
    let line = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    assert!(line("in_volume").starts_with("tmpfs /t tmpfs"), "{v}");
    assert!(line("in_volume").contains("size=16384k"), "{v}");
    assert!(line("mounted").starts_with("tmpfs /m tmpfs"), "{v}");
    assert!(line("mounted").contains("size=1024k,mode=1770"), "{v}");
    assert!(line("tmpfs_param").contains("size=2048k"), "{v}");
    assert_eq!(v["bad"]["status"], 400, "{v}");
    assert_eq!(
        v["bad"]["explanation"], r#"create pybad: invalid option: "colour""#,
        "{v}"
    );
    let listed = &v["listed"];
    assert_eq!(listed["name"], serde_json::json!(["pytmp"]), "{v}");
    assert_eq!(listed["dangling"], serde_json::json!(["pyspare"]), "{v}");
    assert_eq!(listed["in_use"], serde_json::json!(["pytmp"]), "{v}");
    assert_eq!(listed["label"], serde_json::json!(["pytmp"]), "{v}");
    assert_eq!(
        listed["driver"],
        serde_json::json!(["pyspare", "pytmp"]),
        "{v}"
    );
    assert_eq!(v["pruned"], serde_json::json!(["pyspare"]), "{v}");
    assert_eq!(v["left"], serde_json::json!([]), "{v}");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_py_creates_connects_inspects_and_removes_a_network() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    // 10.123/16 is the user network tests' range; .251 is this test's.
    let subnet = "10.123.251.0/24";
    let v = docker_py(&d, &["network", &reg.image("busybox"), subnet]);
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let bridge = berth_net::user_bridge_name(&id);
    // Whatever happened, the bridge goes with the test.
    let _cleanup = scopeguard(move || {
        let _ = berth_net::remove_bridge_network(&bridge);
    });
    assert_eq!(id.len(), 64, "{v}");
    assert_eq!(v["subnet"], subnet, "{v}");
    let container = v["container"].as_str().unwrap();
    let ip = v["ip"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.123.251."), "{v}");
    assert_eq!(v["members"][container]["name"], "pysleeper", "{v}");
    assert_eq!(v["members"][container]["ipv4"], format!("{ip}/24"), "{v}");
    assert_eq!(v["network_id"], id.as_str(), "{v}");
    assert!(
        v["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "pyalias"),
        "{v}"
    );
    assert!(v["eth1"].as_str().unwrap().contains(ip), "{v}");
    assert_eq!(v["in_use"]["status"], 403, "{v}");
    assert!(
        v["in_use"]["explanation"]
            .as_str()
            .unwrap()
            .contains("has active endpoints"),
        "{v}"
    );
    assert_eq!(v["after"], serde_json::json!(["bridge"]), "{v}");
    assert_eq!(v["labelled"], serde_json::json!(["pynet"]), "{v}");
    assert_eq!(
        v["left"],
        serde_json::json!(["bridge", "host", "none"]),
        "{v}"
    );
    assert!(
        !Command::new("ip")
            .args(["link", "show", &berth_net::user_bridge_name(&id)])
            .output()
            .unwrap()
            .status
            .success(),
        "bridge left"
    );
    d.stop();
    d.assert_no_leaks();
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
