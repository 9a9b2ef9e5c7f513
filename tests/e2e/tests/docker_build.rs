//! `docker build` end to end: the real docker CLI's classic builder
//! (`DOCKER_BUILDKIT=0`) against a real berthd: a multi-stage build run
//! with `docker run` and through the CRI, pushed and pulled back; the
//! layer cache (a full hit, one changed file, `.dockerignore`); and bad
//! input refused clearly with nothing left behind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{DockerRun, TestDaemon, TestRegistry};

/// A build context directory of `files` under the daemon's dir.
fn context(d: &TestDaemon, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = d.dir().join("contexts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        write(&dir, file, text);
    }
    dir
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `docker build args…` with the classic builder.
fn build(d: &TestDaemon, args: &[&str]) -> DockerRun {
    let output = d
        .docker_command()
        .env("DOCKER_BUILDKIT", "0")
        .arg("build")
        .args(args)
        .output()
        .expect("run the docker CLI");
    DockerRun::from(output)
}

fn build_ok(d: &TestDaemon, args: &[&str]) -> String {
    let run = build(d, args);
    assert_eq!(
        run.status,
        Some(0),
        "docker build {args:?} failed:\n{}\n{}\n{}",
        run.stdout,
        run.stderr,
        d.log_tail()
    );
    run.stdout
}

fn cache_hits(out: &str) -> usize {
    out.matches(" ---> Using cache").count()
}

/// The builder's dir under the root holds nothing between builds.
fn assert_build_dir_empty(d: &TestDaemon) {
    let left: Vec<_> = std::fs::read_dir(d.root.join("build"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the build dir: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stage_build_runs_with_docker_and_cri_and_round_trips_a_registry() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let dockerfile = format!(
        "FROM {base} AS maker\n\
         RUN echo made in stage one > /made.txt\n\
         FROM {base}\n\
         COPY --from=maker /made.txt /app/made.txt\n\
         WORKDIR /app\n\
         CMD [\"cat\", \"made.txt\"]\n"
    );
    let dir = context(&d, "multi", &[("Dockerfile", &dockerfile)]);
    let out = build_ok(
        &d,
        &["-t", "multi:1", "-t", "multi:extra", dir.to_str().unwrap()],
    );
    for line in [
        "Step 1/6 : FROM ",
        "Step 2/6 : RUN echo made in stage one > /made.txt",
        " ---> Running in ",
        "Removing intermediate container ",
        "Step 4/6 : COPY --from=maker /made.txt /app/made.txt",
        "Successfully built ",
        "Successfully tagged multi:1",
        "Successfully tagged multi:extra",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    // No build container is left, nor was ever listed.
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");

    let ran = d.docker_ok(&["run", "--rm", "multi:1"]);
    assert_eq!(ran.trim(), "made in stage one");
    // Step images another step was made on are intermediate, listed only
    // with -a; as with dockerd, the first stage's last one is dangling.
    let listed = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[1], "<none>:<none>", "{listed:?}");
    assert_eq!(&listed[2..], ["multi:1", "multi:extra"], "{listed:?}");
    let all = d.docker_ok(&["images", "-aq"]);
    assert!(all.lines().count() > 4, "{all}");
    let history = d.docker_ok(&["history", "--no-trunc", "multi:1"]);
    assert!(history.contains("WORKDIR /app"), "{history}");

    // Through the CRI: the same image, by the name the build gave it.
    let logs = d.dir().join("pod-logs");
    let pod = run_pod(&mut rt, pod_config("built", &logs), "").await;
    let ctr = run_container(
        &mut rt,
        &pod,
        container_config("app", "docker.io/library/multi:1", &["sleep", "60"]),
    )
    .await;
    let cat = exec_out(&mut rt, &ctr, &["cat", "/app/made.txt"]).await;
    assert_eq!(cat.trim(), "made in stage one");
    teardown(&mut rt, &pod).await;

    // Pushed, removed, pulled back: it still runs.
    let pushed = format!("{}/built/multi:1", reg.addr);
    d.docker_ok(&["tag", "multi:1", &pushed]);
    d.docker_ok(&["push", &pushed]);
    d.docker_ok(&["rmi", "multi:1", "multi:extra", &pushed]);
    d.docker_ok(&["pull", &pushed]);
    let ran = d.docker_ok(&["run", "--rm", &pushed]);
    assert_eq!(ran.trim(), "made in stage one");

    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_reuses_what_did_not_change() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let dockerfile = format!(
        "FROM {base}\n\
         RUN echo one > /one\n\
         COPY a.txt /a.txt\n\
         RUN cat /a.txt > /copied\n\
         COPY . /ctx/\n"
    );
    let dir = context(
        &d,
        "cache",
        &[
            ("Dockerfile", &dockerfile),
            (".dockerignore", "ignored.txt\n"),
            ("a.txt", "a1\n"),
            ("b.txt", "b1\n"),
            ("ignored.txt", "i1\n"),
        ],
    );
    let ctx = dir.to_str().unwrap();
    let cold = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&cold), 0, "{cold}");
    let id = d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "cached:1"]);

    // Nothing changed: every step after FROM from the cache, same image.
    let warm = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&warm), 4, "{warm}");
    assert!(!warm.contains("Running in"), "{warm}");
    let again = d.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "cached:1"]);
    assert_eq!(again, id);

    // An ignored file changed: still all cached, and not in the image.
    write(&dir, "ignored.txt", "i2\n");
    let ignored = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&ignored), 4, "{ignored}");
    let listed = d.docker_ok(&["run", "--rm", "cached:1", "ls", "/ctx"]);
    assert!(!listed.contains("ignored.txt"), "{listed}");
    assert!(listed.contains("b.txt"), "{listed}");

    // b.txt changed: only the last COPY runs again.
    write(&dir, "b.txt", "b2\n");
    let last = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&last), 3, "{last}");
    let b = d.docker_ok(&["run", "--rm", "cached:1", "cat", "/ctx/b.txt"]);
    assert_eq!(b.trim(), "b2");

    // a.txt changed: the first RUN is cached, that COPY and all after not.
    write(&dir, "a.txt", "a2\n");
    let middle = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&middle), 1, "{middle}");
    let steps: Vec<&str> = middle.split("Step ").collect();
    assert!(steps[2].contains("Using cache"), "{middle}");
    assert!(steps[4].contains("Running in"), "{middle}");
    let copied = d.docker_ok(&["run", "--rm", "cached:1", "cat", "/copied"]);
    assert_eq!(copied.trim(), "a2");

    // --no-cache runs everything; builder prune forgets the cache.
    let fresh = build_ok(&d, &["--no-cache", "-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&fresh), 0, "{fresh}");
    let pruned = d.docker_ok(&["builder", "prune", "-f"]);
    assert!(pruned.contains("Total"), "{pruned}");
    let after = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&after), 0, "{after}");
    // image prune takes the untagged step images, and the cache with them.
    d.docker_ok(&["image", "prune", "-f"]);
    let pruned = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&pruned), 0, "{pruned}");
    let warm = build_ok(&d, &["-t", "cached:1", ctx]);
    assert_eq!(cache_hits(&warm), 4, "{warm}");

    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}

