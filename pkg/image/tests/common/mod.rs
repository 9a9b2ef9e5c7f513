//! A registry for tests: a small HTTP/1.1 server on 127.0.0.1 that answers
//! each request with whatever the test's handler says (well-formed OCI
//! answers, or hostile ones), logs what it was asked, and counts the bytes
//! of streamed bodies it managed to write. Plus image building helpers.

#![allow(dead_code)] // each test binary uses its own part of this

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::fetch::Credentials;
use berth_image::limits::Limits;
use berth_image::manifest::{Platform, OCI_MANIFEST};
use berth_image::registries::RegistriesConfig;
use berth_image::service::{Image, ImageService};
use berth_store::Store;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// `chunk` written again and again until `total` bytes went out or the
    /// client hung up; no Content-Length unless `headers` has one.
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        chunk: Bytes,
        total: u64,
    },
}

impl Reply {
    pub fn ok(content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn status(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn redirect(location: &str) -> Reply {
        Reply::Full {
            status: 307,
            headers: vec![("Location".into(), location.into())],
            body: Bytes::new(),
        }
    }

    pub fn not_found() -> Reply {
        Reply::status(
            404,
            r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
        )
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = {
            let seen = seen.clone();
            let streamed = streamed.clone();
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (seen, streamed, handler) =
                        (seen.clone(), streamed.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _ = serve(conn, &seen, &streamed, &*handler).await;
                    });
                }
            })
        };
        Server {
            addr,
            seen,
            streamed,
            task,
        }
    }

    /// `127.0.0.1:<port>`, as a registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path().starts_with(prefix))
            .collect()
    }

    /// Bytes of streamed bodies written so far.
    pub fn streamed(&self) -> u64 {
        self.streamed.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    seen: &Mutex<Vec<Seen>>,
    streamed: &AtomicU64,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let request = Seen {
        method: first.next().unwrap_or_default().to_string(),
        target: first.next().unwrap_or_default().to_string(),
        headers: lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    };
    seen.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let (status, headers, length) = match &reply {
        Reply::Full {
            status,
            headers,
            body,
        } => (*status, headers, Some(body.len())),
        Reply::Stream {
            status, headers, ..
        } => (*status, headers, None),
    };
    let mut out = Vec::new();
    write!(out, "HTTP/1.1 {status} X\r\nConnection: close\r\n")?;
    for (k, v) in headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    if let Some(n) = length {
        write!(out, "Content-Length: {n}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    conn.write_all(&out).await?;
    match reply {
        Reply::Full { body, .. } => conn.write_all(&body).await?,
        Reply::Stream { chunk, total, .. } => {
            let mut sent = 0u64;
            while sent < total {
                let n = chunk.len().min((total - sent) as usize);
                conn.write_all(&chunk[..n]).await?;
                sent += n as u64;
                streamed.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    conn.shutdown().await
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A tar of regular files: (path, mode, contents).
pub fn tar(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A single-platform image: gzip layers, a config, a manifest.
#[derive(Clone)]
pub struct TestImage {
    pub manifest: Bytes,
    pub manifest_digest: String,
    pub config: Bytes,
    pub config_digest: String,
    /// (digest, compressed bytes)
    pub layers: Vec<(String, Bytes)>,
    pub diff_ids: Vec<String>,
}

impl TestImage {
    /// Builds an image from uncompressed layer tars; `edit` may change the
    /// manifest JSON (e.g. to lie about sizes) before it is serialised.
    pub fn new(tars: &[Vec<u8>], edit: impl FnOnce(&mut serde_json::Value)) -> TestImage {
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layers: Vec<(String, Bytes)> = tars
            .iter()
            .map(|t| {
                let gz = gzip(t);
                (sha256(&gz), Bytes::from(gz))
            })
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": &diff_ids},
        }))
        .unwrap();
        let config_digest = sha256(&config);
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|(d, b)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d,
                "size": b.len(),
            })).collect::<Vec<_>>(),
        });
        edit(&mut manifest);
        let manifest = serde_json::to_vec(&manifest).unwrap();
        TestImage {
            manifest_digest: sha256(&manifest),
            manifest: manifest.into(),
            config: config.into(),
            config_digest,
            layers,
            diff_ids,
        }
    }

    /// The well-behaved answer for `request` in repository `repo`, if any.
    pub fn answer(&self, repo: &str, request: &Seen) -> Option<Reply> {
        let path = request.path();
        let rest = path.strip_prefix(&format!("/v2/{repo}/"))?;
        if let Some(reference) = rest.strip_prefix("manifests/") {
            if reference == "latest" || reference == self.manifest_digest {
                return Some(Reply::ok(OCI_MANIFEST, self.manifest.clone()));
            }
            return Some(Reply::not_found());
        }
        let digest = rest.strip_prefix("blobs/")?;
        Some(self.blob(digest).map_or_else(Reply::not_found, |b| {
            Reply::ok("application/octet-stream", b)
        }))
    }

    pub fn blob(&self, digest: &str) -> Option<Bytes> {
        if digest == self.config_digest {
            return Some(self.config.clone());
        }
        self.layers
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, b)| b.clone())
    }
}

/// A registry that serves one image at `<host>/<repo>:latest` and answers
/// 404 to anything else.
pub async fn serve_image(repo: &'static str, image: TestImage) -> Server {
    Server::start(move |r| image.answer(repo, r).unwrap_or_else(Reply::not_found)).await
}

/// Runs `f` under a deadline: each hostile case must fail fast, not hang.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {secs}s"));
    (out, started.elapsed())
}

/// Everything under `dir`, as paths relative to it.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn needs_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: run the suite as root"
    );
}

/// An image service on a fresh root under `dir`, pulling with `limits`.
pub fn open_service(dir: &Path, limits: Limits) -> ImageService {
    let store = Arc::new(Store::open(&dir.join("store")).unwrap());
    ImageService::open_with_limits(
        &dir.join("images"),
        store,
        RegistriesConfig::default(),
        limits,
    )
    .unwrap()
}

/// Pulls `name` anonymously, with a deadline.
pub async fn pull(svc: &ImageService, name: &str) -> berth_errdefs::Result<Image> {
    pull_as(svc, name, &Credentials::Anonymous).await
}

pub async fn pull_as(
    svc: &ImageService,
    name: &str,
    creds: &Credentials,
) -> berth_errdefs::Result<Image> {
    let (r, _) = within(30, svc.pull(name, creds, Some(Platform::linux("amd64")))).await;
    r.map(|(image, _)| image)
}

/// Nothing of a failed pull is left: no work in progress, no snapshot.
pub fn assert_nothing_unpacked(dir: &Path) {
    assert_tmp_clean(dir);
    assert_eq!(
        tree(&dir.join("images/snapshots")),
        Vec::<String>::new(),
        "no snapshot"
    );
}

pub fn assert_tmp_clean(dir: &Path) {
    assert_eq!(
        tree(&dir.join("images/tmp")),
        Vec::<String>::new(),
        "tmp is clean"
    );
}

/// The snapshot directories, by diff id hex.
pub fn snapshots(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("images/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    out.sort();
    out
}
