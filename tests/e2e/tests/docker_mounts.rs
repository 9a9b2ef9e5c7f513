//! Mounts beyond `-v` through the real docker CLI: `--tmpfs` and
//! `--mount type=tmpfs` with the size and mode asked for, `--mount` for
//! binds (read-only, propagation) and volumes (`volume-nocopy`,
//! `readonly`, `volume-opt`), dockerd's 400s for bad ones; and volumes of
//! the `local` driver with options (`type`, `device`, `o`): a tmpfs or a
//! bound host directory, mounted while containers use it.

use std::time::Duration;

use berth_e2e::*;
use berth_testkit::{eventually, TestDaemon};

/// The line of the container's mount table for `path`.
fn mount_line(d: &TestDaemon, args: &[&str], path: &str) -> String {
    let mut cmd = vec!["run", "--rm"];
    cmd.extend_from_slice(args);
    let script = format!("grep ' {path} ' /proc/mounts; stat -c %a {path}");
    cmd.extend_from_slice(&["sh", "-c", &script]);
    d.docker_ok(&cmd)
}

/// Whether the host's mount table has `dir` as a mount point.
fn host_mounted(dir: &std::path::Path) -> bool {
    berth_testkit::mounts_under(dir)
        .iter()
        .any(|m| std::path::Path::new(m) == dir)
}

