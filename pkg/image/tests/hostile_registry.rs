//! Pulls from a registry that lies, floods and redirects: what berth reads,
//! unpacks, follows and quotes back stays bounded (issue 11, findings 5, 11
//! and 15).

mod common;

use std::sync::{Arc, Mutex};

use berth_errdefs::ErrorKind;
use berth_image::fetch::{Credentials, Secret};
use berth_image::limits::Limits;
use berth_image::manifest::OCI_MANIFEST;
use bytes::Bytes;
use common::*;
use serde_json::json;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Far more than any cap: a body this long must never be read whole.
const HUGE: u64 = 300 * MIB;

fn spaces() -> Bytes {
    Bytes::from(vec![b' '; 64 * 1024])
}

fn small_layer() -> Vec<u8> {
    tar(&[("hello", 0o644, b"hello\n")])
}

#[tokio::test]
async fn a_huge_manifest_is_refused_without_reading_it_whole() {
    // Streamed with no length: the client must stop at the cap.
    let streamed = Server::start(|r| {
        if r.path().contains("/manifests/") {
            Reply::Stream {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                chunk: spaces(),
                total: HUGE,
            }
        } else {
            Reply::not_found()
        }
    })
    .await;
    // Announced by Content-Length: refused before the body is read.
    let announced = Server::start(|r| {
        if r.path().contains("/manifests/") {
            Reply::Stream {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), OCI_MANIFEST.into()),
                    ("Content-Length".into(), HUGE.to_string()),
                ],
                chunk: spaces(),
                total: HUGE,
            }
        } else {
            Reply::not_found()
        }
    })
    .await;
    for reg in [&streamed, &announced] {
        let dir = tempfile::tempdir().unwrap();
        let svc = open_service(dir.path(), Limits::default());
        let name = format!("{}/huge:latest", reg.host());
        let (result, took) = within(30, pull(&svc, &name)).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
        assert!(
            err.message.contains(&format!("manifest {name}"))
                && err.message.contains("4 MiB limit"),
            "names the reference and the limit: {err}"
        );
        assert!(took.as_secs() < 10, "refused quickly: {took:?}");
        // Whatever went out is the cap plus the sockets' buffers, not 300 MiB.
        assert!(
            reg.streamed() < 64 * MIB,
            "the read stopped early: {} bytes sent",
            reg.streamed()
        );
    }
}

