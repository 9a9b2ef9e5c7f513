//! A pull reports what a Docker client renders, with the bytes it really
//! read; tags move between images and come off them (issue 13).

mod common;

use std::collections::BTreeMap;

use berth_errdefs::ErrorKind;
use berth_image::fetch::Credentials;
use berth_image::limits::Limits;
use berth_image::manifest::Platform;
use berth_image::progress::{short_id, LayerState, PullProgress};
use berth_image::service::{ImageService, PullOutcome};
use common::*;

/// Bytes gzip cannot shrink much, so the download is as big as the layer.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pulls with a progress channel read while the pull runs.
async fn pull_reporting(
    svc: &ImageService,
    name: &str,
) -> (berth_errdefs::Result<PullOutcome>, Vec<PullProgress>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(p) = rx.recv().await {
            seen.push(p);
        }
        seen
    });
    let (r, _) = within(
        30,
        svc.pull_with_progress(
            name,
            &Credentials::Anonymous,
            Some(Platform::linux("amd64")),
            Some(tx),
        ),
    )
    .await;
    (r.map(|(_, o)| o), reader.await.unwrap())
}

/// One layer's states in order, and apart its (current, total) byte counts.
type LayerReports = (Vec<LayerState>, Vec<(u64, u64)>);

/// The reports of each layer, by short id.
fn by_layer(seen: &[PullProgress]) -> BTreeMap<String, LayerReports> {
    let mut out: BTreeMap<String, LayerReports> = BTreeMap::new();
    for p in seen {
        if let PullProgress::Layer { id, state } = p {
            let entry = out.entry(id.clone()).or_default();
            match *state {
                LayerState::Downloading { current, total } => entry.1.push((current, total)),
                s => entry.0.push(s),
            }
        }
    }
    out
}

#[tokio::test]
async fn a_pull_reports_each_layer_with_the_bytes_it_read() {
    let tars = [
        tar(&[("big", 0o644, &noise(3 << 20, 7))]),
        tar(&[("small", 0o644, b"hello\n")]),
    ];
    let image = TestImage::new(&tars, |_| {});
    let reg = serve_image("prog", image.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let name = format!("{}/prog:latest", reg.host());

    let (outcome, seen) = pull_reporting(&svc, &name).await;
    let outcome = outcome.unwrap();
    assert_eq!(
        seen.first(),
        Some(&PullProgress::Started {
            repository: format!("{}/prog", reg.host()),
            tag: "latest".into(),
        })
    );
    assert_eq!(
        seen.last(),
        Some(&PullProgress::Finished {
            reference: name.clone(),
            digest: image.manifest_digest.clone(),
            updated: true,
        })
    );
    let layers = by_layer(&seen);
    assert_eq!(layers.len(), 2, "{seen:?}");
    for (digest, blob) in &image.layers {
        let (states, counts) = &layers[&short_id(digest)];
        assert_eq!(
            states,
            &[
                LayerState::PullingFsLayer,
                LayerState::VerifyingChecksum,
                LayerState::DownloadComplete,
                LayerState::Extracting,
                LayerState::PullComplete,
            ],
            "{digest}"
        );
        let size = blob.len() as u64;
        assert!(
            counts.windows(2).all(|w| w[0].0 <= w[1].0),
            "counts only grow: {counts:?}"
        );
        assert!(counts.iter().all(|c| c.1 == size), "{counts:?}");
        assert_eq!(counts.last().map(|c| c.0), Some(size), "every byte counted");
    }
    let total: u64 = image.layers.iter().map(|l| l.1.len() as u64).sum();
    assert!(
        total > 3 << 20,
        "the big layer is not compressed away: {total}"
    );
    assert_eq!(outcome.downloaded_bytes, total);
    assert_eq!(
        (
            outcome.reference.as_str(),
            outcome.digest.as_str(),
            outcome.updated
        ),
        (name.as_str(), image.manifest_digest.as_str(), true)
    );

    // Again: every layer is there already, and the image is up to date.
    let (outcome, seen) = pull_reporting(&svc, &name).await;
    let outcome = outcome.unwrap();
    assert!(!outcome.updated);
    assert_eq!(outcome.downloaded_bytes, 0);
    for (states, counts) in by_layer(&seen).values() {
        assert_eq!(states, &[LayerState::AlreadyExists]);
        assert!(counts.is_empty(), "nothing downloaded: {counts:?}");
    }
    assert!(
        matches!(
            seen.last(),
            Some(PullProgress::Finished { updated: false, .. })
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_failed_pull_reports_no_completion() {
    let image = TestImage::new(&[tar(&[("f", 0o644, b"x")])], |_| {});
    let layer = image.layers[0].0.clone();
    let served = image.clone();
    // The layer's blob is missing from the registry.
    let reg = Server::start(move |r| {
        if r.path().ends_with(&layer) {
            Reply::not_found()
        } else {
            served.answer("gone", r).unwrap_or_else(Reply::not_found)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let (outcome, seen) = pull_reporting(&svc, &format!("{}/gone:latest", reg.host())).await;
    assert_eq!(outcome.unwrap_err().kind, ErrorKind::NotFound);
    assert!(
        !seen.iter().any(|p| matches!(
            p,
            PullProgress::Finished { .. }
                | PullProgress::Layer {
                    state: LayerState::PullComplete | LayerState::DownloadComplete,
                    ..
                }
        )),
        "{seen:?}"
    );
}

#[tokio::test]
async fn tags_move_between_images_and_come_off() {
    let a = TestImage::new(&[tar(&[("a", 0o644, b"a")])], |_| {});
    let b = TestImage::new(&[tar(&[("b", 0o644, b"b")])], |_| {});
    let (ra, rb) = (serve_image("a", a).await, serve_image("b", b).await);
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let a = pull(&svc, &format!("{}/a:latest", ra.host()))
        .await
        .unwrap();
    let b = pull(&svc, &format!("{}/b:latest", rb.host()))
        .await
        .unwrap();
    let alias = format!("{}/alias:v1", ra.host());

    let tagged = svc.tag(&a.id, &alias).await.unwrap();
    assert!(tagged.repo_tags.contains(&alias), "{tagged:?}");
    assert_eq!(svc.status(&alias).unwrap().unwrap().id, a.id);
    // Tagging b with the same name moves it off a.
    svc.tag(&format!("{}/b:latest", rb.host()), &alias)
        .await
        .unwrap();
    assert_eq!(svc.status(&alias).unwrap().unwrap().id, b.id);
    assert!(!svc
        .status(&a.id)
        .unwrap()
        .unwrap()
        .repo_tags
        .contains(&alias));

    let untagged = svc.untag(&alias).await.unwrap();
    assert_eq!(untagged.id, b.id);
    assert!(svc.status(&alias).unwrap().is_none());
    assert!(
        svc.status(&b.id).unwrap().is_some(),
        "the image stays without the name"
    );

    let err = svc.untag(&alias).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("alias:v1"), "{err}");
    let err = svc.untag(&a.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("image id"), "{err}");
    let err = svc
        .tag(&a.id, &format!("{}/x@{}", ra.host(), a.id))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("digest"), "{err}");
    let err = svc.tag("127.0.0.1:1/none:x", &alias).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("none:x"), "{err}");

    // The names survive a restart: they were written to the store.
    svc.tag(&a.id, &alias).await.unwrap();
    drop(svc);
    let svc = open_service(dir.path(), Limits::default());
    assert_eq!(svc.status(&alias).unwrap().unwrap().id, a.id);
}
