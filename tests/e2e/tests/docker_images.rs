//! The Docker image endpoints end to end: the real docker CLI (v28, its
//! config dir isolated by testkit) against a real berthd and a real local
//! registry: pull with progress, images, inspect, history, tag, rmi
//! (untag, delete, 409 while a container uses the image), push and pull
//! back, prune, and dockerd's words for what is not there.

use base64::Engine as _;
use berth_e2e::*;
use berth_testkit::{test_images, TestDaemon, TestRegistry};
use serde_json::Value;

fn inspect(d: &TestDaemon, name: &str) -> Value {
    let out = d.docker_ok(&["image", "inspect", name]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// A bodiless POST on the docker socket: the status line and the body.
fn post(d: &TestDaemon, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.docker_socket()).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:")[..12].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_inspect_history_tag_and_rmi() {
    let want = test_images().get("layered");
    let reg = TestRegistry::start();
    reg.push(&["layered"]);
    let d = TestDaemon::start().await;
    let image = reg.image("layered");

    let pulled = d.docker_ok(&["pull", &image]);
    for line in [
        "latest: Pulling from layered".to_string(),
        "Pull complete".to_string(),
        format!("Digest: {}", want.manifest_digest),
        format!("Status: Downloaded newer image for {image}"),
    ] {
        assert!(pulled.contains(&line), "no {line:?} in:\n{pulled}");
    }
    let again = d.docker_ok(&["pull", &image]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {image}")),
        "{again}"
    );

    let listed = d.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert_eq!(listed.trim(), format!("{image} {}", want.config_digest));

    let v = inspect(&d, &image);
    assert_eq!(v["Id"], want.config_digest.as_str());
    assert_eq!(v["RepoTags"], serde_json::json!([image]));
    assert_eq!(
        v["RepoDigests"],
        serde_json::json!([format!("{}/layered@{}", reg.addr, want.manifest_digest)])
    );
    assert_eq!(v["RootFS"]["Type"], "layers");
    assert_eq!(
        v["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(want.layers)
    );
    assert_eq!(v["Os"], "linux");
    // The unpacked size, as dockerd counts it.
    assert!(v["Size"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["Size"], v["VirtualSize"]);
    assert!(v["Config"].get("Cmd").is_some(), "{v}");
    // By a short id too, as the CLI allows.
    assert_eq!(
        inspect(&d, &short(&want.config_digest))["Id"],
        want.config_digest.as_str()
    );

    let history = d.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.Size}}",
        &image,
    ]);
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines.len() >= want.layers, "{history}");
    assert!(lines[0].starts_with(&want.config_digest), "{history}");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("<missing>|")),
        "{history}"
    );
    assert!(
        lines.iter().any(|l| !l.ends_with("|0B")),
        "a layer's size shows: {history}"
    );

    // A second name: rmi of it only untags.
    let copy = format!("{}/copy:v2", reg.addr);
    d.docker_ok(&["tag", &image, &copy]);
    assert_eq!(inspect(&d, &copy)["Id"], want.config_digest.as_str());
    let out = d.docker_ok(&["rmi", &copy]);
    assert_eq!(out.trim(), format!("Untagged: {copy}"));
    // The last name: untagged with its digest, then deleted.
    let out = d.docker_ok(&["rmi", &image]);
    assert!(out.contains(&format!("Untagged: {image}")), "{out}");
    assert!(
        out.contains(&format!("Deleted: {}", want.config_digest)),
        "{out}"
    );
    let gone = d.docker(&["image", "inspect", &image]);
    assert_eq!(gone.status, Some(1));
    assert!(
        gone.stderr.contains(&format!("No such image: {image}")),
        "{}",
        gone.stderr
    );
    let listed = d.docker_ok(&["images", "-q"]);
    assert_eq!(listed.trim(), "", "nothing left");

    // What is not there, in dockerd's words.
    let rmi = d.docker(&["rmi", "nothere:1"]);
    assert_eq!(rmi.status, Some(1));
    assert!(
        rmi.stderr.contains("No such image: nothere:1"),
        "{}",
        rmi.stderr
    );
    let pull = d.docker(&["pull", &format!("{}/nothere:1", reg.addr)]);
    assert_eq!(pull.status, Some(1));
    assert!(
        pull.stderr.contains("Error response from daemon") && pull.stderr.contains("nothere"),
        "{}",
        pull.stderr
    );
    assert!(d
        .docker(&["history", "nothere:1"])
        .stderr
        .contains("No such image: nothere:1"));
    let tag = d.docker(&["tag", "nothere:1", "other:1"]);
    assert!(tag.stderr.contains("No such image: nothere:1"), "{tag:?}");
    // An untagged name reads as `:latest`, as dockerd words it.
    let untagged = d.docker(&["rmi", "nothere"]);
    assert!(
        untagged.stderr.contains("No such image: nothere:latest"),
        "{untagged:?}"
    );
    let push = d.docker(&["push", &format!("{}/nothere:1", reg.addr)]);
    assert_eq!(push.status, Some(1));
    assert!(
        push.stderr.contains(&format!(
            "An image does not exist locally with the tag: {}/nothere",
            reg.addr
        )),
        "{push:?}"
    );
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_registry_and_pull_back_the_same_image() {
    let want = test_images().get("layered");
    let reg = TestRegistry::start();
    reg.push(&["layered"]);
    let d = TestDaemon::start().await;
    let image = reg.image("layered");
    d.docker_ok(&["pull", &image]);

    let pushed_name = format!("{}/pushed/app:1", reg.addr);
    d.docker_ok(&["tag", &image, &pushed_name]);
    let out = d.docker_ok(&["push", &pushed_name]);
    for line in [
        format!("The push refers to repository [{}/pushed/app]", reg.addr),
        ": Pushed".to_string(),
        format!("1: digest: {} size:", want.manifest_digest),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
    let again = d.docker_ok(&["push", &pushed_name]);
    assert!(again.contains("Layer already exists"), "{again}");
    assert!(!again.contains(": Pushed"), "{again}");

    // Gone here, then pulled back from the registry: the same image.
    d.docker_ok(&["rmi", &pushed_name]);
    d.docker_ok(&["rmi", &image]);
    assert_eq!(d.docker_ok(&["images", "-q"]).trim(), "");
    d.docker_ok(&["pull", &pushed_name]);
    let v = inspect(&d, &pushed_name);
    assert_eq!(v["Id"], want.config_digest.as_str());
    assert_eq!(
        v["RepoDigests"],
        serde_json::json!([format!("{}/pushed/app@{}", reg.addr, want.manifest_digest)])
    );

    // Unused: prune -a removes it.
    let pruned = d.docker_ok(&["image", "prune", "-a", "-f"]);
    assert!(
        pruned.contains(&format!("deleted: {}", want.config_digest)),
        "{pruned}"
    );
    assert_eq!(d.docker_ok(&["images", "-q"]).trim(), "");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sends_the_clis_credentials_and_never_logs_them() {
    let reg = TestRegistry::start_with_auth("pusher", "s3cret-pass");
    reg.push_as(&["busybox"], Some(("pusher", "s3cret-pass")));
    let d = TestDaemon::start().await;
    let image = reg.image("busybox");
    let target = format!("{}/mine/bb:1", reg.addr);

    // Without credentials: refused, as a 401 before any progress (through
    // the socket: the CLI would ask for a login on a terminal).
    let (status, body) = post(&d, &format!("/v1.41/images/create?fromImage={image}"));
    assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{body}");
    assert!(body.contains("denied access"), "{body}");
    // The CLI's stored login for the registry, in its own config dir.
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret-pass");
    let config = d.dir().join("docker-config/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    d.docker_ok(&["pull", &image]);
    d.docker_ok(&["tag", &image, &target]);
    let out = d.docker_ok(&["push", &target]);
    assert!(
        out.contains(&format!(
            "1: digest: {}",
            test_images().get("busybox").manifest_digest
        )),
        "{out}"
    );
    let log = d.log();
    assert!(
        !log.contains("s3cret-pass"),
        "the password is in berthd's log"
    );
    assert!(!log.contains(&auth), "the auth header is in berthd's log");
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_container_uses_is_not_removed() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let id = test_images().get("busybox").config_digest.clone();
    let logs = d.dir().join("logs/user");
    let pod = run_pod(&mut rt, pod_config("user", &logs), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("app", &image, &["sleep", "3600"]),
    )
    .await;

    let rmi = d.docker(&["rmi", &image]);
    assert_eq!(rmi.status, Some(1));
    let expected = format!(
        "conflict: unable to remove repository reference \"{image}\" (must force) - container {} is using its referenced image {}",
        &ctr[..12],
        short(&id)
    );
    assert!(rmi.stderr.contains(&expected), "{}", rmi.stderr);
    let by_id = d.docker(&["rmi", &short(&id)]);
    assert_eq!(by_id.status, Some(1));
    assert!(
        by_id.stderr.contains("conflict: unable to delete"),
        "{}",
        by_id.stderr
    );
    assert_eq!(inspect(&d, &image)["Id"], id.as_str(), "still there");
    // Prune leaves what is used.
    d.docker_ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(inspect(&d, &id)["Id"], id.as_str());

    teardown(&mut rt, &pod).await;
    d.docker_ok(&["rmi", &image]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_fails_midway_ends_its_stream_with_the_error() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    // The layer, corrupted in the registry's storage: served under its
    // old digest, so the failure comes after the layer's first reports.
    let manifest = std::fs::read(
        images.dir.join("busybox/blobs/sha256").join(
            images
                .get("busybox")
                .manifest_digest
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_data_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let d = TestDaemon::start().await;
    let run = d.docker(&["pull", &reg.image("busybox")]);
    assert_eq!(run.status, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("{}: Pulling fs layer", short(&layer))),
        "the stream had begun: {run:?}"
    );
    assert!(
        run.stderr.contains(&layer),
        "the error names the layer: {run:?}"
    );
    assert_eq!(
        d.docker_ok(&["images", "-q"]).trim(),
        "",
        "nothing half-made"
    );
    d.assert_no_leaks();
}
