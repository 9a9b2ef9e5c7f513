//! The CRI ImageService end to end: a real berthd, a real docker-registry on
//! loopback, images built by hack/ from Debian's busybox-static, and the
//! tonic CRI client kubelet's protocol uses.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{eventually, test_images, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;
use tonic::Code;

type Images = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<api::ImageSpec> {
    Some(api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(c: &mut Images, image: &str) -> Result<String, tonic::Status> {
    pull_with(c, image, None).await
}

async fn pull_with(
    c: &mut Images,
    image: &str,
    auth: Option<api::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(api::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// A pull that asks for another architecture through the image spec.
async fn pull_for_arch(c: &mut Images, image: &str, arch: &str) -> Result<String, tonic::Status> {
    let mut spec = api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    spec.annotations
        .insert("kubernetes.io/arch".into(), arch.into());
    c.pull_image(api::PullImageRequest {
        image: Some(spec),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn status(c: &mut Images, image: &str) -> Option<api::Image> {
    c.image_status(api::ImageStatusRequest {
        image: spec(image),
        verbose: false,
    })
    .await
    .expect("image status")
    .into_inner()
    .image
}

async fn list(c: &mut Images) -> Vec<api::Image> {
    c.list_images(api::ListImagesRequest { filter: None })
        .await
        .expect("list images")
        .into_inner()
        .images
}

async fn remove(c: &mut Images, image: &str) {
    c.remove_image(api::RemoveImageRequest { image: spec(image) })
        .await
        .expect("remove image");
}

async fn fs_used(c: &mut Images) -> (u64, u64) {
    let r = c
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .expect("image fs info")
        .into_inner();
    let fs = &r.image_filesystems[0];
    (
        fs.used_bytes.as_ref().map(|v| v.value).unwrap_or(0),
        fs.inodes_used.as_ref().map(|v| v.value).unwrap_or(0),
    )
}

fn snapshot_fs(d: &TestDaemon, diff_id_hex: &str) -> PathBuf {
    d.root.join("images/snapshots").join(diff_id_hex).join("fs")
}

fn snapshot_count(d: &TestDaemon) -> usize {
    std::fs::read_dir(d.root.join("images/snapshots"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// The diff ids of a pulled image, from the verbose status.
async fn diff_ids(c: &mut Images, image: &str) -> Vec<String> {
    let r = c
        .image_status(api::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("verbose status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("info json");
    info["imageSpec"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff ids")
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_and_runtime_config_are_truthful() {
    let d = TestDaemon::start().await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "CRI socket mode");

    let mut rt = d.runtime().await;
    let v = rt
        .version(api::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");

    let s = rt
        .status(api::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == kind)
            .unwrap_or_else(|| panic!("{kind} missing"))
            .clone()
    };
    // Pods run (crun and runc are installed here) and get the default
    // bridge network (the none backend's false is in cri_network.rs).
    assert!(condition("RuntimeReady").status);
    let net = condition("NetworkReady");
    assert!(net.status, "{net:?}");
    let cfg = rt
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cfg.linux.unwrap().cgroup_driver,
        api::CgroupDriver::Cgroupfs as i32
    );
    let err = rt
        .run_pod_sandbox(api::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a pod needs a config");
    let err = rt.exec(api::ExecRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "an exec needs a command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_list_status_fs_info_and_remove() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let (bytes_before, inodes_before) = fs_used(&mut c).await;

    let name = reg.image("busybox");
    let id = pull(&mut c, &name).await.expect("pull busybox");
    let want = images.get("busybox");
    assert_eq!(id, want.config_digest, "image ref is the config digest");

    let listed = list(&mut c).await;
    assert_eq!(listed.len(), 1);
    let img = &listed[0];
    assert_eq!(img.repo_tags, vec![name.clone()]);
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/busybox@{}", reg.addr, want.manifest_digest)]
    );
    assert!(
        img.size > 500_000,
        "size {} counts the busybox layer",
        img.size
    );
    assert_eq!(img.uid, None, "busybox has no USER");

    // Found by id, by tag and by digest; the filter narrows the list.
    for key in [
        id.clone(),
        name.clone(),
        format!("{}/busybox@{}", reg.addr, want.manifest_digest),
    ] {
        assert_eq!(
            status(&mut c, &key).await.map(|i| i.id),
            Some(id.clone()),
            "{key}"
        );
    }
    let filtered = c
        .list_images(api::ListImagesRequest {
            filter: Some(api::ImageFilter { image: spec(&name) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert!(status(&mut c, &reg.image("nothere")).await.is_none());

    // The layer is unpacked where overlayfs can use it.
    let diff = diff_ids(&mut c, &name).await;
    let busybox = snapshot_fs(&d, &diff[0]).join("bin/busybox");
    let meta = std::fs::metadata(&busybox).expect("busybox in the snapshot");
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(snapshot_fs(&d, &diff[0]).join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );

    let (bytes, inodes) = fs_used(&mut c).await;
    assert!(
        bytes >= bytes_before + meta.len(),
        "fs info counts the layer: {bytes}"
    );
    assert!(
        inodes > inodes_before + 10,
        "fs info counts inodes: {inodes}"
    );

    remove(&mut c, &name).await;
    assert!(status(&mut c, &id).await.is_none());
    assert!(list(&mut c).await.is_empty());
    assert_eq!(snapshot_count(&d), 0, "the unused layer is collected");
    remove(&mut c, &name).await; // idempotent, as CRI requires
    remove(&mut c, &id).await;
    let (bytes_after, _) = fs_used(&mut c).await;
    assert!(bytes_after < bytes, "fs info shrinks after removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_digest_and_remove_by_digest() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let want = images.get("busybox");
    let by_digest = format!("{}/busybox@{}", reg.addr, want.manifest_digest);
    let id = pull(&mut c, &by_digest).await.expect("pull by digest");
    assert_eq!(id, want.config_digest);
    let img = status(&mut c, &by_digest).await.expect("status by digest");
    assert!(img.repo_tags.is_empty(), "a digest pull adds no tag");
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);

    // Then by tag: the same image gains the tag.
    pull(&mut c, &reg.image("busybox")).await.unwrap();
    let img = status(&mut c, &id).await.unwrap();
    assert_eq!(img.repo_tags, vec![reg.image("busybox")]);
    assert_eq!(list(&mut c).await.len(), 1);

    remove(&mut c, &by_digest).await;
    assert!(
        status(&mut c, &id).await.is_none(),
        "removal by digest removes the image"
    );
    assert!(status(&mut c, &reg.image("busybox")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_opaque_dirs_become_overlayfs_form() {
    let reg = TestRegistry::start();
    reg.push(&["layered"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let name = reg.image("layered");
    pull(&mut c, &name).await.expect("pull layered");
    let diff = diff_ids(&mut c, &name).await;
    assert_eq!(diff.len(), 3);
    let top = snapshot_fs(&d, &diff[2]);

    let whiteout = std::fs::symlink_metadata(top.join("data/gone.txt")).expect("whiteout");
    assert!(
        whiteout.file_type().is_char_device(),
        "whiteout is a char device"
    );
    assert_eq!(whiteout.rdev(), 0, "whiteout is device 0:0");
    assert!(!top.join("data/.wh.gone.txt").exists());
    let opaque = xattr::get(top.join("opaque"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    let hard = std::fs::metadata(top.join("data/hard")).unwrap();
    let target = std::fs::metadata(top.join("data/keep2.txt")).unwrap();
    assert_eq!(hard.ino(), target.ino(), "hardlink kept as a hardlink");

    // Stacked by overlayfs, the layers give the view the image means.
    let lower: Vec<String> = diff
        .iter()
        .rev()
        .map(|h| snapshot_fs(&d, h).display().to_string())
        .collect();
    let mnt = tempfile::tempdir().unwrap();
    let opts = std::ffi::CString::new(format!("lowerdir={}", lower.join(":"))).unwrap();
    let target_c = std::ffi::CString::new(mnt.path().to_str().unwrap()).unwrap();
    // SAFETY: plain mount(2) with valid C strings; unmounted below.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target_c.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount overlay: {}", std::io::Error::last_os_error());
    let view = |p: &str| mnt.path().join(p);
    let seen = (
        view("data/keep.txt").exists(),
        view("data/gone.txt").exists(),
        view("opaque/old1.txt").exists(),
        view("opaque/new.txt").exists(),
        view("bin/busybox").exists(),
    );
    // SAFETY: unmounting what we mounted above.
    unsafe { libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        seen,
        (true, false, false, true, true),
        "(keep, gone, old1, new, busybox)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiarch_index_selects_the_node_platform_or_the_asked_one() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["multiarch"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let name = reg.image("multiarch");
    let want = images.get("multiarch");
    let id = pull(&mut c, &name).await.expect("pull index");
    assert_eq!(id, want.config_digest, "linux/amd64 config chosen");
    let img = status(&mut c, &id).await.unwrap();
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/multiarch@{}", reg.addr, want.manifest_digest)],
        "repo digest is the index digest"
    );
    let diff = diff_ids(&mut c, &name).await;
    let arch = std::fs::read_to_string(snapshot_fs(&d, &diff[1]).join("etc/arch")).unwrap();
    assert_eq!(arch.trim(), "amd64");

    let arm_id = pull_for_arch(&mut c, &name, "arm64")
        .await
        .expect("pull arm64");
    assert_ne!(arm_id, id);
    let err = pull_for_arch(&mut c, &name, "s390x").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("linux/s390x"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonroot_zstd_uncompressed_and_docker_v2_images() {
    let reg = TestRegistry::start();
    reg.push(&["nonroot", "zstd", "uncompressed", "busybox-v2s2"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;

    pull(&mut c, &reg.image("nonroot"))
        .await
        .expect("pull nonroot");
    let img = status(&mut c, &reg.image("nonroot")).await.unwrap();
    assert_eq!(img.uid.map(|u| u.value), Some(1000));

    for name in ["zstd", "uncompressed", "busybox-v2s2"] {
        let image = reg.image(name);
        pull(&mut c, &image)
            .await
            .unwrap_or_else(|e| panic!("pull {name}: {e}"));
        let diff = diff_ids(&mut c, &image).await;
        assert!(
            snapshot_fs(&d, &diff[0]).join("bin/busybox").exists(),
            "{name} unpacked"
        );
    }
    // zstd, uncompressed and v2s2 hold the same tar: one snapshot serves all.
    assert_eq!(list(&mut c).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_auth_is_required_and_honoured() {
    let reg = TestRegistry::start_with_auth("berth", "s3cret-pass");
    reg.push_as(&["busybox"], Some(("berth", "s3cret-pass")));
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let name = reg.image("busybox");

    let err = pull(&mut c, &name).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains(&reg.addr),
        "names the registry: {}",
        err.message()
    );

    let wrong = api::AuthConfig {
        username: "berth".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull_with(&mut c, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let right = api::AuthConfig {
        username: "berth".into(),
        password: "s3cret-pass".into(),
        ..Default::default()
    };
    pull_with(&mut c, &name, Some(right))
        .await
        .expect("pull with credentials");
    assert!(status(&mut c, &name).await.is_some());
    assert!(
        !d.log().contains("s3cret-pass"),
        "credentials must not reach the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_first_and_fall_back_to_the_primary() {
    let primary = TestRegistry::start();
    primary.push(&["busybox"]);
    let mirror = TestRegistry::start();
    mirror.push(&["layered"]);
    // mirrored.test resolves nowhere: only the mirror can serve it. Its
    // primary location is a closed loopback port, never another host.
    let conf = format!(
        r#"
[[registry]]
prefix = "mirrored.test"
location = "127.0.0.1:1"
[[registry.mirror]]
location = "{m}"

[[registry]]
prefix = "fallback.test"
location = "{p}"
[[registry.mirror]]
location = "{m}"
"#,
        m = mirror.addr,
        p = primary.addr
    );
    let d = TestDaemon::builder().registries_conf(&conf).start().await;
    let mut c = d.images().await;

    pull(&mut c, "mirrored.test/layered:latest")
        .await
        .expect("pull through the mirror");
    let img = status(&mut c, "mirrored.test/layered")
        .await
        .expect("listed");
    assert_eq!(
        img.repo_tags,
        vec!["mirrored.test/layered:latest".to_string()]
    );

    pull(&mut c, "fallback.test/busybox")
        .await
        .expect("mirror lacks it, primary has it");
    assert!(
        mirror.log().contains("/v2/busybox/manifests/latest"),
        "the mirror was asked first"
    );
    assert!(primary.log().contains("/v2/busybox/manifests/latest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["layered"]);
    let d = TestDaemon::start().await;
    let name = reg.image("layered");
    let mut a = d.images().await;
    let mut b = d.images().await;
    let (ra, rb) = tokio::join!(pull(&mut a, &name), pull(&mut b, &name));
    let (ra, rb) = (ra.expect("first pull"), rb.expect("second pull"));
    assert_eq!(ra, rb);
    assert_eq!(ra, images.get("layered").config_digest);

    let log = reg.log();
    let diff_count = diff_ids(&mut a, &name).await.len();
    let blob_gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("GET") && l.contains("/v2/layered/blobs/sha256:"))
        .filter(|l| l.contains("response completed"))
        .collect();
    // Each of the layers once, plus the config at most once per pull.
    let mut per_blob = std::collections::HashMap::<String, usize>::new();
    for l in &blob_gets {
        let at = l.find("/blobs/").unwrap() + 7;
        *per_blob.entry(l[at..at + 71].to_string()).or_default() += 1;
    }
    let layer_downloads: Vec<_> = per_blob
        .iter()
        .filter(|(digest, _)| **digest != images.get("layered").config_digest)
        .collect();
    assert_eq!(layer_downloads.len(), diff_count, "{per_blob:?}");
    assert!(
        layer_downloads.iter().all(|(_, n)| **n == 1),
        "each layer downloaded once: {per_blob:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_a_restart_and_a_kill_mid_pull_leaves_nothing_half_made() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox", "bench"]);
    let mut d = TestDaemon::start().await;
    let mut c = d.images().await;
    let busybox = reg.image("busybox");
    pull(&mut c, &busybox).await.unwrap();

    d.restart().await;
    let mut c = d.images().await;
    let img = status(&mut c, &busybox)
        .await
        .expect("survives a clean restart");
    assert_eq!(img.id, images.get("busybox").config_digest);

    // Start a large pull and SIGKILL berthd while it is unpacking.
    let bench = reg.image("bench");
    let mut puller = d.images().await;
    let bench_c = bench.clone();
    let pulling = tokio::spawn(async move { pull(&mut puller, &bench_c).await });
    let tmp = d.root.join("images/tmp");
    eventually(
        "the pull to start unpacking",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&tmp)
                .ok()
                .and_then(|mut r| r.next())
                .map(|_| ())
        },
    )
    .await;
    d.kill9();
    assert!(
        pulling.await.unwrap().is_err(),
        "the interrupted pull fails"
    );

    d.start_again().await;
    let mut c = d.images().await;
    assert!(
        status(&mut c, &bench).await.is_none(),
        "a half-pulled image is not listed"
    );
    assert_eq!(list(&mut c).await.len(), 1, "busybox is still there");
    d.assert_no_leaks();
    let id = pull(&mut c, &bench)
        .await
        .expect("the next pull finishes it");
    assert_eq!(id, images.get("bench").config_digest);
    let diff = diff_ids(&mut c, &bench).await;
    for h in &diff {
        assert!(snapshot_fs(&d, h).is_dir(), "layer {h} complete");
    }
}

/// Every escape attempt is refused, named, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_layers_are_rejected_naming_the_entry() {
    let reg = TestRegistry::start();
    reg.push(&["evil-dotdot", "evil-symlink", "evil-abs"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    for (name, entry) in [
        ("evil-dotdot", "escaped-dotdot"),
        ("evil-symlink", "escaped-symlink"),
        ("evil-abs", "escaped-abs"),
    ] {
        let err = pull(&mut c, &reg.image(name)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains(entry),
            "{name} names the entry: {}",
            err.message()
        );
        assert!(status(&mut c, &reg.image(name)).await.is_none());
    }
    assert!(list(&mut c).await.is_empty());
    for escaped in ["escaped-dotdot", "escaped-symlink", "escaped-abs"] {
        for dir in d.root.ancestors().chain([Path::new("/tmp")]) {
            assert!(
                !dir.join(escaped).exists(),
                "{escaped} written to {}",
                dir.display()
            );
        }
        let images = d.root.join("images");
        for sub in ["", "tmp", "snapshots"] {
            assert!(!images.join(sub).join(escaped).exists());
        }
    }
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_code_and_stores_nothing() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox", "layered"]);
    let d = TestDaemon::start().await;
    let mut c = d.images().await;

    let missing = reg.image("no-such-image");
    let err = pull(&mut c, &missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{}", err.message());

    let err = pull(&mut c, "127.0.0.1:1/busybox:latest")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("127.0.0.1:1"), "{}", err.message());

    for bad in [
        "Not A Reference",
        "busybox:bad tag",
        "UPPER/case",
        "busybox@sha256:123",
    ] {
        let err = pull(&mut c, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }
    let err = pull(&mut c, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Corrupt the top layer of "layered" inside the registry's storage: the
    // registry serves it under its old digest, berthd must notice.
    let layered = reg.image("layered");
    let manifest = std::fs::read(
        images.dir.join("layered/blobs/sha256").join(
            images
                .get("layered")
                .manifest_digest
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let top = manifest["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_data_path(&top);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let err = pull(&mut c, &layered).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(&top),
        "names the blob: {}",
        err.message()
    );
    assert!(status(&mut c, &layered).await.is_none());
    let blob = d
        .root
        .join("images/blobs/sha256")
        .join(top.trim_start_matches("sha256:"));
    assert!(!blob.exists(), "the bad blob is not stored");
    d.assert_no_leaks();
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_berthd_on_the_same_root_or_socket_is_refused() {
    let d = TestDaemon::start().await;
    let out = d.command().output().expect("run a second berthd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another berthd"), "{err}");

    // Same socket, other directories.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_testkit::berthd_bin())
        .arg("--root")
        .arg(other.path().join("root"))
        .arg("--state-dir")
        .arg(other.path().join("run"))
        .arg("--cri-socket")
        .arg(&d.socket)
        .arg("--config")
        .arg("/dev/null")
        .args(["--network-backend", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is serving"), "{err}");
    assert!(d.socket.exists(), "the first berthd keeps its socket");

    let out = std::process::Command::new(berth_testkit::berthd_bin())
        .args(["--root", "relative/path"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "usage errors exit 64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_resolve_through_the_search_registries() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    // The first search registry is a closed loopback port: it fails and the
    // next one is tried.
    let conf = format!(
        "unqualified-search-registries = [\"127.0.0.1:1\", \"{}\"]\n",
        reg.addr
    );
    let d = TestDaemon::builder().registries_conf(&conf).start().await;
    let mut c = d.images().await;
    let id = pull(&mut c, "busybox").await.expect("pull a short name");
    let img = status(&mut c, "busybox")
        .await
        .expect("found by its short name");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![reg.image("busybox")]);

    let err = pull(&mut c, "no-such-image").await.unwrap_err();
    assert!(
        err.message().contains("127.0.0.1:1/no-such-image"),
        "reports the first candidate: {}",
        err.message()
    );
}

/// Token auth as Docker Hub, GHCR and Quay do it: a 401 challenge, a JWT
/// from the token server, then the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_registries_are_honoured() {
    let tokens = berth_testkit::TokenServer::start("berth", "tok3n-pass");
    let reg = TestRegistry::start_with_token_server(&tokens);
    reg.push_as(&["busybox"], Some(("berth", "tok3n-pass")));
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let name = reg.image("busybox");

    let err = pull(&mut c, &name).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "anonymous token grants nothing: {err:?}"
    );

    let before = tokens.issued.load(std::sync::atomic::Ordering::Relaxed);
    let basic = api::AuthConfig {
        username: "berth".into(),
        password: "tok3n-pass".into(),
        ..Default::default()
    };
    pull_with(&mut c, &name, Some(basic))
        .await
        .expect("pull with a token from credentials");
    assert!(
        tokens.issued.load(std::sync::atomic::Ordering::Relaxed) > before,
        "berthd fetched a token with the credentials"
    );
    remove(&mut c, &name).await;

    // A registry token handed over by kubelet is sent as is.
    let bearer = api::AuthConfig {
        registry_token: tokens.issue("repository:busybox:pull"),
        ..Default::default()
    };
    pull_with(&mut c, &name, Some(bearer))
        .await
        .expect("pull with a registry token");
    assert!(status(&mut c, &name).await.is_some());
    assert!(!d.log().contains("tok3n-pass"));
}

/// kubelet re-pulls `:latest`: when the tag moved, the name follows the new
/// image and the old one stays reachable by id and digest until removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_follows_the_new_image() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["busybox", "nonroot"]);
    reg.retag("busybox", "app");
    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let app = reg.image("app");
    let old = pull(&mut c, &app).await.expect("first pull");
    assert_eq!(old, images.get("busybox").config_digest);

    reg.retag("nonroot", "app");
    let new = pull(&mut c, &app).await.expect("pull after the tag moved");
    assert_eq!(new, images.get("nonroot").config_digest);
    assert_eq!(status(&mut c, &app).await.map(|i| i.id), Some(new.clone()));

    let old_image = status(&mut c, &old).await.expect("old image kept");
    assert!(old_image.repo_tags.is_empty(), "the tag left the old image");
    assert_eq!(old_image.repo_digests.len(), 1, "still reachable by digest");
    assert_eq!(list(&mut c).await.len(), 2);

    // Removing the old image keeps the layers the new one shares.
    remove(&mut c, &old).await;
    let diff = diff_ids(&mut c, &app).await;
    assert!(snapshot_fs(&d, &diff[0]).join("bin/busybox").exists());
}