#[tokio::test]
async fn descriptors_over_the_caps_are_refused_before_download() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: [(&str, Edit, &str); 3] = [
        (
            "big-config",
            Box::new(|m| m["config"]["size"] = json!(5 * MIB)),
            "4 MiB limit",
        ),
        (
            "big-layer",
            Box::new(|m| m["layers"][0]["size"] = json!(9 * GIB)),
            "8 GiB per-layer limit",
        ),
        (
            "big-image",
            Box::new(|m| {
                for i in 0..3 {
                    m["layers"][i]["size"] = json!(6 * GIB);
                }
            }),
            "16 GiB per-image limit",
        ),
    ];
    // Three layers, each under the per-layer limit in the last case.
    let tars: Vec<Vec<u8>> = (0..3)
        .map(|i| tar(&[(&format!("f{i}"), 0o644, b"x")]))
        .collect();
    for (repo, edit, limit) in cases {
        let image = TestImage::new(&tars, edit);
        let reg = serve_image(repo, image.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let svc = open_service(dir.path(), Limits::default());
        let err = pull(&svc, &format!("{}/{repo}:latest", reg.host()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{repo}: {err}");
        assert!(err.message.contains(limit), "{repo}: {err}");
        let named = match repo {
            "big-config" => &image.config_digest,
            "big-layer" => &image.layers[0].0,
            _ => &image.manifest_digest,
        };
        assert!(
            err.message.contains(named.as_str()),
            "{repo} names {named}: {err}"
        );
        // The manifest alone was fetched: not the config, not a layer.
        let blobs = reg.requests_to(&format!("/v2/{repo}/blobs/"));
        let wanted_blobs: Vec<_> = blobs.iter().map(|s| s.target.clone()).collect();
        if repo == "big-config" {
            assert!(wanted_blobs.is_empty(), "{repo}: {wanted_blobs:?}");
        } else {
            // The config is small and fine; no layer was asked for.
            assert!(
                wanted_blobs
                    .iter()
                    .all(|t| t.ends_with(&image.config_digest)),
                "{repo}: {wanted_blobs:?}"
            );
        }
        assert_nothing_unpacked(dir.path());
    }
}

#[tokio::test]
async fn blobs_longer_than_their_descriptor_are_cut_off_while_streaming() {
    let image = TestImage::new(&[small_layer()], |_| {});
    for target in ["config", "layer"] {
        let digest = if target == "config" {
            image.config_digest.clone()
        } else {
            image.layers[0].0.clone()
        };
        let served = image.clone();
        let flood = digest.clone();
        // The blob's bytes, then an endless tail.
        let reg = Server::start(move |r| {
            if r.path().ends_with(&flood) {
                let mut chunk = served.blob(&flood).unwrap().to_vec();
                chunk.resize(64 * 1024, b'x');
                Reply::Stream {
                    status: 200,
                    headers: Vec::new(),
                    chunk: chunk.into(),
                    total: HUGE,
                }
            } else {
                served.answer("long", r).unwrap_or_else(Reply::not_found)
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let svc = open_service(dir.path(), Limits::default());
        let err = pull(&svc, &format!("{}/long:latest", reg.host()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{target}: {err}");
        assert!(
            err.message.contains(&digest) && err.message.contains("longer than its descriptor"),
            "{target}: {err}"
        );
        assert!(
            reg.streamed() < 64 * MIB,
            "{target}: the read stopped early: {} bytes sent",
            reg.streamed()
        );
        assert_nothing_unpacked(dir.path());
        assert!(
            !dir.path()
                .join("images/blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
                .exists(),
            "{target}: not stored"
        );
    }
}

#[tokio::test]
async fn huge_error_bodies_are_cut_short_in_the_error() {
    let flood = "A".repeat(5 * MIB as usize);
    let envelope = serde_json::to_vec(&json!({"errors": [{
        "code": "MANIFEST_UNKNOWN",
        "message": "B".repeat(5 * MIB as usize),
        "detail": {"junk": "C".repeat(MIB as usize)},
    }]}))
    .unwrap();
    let image = TestImage::new(&[small_layer()], |_| {});
    let config = image.config_digest.clone();
    let reg = Server::start(move |r| {
        let path = r.path();
        if path.starts_with("/v2/plain/manifests/") {
            Reply::status(500, flood.clone())
        } else if path.starts_with("/v2/envelope/manifests/") {
            Reply::status(404, envelope.clone())
        } else if path.ends_with(&config) {
            Reply::status(403, flood.clone())
        } else {
            image.answer("denied", r).unwrap_or_else(Reply::not_found)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    for (repo, kind, says) in [
        ("plain", ErrorKind::Unavailable, "HTTP 500"),
        ("envelope", ErrorKind::NotFound, "MANIFEST_UNKNOWN"),
        ("denied", ErrorKind::PermissionDenied, "HTTP 403"),
    ] {
        let name = format!("{}/{repo}:latest", reg.host());
        let err = pull(&svc, &name).await.unwrap_err();
        assert_eq!(err.kind, kind, "{repo}: {err}");
        assert!(
            err.message.len() < 1024,
            "{repo}: {} bytes: {}",
            err.message.len(),
            &err.message[..2048.min(err.message.len())]
        );
        assert!(
            err.message.contains(says) && err.message.contains(&reg.host()),
            "{repo} says what happened: {err}"
        );
    }
}

#[tokio::test]
async fn a_gzip_bomb_stops_at_the_layer_limit_and_leaves_nothing() {
    let zeros = vec![0u8; 64 * MIB as usize];
    let image = TestImage::new(&[tar(&[("bomb", 0o644, &zeros)])], |_| {});
    let layer = image.layers[0].0.clone();
    assert!(image.layers[0].1.len() < MIB as usize, "small compressed");
    let reg = serve_image("bomb", image).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_layer_bytes: MIB,
        ..Limits::default()
    };
    let svc = open_service(dir.path(), limits);
    let err = pull(&svc, &format!("{}/bomb:latest", reg.host()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message.contains(&layer) && err.message.contains("1 MiB per-layer limit"),
        "names the layer and the limit: {err}"
    );
    assert_nothing_unpacked(dir.path());
    assert!(
        !dir.path()
            .join("images/blobs/sha256")
            .join(layer.trim_start_matches("sha256:"))
            .exists(),
        "the blob is not kept"
    );
}

#[tokio::test]
async fn layers_together_stop_at_the_image_limit() {
    let a = vec![1u8; 700 * 1024];
    let b = vec![2u8; 700 * 1024];
    let image = TestImage::new(
        &[tar(&[("a", 0o644, &a)]), tar(&[("b", 0o644, &b)])],
        |_| {},
    );
    let reg = serve_image("pair", image.clone()).await;
    let name = format!("{}/pair:latest", reg.host());

    let dir = tempfile::tempdir().unwrap();
    let tight = Limits {
        max_layer_bytes: MIB,
        max_image_bytes: MIB,
        ..Limits::default()
    };
    let err = pull(&open_service(dir.path(), tight), &name)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message.contains("1 MiB per-image limit"),
        "names the limit: {err}"
    );
    let stopped = image
        .layers
        .iter()
        .position(|(d, _)| err.message.contains(d.as_str()))
        .unwrap_or_else(|| panic!("names a layer: {err}"));
    // The layers unpack side by side: the one that crossed the limit left
    // nothing; the other may have finished first and stays, complete, for
    // a retry or the next garbage collection, as after any failed pull.
    assert_tmp_clean(dir.path());
    let stopped_diff = image.diff_ids[stopped].trim_start_matches("sha256:");
    let left = snapshots(dir.path());
    assert!(
        left.len() <= 1 && !left.iter().any(|s| s == stopped_diff),
        "{left:?}"
    );

    // Room for both: the same image pulls.
    let dir = tempfile::tempdir().unwrap();
    let roomy = Limits {
        max_layer_bytes: MIB,
        max_image_bytes: 2 * MIB,
        ..Limits::default()
    };
    let pulled = pull(&open_service(dir.path(), roomy), &name).await.unwrap();
    assert_eq!(pulled.layers.len(), 2);
}

#[tokio::test]
async fn manifests_are_never_fetched_through_a_redirect() {
    let image = TestImage::new(&[small_layer()], |_| {});
    let elsewhere = serve_image("moved", image.clone()).await;
    let target = format!("http://{}/v2/moved/manifests/latest", elsewhere.host());
    let reg = Server::start(move |r| {
        if r.path().contains("/manifests/") {
            Reply::redirect(&target)
        } else {
            image.answer("moved", r).unwrap_or_else(Reply::not_found)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let name = format!("{}/moved:latest", reg.host());
    let err = pull(&svc, &name).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.message.contains("redirect") && err.message.contains(&name),
        "{err}"
    );
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

/// A registry that asks for basic credentials and sends every blob on
/// `hops` redirects: through itself, and for the last one to `storage`
/// (when given) with a signed query, as cloud registries do.
async fn redirecting_registry(
    repo: &'static str,
    image: TestImage,
    hops: usize,
    storage: Option<String>,
) -> Server {
    let reg_host = Arc::new(Mutex::new(String::new()));
    let host = reg_host.clone();
    let reg = Server::start(move |r| {
        if r.header("Authorization").is_none() {
            return Reply::Full {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    r#"Basic realm="test registry""#.into(),
                )],
                body: Bytes::new(),
            };
        }
        let path = r.path();
        let (hop, digest) = if let Some(d) = path.strip_prefix(&format!("/v2/{repo}/blobs/")) {
            (0, d)
        } else if let Some(rest) = path.strip_prefix("/hop/") {
            let (n, d) = rest.split_once('/').unwrap();
            (n.parse::<usize>().unwrap(), d)
        } else {
            return image.answer(repo, r).unwrap_or_else(Reply::not_found);
        };
        if hop == hops {
            return Reply::ok("application/octet-stream", image.blob(digest).unwrap());
        }
        match &storage {
            Some(s) if hop + 1 == hops => {
                Reply::redirect(&format!("http://{s}/storage/{digest}?sig=s3cr3t-signature"))
            }
            _ => Reply::redirect(&format!(
                "http://{}/hop/{}/{digest}",
                host.lock().unwrap(),
                hop + 1
            )),
        }
    })
    .await;
    *reg_host.lock().unwrap() = reg.host();
    reg
}

fn credentials() -> Credentials {
    Credentials::Basic {
        username: "berth".into(),
        password: Secret::new("pa55word"),
    }
}

/// Captures log lines while alive (on this thread: tests run on a
/// current-thread runtime, so the pull logs here).
struct Captured {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Captured {
    fn start() -> Captured {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let w = W(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        Captured {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).to_string()
    }
}

#[tokio::test]
async fn blob_redirects_reach_storage_without_credentials() {
    let log = Captured::start();
    let image = TestImage::new(&[small_layer()], |_| {});
    let storage_image = image.clone();
    let storage = Server::start(move |r| {
        let digest = r.path().trim_start_matches("/storage/");
        storage_image
            .blob(digest)
            .map_or_else(Reply::not_found, |b| {
                Reply::ok("application/octet-stream", b)
            })
    })
    .await;
    let reg = redirecting_registry("stored", image.clone(), 2, Some(storage.host())).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let pulled = pull_as(
        &svc,
        &format!("{}/stored:latest", reg.host()),
        &credentials(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, image.config_digest);

    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 2, "config and layer: {at_storage:?}");
    for s in &at_storage {
        assert_eq!(
            s.header("Authorization"),
            None,
            "no credentials off the registry: {s:?}"
        );
        assert!(s.target.ends_with("?sig=s3cr3t-signature"), "{s:?}");
    }
    // The registry's own hop kept them: same host, same credentials.
    let hops = reg.requests_to("/hop/");
    assert_eq!(hops.len(), 2, "{hops:?}");
    assert!(
        hops.iter().all(|s| s.header("Authorization").is_some()),
        "{hops:?}"
    );

    let text = log.text();
    assert!(
        text.contains(&format!("http://{}/storage/", storage.host())),
        "each redirect is logged: {text}"
    );
    assert!(
        !text.contains("s3cr3t-signature"),
        "signed queries stay out of the log: {text}"
    );
    assert!(!text.contains("pa55word"), "{text}");
}

#[tokio::test]
async fn blob_redirects_are_followed_up_to_the_bound() {
    let image = TestImage::new(&[small_layer()], |_| {});
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());

    let five = redirecting_registry("five", image.clone(), 5, None).await;
    pull_as(
        &svc,
        &format!("{}/five:latest", five.host()),
        &credentials(),
    )
    .await
    .expect("five redirects are followed");

    let six = redirecting_registry("six", image.clone(), 6, None).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path(), Limits::default());
    let err = pull_as(&svc, &format!("{}/six:latest", six.host()), &credentials())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.message.contains("more than 5 redirects") && err.message.contains(&image.config_digest),
        "{err}"
    );
    assert!(
        six.requests_to("/hop/6/").is_empty(),
        "the sixth redirect is not followed"
    );
}
