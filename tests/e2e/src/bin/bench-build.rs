//! `docker build` benchmark: the docker CLI's classic builder
//! (`DOCKER_BUILDKIT=0`) against berthd and against dockerd (Debian's
//! `docker.io`, its own data root, exec root, socket and bridge, started
//! here and stopped after), on the same Dockerfile and context in the
//! same run, the daemons interleaved in every round.
//!
//! The Dockerfile: a busybox base, 3 RUN, 2 COPY. Figures (p50):
//! - cold: `--no-cache` (every step made; the base is in both stores);
//! - cached: nothing changed (every step from the cache);
//! - one file changed: the second COPY's source, so it and the RUN after
//!   it are made again.
//!
//! Target: berthd ≤ 0.5× dockerd on each. Run with `hack/bench-build.sh`.

use std::path::Path;
use std::time::Duration;

use berth_e2e::bench::{ms, percentile};
use berth_e2e::docker_peer::{Cli, Dockerd};
use berth_testkit::{eventually, TestDaemon, TestRegistry};

const RUNS: usize = 7;

fn dockerfile(image: &str) -> String {
    format!(
        "FROM {image}\n\
         RUN echo one > /one && mkdir /app\n\
         COPY a.txt /app/a.txt\n\
         RUN cat /app/a.txt /one > /app/joined\n\
         COPY b.txt /app/b.txt\n\
         RUN ls -l /app > /app/listing\n"
    )
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let image = reg.image("busybox");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let ctx = work.path().join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile(&image)).unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    std::fs::write(ctx.join("b.txt"), "b0\n").unwrap();
    let ctx_arg = ctx.display().to_string();

    let d = TestDaemon::start().await;
    let berth = Cli {
        host: format!("unix://{}", d.docker_socket().display()),
        config: config.clone(),
    };
    let dockerd = Dockerd::start(&reg.addr);
    let socket = dockerd.socket();
    let peer = Cli {
        host: format!("unix://{}", socket.display()),
        config,
    };
    eventually("dockerd to be ready", Duration::from_secs(60), || {
        peer.command(&["info"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    })
    .await;
    let clis = [&berth, &peer];
    for cli in clis {
        cli.ok(&["pull", "-q", &image]);
        // Warm-up: a daemon's first build pays one-off costs.
        cli.ok(&["build", "-q", "--no-cache", "-t", "bench:1", &ctx_arg]);
    }
    let build = |cli: &Cli, no_cache: bool| {
        let mut args = vec!["build", "-q", "-t", "bench:1"];
        if no_cache {
            args.push("--no-cache");
        }
        args.push(&ctx_arg);
        cli.time(&args)
    };
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; clis.len()];
    for round in 0..RUNS {
        for (i, cli) in clis.iter().enumerate() {
            samples[i][0].push(build(cli, true));
            samples[i][1].push(build(cli, false));
        }
        // The same change reaches both daemons for the first time.
        change(&ctx, round);
        for (i, cli) in clis.iter().enumerate() {
            samples[i][2].push(build(cli, false));
        }
    }
    drop(dockerd);
    drop(d);

    println!("docker build, classic builder, p50 of {RUNS} (daemons interleaved)");
    println!("| figure | berthd | dockerd | berthd / dockerd |");
    println!("|---|---|---|---|");
    let names = ["cold (--no-cache)", "fully cached", "one file changed"];
    for (k, name) in names.iter().enumerate() {
        let b = percentile(&samples[0][k], 0.5);
        let p = percentile(&samples[1][k], 0.5);
        println!("| {name} | {} | {} | {:.2}× |", ms(b), ms(p), b / p);
    }
}

/// A new b.txt: the second COPY and what follows it are made again.
fn change(ctx: &Path, round: usize) {
    std::fs::write(ctx.join("b.txt"), format!("b{}\n", round + 1)).unwrap();
}
