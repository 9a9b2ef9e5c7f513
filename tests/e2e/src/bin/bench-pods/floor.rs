//! The floors: `<runtime> run --detach` of berth's own spec for the same
//! image, on a plain copy of the rootfs, with fresh namespaces instead of
//! pinned ones, through the same handler (same wrapper) berthd uses. The
//! first floor has the seccomp profile for the runtime to compile; the
//! second the same filter precompiled in crun's annotation.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use berth_testkit::{cgroups_under, test_images};

/// The default handler, as berthd runs it on this host, with `root`.
pub fn handler(root: &Path) -> berth_oci::OciRuntime {
    let mode = berth_cgroups::detect(Path::new("/sys/fs/cgroup")).unwrap();
    let mut h = berth_oci::default_handlers(mode, root)
        .into_iter()
        .next()
        .expect("an OCI runtime");
    h.root = root.to_path_buf();
    berth_oci::OciRuntime::new(h)
}

/// One runtime call through the handler, timed. Only stdio reaches the
/// (possibly detached) container: an inherited pipe end would keep the
/// caller waiting for EOF for as long as it runs. Errors go to `errors`.
fn runtime_call(root: &Path, args: &[&str], errors: &Path) -> f64 {
    let mut cmd = handler(root).command();
    // SAFETY: close_range is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let t = Instant::now();
    let status = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(errors).unwrap())
        .status()
        .unwrap();
    let took = t.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "{args:?}: {}",
        std::fs::read_to_string(errors).unwrap_or_default()
    );
    took
}

pub struct Floor {
    work: PathBuf,
    root: PathBuf,
    cgroup: String,
    spec: serde_json::Value,
    precompiled: serde_json::Value,
    ids: Vec<String>,
}

/// (`spec` with its seccomp profile in `linux.seccomp`, the same with the
/// profile as precompiled BPF), whichever form berthd wrote: the profile
/// is Docker's default for the spec's bounding set.
fn seccomp_forms(spec: serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    use berth_oci::seccomp_bpf::{BpfCache, BPF_ANNOTATION};
    let bounding: oci_spec::runtime::Capabilities =
        serde_json::from_value(spec["process"]["capabilities"]["bounding"].clone()).unwrap();
    let profile = berth_oci::seccomp::default_profile(&bounding);
    let bpf = BpfCache::new(None)
        .get(&profile)
        .expect("the default profile precompiles");
    let mut compiling = spec;
    if let Some(a) = compiling["annotations"].as_object_mut() {
        a.remove(BPF_ANNOTATION);
    }
    compiling["linux"]["seccomp"] = serde_json::to_value(&profile).unwrap();
    let mut precompiled = compiling.clone();
    precompiled["linux"]
        .as_object_mut()
        .unwrap()
        .remove("seccomp");
    precompiled["annotations"][BPF_ANNOTATION] = bpf.to_string().into();
    (compiling, precompiled)
}

impl Floor {
    pub fn prepare(spec_from: &Path, work: &Path, cgroup: &str) -> Floor {
        let rootfs = work.join("rootfs");
        test_images().unpack("busybox", &rootfs);
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(spec_from).unwrap()).unwrap();
        spec["root"]["path"] = rootfs.display().to_string().into();
        for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
            ns.as_object_mut().unwrap().remove("path");
        }
        // Pod files live in the (removed) pod's directory.
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["type"] != "bind");
        let (spec, precompiled) = seccomp_forms(spec);
        Floor {
            work: work.to_path_buf(),
            root: work.join("state"),
            cgroup: cgroup.to_string(),
            spec,
            precompiled,
            ids: Vec::new(),
        }
    }

    fn errors(&self, id: &str) -> PathBuf {
        self.work.join(format!("{id}.errors"))
    }

    fn bundle(&mut self, id: &str, precompiled: bool) -> String {
        let bundle = self.work.join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        let spec = if precompiled {
            &mut self.precompiled
        } else {
            &mut self.spec
        };
        spec["linux"]["cgroupsPath"] = format!("{}/{id}", self.cgroup).into();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(spec).unwrap(),
        )
        .unwrap();
        self.ids.push(id.to_string());
        bundle.display().to_string()
    }

    fn id(n: usize, precompiled: bool) -> String {
        format!("floor-{n}-{}", if precompiled { "bpf" } else { "spec" })
    }

    /// `run --detach`, timed, with the runtime compiling the profile
    /// (`precompiled` false) or loading the precompiled filter.
    pub fn run(&mut self, n: usize, precompiled: bool) -> f64 {
        let id = Self::id(n, precompiled);
        let b = self.bundle(&id, precompiled);
        runtime_call(
            &self.root,
            &["run", "--detach", "--bundle", &b, &id],
            &self.errors(&id),
        )
    }

    /// `count` runs at once (numbered from `first`): the wall time and
    /// each run's own.
    pub fn run_many(&mut self, first: usize, count: usize, precompiled: bool) -> (f64, Vec<f64>) {
        let runs: Vec<(String, String, PathBuf)> = (first..first + count)
            .map(|n| {
                let id = Self::id(n, precompiled);
                let b = self.bundle(&id, precompiled);
                let e = self.errors(&id);
                (id, b, e)
            })
            .collect();
        let root = &self.root;
        let t = Instant::now();
        let each = std::thread::scope(|s| {
            let threads: Vec<_> = runs
                .iter()
                .map(|(id, b, e)| {
                    s.spawn(move || runtime_call(root, &["run", "--detach", "--bundle", b, id], e))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        (t.elapsed().as_secs_f64(), each)
    }

    /// The same as two calls, as a monitor makes them: (create, start).
    pub fn create_start(&mut self, n: usize) -> (f64, f64) {
        let id = format!("split-{n}");
        let b = self.bundle(&id, true);
        let e = self.errors(&id);
        let create = runtime_call(&self.root, &["create", "--bundle", &b, &id], &e);
        let start = runtime_call(&self.root, &["start", &id], &e);
        (create, start)
    }

    /// `delete --force` of every container run: the time of each.
    pub fn cleanup(self) -> Vec<f64> {
        let times = self
            .ids
            .iter()
            .map(|id| runtime_call(&self.root, &["delete", "--force", id], &self.errors(id)))
            .collect();
        remove_cgroup_dirs(&self.cgroup);
        times
    }
}

/// Removes the (empty) cgroup `cgroup` in every hierarchy.
pub fn remove_cgroup_dirs(cgroup: &str) {
    let mut dirs = cgroups_under(cgroup);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(cgroup.trim_start_matches('/')));
    }
}