fn refused(d: &TestDaemon, args: &[&str], want: &str) {
    let run = d.docker(args);
    assert_ne!(run.status, Some(0), "{args:?} was accepted");
    assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_and_mount_flags_give_what_they_ask_for() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    // --tmpfs: Docker's defaults (noexec, nosuid, nodev) and the options.
    let out = mount_line(
        &d,
        &["--tmpfs", "/scratch:size=2m,mode=1770", &image],
        "/scratch",
    );
    let (line, mode) = out.trim().rsplit_once('\n').expect("a line and a mode");
    assert!(line.starts_with("tmpfs /scratch tmpfs rw,"), "{out}");
    for opt in ["nosuid", "nodev", "noexec", "size=2048k", "mode=1770"] {
        assert!(line.split([',', ' ']).any(|o| o == opt), "{opt}: {out}");
    }
    assert_eq!(mode, "1770");

    // --mount type=tmpfs: TmpfsOptions' bytes and mode.
    let tmpfs = "type=tmpfs,destination=/p,tmpfs-size=1048576,tmpfs-mode=0750";
    let out = mount_line(&d, &["--mount", tmpfs, &image], "/p");
    assert!(
        out.contains("size=1024k") && out.contains("mode=750"),
        "{out}"
    );
    assert!(out.trim().ends_with("\n750"), "{out}");

    // Shown as a tmpfs mount; nothing of it on the host, during or after.
    d.docker_ok(&[
        "run", "-d", "--name", "tm", "--mount", tmpfs, &image, "sleep", "600",
    ]);
    let mounts = d.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}}{{end}}",
        "tm",
    ]);
    assert_eq!(mounts.trim(), "tmpfs /p true");
    d.docker_ok(&["exec", "tm", "sh", "-c", "echo x > /p/f"]);
    let on_host = berth_testkit::mounts_under(d.dir());
    assert!(!on_host.iter().any(|m| m.ends_with("/p")), "{on_host:?}");
    d.docker_ok(&["rm", "-f", "tm"]);

    // --mount type=bind,readonly: the kernel refuses a write.
    let host = d.dir().join("bound");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from-host").unwrap();
    let bind = format!("type=bind,source={},target=/b,readonly", host.display());
    let out = d.docker(&[
        "run",
        "--rm",
        "--mount",
        &bind,
        &image,
        "sh",
        "-c",
        "cat /b/f; echo y > /b/g",
    ]);
    assert!(out.stdout.starts_with("from-host"), "{}", out.stdout);
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert!(!host.join("g").exists());
    // A slave needs a source mount that receives: refused on a private one.
    let slave = format!(
        "type=bind,source={},target=/b,bind-propagation=rslave",
        host.display()
    );
    refused(
        &d,
        &["run", "--rm", "--mount", &slave, &image, "true"],
        "not a shared or slave mount",
    );

    // --mount type=volume: copy-up unless volume-nocopy; readonly.
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=copied,target=/etc",
        &image,
        "ls",
        "/etc",
    ]);
    assert!(out.contains("passwd"), "{out}");
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=bare,target=/etc,volume-nocopy",
        &image,
        "ls",
        "-A",
        "/etc",
    ]);
    // Only the mount points of the container's own /etc files.
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["hostname", "hosts", "resolv.conf"],
        "nocopy: nothing of the image's /etc"
    );
    refused(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=copied,target=/v,readonly",
            &image,
            "touch",
            "/v/x",
        ],
        "Read-only file system",
    );

    // Bad --mount: dockerd's 400, nothing made.
    refused(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/no/such/berth/dir,target=/x",
            &image,
        ],
        r#"invalid mount config for type "bind": bind source path does not exist: /no/such/berth/dir"#,
    );
    refused(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=tmpfs,source=x,target=/x",
            &image,
        ],
        r#"invalid mount config for type "tmpfs": field Source must not be specified"#,
    );
    refused(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=v2,target=rel",
            &image,
        ],
        "invalid mount path: 'rel' mount path must be absolute",
    );
    refused(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=v3,target=/x,volume-driver=nope",
            &image,
        ],
        r#"error looking up volume plugin nope: plugin "nope" not found"#,
    );
    assert!(d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    let mut volumes: Vec<String> = d
        .docker_ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect();
    volumes.sort();
    assert_eq!(volumes, ["bare", "copied"], "no volume of a refused run");
    d.docker_ok(&["volume", "rm", "bare", "copied"]);
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_driver_options_mount_while_containers_use_the_volume() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    // A tmpfs volume: its options shown, mounted at first use only.
    d.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=64m",
        "tv",
    ]);
    let options = d.docker_ok(&["volume", "inspect", "-f", "{{json .Options}}", "tv"]);
    assert_eq!(
        options.trim(),
        r#"{"device":"tmpfs","o":"size=64m","type":"tmpfs"}"#
    );
    let data = d.root.join("volumes/tv/_data");
    assert!(!host_mounted(&data), "mounted before any use");
    for name in ["one", "two"] {
        d.docker_ok(&[
            "run", "-d", "--name", name, "-v", "tv:/data", &image, "sleep", "600",
        ]);
    }
    assert!(host_mounted(&data));
    let line = d.docker_ok(&["exec", "one", "grep", " /data ", "/proc/mounts"]);
    assert!(
        line.starts_with("tmpfs /data tmpfs") && line.contains("size=65536k"),
        "{line}"
    );
    d.docker_ok(&["exec", "one", "sh", "-c", "echo shared > /data/f"]);
    assert_eq!(d.docker_ok(&["exec", "two", "cat", "/data/f"]), "shared\n");
    // Still mounted while one user is left; gone after the last.
    d.docker_ok(&["stop", "-t", "0", "one"]);
    assert!(host_mounted(&data), "unmounted while `two` uses it");
    d.docker_ok(&["stop", "-t", "0", "two"]);
    eventually(
        "unmounted after the last user",
        Duration::from_secs(10),
        || (!host_mounted(&data)).then_some(()),
    )
    .await;
    // A start mounts it again: a new, empty tmpfs, as with dockerd.
    d.docker_ok(&["start", "one"]);
    assert!(host_mounted(&data));
    assert_eq!(
        d.docker_ok(&["exec", "one", "ls", "-A", "/data"]).trim(),
        ""
    );
    d.docker_ok(&["rm", "-f", "one", "two"]);
    eventually("unmounted after removal", Duration::from_secs(10), || {
        (!host_mounted(&data)).then_some(())
    })
    .await;
    d.docker_ok(&["volume", "rm", "tv"]);

    // A bind of a host directory: writes land there; removing the
    // volume leaves the directory and its files alone.
    let host = d.dir().join("exported");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello"), "from-host").unwrap();
    let device = format!("device={}", host.display());
    d.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        "bv",
    ]);
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "bv:/d",
        &image,
        "sh",
        "-c",
        "cat /d/hello; echo back > /d/new",
    ]);
    assert_eq!(out, "from-host");
    assert_eq!(std::fs::read_to_string(host.join("new")).unwrap(), "back\n");
    eventually("the bind unmounted", Duration::from_secs(10), || {
        (!host_mounted(&d.root.join("volumes/bv/_data"))).then_some(())
    })
    .await;
    d.docker_ok(&["volume", "rm", "bv"]);
    assert!(host.join("hello").is_file() && host.join("new").is_file());

    // A device that is not there: refused when it is mounted, clearly.
    d.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/no/such/berth/dev",
        "gone",
    ]);
    refused(
        &d,
        &["run", "--rm", "-v", "gone:/d", &image, "true"],
        "failed to mount local volume: mount /no/such/berth/dev:",
    );
    assert!(d.docker_ok(&["ps", "-aq"]).trim().is_empty());
    d.docker_ok(&["volume", "rm", "gone"]);

    // --mount with volume-opt makes such a volume too.
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=mv,target=/m,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=8m",
        &image,
        "grep",
        " /m ",
        "/proc/mounts",
    ]);
    assert!(
        out.starts_with("tmpfs /m tmpfs") && out.contains("size=8192k"),
        "{out}"
    );
    let options = d.docker_ok(&["volume", "inspect", "-f", "{{.Options.o}}", "mv"]);
    assert_eq!(options.trim(), "size=8m");
    d.docker_ok(&["volume", "rm", "mv"]);

    // Bad options and drivers, in dockerd's words; nothing made.
    refused(
        &d,
        &["volume", "create", "-o", "colour=red", "x1"],
        r#"create x1: invalid option: "colour""#,
    );
    refused(
        &d,
        &["volume", "create", "-o", "type=tmpfs", "x2"],
        r#"create x2: missing required option: "device""#,
    );
    refused(
        &d,
        &["volume", "create", "-d", "nope", "x3"],
        r#"error looking up volume plugin nope: plugin "nope" not found"#,
    );
    assert!(d.docker_ok(&["volume", "ls", "-q"]).trim().is_empty());
    assert!(
        berth_testkit::mounts_under(&d.root.join("volumes")).is_empty(),
        "volume mounts left behind"
    );
    d.assert_no_leaks();
}
