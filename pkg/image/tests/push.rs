//! Push against a real registry (Debian's docker-registry on loopback):
//! what a pull stored goes back byte for byte, so the registry holds the
//! same manifest digest and a pull back gives the same image id.

use std::sync::Arc;

use berth_errdefs::ErrorKind;
use berth_image::fetch::{Credentials, Secret};
use berth_image::progress::{PushLayerState, PushProgress};
use berth_image::registries::RegistriesConfig;
use berth_image::service::ImageService;
use berth_store::Store;
use berth_testkit::{test_images, TestRegistry};
use tokio::sync::mpsc;

/// An image store of its own in `dir`.
fn service(dir: &std::path::Path) -> ImageService {
    let store = Arc::new(Store::open(&dir.join("store")).unwrap());
    ImageService::open(&dir.join("images"), store, RegistriesConfig::default()).unwrap()
}

/// Everything reported on `rx` so far (the sender is gone).
fn drain(mut rx: mpsc::Receiver<PushProgress>) -> Vec<PushProgress> {
    let mut seen = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p);
    }
    seen
}

fn final_states(seen: &[PushProgress]) -> Vec<(String, PushLayerState)> {
    let mut last: Vec<(String, PushLayerState)> = Vec::new();
    for p in seen {
        if let PushProgress::Layer { id, state } = p {
            if matches!(state, PushLayerState::Pushing { .. }) {
                continue;
            }
            match last.iter_mut().find(|(i, _)| i == id) {
                Some(entry) => entry.1 = *state,
                None => last.push((id.clone(), *state)),
            }
        }
    }
    last
}

#[tokio::test]
async fn a_pulled_image_pushed_under_a_new_name_pulls_back_the_same() {
    let want = test_images().get("layered");
    let reg = TestRegistry::start();
    reg.push(&["layered"]);
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let creds = Credentials::Anonymous;
    let (pulled, _) = images
        .pull(&reg.image("layered"), &creds, None)
        .await
        .unwrap();
    assert_eq!(pulled.id, want.config_digest);

    let copy = format!("{}/copies/layered:v1", reg.addr);
    images.tag(&reg.image("layered"), &copy).await.unwrap();
    let (tx, rx) = mpsc::channel(256);
    let (image, outcome) = images.push(&copy, &creds, Some(tx)).await.unwrap();
    assert_eq!(outcome.digest, want.manifest_digest, "the same manifest");
    assert_eq!(outcome.reference, copy);
    assert_eq!(outcome.existing_blobs, 0, "a new repository has no blobs");
    let blob_bytes: u64 = pulled.layers.iter().map(|l| l.size).sum();
    assert!(
        outcome.uploaded_bytes > blob_bytes,
        "layers and config sent"
    );
    assert!(
        image
            .repo_digests
            .contains(&format!("{}/copies/layered@{}", reg.addr, outcome.digest)),
        "{:?}",
        image.repo_digests
    );

    let seen = drain(rx);
    assert_eq!(
        seen.first(),
        Some(&PushProgress::Started {
            repository: format!("{}/copies/layered", reg.addr)
        })
    );
    assert_eq!(
        seen.last(),
        Some(&PushProgress::Finished {
            tag: "v1".into(),
            digest: want.manifest_digest.clone(),
            size: outcome.size,
        })
    );
    // Each layer: Preparing, some bytes, Pushed; top layer first.
    let layers = final_states(&seen);
    let top_first: Vec<String> = pulled
        .layers
        .iter()
        .rev()
        .map(|l| l.diff_id["sha256:".len()..][..12].to_string())
        .collect();
    let order: Vec<String> = layers.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(order, top_first, "Preparing lists the top layer first");
    assert_eq!(layers.len(), pulled.layers.len(), "{seen:?}");
    assert!(
        layers.iter().all(|(_, s)| *s == PushLayerState::Pushed),
        "{layers:?}"
    );
    let pushed_bytes = seen.iter().any(|p| {
        matches!(p, PushProgress::Layer { state: PushLayerState::Pushing { current, total }, .. }
            if current == total && *total > 0)
    });
    assert!(pushed_bytes, "a layer's full count is reported: {seen:?}");

    // Again: the registry has every blob now.
    let (tx, rx) = mpsc::channel(256);
    let (_, again) = images.push(&copy, &creds, Some(tx)).await.unwrap();
    assert_eq!(
        (again.uploaded_bytes, again.digest),
        (0, want.manifest_digest.clone())
    );
    assert!(
        final_states(&drain(rx))
            .iter()
            .all(|(_, s)| *s == PushLayerState::AlreadyExists),
        "every layer already exists"
    );

    // A store that never saw it pulls the copy: the same image.
    let other_dir = tempfile::tempdir().unwrap();
    let other = service(other_dir.path());
    let (back, outcome) = other.pull(&copy, &creds, None).await.unwrap();
    assert_eq!(back.id, pulled.id);
    assert_eq!(back.manifest_digest, want.manifest_digest);
    assert_eq!(outcome.digest, want.manifest_digest);
}

