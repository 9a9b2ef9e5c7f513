//! Pod start benchmark: RunPodSandbox + CreateContainer + StartContainer of
//! a busybox `sleep` (image present) through berthd's CRI, beside two floors
//! measured in the same run: `<runtime> run --detach` of the same rootfs and
//! the same generated spec by the same handler (same wrapper), one process
//! tree per run, first with the runtime compiling the seccomp profile itself
//! (the spec's `linux.seccomp`), then with the filter precompiled
//! (`run.oci.seccomp_bpf_data`, as berthd hands it to crun). Also: 20 pods started concurrently, stop + remove, berthd's
//! idle RSS and the RSS each running container adds (berthd + monitor).
//!
//! Run with `hack/bench-pods.sh` (release build).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use berth_e2e::bench::{ms, percentile, rss_kib};
use berth_testkit::{cgroups_under, test_images, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const RUNS: usize = 50;
const CONCURRENT: usize = 20;

fn pod_config(n: usize) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("bench-{n}"),
            uid: format!("uid-{n}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{n}"),
        ..Default::default()
    }
}

fn container_config(image: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "sleep".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        // Docker's profile, asked for explicitly (as kubelet's SeccompDefault
        // does): a nil profile is unconfined, which would make the figures
        // incomparable with those taken before that change.
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                seccomp: Some(api::SecurityProfile {
                    profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Per-call times of the last `start_pod` calls (run, create, start).
static SPLITS: std::sync::Mutex<Vec<[f64; 3]>> = std::sync::Mutex::new(Vec::new());

/// RunPodSandbox + CreateContainer + StartContainer; returns (pod, container, seconds).
async fn start_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    n: usize,
    image: &str,
) -> (String, String, f64) {
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config(n)),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let t_run = t.elapsed().as_secs_f64();
    let ctr = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(pod_config(n)),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    let t_create = t.elapsed().as_secs_f64();
    rt.start_container(api::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("start");
    let total = t.elapsed().as_secs_f64();
    SPLITS
        .lock()
        .unwrap()
        .push([t_run, t_create - t_run, total - t_create]);
    (pod, ctr, total)
}

async fn stop_remove(rt: &mut RuntimeServiceClient<Channel>, pod: &str) -> f64 {
    let t = Instant::now();
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("stop pod");
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("remove pod");
    t.elapsed().as_secs_f64()
}

/// The default handler, as berthd runs it on this host, with `root`.
fn handler(root: &Path) -> berth_oci::OciRuntime {
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

/// The floor: `run --detach` of berth's own spec for the same image, on a
/// plain copy of the rootfs, with fresh namespaces instead of pinned ones.
/// `spec` has the seccomp profile for the runtime to compile; `precompiled`
/// the same filter as BPF in crun's annotation.
struct Floor {
    work: PathBuf,
    root: PathBuf,
    errors: PathBuf,
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
    fn prepare(spec_from: &Path, work: &Path, cgroup: &str) -> Floor {
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
            errors: work.join("errors"),
            cgroup: cgroup.to_string(),
            spec,
            precompiled,
            ids: Vec::new(),
        }
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

    /// `run --detach`, timed, with the runtime compiling the profile
    /// (`precompiled` false) or loading the precompiled filter.
    fn run(&mut self, n: usize, precompiled: bool) -> f64 {
        let id = format!("floor-{n}-{}", if precompiled { "bpf" } else { "spec" });
        let b = self.bundle(&id, precompiled);
        runtime_call(
            &self.root,
            &["run", "--detach", "--bundle", &b, &id],
            &self.errors,
        )
    }

    /// The same as two calls, as a monitor makes them: (create, start).
    fn create_start(&mut self, n: usize) -> (f64, f64) {
        let id = format!("split-{n}");
        let b = self.bundle(&id, true);
        let create = runtime_call(&self.root, &["create", "--bundle", &b, &id], &self.errors);
        let start = runtime_call(&self.root, &["start", &id], &self.errors);
        (create, start)
    }

    fn cleanup(self) {
        for id in &self.ids {
            runtime_call(&self.root, &["delete", "--force", id], &self.errors);
        }
        remove_cgroup(&self.cgroup);
    }
}

fn remove_cgroup(cgroup: &str) {
    let mut dirs = cgroups_under(cgroup);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(cgroup.trim_start_matches('/')));
    }
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let d = TestDaemon::builder()
        .arg("--log-level")
        .arg("info,berth_core=debug")
        .start()
        .await;
    let mut ic = d.images().await;
    ic.pull_image(api::PullImageRequest {
        image: Some(api::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("pull");
    let mut rt = d.runtime().await;
    // Warm up (first pod pays for cgroup parents, page cache, connections).
    let (pod, ctr, _) = start_pod(&mut rt, 9999, &image).await;
    let spec_copy = d.dir().join("bench-spec.json");
    let _ = ctr;
    let bundle_config = std::fs::read_dir(d.root.join("containers"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("bundle/config.json");
    std::fs::copy(&bundle_config, &spec_copy).unwrap();
    stop_remove(&mut rt, &pod).await;
    let idle_rss = rss_kib(d.pid());

    // Sequential pod starts interleaved with the floor's runs, so the
    // machine's noise hits both alike; then RSS with them all running.
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let floor_cgroup = format!("/berth-bench-floor-{}", std::process::id());
    let mut floor = Floor::prepare(&spec_copy, work.path(), &floor_cgroup);
    SPLITS.lock().unwrap().clear();
    let mut starts = Vec::new();
    let mut floor_times = Vec::new();
    let mut floor_bpf_times = Vec::new();
    let mut floor_split = Vec::new();
    let mut pods = Vec::new();
    for n in 0..RUNS {
        let (pod, _, t) = start_pod(&mut rt, n, &image).await;
        starts.push(t);
        pods.push(pod);
        floor_times.push(floor.run(n, false));
        floor_bpf_times.push(floor.run(n, true));
        if n % 5 == 0 {
            floor_split.push(floor.create_start(n));
        }
    }
    let busy_rss = rss_kib(d.pid());
    let splits = std::mem::take(&mut *SPLITS.lock().unwrap());
    let monitors = berth_testkit::processes_mentioning(&d.dir().display().to_string())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .split('\0')
                        .next()
                        .unwrap_or("")
                        .ends_with("berth-shim")
                })
                .unwrap_or(false)
        })
        .collect::<Vec<_>>();
    let monitor_rss: Vec<u64> = monitors.iter().map(|p| rss_kib(*p)).collect();
    let mut stops = Vec::new();
    for pod in &pods {
        stops.push(stop_remove(&mut rt, pod).await);
    }

    // Concurrent starts.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..CONCURRENT {
        let mut rt = d.runtime().await;
        let image = image.clone();
        tasks.push(tokio::spawn(async move {
            start_pod(&mut rt, 1000 + n, &image).await
        }));
    }
    let mut concurrent = Vec::new();
    let mut cpods = Vec::new();
    for task in tasks {
        let (pod, _, t) = task.await.unwrap();
        concurrent.push(t);
        cpods.push(pod);
    }
    let concurrent_wall = t.elapsed().as_secs_f64();
    for pod in &cpods {
        stop_remove(&mut rt, pod).await;
    }

    floor.cleanup();

    let h = handler(Path::new("/unused"));
    let h = h.handler();
    println!(
        "pod start: busybox sleep, image present, {RUNS} runs; handler: {} {}{}",
        h.program.display(),
        h.argv_prefix.join(" "),
        if h.hide_cgroup2 {
            " (private mount namespace hiding the cgroup2 tree)"
        } else {
            ""
        }
    );
    let (f50, f99) = (
        percentile(&floor_times, 0.5),
        percentile(&floor_times, 0.99),
    );
    let (b50, b99) = (percentile(&starts, 0.5), percentile(&starts, 0.99));
    let (p50, p99) = (
        percentile(&floor_bpf_times, 0.5),
        percentile(&floor_bpf_times, 0.99),
    );
    println!(
        "  floor  <runtime> run --detach        p50 {}  p99 {}  (runtime compiles seccomp)",
        ms(f50),
        ms(f99)
    );
    println!(
        "  floor2 <runtime> run --detach        p50 {}  p99 {}  (seccomp precompiled)",
        ms(p50),
        ms(p99)
    );
    println!(
        "  berthd RunPodSandbox+Create+Start    p50 {}  p99 {}",
        ms(b50),
        ms(b99)
    );
    for l in d
        .log()
        .lines()
        .filter(|l| l.contains("container made"))
        .skip(20)
        .take(4)
    {
        println!("  {l}");
    }
    let part = |i: usize| percentile(&splits.iter().map(|s| s[i]).collect::<Vec<_>>(), 0.5);
    println!(
        "    of which RunPodSandbox p50 {}, CreateContainer p50 {}, StartContainer p50 {}",
        ms(part(0)),
        ms(part(1)),
        ms(part(2))
    );
    let split = |i: usize| {
        let v: Vec<f64> = floor_split
            .iter()
            .map(|x: &(f64, f64)| if i == 0 { x.0 } else { x.1 })
            .collect();
        ms(percentile(&v, 0.5))
    };
    println!(
        "  floor2 as two calls (create, start), {} runs: p50 {} + {}",
        floor_split.len(),
        split(0),
        split(1)
    );
    println!(
        "  ratio p50 berthd/floor               {:.2}x (target <= 1.0x); berthd/floor2 {:.2}x",
        b50 / f50,
        b50 / p50
    );
    println!(
        "  {CONCURRENT} pods concurrently: wall {}  per pod p50 {}  p99 {}",
        ms(concurrent_wall),
        ms(percentile(&concurrent, 0.5)),
        ms(percentile(&concurrent, 0.99))
    );
    println!(
        "  stop+remove pod                      p50 {}  p99 {}",
        ms(percentile(&stops, 0.5)),
        ms(percentile(&stops, 0.99))
    );
    let per_container_berthd = (busy_rss.saturating_sub(idle_rss)) as f64 / RUNS as f64;
    let mon_avg = monitor_rss.iter().sum::<u64>() as f64 / monitor_rss.len().max(1) as f64;
    println!(
        "memory: berthd idle RSS {:.1} MiB (target <= 15 MiB); with {RUNS} containers {:.1} MiB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    println!(
        "  per running container: berthd +{:.0} KiB, monitor {:.0} KiB (max {} KiB, {} monitors; target <= 1536 KiB)",
        per_container_berthd,
        mon_avg,
        monitor_rss.iter().max().copied().unwrap_or(0),
        monitor_rss.len()
    );
}
