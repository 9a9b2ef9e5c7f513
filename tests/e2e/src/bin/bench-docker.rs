//! Docker API benchmark: the docker CLI against berthd, beside the floors
//! measured in the same run:
//! - the CLI's own start-up (`docker ps` against a socket nobody serves),
//!   subtracted from every figure, since neither daemon can do better;
//! - raw `crun run` and `crun exec` of the same busybox rootfs (`true`),
//!   in a cgroup of its own as every daemon's container;
//! - dockerd (Debian's `docker.io`, its own data root, exec root, socket
//!   and bridge, started here and stopped after).
//!
//! berthd and dockerd run at once and each round samples both and the
//! CLI floor, so the machine's load at any moment hits all alike.
//!
//! Figures: `run --rm true`, `create`+`start`, `exec true`, `ps -a` with
//! 50 containers, `logs` of 10k lines, `stop -t 0`; berthd's idle RSS.
//! Target: berth's part beyond the CLI ≤ 0.5× dockerd's.
//!
//! Run with `hack/bench-docker.sh` (release build).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::bench::{ms, percentile, rss_kib};
use berth_e2e::peer::{Cli, Dockerd};
use berth_testkit::{eventually, test_images, TestDaemon, TestRegistry};

const RUNS: usize = 20;

/// The figures of one daemon, p50 seconds each.
struct Figures {
    run_rm: f64,
    create_start: f64,
    exec: f64,
    ps_50: f64,
    logs_10k: f64,
    stop_t0: f64,
}

fn p50(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// `RUNS` rounds of `sample`, each round taking one sample from every
/// daemon in turn (so that the machine's load at any moment hits them
/// alike); the p50 of each daemon's samples.
fn interleaved(daemons: usize, mut sample: impl FnMut(usize) -> f64) -> Vec<f64> {
    let mut samples = vec![Vec::with_capacity(RUNS); daemons];
    for _ in 0..RUNS {
        for (d, s) in samples.iter_mut().enumerate() {
            s.push(sample(d));
        }
    }
    samples.iter().map(|s| p50(s)).collect()
}

/// Every figure, of every daemon in `clis`, interleaved. `floor` is the
/// CLI against a socket nobody serves: sampled in every round too, its
/// samples go to `floor_samples`.
fn measure(clis: &[&Cli], floor: &Cli, floor_samples: &mut Vec<f64>, image: &str) -> Vec<Figures> {
    let n = clis.len();
    for cli in clis {
        cli.ok(&["pull", "-q", image]);
        // Warm-up: the first container of a daemon pays one-off costs.
        cli.ok(&["run", "--rm", image, "true"]);
    }
    // One more participant in each round: the CLI's own start-up.
    let mut with_floor = |mut sample: Box<dyn FnMut(usize) -> f64 + '_>| -> Vec<f64> {
        interleaved(n + 1, |d| match d < n {
            true => sample(d),
            false => {
                let t = Instant::now();
                let _ = floor.command(&["ps", "-a"]).output();
                let took = t.elapsed().as_secs_f64();
                floor_samples.push(took);
                took
            }
        })
    };

    let run_rm = with_floor(Box::new(|d| clis[d].time(&["run", "--rm", image, "true"])));

    let mut running: Vec<Vec<String>> = vec![Vec::new(); n];
    let create_start = with_floor(Box::new(|d| {
        let t = Instant::now();
        let id = clis[d].ok(&["create", image, "sleep", "3600"]);
        clis[d].ok(&["start", &id]);
        running[d].push(id);
        t.elapsed().as_secs_f64()
    }));

    let exec = with_floor(Box::new(|d| {
        clis[d].time(&["exec", &running[d][0], "true"])
    }));

    let mut stopped = vec![0; n];
    let stop_t0 = with_floor(Box::new(|d| {
        let id = &running[d][stopped[d]];
        stopped[d] += 1;
        clis[d].time(&["stop", "-t", "0", id])
    }));
    for (d, ids) in running.iter().enumerate() {
        for id in ids {
            clis[d].ok(&["rm", id]);
        }
    }

    let created: Vec<Vec<String>> = clis
        .iter()
        .map(|cli| {
            (0..50)
                .map(|_| cli.ok(&["create", image, "true"]))
                .collect()
        })
        .collect();
    let ps_50 = with_floor(Box::new(|d| clis[d].time(&["ps", "-a"])));
    for (d, ids) in created.iter().enumerate() {
        for id in ids {
            clis[d].ok(&["rm", id]);
        }
    }

    // The image links only some applets into /bin; busybox has them all.
    let loggers: Vec<String> = clis
        .iter()
        .map(|cli| {
            let logger = cli.ok(&["run", "-d", image, "busybox", "seq", "1", "10000"]);
            cli.ok(&["wait", &logger]);
            let lines = cli.ok(&["logs", &logger]).lines().count();
            assert_eq!(lines, 10000, "docker logs returned {lines} lines");
            logger
        })
        .collect();
    let logs_10k = with_floor(Box::new(|d| clis[d].time(&["logs", &loggers[d]])));
    for (d, logger) in loggers.iter().enumerate() {
        clis[d].ok(&["rm", logger]);
    }

    (0..n)
        .map(|d| Figures {
            run_rm: run_rm[d],
            create_start: create_start[d],
            exec: exec[d],
            ps_50: ps_50[d],
            logs_10k: logs_10k[d],
            stop_t0: stop_t0[d],
        })
        .collect()
}

