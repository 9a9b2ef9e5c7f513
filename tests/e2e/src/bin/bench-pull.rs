//! Pull benchmark: a ~100 MB multi-layer image from a local registry through
//! berthd's CRI, beside the floor measured in the same run: `skopeo copy` of
//! the same image to a directory, then `tar -x` of each layer.
//!
//! Run with `hack/bench-pull.sh` (release build). Prints medians and the ratio.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use berth_testkit::{test_images, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// skopeo copy to a dir, then untar every layer into one rootfs.
fn floor_once(image: &str, work: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("rootfs")).unwrap();
    let start = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", work.join("blobs").display())));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("blobs/manifest.json")).unwrap()).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        run(Command::new("tar")
            .arg("-xzf")
            .arg(work.join("blobs").join(digest))
            .arg("-C")
            .arg(work.join("rootfs")));
    }
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let images = test_images();
    let reg = TestRegistry::start();
    reg.push(&["bench"]);
    let image = reg.image("bench");
    let bench = images.get("bench");
    let size: u64 = std::fs::read_dir(images.dir.join("bench/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();

    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let floor: Vec<f64> = (0..RUNS)
        .map(|_| floor_once(&image, &work.path().join("floor")))
        .collect();

    let d = TestDaemon::start().await;
    let mut c = d.images().await;
    let mut ours = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let id = c
            .pull_image(api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull")
            .into_inner()
            .image_ref;
        ours.push(start.elapsed().as_secs_f64());
        assert_eq!(id, bench.config_digest);
        c.remove_image(api::RemoveImageRequest {
            image: Some(api::ImageSpec {
                image: id,
                ..Default::default()
            }),
        })
        .await
        .expect("remove");
    }
    let (f, o) = (median(floor.clone()), median(ours.clone()));
    println!(
        "pull of {} ({:.1} MB compressed, {} layers), {RUNS} runs each",
        image,
        size as f64 / 1e6,
        bench.layers
    );
    println!(
        "  floor  skopeo copy + tar -x   median {:.3} s  runs {:?}",
        f,
        rounded(&floor)
    );
    println!(
        "  berthd CRI PullImage         median {:.3} s  runs {:?}",
        o,
        rounded(&ours)
    );
    println!(
        "  ratio berthd/floor           {:.2}x (target <= 1.2x)",
        o / f
    );
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}
