//! Pod start benchmark: RunPodSandbox + CreateContainer + StartContainer of
//! a busybox `sleep` (image present) through the CRI, in one run, for:
//! berthd "before" (`--seccomp-precompile false`: crun compiles the profile
//! on every create), berthd "after" (the filter compiled once), and
//! containerd (the distribution's, on its own root and socket), beside two
//! floors: `<runtime> run --detach` of berth's generated spec by the same
//! handler, with the runtime compiling seccomp itself and with the filter
//! precompiled. Sequential starts are interleaved so the machine's noise
//! hits all alike, each after the same idle spell (QUIET). Also: 20 pods at once, stop + remove, idle RSS and the
//! RSS each running container adds (daemon + its per-container processes).
//!
//! Run with `hack/bench-pods.sh` (release build).

mod containerd;
mod floor;

use std::path::PathBuf;
use std::time::Instant;

use berth_e2e::bench::{ms, percentile, rss_kib};
use berth_testkit::{processes_mentioning, unix_channel, TestDaemon, TestRegistry};
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use containerd::Containerd;
use floor::{handler, Floor};

const RUNS: usize = 50;
const CONCURRENT: usize = 20;

/// Idle time before every sequential sample. On cgroup v1 the first move
/// into a cgroup after a quiet spell waits for an RCU grace period (10–20
/// ms here); one that follows another move closely does not. Without
/// this pause, whoever runs right after a peer's start (the floors came
/// right after containerd's) meets a warm kernel and the others a cold
/// one. With it, every sample starts equally cold, as a node's pod starts
/// usually do.
const QUIET: std::time::Duration = std::time::Duration::from_millis(50);

type Runtime = RuntimeServiceClient<Channel>;

fn pod_config(n: usize, cgroup_parent: &str) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("bench-{n}"),
            uid: format!("uid-{n}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{n}"),
        linux: (!cgroup_parent.is_empty()).then(|| api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_parent}/pod-{n}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        // No log file and no labels: the bench times the start, not logging.
        log_path: String::new(),
        labels: Default::default(),
        // The runtime's default profile, asked for explicitly (as kubelet's
        // SeccompDefault does): a nil profile is unconfined.
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
        ..berth_e2e::container_config("sleep", image, &["sleep", "3600"])
    }
}

/// Seconds each call of one pod start took: RunPodSandbox, CreateContainer,
/// StartContainer.
type Split = [f64; 3];

fn total(s: &Split) -> f64 {
    s.iter().sum()
}