/// The runtime's own figures on the same busybox rootfs, p50 seconds:
/// the floor under any daemon.
struct CrunFloor {
    /// `crun run` of `true`.
    run: f64,
    /// `crun exec` of `true` in a running container.
    exec: f64,
}

fn crun_floor(work: &Path) -> CrunFloor {
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    test_images().unpack("busybox", &rootfs);
    let status = Command::new("crun")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .unwrap();
    assert!(status.success(), "crun spec");
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    // A cgroup of its own, as every daemon gives a container (crun removes
    // it with the container): joining it is part of an exec's cost.
    spec["linux"]["cgroupsPath"] = format!("/berth-bench-floor-{}", std::process::id()).into();
    let set_args = |spec: &mut serde_json::Value, args: &[&str]| {
        spec["process"]["args"] = serde_json::json!(args);
        std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
    };
    let mode = berth_cgroups::detect(Path::new("/sys/fs/cgroup")).unwrap();
    let handler = berth_oci::default_handlers(mode, &work.join("state"))
        .into_iter()
        .find(|h| h.name == "crun")
        .expect("crun");
    let crun = |args: &[&str]| -> f64 {
        let mut cmd = berth_oci::OciRuntime::new(handler.clone()).command();
        let t = Instant::now();
        let status = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "crun {args:?}");
        t.elapsed().as_secs_f64()
    };
    let bundle = bundle.display().to_string();

    set_args(&mut spec, &["true"]);
    let run = p50(&(0..RUNS)
        .map(|n| crun(&["run", "--bundle", &bundle, &format!("floor-{n}")]))
        .collect::<Vec<_>>());

    set_args(&mut spec, &["sleep", "3600"]);
    crun(&["run", "--detach", "--bundle", &bundle, "floor-exec"]);
    let exec = p50(&(0..RUNS)
        .map(|_| crun(&["exec", "floor-exec", "true"]))
        .collect::<Vec<_>>());
    crun(&["delete", "--force", "floor-exec"]);
    CrunFloor { run, exec }
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();

    // The CLI's own start-up: the same binary failing to reach a socket.
    let nobody = Cli {
        host: format!("unix://{}", work.path().join("nobody.sock").display()),
        config: config.clone(),
    };
    let crun = crun_floor(work.path());

    let d = TestDaemon::start().await;
    let berth_cli = Cli {
        host: format!("unix://{}", d.docker_socket().display()),
        config: config.clone(),
    };
    let idle_rss = rss_kib(d.pid());

    let dockerd = Dockerd::start(&reg.addr);
    let socket = dockerd.socket();
    eventually("dockerd to answer", Duration::from_secs(60), || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    })
    .await;
    let docker_cli = Cli {
        host: format!("unix://{}", socket.display()),
        config,
    };
    eventually("dockerd to be ready", Duration::from_secs(60), || {
        docker_cli
            .command(&["info"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    })
    .await;
    let dockerd_idle = dockerd.rss_kib();
    let mut floor_samples = Vec::new();
    let [berth, peer]: [Figures; 2] = measure(
        &[&berth_cli, &docker_cli],
        &nobody,
        &mut floor_samples,
        &image,
    )
    .try_into()
    .unwrap_or_else(|_| unreachable!("two daemons measured"));
    drop(dockerd);
    let cli_floor = p50(&floor_samples);

    println!(
        "docker CLI start-up (socket nobody serves, p50 of {}): {}",
        floor_samples.len(),
        ms(cli_floor)
    );
    println!(
        "crun of the same rootfs: run true {}, exec true {}",
        ms(crun.run),
        ms(crun.exec)
    );
    println!();
    println!("| figure (p50 of {RUNS}, daemons interleaved) | berthd | dockerd | CLI floor | crun floor | berth beyond CLI / dockerd beyond CLI |");
    println!("|---|---|---|---|---|---|");
    // The runtime's floor where one runtime call does the figure's work.
    let rows: [(&str, f64, f64, f64, Option<f64>); 6] = [
        (
            "run --rm true",
            berth.run_rm,
            peer.run_rm,
            cli_floor,
            Some(crun.run),
        ),
        (
            "create + start",
            berth.create_start,
            peer.create_start,
            2.0 * cli_floor,
            Some(crun.run),
        ),
        (
            "exec true",
            berth.exec,
            peer.exec,
            cli_floor,
            Some(crun.exec),
        ),
        (
            "ps -a (50 containers)",
            berth.ps_50,
            peer.ps_50,
            cli_floor,
            None,
        ),
        (
            "logs (10k lines)",
            berth.logs_10k,
            peer.logs_10k,
            cli_floor,
            None,
        ),
        ("stop -t 0", berth.stop_t0, peer.stop_t0, cli_floor, None),
    ];
    for (name, b, p, floor, runtime) in rows {
        let ratio = (b - floor).max(0.0) / (p - floor).max(1e-6);
        let runtime = runtime.map_or("-".to_string(), ms);
        println!(
            "| {name} | {} | {} | {} | {runtime} | {ratio:.2}x |",
            ms(b),
            ms(p),
            ms(floor)
        );
    }
    println!();
    println!(
        "idle RSS: berthd {:.1} MiB (Docker API on); dockerd + its containerd {:.1} MiB",
        idle_rss as f64 / 1024.0,
        dockerd_idle as f64 / 1024.0
    );
    drop(d);
}
