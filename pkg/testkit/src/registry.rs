//! A real local registry (Debian's docker-registry on loopback), started and
//! stopped by the test, holding the images that hack/ builds.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::workspace_root;

/// Digests of one test image, from `images.json` written by the builder.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: usize,
}

pub struct TestImages {
    pub dir: PathBuf,
    pub images: HashMap<String, TestImage>,
}

impl TestImages {
    pub fn get(&self, name: &str) -> &TestImage {
        self.images
            .get(name)
            .unwrap_or_else(|| panic!("test image {name} is not in images.json"))
    }

    /// Unpacks every layer of a single-platform gzip test image into `dest`
    /// with tar: a plain rootfs for tests and floors that bypass berthd.
    pub fn unpack(&self, name: &str, dest: &Path) {
        let layout = self.dir.join(name);
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let json = |p: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(&p).expect("read layout")).expect("json")
        };
        let index = json(layout.join("index.json"));
        let manifest = json(blob(
            index["manifests"][0]["digest"].as_str().expect("digest"),
        ));
        std::fs::create_dir_all(dest).expect("create rootfs dir");
        for layer in manifest["layers"].as_array().expect("layers") {
            let ok = Command::new("tar")
                .arg("-xzf")
                .arg(blob(layer["digest"].as_str().expect("digest")))
                .arg("-C")
                .arg(dest)
                .status()
                .expect("run tar");
            assert!(ok.success(), "unpack {name} into {}", dest.display());
        }
    }
}

/// Builds the test images once (the builder skips work when its stamp
/// matches) under a file lock, so parallel test processes share one build.
pub fn test_images() -> &'static TestImages {
    static IMAGES: OnceLock<TestImages> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = std::env::var_os("BERTH_TEST_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/test-images"));
        std::fs::create_dir_all(&dir).expect("create test image dir");
        let lock = File::create(dir.with_extension("lock")).expect("image lock file");
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let status = Command::new("python3")
            .arg(workspace_root().join("hack/build-test-images.py"))
            .arg(&dir)
            .status()
            .expect("run hack/build-test-images.py");
        assert!(status.success(), "hack/build-test-images.py failed");
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("images.json")).expect("read images.json"),
        )
        .expect("parse images.json");
        let images = json
            .as_object()
            .expect("images.json is an object")
            .iter()
            .map(|(name, v)| {
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                (
                    name.clone(),
                    TestImage {
                        manifest_digest: s("manifest_digest"),
                        config_digest: s("config_digest"),
                        layers: v["layers"].as_u64().unwrap_or_default() as usize,
                    },
                )
            })
            .collect();
        TestImages { dir, images }
    })
}

/// A docker-registry process on 127.0.0.1 with its own storage.
pub struct TestRegistry {
    dir: TempDir,
    pub addr: String,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// A registry that demands HTTP basic auth with these credentials.
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((user, password)))
    }

    /// A registry that demands bearer tokens from `tokens`.
    pub fn start_with_token_server(tokens: &crate::TokenServer) -> TestRegistry {
        Self::launch(|cmd| {
            cmd.env("REGISTRY_TOKEN_REALM", &tokens.realm)
                .env("REGISTRY_TOKEN_CERT", &tokens.cert_path);
        })
    }

    fn start_with(auth: Option<(&str, &str)>) -> TestRegistry {
        Self::launch(|cmd| {
            if let Some((u, p)) = auth {
                cmd.env("REGISTRY_HTPASSWD_USER", u)
                    .env("REGISTRY_HTPASSWD_PASS", p);
            }
        })
    }

    fn launch(configure: impl FnOnce(&mut Command)) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("registry dir");
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("hack/registry.sh"))
            .arg("start")
            .arg(dir.path());
        configure(&mut cmd);
        let out = cmd.output().expect("run hack/registry.sh");
        assert!(
            out.status.success(),
            "hack/registry.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::fs::read_to_string(dir.path().join("port")).expect("registry port file");
        TestRegistry {
            addr: format!("127.0.0.1:{}", port.trim()),
            dir,
        }
    }

    /// Pushes test images (all when `names` is empty).
    pub fn push(&self, names: &[&str]) -> &Self {
        self.push_as(names, None)
    }

    pub fn push_as(&self, names: &[&str], creds: Option<(&str, &str)>) -> &Self {
        let images = test_images();
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("hack/push-test-images.sh"))
            .arg(&images.dir)
            .arg(&self.addr)
            .args(names);
        if let Some((u, p)) = creds {
            cmd.env("PUSH_CREDS", format!("{u}:{p}"));
        }
        let out = cmd.output().expect("run hack/push-test-images.sh");
        assert!(
            out.status.success(),
            "push of {names:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    /// Points `<addr>/<to>:latest` at the image `<addr>/<from>:latest`, as a
    /// new push of a moving tag would.
    pub fn retag(&self, from: &str, to: &str) {
        let out = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--all"])
            .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{}", self.image(from)))
            .arg(format!("docker://{}", self.image(to)))
            .output()
            .expect("run skopeo copy");
        assert!(
            out.status.success(),
            "retag {from} as {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<addr>/<name>:latest`
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}:latest", self.addr)
    }

    /// The registry's own log, to see which requests reached it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob (to corrupt it in a test).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace_root().join("hack/registry.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