/// A CRI runtime under test and what was measured of it.
struct Subject {
    label: String,
    socket: PathBuf,
    /// The daemon's PID, for its RSS.
    pid: u32,
    image: String,
    /// Empty: the runtime's own default (berthd's cgroup root).
    cgroup_parent: String,
    /// A string only its per-container processes (monitors, shims) have
    /// in their command lines, and their program name.
    helper_mark: (String, &'static str),
    rt: Runtime,
    splits: Vec<Split>,
    pods: Vec<String>,
    stops: Vec<f64>,
    concurrent: Vec<f64>,
    concurrent_wall: f64,
    idle_rss: u64,
    busy_rss: u64,
    helper_rss: Vec<u64>,
}

impl Subject {
    async fn new(
        label: String,
        socket: PathBuf,
        pid: u32,
        images: [String; 2],
        cgroup_parent: String,
        helper_mark: (String, &'static str),
    ) -> Subject {
        let channel = unix_channel(&socket).await;
        let mut ic = ImageServiceClient::new(channel.clone());
        for image in &images {
            ic.pull_image(api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: pull {image}: {e}"));
        }
        let [image, _] = images;
        Subject {
            label,
            socket,
            pid,
            image,
            cgroup_parent,
            helper_mark,
            rt: RuntimeServiceClient::new(channel),
            splits: Vec::new(),
            pods: Vec::new(),
            stops: Vec::new(),
            concurrent: Vec::new(),
            concurrent_wall: 0.0,
            idle_rss: 0,
            busy_rss: 0,
            helper_rss: Vec::new(),
        }
    }

    /// Warm-up (the first pod pays for page cache, connections, the
    /// seccomp cache); then the daemon's idle RSS.
    async fn warm_up(&mut self) {
        let (pod, _) = start_pod(&mut self.rt, 9999, &self.image, &self.cgroup_parent).await;
        stop_remove(&mut self.rt, &pod).await;
        self.idle_rss = rss_kib(self.pid);
    }

    async fn start_one(&mut self, n: usize) {
        let (pod, split) = start_pod(&mut self.rt, n, &self.image, &self.cgroup_parent).await;
        self.splits.push(split);
        self.pods.push(pod);
    }

    /// RSS with all sequential pods running, then stop + remove of each.
    async fn measure_busy_and_stop(&mut self) {
        self.busy_rss = rss_kib(self.pid);
        let (mark, program) = &self.helper_mark;
        self.helper_rss = processes_mentioning(mark)
            .into_iter()
            .filter(|p| *p != self.pid && program_of(*p).ends_with(program))
            .map(rss_kib)
            .collect();
        for pod in std::mem::take(&mut self.pods) {
            self.stops.push(stop_remove(&mut self.rt, &pod).await);
        }
    }

    async fn start_concurrently(&mut self) {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..CONCURRENT {
            let mut rt = RuntimeServiceClient::new(unix_channel(&self.socket).await);
            let (image, parent) = (self.image.clone(), self.cgroup_parent.clone());
            tasks.push(tokio::spawn(async move {
                start_pod(&mut rt, 1000 + n, &image, &parent).await
            }));
        }
        let mut pods = Vec::new();
        for task in tasks {
            let (pod, split) = task.await.unwrap();
            self.concurrent.push(total(&split));
            pods.push(pod);
        }
        self.concurrent_wall = t.elapsed().as_secs_f64();
        for pod in &pods {
            stop_remove(&mut self.rt, pod).await;
        }
    }

    fn starts(&self) -> Vec<f64> {
        self.splits.iter().map(total).collect()
    }

    fn part(&self, i: usize) -> f64 {
        percentile(&self.splits.iter().map(|s| s[i]).collect::<Vec<_>>(), 0.5)
    }
}

fn program_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// RunPodSandbox + CreateContainer + StartContainer; returns the pod and
/// the time of each call.
async fn start_pod(
    rt: &mut Runtime,
    n: usize,
    image: &str,
    cgroup_parent: &str,
) -> (String, Split) {
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config(n, cgroup_parent)),
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
            sandbox_config: Some(pod_config(n, cgroup_parent)),
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
    let t_start = t.elapsed().as_secs_f64();
    (pod, [t_run, t_create - t_run, t_start - t_create])
}

async fn stop_remove(rt: &mut Runtime, pod: &str) -> f64 {
    let t = Instant::now();
    berth_e2e::teardown(rt, pod).await;
    t.elapsed().as_secs_f64()
}

async fn berthd(precompile: bool, bin: Option<&std::path::Path>) -> TestDaemon {
    let mut b = TestDaemon::builder();
    if let Some(bin) = bin {
        b = b.berthd(bin);
    }
    b.arg("--log-level")
        .arg("info,berth_core=debug")
        .arg("--seccomp-precompile")
        .arg(if precompile { "true" } else { "false" })
        .start()
        .await
}

async fn berth_subject(label: &str, d: &TestDaemon, images: [String; 2]) -> Subject {
    Subject::new(
        label.into(),
        d.socket.clone(),
        d.pid(),
        images,
        String::new(),
        (d.dir().display().to_string(), "berth-shim"),
    )
    .await
}

/// What the floors measured.
struct Floors {
    runs: [Vec<f64>; 2],
    split: Vec<(f64, f64)>,
    concurrent: [(f64, Vec<f64>); 2],
    deletes: Vec<f64>,
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox", "pause"]);
    let images = || [reg.image("busybox"), reg.image("pause")];
    let before_d = berthd(false, None).await;
    let after_d = berthd(true, None).await;
    // An older build to compare with in the same run (precompiling too).
    let baseline = std::env::var_os("BENCH_BASELINE_BERTHD").map(PathBuf::from);
    let baseline_d = match &baseline {
        Some(bin) => Some(berthd(true, Some(bin)).await),
        None => None,
    };
    let ctd = Containerd::start(&reg.addr, &reg.image("pause")).await;
    let mut subjects = vec![
        berth_subject("berth before", &before_d, images()).await,
        berth_subject("berth after", &after_d, images()).await,
        Subject::new(
            "containerd".into(),
            ctd.socket.clone(),
            ctd.pid(),
            images(),
            ctd.cgroup.clone(),
            (ctd.socket.display().to_string(), "containerd-shim-runc-v2"),
        )
        .await,
    ];
    if let Some(d) = &baseline_d {
        subjects.insert(0, berth_subject("berth baseline", d, images()).await);
    }
    for s in &mut subjects {
        s.warm_up().await;
    }
    // The floors run berth's own spec as "after" wrote it.
    let spec_copy = after_d.dir().join("bench-spec.json");
    {
        let after = subjects
            .iter_mut()
            .find(|s| s.label == "berth after")
            .unwrap();
        let (pod, _) = start_pod(&mut after.rt, 9998, &after.image, "").await;
        let bundle_config = std::fs::read_dir(after_d.root.join("containers"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path()
            .join("bundle/config.json");
        std::fs::copy(&bundle_config, &spec_copy).unwrap();
        stop_remove(&mut after.rt, &pod).await;
    }
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let floor_cgroup = format!("/berth-bench-floor-{}", std::process::id());
    let mut floor = Floor::prepare(&spec_copy, work.path(), &floor_cgroup);
    let mut runs = [Vec::new(), Vec::new()];
    let mut split = Vec::new();
    // An idle spell, not a synchronisation: see QUIET.
    let quiet = || std::thread::sleep(QUIET);
    for n in 0..RUNS {
        for s in &mut subjects {
            quiet();
            s.start_one(n).await;
        }
        quiet();
        runs[0].push(floor.run(n, false));
        quiet();
        runs[1].push(floor.run(n, true));
        if n % 5 == 0 {
            quiet();
            split.push(floor.create_start(n));
        }
    }
    for s in &mut subjects {
        s.measure_busy_and_stop().await;
    }
    for s in &mut subjects {
        s.start_concurrently().await;
    }
    let concurrent = [
        floor.run_many(1000, CONCURRENT, false),
        floor.run_many(2000, CONCURRENT, true),
    ];
    let floors = Floors {
        runs,
        split,
        concurrent,
        deletes: floor.cleanup(),
    };
    report(&subjects, &floors, &after_d, &ctd);
    if let Some(bin) = baseline {
        println!("  berth baseline: {}", bin.display());
    }
}

/// `v` as a ratio of `to`.
fn ratio(v: f64, to: f64) -> String {
    format!("{:.2}x", v / to)
}

fn report(subjects: &[Subject], floors: &Floors, after: &TestDaemon, ctd: &Containerd) {
    let h = handler(std::path::Path::new("/unused"));
    let h = h.handler();
    println!(
        "pod start: busybox sleep, image present, RuntimeDefault seccomp, {RUNS} runs each, interleaved; handler: {} {}{}",
        h.program.display(),
        h.argv_prefix.join(" "),
        if h.hide_cgroup2 {
            " (private mount namespace hiding the cgroup2 tree)"
        } else {
            ""
        }
    );
    println!(
        "  berth before: --seccomp-precompile false (crun compiles the profile); after: precompiled; containerd: {} (runc, CNI bridge)",
        ctd.version
    );
    let ctd_s = subjects.iter().find(|s| s.label == "containerd").unwrap();
    let f50 = percentile(&floors.runs[0], 0.5);
    let f2_50 = percentile(&floors.runs[1], 0.5);
    let c50 = percentile(&ctd_s.starts(), 0.5);
    println!(
        "Run+Create+Start                         p50        p99    /floor  /floor2  /containerd"
    );
    let row = |label: &str, v: &[f64]| {
        let p50 = percentile(v, 0.5);
        println!(
            "  {label:<36} {:>10} {:>10}  {:>7}  {:>7}  {:>7}",
            ms(p50),
            ms(percentile(v, 0.99)),
            ratio(p50, f50),
            ratio(p50, f2_50),
            ratio(p50, c50)
        );
    };
    row("floor  run --detach (compiles)", &floors.runs[0]);
    row("floor2 run --detach (precompiled)", &floors.runs[1]);
    for s in subjects {
        row(&s.label, &s.starts());
    }
    println!("  targets: berth after p50 <= 1.0x floor and <= 0.2x containerd");
    println!("split per call, p50:        RunPodSandbox  CreateContainer  StartContainer");
    let split = |i: usize| {
        let v: Vec<f64> = floors
            .split
            .iter()
            .map(|x| if i == 0 { x.0 } else { x.1 })
            .collect();
        percentile(&v, 0.5)
    };
    println!(
        "  floor2 (create, start)        {:>10} {:>16} {:>15}   ({} runs)",
        "-",
        ms(split(0)),
        ms(split(1)),
        floors.split.len()
    );
    for s in subjects {
        println!(
            "  {:<28} {:>11} {:>16} {:>15}",
            s.label,
            ms(s.part(0)),
            ms(s.part(1)),
            ms(s.part(2))
        );
    }
    for l in after
        .log()
        .lines()
        .filter(|l| l.contains("container made"))
        .skip(20)
        .take(2)
    {
        println!("  after: {l}");
    }
    println!("{CONCURRENT} pods at once:                 wall   per pod p50   p99    /floor  /floor2  /containerd");
    let (fw, f2w) = (floors.concurrent[0].0, floors.concurrent[1].0);
    let cw = ctd_s.concurrent_wall;
    let crow = |label: &str, wall: f64, each: &[f64]| {
        println!(
            "  {label:<28} {:>10} {:>10} {:>10}  {:>7}  {:>7}  {:>7}",
            ms(wall),
            ms(percentile(each, 0.5)),
            ms(percentile(each, 0.99)),
            ratio(wall, fw),
            ratio(wall, f2w),
            ratio(wall, cw)
        );
    };
    crow("floor  (compiles)", fw, &floors.concurrent[0].1);
    crow("floor2 (precompiled)", f2w, &floors.concurrent[1].1);
    for s in subjects {
        crow(&s.label, s.concurrent_wall, &s.concurrent);
    }
    println!("  target: berth after wall <= 0.25x containerd");
    println!("stop+remove pod:                      p50        p99    /containerd");
    let c_stop = percentile(&ctd_s.stops, 0.5);
    println!(
        "  floors: delete --force        {:>10} {:>10}  {:>7}",
        ms(percentile(&floors.deletes, 0.5)),
        ms(percentile(&floors.deletes, 0.99)),
        ratio(percentile(&floors.deletes, 0.5), c_stop)
    );
    for s in subjects {
        let p50 = percentile(&s.stops, 0.5);
        println!(
            "  {:<28} {:>10} {:>10}  {:>7}",
            s.label,
            ms(p50),
            ms(percentile(&s.stops, 0.99)),
            ratio(p50, c_stop)
        );
    }
    println!("memory (floors: no daemon, no monitor):  idle RSS   with {RUNS} pods   per pod: daemon  per-container process (n)");
    for s in subjects {
        let per_pod = s.busy_rss.saturating_sub(s.idle_rss) as f64 / RUNS as f64;
        let avg = s.helper_rss.iter().sum::<u64>() as f64 / s.helper_rss.len().max(1) as f64;
        println!(
            "  {:<28} {:>8.1} MiB {:>10.1} MiB {:>10.0} KiB  {:>8.0} KiB {} ({})",
            s.label,
            s.idle_rss as f64 / 1024.0,
            s.busy_rss as f64 / 1024.0,
            per_pod,
            avg,
            s.helper_mark.1,
            s.helper_rss.len()
        );
    }
    println!(
        "  targets: berthd idle <= 15 MiB, monitor <= 1536 KiB; no regression before -> after"
    );
}