/// A POST with a tar body on the docker socket; (status line, body).
fn post_tar(d: &TestDaemon, path: &str, body: &[u8]) -> (String, String) {
    let mut s = UnixStream::connect(d.docker_socket()).expect("connect to the docker socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_leaves_nothing() {
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let cases = [
        (
            "unknown",
            format!("FROM {base}\nFOO bar\n"),
            "unknown instruction: FOO".to_string(),
        ),
        (
            "stage",
            format!("FROM {base} AS one\nCOPY --from=two /x /x\nFROM {base} AS two\n"),
            "--from=two".to_string(),
        ),
        (
            "outside",
            format!("FROM {base}\nCOPY ../outside /x\n"),
            "forbidden path outside the build context: ../outside".to_string(),
        ),
        (
            "exit3",
            format!("FROM {base}\nRUN echo before failing; exit 3\n"),
            "The command '/bin/sh -c echo before failing; exit 3' returned a non-zero code: 3"
                .to_string(),
        ),
        (
            "url",
            format!("FROM {base}\nADD https://example.com/x /x\n"),
            "ADD of a URL".to_string(),
        ),
    ];
    for (name, dockerfile, want) in cases {
        let dir = context(&d, name, &[("Dockerfile", &dockerfile)]);
        let run = build(&d, &["-t", &format!("bad-{name}:1"), dir.to_str().unwrap()]);
        assert_eq!(
            run.status,
            Some(1),
            "{name}: {}\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains(&want) || run.stdout.contains(&want),
            "{name}: no {want:?} in:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        let tagged = d.docker(&["image", "inspect", &format!("bad-{name}:1")]);
        assert_eq!(tagged.status, Some(1), "{name}: an image was tagged");
    }
    // The failing RUN's output reached the client before the error.
    let dir = context(&d, "exit3", &[]);
    let run = build(&d, &[dir.to_str().unwrap()]);
    assert!(run.stdout.contains("before failing"), "{}", run.stdout);

    // A context whose tar reaches outside it: refused naming the entry.
    let tar = tar_of(&[
        ("Dockerfile", b'0', "", format!("FROM {base}\n").as_bytes()),
        ("../escaped", b'0', "", b"x"),
    ]);
    let (status, body) = post_tar(&d, "/v1.41/build?t=evil:1", &tar);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("errorDetail"), "{body}");
    assert!(body.contains("../escaped"), "{body}");
    assert!(!d.root.join("escaped").exists());

    // Nothing left: no container (Docker's or the CRI's), no temp dir.
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");
    assert!(list_containers(&mut rt).await.is_empty());
    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_args_targets_onbuild_and_metadata_reach_the_image() {
    let reg = TestRegistry::start();
    reg.push(&["busybox"]);
    let d = TestDaemon::start().await;
    let base = reg.image("busybox");
    d.docker_ok(&["pull", &base]);
    let parent = format!(
        "FROM {base}\n\
         ONBUILD RUN echo triggered > /onbuild.txt\n"
    );
    let dir = context(&d, "parent", &[("Dockerfile", &parent)]);
    build_ok(&d, &["-t", "parent:1", dir.to_str().unwrap()]);
    let child = "ARG GREETING=hello\n\
         FROM parent:1 AS first\n\
         ARG GREETING\n\
         ENV SAID=${GREETING:-none}\n\
         RUN echo \"$GREETING\" > /greeting.txt\n\
         LABEL stage=first\n\
         EXPOSE 8080\n\
         USER 1000\n\
         FROM first AS second\n\
         LABEL stage=second\n";
    let dir = context(&d, "child", &[("Dockerfile", child)]);
    let out = build_ok(
        &d,
        &[
            "--build-arg",
            "GREETING=bonjour",
            "--target",
            "first",
            "--label",
            "from.cli=yes",
            "-t",
            "child:1",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.contains("# Executing 1 build trigger"), "{out}");
    assert!(!out.contains("stage=second"), "--target went past: {out}");
    let said = d.docker_ok(&[
        "run",
        "--rm",
        "child:1",
        "sh",
        "-c",
        "cat /greeting.txt /onbuild.txt; echo $SAID; id -u",
    ]);
    assert_eq!(said, "bonjour\ntriggered\nbonjour\n1000\n");
    let config = d.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}} {{json .Config.ExposedPorts}} {{json .Config.OnBuild}}",
        "child:1",
    ]);
    assert!(config.contains(r#""stage":"first""#), "{config}");
    assert!(config.contains(r#""from.cli":"yes""#), "{config}");
    assert!(config.contains(r#""8080/tcp""#), "{config}");
    assert!(config.trim().ends_with("null"), "{config}");
    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_build_and_its_container_goes() {
    use std::io::BufRead;
    let (d, reg, mut rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let dockerfile = format!("FROM {base}\nRUN echo started; sleep 120\n");
    let dir = context(&d, "gone", &[("Dockerfile", &dockerfile)]);
    let mut child = d
        .docker_command()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the docker CLI");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.trim() == "started");
    assert!(started, "the RUN never started");
    // It runs, and neither Docker's list nor the CRI's shows it.
    let containers = d.root.join("containers");
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 1);
    assert_eq!(d.docker_ok(&["ps", "-aq"]).trim(), "");
    assert!(list_containers(&mut rt).await.is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    // Well before the RUN's 120 s: the container and the context are gone.
    berth_testkit::eventually(
        "the build container's removal",
        Duration::from_secs(30),
        || {
            let left = std::fs::read_dir(&containers)
                .map(|e| e.count())
                .unwrap_or(0);
            let build_left = std::fs::read_dir(d.root.join("build"))
                .map(|e| e.count())
                .unwrap_or(0);
            (left == 0 && build_left == 0).then_some(())
        },
    )
    .await;
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_berthd_died_in_leaves_nothing_after_it_starts_again() {
    use std::io::BufRead;
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let dockerfile = format!("FROM {base}\nRUN echo started; sleep 120\n");
    let dir = context(&d, "crash", &[("Dockerfile", &dockerfile)]);
    let mut child = d
        .docker_command()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the docker CLI");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.trim() == "started");
    assert!(started, "the RUN never started");
    d.kill9();
    let _ = child.wait();
    assert_eq!(std::fs::read_dir(d.root.join("build")).unwrap().count(), 1);
    d.start_again().await;
    let dirs = [d.root.join("containers"), d.state_dir.join("pods")];
    berth_testkit::eventually(
        "the leftover build's removal",
        Duration::from_secs(30),
        || {
            let left: usize = dirs
                .iter()
                .map(|dir| std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0))
                .sum();
            (left == 0).then_some(())
        },
    )
    .await;
    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_add_own_unpack_and_write_inline_files() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let base = reg.image("busybox");
    let dockerfile = format!(
        "FROM {base}\n\
         WORKDIR /srv/app\n\
         ENV WHO=builder\n\
         COPY --chown=app:nogroup --chmod=600 conf/*.ini ./conf/\n\
         ADD bundle.tar /unpacked/\n\
         COPY <<EOF notes.txt\n\
         inline $WHO\n\
         EOF\n\
         COPY sub /tree\n"
    );
    let dir = context(
        &d,
        "copies",
        &[
            ("build/alt.Dockerfile", &dockerfile),
            ("conf/one.ini", "1\n"),
            ("conf/two.ini", "2\n"),
            ("conf/skip.txt", "no\n"),
            ("sub/deep/leaf.txt", "leaf\n"),
        ],
    );
    let bundle = tar_of(&[("hello.txt", b'0', "", b"from the tar\n")]);
    std::fs::write(dir.join("bundle.tar"), bundle).unwrap();
    let dockerfile_path = dir.join("build/alt.Dockerfile");
    build_ok(
        &d,
        &[
            "-f",
            dockerfile_path.to_str().unwrap(),
            "-t",
            "copies:1",
            dir.to_str().unwrap(),
        ],
    );
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "copies:1",
        "sh",
        "-c",
        "pwd; stat -c '%n %u:%g %a' conf/one.ini conf/two.ini; ls conf; \
         cat /unpacked/hello.txt notes.txt /tree/deep/leaf.txt",
    ]);
    assert_eq!(
        out,
        "/srv/app\n\
         conf/one.ini 1000:65534 600\n\
         conf/two.ini 1000:65534 600\n\
         one.ini\ntwo.ini\n\
         from the tar\n\
         inline builder\n\
         leaf\n",
    );
    assert_build_dir_empty(&d);
    d.assert_no_leaks();
}
