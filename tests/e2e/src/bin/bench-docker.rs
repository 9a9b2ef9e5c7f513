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
use std::time::Instant;

use berth_e2e::bench::{ms, percentile, rss_kib};
use berth_e2e::docker_peer::{Cli, Dockerd};
use berth_e2e::replay::{self, Replay};
use berth_testkit::{test_images, TestDaemon, TestRegistry};

const RUNS: usize = 20;

/// The figures of one daemon, p50 seconds each.
struct Figures {
    run_rm: f64,
    create_start: f64,
    exec: f64,
    ps_50: f64,
    /// `ps -a` against a socket replaying this daemon's own reply: what
    /// the CLI spends on those rows whatever daemon sent them.
    ps_50_replayed: f64,
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
fn measure(
    clis: &[&Cli],
    floor: &Cli,
    floor_samples: &mut Vec<f64>,
    runtimes: &mut RuntimeFloor,
    image: &str,
) -> Vec<Figures> {
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

    // The runtimes' own `exec` in the same rounds, so that they meet the
    // kernel as the daemons do: on cgroup v1 the first move into a cgroup
    // after a quiet spell waits for an RCU grace period (~10 ms), which a
    // back-to-back loop never sees.
    let exec = with_floor(Box::new(|d| {
        let took = clis[d].time(&["exec", &running[d][0], "true"]);
        if d == n - 1 {
            runtimes.sample_execs(floor);
        }
        took
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
    let replays: Vec<(Replay, Cli)> = clis
        .iter()
        .enumerate()
        .map(|(d, cli)| {
            let daemon = Path::new(cli.host.trim_start_matches("unix://"));
            let recorded = replay::record(daemon, "/containers/json?all=1");
            let socket = cli.config.join(format!("replay-{d}.sock"));
            let replay = Replay::serve(&socket, recorded);
            let replay_cli = Cli {
                host: replay.host(),
                config: cli.config.clone(),
            };
            (replay, replay_cli)
        })
        .collect();
    let ps_samples = interleaved(2 * n, |d| match d < n {
        true => clis[d].time(&["ps", "-a"]),
        false => replays[d - n].1.time(&["ps", "-a"]),
    });
    let (ps_50, ps_50_replayed) = ps_samples.split_at(n);
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
            ps_50_replayed: ps_50_replayed[d],
            logs_10k: logs_10k[d],
            stop_t0: stop_t0[d],
        })
        .collect()
}

/// The runtimes' own figures on the same busybox rootfs: the floor under
/// any daemon. berth runs crun; dockerd runs runc.
struct RuntimeFloor {
    handlers: Vec<berth_oci::RuntimeHandler>,
    /// `crun run` of `true`, back to back, p50 seconds.
    run: f64,
    /// `crun exec` of `true` back to back, p50 seconds.
    exec_back_to_back: f64,
    /// `exec true` of each runtime (crun, runc) sampled once per round of
    /// the daemons' `exec`, seconds.
    exec_in_rounds: [Vec<f64>; 2],
}

const FLOOR_RUNTIMES: [&str; 2] = ["crun", "runc"];

impl RuntimeFloor {
    fn new(work: &Path) -> RuntimeFloor {
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
        // A cgroup of its own, as every daemon gives a container (the
        // runtime removes it with the container): joining it is part of
        // an exec's cost.
        let mut write_spec = |args: &[&str], runtime: &str| {
            spec["process"]["args"] = serde_json::json!(args);
            spec["linux"]["cgroupsPath"] =
                format!("/berth-bench-floor-{runtime}-{}", std::process::id()).into();
            std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
        };
        let mode = berth_cgroups::detect(Path::new("/sys/fs/cgroup")).unwrap();
        let handlers: Vec<_> = FLOOR_RUNTIMES
            .iter()
            .map(|name| {
                berth_oci::default_handlers(mode, &work.join("state"))
                    .into_iter()
                    .find(|h| h.name == *name)
                    .unwrap_or_else(|| panic!("{name} is installed"))
            })
            .collect();
        let mut floor = RuntimeFloor {
            handlers,
            run: 0.0,
            exec_back_to_back: 0.0,
            exec_in_rounds: [Vec::new(), Vec::new()],
        };
        let bundle = bundle.display().to_string();
        write_spec(&["true"], "crun");
        floor.run = p50(&(0..RUNS)
            .map(|n| floor.time(0, &["run", "--bundle", &bundle, &format!("floor-{n}")]))
            .collect::<Vec<_>>());
        // Each runtime's sleeper reads the spec at its run.
        for (r, name) in FLOOR_RUNTIMES.iter().enumerate() {
            write_spec(&["sleep", "3600"], name);
            floor.time(r, &["run", "--detach", "--bundle", &bundle, "floor-exec"]);
        }
        floor.exec_back_to_back = p50(&(0..RUNS)
            .map(|_| floor.time(0, &["exec", "floor-exec", "true"]))
            .collect::<Vec<_>>());
        floor
    }

    /// Runs runtime `r` with `args`; how long it took, in seconds.
    fn time(&self, r: usize, args: &[&str]) -> f64 {
        let mut cmd = berth_oci::OciRuntime::new(self.handlers[r].clone()).command();
        let t = Instant::now();
        let status = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{} {args:?}", FLOOR_RUNTIMES[r]);
        t.elapsed().as_secs_f64()
    }

    /// One `exec true` of each runtime, each after a run of the CLI (not
    /// timed) as a daemon's exec comes after the CLI's start-up: with no
    /// cgroup move just before it, the runtime meets the kernel cold too.
    fn sample_execs(&mut self, cli: &Cli) {
        for r in 0..FLOOR_RUNTIMES.len() {
            let _ = cli.command(&["ps", "-a"]).output();
            let took = self.time(r, &["exec", "floor-exec", "true"]);
            self.exec_in_rounds[r].push(took);
        }
    }

    fn exec_in_rounds(&self, runtime: &str) -> f64 {
        let r = FLOOR_RUNTIMES.iter().position(|n| *n == runtime).unwrap();
        p50(&self.exec_in_rounds[r])
    }
}

impl Drop for RuntimeFloor {
    fn drop(&mut self) {
        for r in 0..FLOOR_RUNTIMES.len() {
            self.time(r, &["delete", "--force", "floor-exec"]);
        }
    }
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
    let mut runtimes = RuntimeFloor::new(work.path());

    let d = TestDaemon::start().await;
    let berth_cli = Cli {
        host: format!("unix://{}", d.docker_socket().display()),
        config: config.clone(),
    };
    let idle_rss = rss_kib(d.pid());

    let dockerd = Dockerd::start(&reg.addr);
    let docker_cli = dockerd.ready_cli(config).await;
    let dockerd_idle = dockerd.rss_kib();
    let mut floor_samples = Vec::new();
    let [berth, peer]: [Figures; 2] = measure(
        &[&berth_cli, &docker_cli],
        &nobody,
        &mut floor_samples,
        &mut runtimes,
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
    let crun_exec = runtimes.exec_in_rounds("crun");
    let runc_exec = runtimes.exec_in_rounds("runc");
    println!(
        "crun of the same rootfs: run true {}, exec true {} back to back, {} in the rounds; runc exec true {} in the rounds",
        ms(runtimes.run),
        ms(runtimes.exec_back_to_back),
        ms(crun_exec),
        ms(runc_exec)
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
            Some(runtimes.run),
        ),
        (
            "create + start",
            berth.create_start,
            peer.create_start,
            2.0 * cli_floor,
            Some(runtimes.run),
        ),
        (
            "exec true",
            berth.exec,
            peer.exec,
            cli_floor,
            Some(crun_exec),
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
    // Each daemon's own part, beyond what neither can avoid.
    let own = |name: &str, b: f64, b_floor: f64, p: f64, p_floor: f64| {
        let (b_own, p_own) = ((b - b_floor).max(0.0), (p - p_floor).max(1e-6));
        println!(
            "{name}: berthd {} beyond {}, dockerd {} beyond {}: {:.2}x",
            ms(b_own),
            ms(b_floor),
            ms(p_own),
            ms(p_floor),
            b_own / p_own
        );
    };
    own(
        "exec true, beyond the CLI start-up and its runtime's own exec in the same rounds (crun / runc)",
        berth.exec,
        cli_floor + crun_exec,
        peer.exec,
        cli_floor + runc_exec,
    );
    own(
        "ps -a (50 containers), beyond the CLI printing the daemon's own reply from a replay socket",
        berth.ps_50,
        berth.ps_50_replayed,
        peer.ps_50,
        peer.ps_50_replayed,
    );
    println!();
    println!(
        "idle RSS: berthd {:.1} MiB (Docker API on); dockerd + its containerd {:.1} MiB",
        idle_rss as f64 / 1024.0,
        dockerd_idle as f64 / 1024.0
    );
    drop(d);
}
