//! The image store is root's alone (issue 11, finding 1): layers keep their
//! setuid files and device nodes, so no other user may reach into them, as
//! containerd fixed for CVE-2021-41103.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_image::limits::Limits;
use common::*;

/// Runs `args` as nobody (uid and gid 65534, no groups); returns its exit
/// success and its stderr.
fn as_nobody(args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn other_users_cannot_reach_into_the_image_store() {
    needs_root();
    let image = TestImage::new(
        &[tar(&[
            ("bin/su", 0o4755, b"#!/bin/sh\necho escalated\n"),
            ("etc/secret", 0o644, b"layer secret\n"),
        ])],
        |_| {},
    );
    let reg = serve_image("suid", image.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // The temporary directory itself is 0700: open it up so that only the
    // store's own modes stand between nobody and the layers.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let pulled = pull(&svc, &format!("{}/suid:latest", reg.host()))
        .await
        .unwrap();

    let images = dir.path().join("images");
    let fs = &svc.layer_dirs(&pulled).unwrap()[0];
    let snapshot = fs.parent().unwrap();
    for d in [
        images.clone(),
        images.join("blobs"),
        images.join("blobs/sha256"),
        images.join("snapshots"),
        images.join("tmp"),
        snapshot.to_path_buf(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    // Root sees the layer as it was packed.
    let su = fs.join("bin/su");
    assert_eq!(mode(&su), 0o4755);
    assert_eq!(
        std::fs::read(fs.join("etc/secret")).unwrap(),
        b"layer secret\n"
    );

    let blob = images
        .join("blobs/sha256")
        .join(image.layers[0].0.trim_start_matches("sha256:"));
    let su = su.to_str().unwrap();
    let secret = fs.join("etc/secret");
    let secret = secret.to_str().unwrap();
    for args in [
        vec!["stat", su],
        vec![su],
        vec!["cat", secret],
        vec!["cat", blob.to_str().unwrap()],
        vec!["ls", images.to_str().unwrap()],
        vec!["ls", images.join("snapshots").to_str().unwrap()],
        vec!["ls", images.join("tmp").to_str().unwrap()],
    ] {
        let (ok, stderr) = as_nobody(&args);
        assert!(!ok, "nobody ran {args:?}");
        assert!(stderr.contains("Permission denied"), "{args:?}: {stderr}");
    }
    // The check is real: nobody can run things where the store is not in
    // the way.
    let (ok, stderr) = as_nobody(&["stat", dir.path().to_str().unwrap()]);
    assert!(ok, "nobody can stat the store's parent: {stderr}");
}
