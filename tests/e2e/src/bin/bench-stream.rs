//! Exec benchmark: `ExecSync` of `true` and a streaming exec of `true`
//! (CRI `Exec`, SPDY upgrade, streams, status) through berthd, each
//! interleaved with the floor measured in the same run: `crun exec` of the
//! same command in the same container, through the same handler. Then the
//! stdout throughput of a streaming exec beside `crun exec` piping the same
//! bytes straight to this process.
//!
//! Run with `hack/bench-stream.sh` (release build).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::bench::{ms, percentile};
use berth_e2e::k8s::{self, StreamOptions};
use berth_e2e::*;
use berth_testkit::{TestDaemon, TestRegistry};
use k8s_cri::v1 as api;

const RUNS: usize = 50;
/// 256 MiB of zeros from `dd` in the container.
const THROUGHPUT_CMD: [&str; 4] = ["dd", "if=/dev/zero", "bs=65536", "count=4096"];
const THROUGHPUT_BYTES: f64 = 65536.0 * 4096.0;

/// The default handler as berthd runs it, on berthd's runtime state.
fn handler(state_dir: &Path) -> berth_oci::OciRuntime {
    let mode = berth_cgroups::detect(Path::new("/sys/fs/cgroup")).unwrap();
    let runtimes = state_dir.join("runtimes");
    let h = berth_oci::default_handlers(mode, &runtimes)
        .into_iter()
        .next()
        .expect("an OCI runtime");
    berth_oci::OciRuntime::new(h)
}

/// `crun exec ID cmd...`: seconds, and the bytes it wrote to stdout.
fn floor_exec(runtime: &berth_oci::OciRuntime, id: &str, cmd: &[&str]) -> (f64, usize) {
    let t = Instant::now();
    let mut child = runtime
        .command()
        .arg("exec")
        .arg(id)
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runtime exec");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(child.wait().expect("wait").success());
    (t.elapsed().as_secs_f64(), total)
}

async fn streaming_exec(rt: &mut Runtime, id: &str, cmd: &[&str]) -> (f64, usize) {
    let t = Instant::now();
    let url = rt
        .exec(api::ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let session = k8s::exec_spdy(
        &url,
        k8s::SPDY_PROTOCOLS,
        StreamOptions {
            stdout: true,
            ..Default::default()
        },
    )
    .await
    .expect("upgrade");
    let out = session.wait(Duration::from_secs(120)).await.expect("exec");
    assert_eq!(out.exit_code, 0, "{:?}", out.client_error);
    (t.elapsed().as_secs_f64(), out.stdout.len())
}

#[tokio::main]
async fn main() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    pull(&d, &reg, &["busybox"]).await;
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pod_config("bench", &d.dir().join("logs")), "").await;
    let c = run_container(
        &mut rt,
        &pod,
        container_config("sleeper", &reg.image("busybox"), &["sleep", "3600"]),
    )
    .await;
    let runtime = handler(&d.state_dir);
    // Warm up every path once.
    exec(&mut rt, &c, &["true"]).await;
    streaming_exec(&mut rt, &c, &["true"]).await;
    floor_exec(&runtime, &c, &["true"]);

    let (mut sync, mut stream, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = exec(&mut rt, &c, &["true"]).await;
        assert_eq!(r.exit_code, 0);
        sync.push(t.elapsed().as_secs_f64());
        stream.push(streaming_exec(&mut rt, &c, &["true"]).await.0);
        floor.push(floor_exec(&runtime, &c, &["true"]).0);
    }
    let f = percentile(&floor, 0.5);
    println!("exec of `true` in a running busybox container, {RUNS} runs each, interleaved:");
    println!(
        "  floor  crun exec                  p50 {}  p90 {}",
        ms(f),
        ms(percentile(&floor, 0.9))
    );
    for (name, v) in [
        ("ExecSync (CRI)            ", &sync),
        ("streaming exec (CRI+SPDY) ", &stream),
    ] {
        let p = percentile(v, 0.5);
        println!(
            "  berthd {name} p50 {}  p90 {}  ratio {:.2}x",
            ms(p),
            ms(percentile(v, 0.9)),
            p / f
        );
    }

    let mut berth_rates = Vec::new();
    let mut floor_rates = Vec::new();
    for _ in 0..3 {
        let (t, n) = streaming_exec(&mut rt, &c, &THROUGHPUT_CMD).await;
        assert_eq!(n as f64, THROUGHPUT_BYTES);
        berth_rates.push(THROUGHPUT_BYTES / t / 1e6);
        let (t, n) = floor_exec(&runtime, &c, &THROUGHPUT_CMD);
        assert_eq!(n as f64, THROUGHPUT_BYTES);
        floor_rates.push(THROUGHPUT_BYTES / t / 1e6);
    }
    let (b, f) = (percentile(&berth_rates, 0.5), percentile(&floor_rates, 0.5));
    println!("stdout throughput, 256 MiB from dd, median of 3:");
    println!("  floor  crun exec pipe             {f:.0} MB/s");
    println!(
        "  berthd streaming exec (SPDY)      {b:.0} MB/s  ratio {:.2}x",
        b / f
    );
    teardown(&mut rt, &pod).await;
}