#[tokio::test]
async fn push_refuses_what_it_cannot_push_with_the_reason() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let creds = Credentials::Anonymous;
    let err = images
        .push(&format!("{}/nothere:v1", reg.addr), &creds, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("nothere"), "{err}");

    let (pulled, _) = images
        .pull(&reg.image("busybox"), &creds, None)
        .await
        .unwrap();
    let err = images.push(&pulled.id, &creds, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("image id"), "{err}");
}

#[tokio::test]
async fn push_authenticates_and_keeps_the_password_out_of_errors() {
    let reg = TestRegistry::start_with_auth("pusher", "s3cret-pass");
    reg.push_as(&["busybox"], Some(("pusher", "s3cret-pass")));
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let good = Credentials::Basic {
        username: "pusher".into(),
        password: Secret::new("s3cret-pass"),
    };
    images
        .pull(&reg.image("busybox"), &good, None)
        .await
        .unwrap();
    let copy = format!("{}/mine/busybox:1", reg.addr);
    images.tag(&reg.image("busybox"), &copy).await.unwrap();

    let err = images
        .push(&copy, &Credentials::Anonymous, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthenticated, "{err}");
    let bad = Credentials::Basic {
        username: "pusher".into(),
        password: Secret::new("wrong-pass"),
    };
    let err = images.push(&copy, &bad, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthenticated, "{err}");
    assert!(!format!("{err} {err:?} {bad:?}").contains("wrong-pass"));

    let (_, outcome) = images.push(&copy, &good, None).await.unwrap();
    assert_eq!(
        outcome.digest,
        test_images().get("busybox").manifest_digest,
        "pushed with the right password"
    );
    assert!(!format!("{outcome:?}").contains("s3cret-pass"));
}

#[tokio::test]
async fn a_layer_larger_than_a_chunk_goes_in_several_patches() {
    let want = test_images().get("bench");
    let reg = TestRegistry::start();
    reg.push(&["bench"]);
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let creds = Credentials::Anonymous;
    let (pulled, _) = images
        .pull(&reg.image("bench"), &creds, None)
        .await
        .unwrap();
    let big = pulled
        .layers
        .iter()
        .find(|l| l.size > berth_image::upload::CHUNK_BYTES as u64)
        .expect("the bench image has a layer over one chunk");

    let copy = format!("{}/big/bench:1", reg.addr);
    images.tag(&reg.image("bench"), &copy).await.unwrap();
    // Deep enough that no count is dropped.
    let (tx, rx) = mpsc::channel(4096);
    let (_, outcome) = images.push(&copy, &creds, Some(tx)).await.unwrap();
    assert_eq!(outcome.digest, want.manifest_digest);
    let id = big.diff_id["sha256:".len()..][..12].to_string();
    let counts: Vec<u64> = drain(rx)
        .into_iter()
        .filter_map(|p| match p {
            PushProgress::Layer {
                id: i,
                state: PushLayerState::Pushing { current, .. },
            } if i == id => Some(current),
            _ => None,
        })
        .collect();
    assert_eq!(
        counts,
        [berth_image::upload::CHUNK_BYTES as u64, big.size],
        "one count per chunk"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let (back, _) = service(other_dir.path())
        .pull(&copy, &creds, None)
        .await
        .unwrap();
    assert_eq!(back.id, want.config_digest);
}

#[tokio::test]
async fn push_asks_the_token_server_for_push_access() {
    let tokens = berth_testkit::TokenServer::start("pusher", "tok3n-pass");
    let reg = TestRegistry::start_with_token_server(&tokens);
    reg.push_as(&["busybox"], Some(("pusher", "tok3n-pass")));
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let creds = Credentials::Basic {
        username: "pusher".into(),
        password: Secret::new("tok3n-pass"),
    };
    images
        .pull(&reg.image("busybox"), &creds, None)
        .await
        .unwrap();
    let copy = format!("{}/tokens/busybox:1", reg.addr);
    images.tag(&reg.image("busybox"), &copy).await.unwrap();

    let err = images
        .push(&copy, &Credentials::Anonymous, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Unauthenticated,
        "an anonymous token grants nothing: {err}"
    );
    // A pull-only token would be refused at the first upload.
    let (_, outcome) = images.push(&copy, &creds, None).await.unwrap();
    assert_eq!(outcome.digest, test_images().get("busybox").manifest_digest);
}
