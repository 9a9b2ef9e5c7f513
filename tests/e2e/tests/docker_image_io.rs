//! Images from containers and files end to end: the real docker CLI (v28)
//! against a real berthd: `commit` (with `--change`, `-m`, `-a`) and a run
//! of the result, `save` → `rmi` → `load` → run (same id; two images in
//! one file), `export` → `import` → run, and tarballs that are corrupt or
//! reach outside their root refused with 400 and nothing stored.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use berth_e2e::*;
use berth_testkit::TestDaemon;

/// A POST with a tar body on the docker socket; (status line, body).
fn post_tar(d: &TestDaemon, path: &str, body: &[u8]) -> (String, String) {
    let mut s = UnixStream::connect(d.docker_socket()).expect("connect to the docker socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn image_id(d: &TestDaemon, name: &str) -> String {
    d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", name])
        .trim()
        .to_string()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_makes_an_image_that_runs_with_the_change() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&[
        "run",
        "--name",
        "src",
        &image,
        "sh",
        "-c",
        "mkdir /data && echo committed > /data/hello.txt && rm /bin/ping",
    ]);
    let id = d.docker_ok(&[
        "commit",
        "--change",
        r#"CMD ["cat", "/data/hello.txt"]"#,
        "--change",
        "ENV COMMITTED=yes",
        "--change",
        "LABEL made.by=commit",
        "-m",
        "a message",
        "-a",
        "an author",
        "src",
        "committed:1",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(image_id(&d, "committed:1"), id);

    // The new image runs its --change CMD and sees the committed file;
    // the deleted applet stays deleted (a whiteout in the new layer).
    let out = d.docker_ok(&["run", "--rm", "committed:1"]);
    assert_eq!(out.trim(), "committed");
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "committed:1",
        "sh",
        "-c",
        "echo $COMMITTED; test -e /bin/ping && echo ping-present || echo ping-gone",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["yes", "ping-gone"]
    );

    let inspected = d.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}} {{index .Config.Labels \"made.by\"}} {{.Author}} {{.Comment}} {{len .RootFS.Layers}}",
        "committed:1",
    ]);
    let base_layers = d
        .docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{len .RootFS.Layers}}",
            &image,
        ])
        .trim()
        .parse::<usize>()
        .unwrap();
    assert_eq!(
        inspected.trim(),
        format!(
            r#"["cat","/data/hello.txt"] commit an author a message {}"#,
            base_layers + 1
        )
    );
    // `docker images` lists it; `docker history` has the new layer on top.
    let listed = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.lines().any(|l| l == "committed:1"), "{listed}");
    let history = d.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.Comment}}|{{.Size}}",
        "committed:1",
    ]);
    let top = history.lines().next().unwrap_or_default();
    assert!(top.starts_with(&format!("{id}|a message|")), "{history}");
    assert!(!top.ends_with("|0B"), "the new layer is empty: {history}");

    d.docker_ok(&["rm", "src"]);
    d.docker_ok(&["rmi", "committed:1"]);
}

