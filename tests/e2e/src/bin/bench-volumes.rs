//! Volume benchmark (the volume half of issue 16's): the docker CLI
//! against berthd and against dockerd (Debian's docker.io, on its own
//! data root and socket) in the same run, rounds interleaved so that the
//! machine's load hits both alike, beside the CLI's own start-up:
//! - `volume create`,
//! - a first mount: `run --rm -v VOL:/data IMAGE true`,
//! - `volume rm`,
//! - and the three as one cycle.
//!
//! Run with `hack/bench-volumes.sh` (release build).

use std::time::Instant;

use berth_e2e::bench::{ms, percentile};
use berth_e2e::docker_peer::{Cli, Dockerd};
use berth_testkit::{TestDaemon, TestRegistry};

const RUNS: usize = 30;

/// Seconds of each step of one create + mount + remove cycle.
struct Cycle {
    create: f64,
    mount: f64,
    remove: f64,
}

fn cycle(cli: &Cli, image: &str, name: &str) -> Cycle {
    let create = cli.time(&["volume", "create", name]);
    let mount = cli.time(&["run", "--rm", "-v", &format!("{name}:/data"), image, "true"]);
    let remove = cli.time(&["volume", "rm", name]);
    Cycle {
        create,
        mount,
        remove,
    }
}

fn p50(v: impl Iterator<Item = f64>) -> f64 {
    percentile(&v.collect::<Vec<_>>(), 0.5)
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let nobody = Cli {
        host: format!("unix://{}", work.path().join("nobody.sock").display()),
        config: config.clone(),
    };

    let d = TestDaemon::start().await;
    let berth = Cli {
        host: format!("unix://{}", d.docker_socket().display()),
        config: config.clone(),
    };
    let dockerd = Dockerd::start(&reg.addr);
    let peer = dockerd.ready_cli(config).await;
    let clis = [&berth, &peer];
    for cli in clis {
        cli.ok(&["pull", "-q", &image]);
        // Warm-up: a daemon's first container and volume pay one-off costs.
        cycle(cli, &image, "warm-up");
    }

    let mut samples: [Vec<Cycle>; 2] = [Vec::new(), Vec::new()];
    let mut floor = Vec::new();
    for n in 0..RUNS {
        for (cli, s) in clis.iter().zip(samples.iter_mut()) {
            s.push(cycle(cli, &image, &format!("bench-{n}")));
        }
        let t = Instant::now();
        let _ = nobody.command(&["volume", "ls"]).output();
        floor.push(t.elapsed().as_secs_f64());
    }
    for cli in clis {
        assert_eq!(cli.ok(&["volume", "ls", "-q"]), "", "volumes left behind");
    }
    drop(dockerd);
    let floor = p50(floor.into_iter());

    println!(
        "docker CLI start-up (socket nobody serves, p50 of {RUNS}): {}",
        ms(floor)
    );
    println!();
    println!("| figure (p50 of {RUNS}, daemons interleaved) | berthd | dockerd | berthd / dockerd | berth beyond CLI / dockerd beyond CLI |");
    println!("|---|---|---|---|---|");
    type Step = fn(&Cycle) -> f64;
    let rows: [(&str, Step, f64); 4] = [
        ("volume create", |c| c.create, floor),
        (
            "run --rm -v VOL:/data true (first mount)",
            |c| c.mount,
            floor,
        ),
        ("volume rm", |c| c.remove, floor),
        (
            "create + mount + rm",
            |c| c.create + c.mount + c.remove,
            3.0 * floor,
        ),
    ];
    for (name, step, floor) in rows {
        let [b, p] = [0, 1].map(|i| p50(samples[i].iter().map(step)));
        let beyond = (b - floor).max(0.0) / (p - floor).max(1e-6);
        println!(
            "| {name} | {} | {} | {:.2}x | {beyond:.2}x |",
            ms(b),
            ms(p),
            b / p
        );
    }
    drop(d);
}