/// The container's events since `since` (unix seconds), action names in order.
fn container_actions(d: &TestDaemon, name: &str, since: &str) -> Vec<String> {
    d.docker_ok(&[
        "events",
        "--since",
        since,
        "--until",
        "0s",
        "--filter",
        &format!("container={name}"),
        "--format",
        "{{.Action}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.docker_ok(&["exec", name, "cat", "/n"])
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_freezes_a_running_container_unless_told_not_to() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        &image,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /n; sleep 0.05; done",
    ]);
    berth_testkit::eventually(
        "the counter runs",
        std::time::Duration::from_secs(10),
        || (counter(&d, "ticker") > 0).then_some(()),
    )
    .await;

    // The default (no `pause` parameter, as the CLI sends it): frozen
    // around the copy, as dockerd's events show it: pause, commit, unpause.
    d.docker_ok(&["commit", "ticker", "frozen:1"]);
    let freezes = |d: &TestDaemon| -> Vec<String> {
        container_actions(d, "ticker", &since)
            .into_iter()
            .filter(|a| matches!(a.as_str(), "pause" | "unpause" | "commit"))
            .collect()
    };
    // `--until` is whole seconds: the events show once their second is over.
    let wait = std::time::Duration::from_secs(10);
    berth_testkit::eventually("the commit's events", wait, || {
        (freezes(&d).len() >= 3).then_some(())
    })
    .await;
    assert_eq!(freezes(&d), ["pause", "commit", "unpause"]);
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "ticker"
        ])
        .trim(),
        "running false"
    );
    // Thawed: the counter keeps going.
    let before = counter(&d, "ticker");
    berth_testkit::eventually(
        "the counter goes on",
        std::time::Duration::from_secs(10),
        || (counter(&d, "ticker") > before).then_some(()),
    )
    .await;

    // --pause=false: no freeze.
    d.docker_ok(&["commit", "--pause=false", "ticker", "frozen:2"]);
    berth_testkit::eventually("the second commit's event", wait, || {
        (freezes(&d).len() >= 4).then_some(())
    })
    .await;
    assert_eq!(freezes(&d), ["pause", "commit", "unpause", "commit"]);

    d.docker_ok(&["rm", "-f", "ticker"]);
    d.docker_ok(&["rmi", "frozen:1", "frozen:2"]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_rmi_load_gives_back_the_same_images() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&[
        "run",
        "--name",
        "src",
        &image,
        "sh",
        "-c",
        "echo two > /two.txt",
    ]);
    d.docker_ok(&["commit", "src", "second:1"]);
    d.docker_ok(&["rm", "src"]);
    let first_id = image_id(&d, &image);
    let second_id = image_id(&d, "second:1");

    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.tar");
    let both = dir.path().join("both.tar");
    d.docker_ok(&["save", "-o", one.to_str().unwrap(), &image]);
    d.docker_ok(&["save", "-o", both.to_str().unwrap(), &image, "second:1"]);

    d.docker_ok(&["rmi", &image, "second:1"]);
    let listed = d.docker_ok(&["images", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");

    let loaded = d.docker_ok(&["load", "-i", one.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {image}")),
        "{loaded}"
    );
    assert_eq!(image_id(&d, &image), first_id);
    let out = d.docker_ok(&["run", "--rm", &image, "echo", "loaded"]);
    assert_eq!(out.trim(), "loaded");
    d.docker_ok(&["rmi", &image]);

    // Two images in one file: both come back, with their ids and tags.
    let loaded = d.docker_ok(&["load", "-i", both.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: second:1"), "{loaded}");
    assert_eq!(image_id(&d, &image), first_id);
    assert_eq!(image_id(&d, "second:1"), second_id);
    let out = d.docker_ok(&["run", "--rm", "second:1", "cat", "/two.txt"]);
    assert_eq!(out.trim(), "two");
    let listed = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.lines().any(|l| l == "second:1"), "{listed}");
    assert!(listed.lines().any(|l| l == image), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_runs_with_the_files() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&[
        "run",
        "--name",
        "src",
        &image,
        "sh",
        "-c",
        "echo exported > /exported.txt",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("fs.tar");
    d.docker_ok(&["export", "-o", tar.to_str().unwrap(), "src"]);
    d.docker_ok(&["rm", "src"]);

    let id = d.docker_ok(&[
        "import",
        "--change",
        r#"CMD ["cat", "/exported.txt"]"#,
        "-m",
        "from export",
        tar.to_str().unwrap(),
        "imported:1",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(image_id(&d, "imported:1"), id);
    let layers = d.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "imported:1",
    ]);
    assert_eq!(layers.trim(), "1");
    let out = d.docker_ok(&["run", "--rm", "imported:1"]);
    assert_eq!(out.trim(), "exported");
    let out = d.docker_ok(&["run", "--rm", "imported:1", "ls", "/bin/busybox"]);
    assert_eq!(out.trim(), "/bin/busybox");
    d.docker_ok(&["rmi", "imported:1"]);
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A docker-archive of one image whose only layer is `layer`.
fn archive_with_layer(layer: &[u8]) -> Vec<u8> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "config.json", "RepoTags": ["evil:1"], "Layers": ["l/layer.tar"],
    }]))
    .unwrap();
    tar_of(&[
        ("manifest.json", b'0', "", &manifest),
        ("config.json", b'0', "", &config),
        ("l/layer.tar", b'0', "", layer),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_traversing_tarballs_are_refused_and_leave_nothing() {
    let d = TestDaemon::start().await;
    let store = d.root.join("images");
    let dotdot = tar_of(&[("ok", b'0', "", b"fine"), ("../x", b'0', "", b"x")]);
    let absolute = tar_of(&[("/etc/berth-evil", b'0', "", b"x")]);
    let symlink = tar_of(&[
        ("link", b'2', "/", b""),
        ("link/tmp/berth-evil", b'0', "", b"x"),
    ]);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("load", "load ..", dotdot.clone(), "escapes the snapshot"),
        ("load", "load absolute", absolute.clone(), "/etc/berth-evil"),
        (
            "load",
            "load symlink",
            symlink.clone(),
            "link/tmp/berth-evil",
        ),
        (
            "load",
            "layer ..",
            archive_with_layer(&dotdot),
            "escapes the snapshot",
        ),
        (
            "load",
            "layer symlink",
            archive_with_layer(&symlink),
            "link/tmp/berth-evil",
        ),
        (
            "load",
            "corrupt",
            b"this is not a tarball at all".repeat(30),
            "archive",
        ),
        (
            "load",
            "empty tar",
            vec![0u8; 1024],
            "neither manifest.json nor index.json",
        ),
        ("import", "import ..", dotdot, "escapes the snapshot"),
        ("import", "import absolute", absolute, "/etc/berth-evil"),
        ("import", "import symlink", symlink, "link/tmp/berth-evil"),
    ];
    for (verb, what, body, says) in cases {
        let path = match verb {
            "load" => "/v1.41/images/load?quiet=1",
            _ => "/v1.41/images/create?fromSrc=-&repo=evil&tag=1",
        };
        let (status, body) = post_tar(&d, path, &body);
        assert!(status.contains(" 400 "), "{what}: {status} {body}");
        assert!(body.contains(says), "{what}: want {says:?} in {body}");
        let listed = d.docker_ok(&["images", "-q"]);
        assert!(listed.trim().is_empty(), "{what}: images {listed}");
        for sub in ["snapshots", "blobs/sha256", "tmp"] {
            let left = entries(&store.join(sub));
            assert!(left.is_empty(), "{what}: left in images/{sub}: {left:?}");
        }
    }
    assert!(!Path::new("/etc/berth-evil").exists());
    assert!(!Path::new("/tmp/berth-evil").exists());
    assert!(!store.parent().unwrap().join("x").exists());
    // The CLI shows the reason.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tar");
    std::fs::write(
        &bad,
        archive_with_layer(&tar_of(&[("../x", b'0', "", b"x")])),
    )
    .unwrap();
    let run = d.docker(&["load", "-i", bad.to_str().unwrap()]);
    assert_ne!(run.status, Some(0), "{run:?}");
    assert!(run.stderr.contains("../x"), "{}", run.stderr);
}
