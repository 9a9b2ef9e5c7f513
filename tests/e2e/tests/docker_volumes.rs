//! Volumes through the real docker CLI: a named volume shared by two
//! containers, its content kept across container removal and a SIGKILLed
//! berthd, removal refused while in use, anonymous volumes and `rm -v`,
//! copy-up of the image's content, read-only mounts refused with EROFS,
//! filters (dangling, name, label, driver), `rm -f` of a volume in use,
//! `system df`, prune and dockerd's errors.

use berth_e2e::*;
use berth_testkit::TestDaemon;

fn volume_names(d: &TestDaemon, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["volume", "ls", "-q"];
    cmd.extend_from_slice(args);
    let mut names: Vec<String> = d.docker_ok(&cmd).lines().map(str::to_string).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_volume_is_shared_kept_and_guarded() {
    let (mut d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    assert_eq!(d.docker_ok(&["volume", "create", "data"]).trim(), "data");
    let mountpoint = d.docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}} {{.Driver}}",
        "data",
    ]);
    let want = d.root.join("volumes/data/_data");
    assert_eq!(mountpoint.trim(), format!("{} local", want.display()));

    // One container writes, another reads.
    d.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/v",
        &image,
        "sh",
        "-c",
        "echo hello > /v/f",
    ]);
    let read = d.docker_ok(&["run", "--rm", "-v", "data:/v:ro", &image, "cat", "/v/f"]);
    assert_eq!(read, "hello\n");
    // Read-only means the kernel says so.
    let ro = d.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/v:ro",
        &image,
        "sh",
        "-c",
        "echo x > /v/g",
    ]);
    assert_ne!(ro.status, Some(0));
    assert!(ro.stderr.contains("Read-only file system"), "{}", ro.stderr);

    // Kept across a SIGKILLed berthd.
    d.kill9();
    d.start_again().await;
    assert_eq!(volume_names(&d, &[]), ["data"]);
    let read = d.docker_ok(&["run", "--rm", "-v", "data:/v", &image, "cat", "/v/f"]);
    assert_eq!(read, "hello\n");

    // In use: refused, naming the container.
    let user = d.docker_ok(&[
        "run", "-d", "--name", "user", "-v", "data:/v", &image, "sleep", "600",
    ]);
    let rm = d.docker(&["volume", "rm", "data"]);
    assert_eq!(rm.status, Some(1));
    assert!(
        rm.stderr.contains("volume is in use") && rm.stderr.contains(user.trim()),
        "{}",
        rm.stderr
    );
    assert_eq!(
        volume_names(&d, &["--filter", "dangling=true"]),
        Vec::<String>::new()
    );
    let mounts = d.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
        "user",
    ]);
    assert_eq!(mounts.trim(), "volume data /v");
    d.docker_ok(&["rm", "-f", "user"]);
    assert_eq!(volume_names(&d, &["--filter", "dangling=true"]), ["data"]);
    d.docker_ok(&["volume", "rm", "data"]);
    assert!(volume_names(&d, &[]).is_empty());
    assert!(!want.exists(), "the data went with the volume");

    // dockerd's errors.
    let missing = d.docker(&["volume", "inspect", "nope"]);
    assert!(
        missing.stderr.contains("no such volume"),
        "{}",
        missing.stderr
    );
    let bad = d.docker(&["volume", "create", "a/b"]);
    assert!(
        bad.stderr
            .contains("invalid characters for a local volume name"),
        "{}",
        bad.stderr
    );
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_volumes_copy_up_and_go_with_rm_v() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");

    // An empty volume mounted over the image's /etc gets its content.
    let passwd = d.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "etc:/etc",
        &image,
        "cat",
        "/etc/passwd",
    ]);
    assert!(passwd.starts_with("root:"), "{passwd}");
    assert!(d.root.join("volumes/etc/_data/passwd").is_file());

    // `-v /scratch`: an anonymous volume, shown as such, gone with rm -v.
    d.docker_ok(&[
        "run", "-d", "--name", "anon", "-v", "/scratch", &image, "sleep", "600",
    ]);
    let name = d.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}}{{end}}",
        "anon",
    ]);
    let (kind, name) = name.trim().split_once(' ').expect("type and name");
    assert_eq!(kind, "volume");
    assert_eq!(name.len(), 64, "a generated name: {name}");
    assert!(volume_names(&d, &[]).contains(&name.to_string()));
    d.docker_ok(&["rm", "-f", "-v", "anon"]);
    assert_eq!(volume_names(&d, &[]), ["etc"], "only the named one is left");

    // --volumes-from shares another container's volumes.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "owner",
        "-v",
        "shared:/s",
        &image,
        "sh",
        "-c",
        "echo from-owner > /s/f; sleep 600",
    ]);
    let got = d.docker_ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "owner:ro",
        &image,
        "sh",
        "-c",
        "until [ -f /s/f ]; do sleep 0.05; done; cat /s/f",
    ]);
    assert_eq!(got, "from-owner\n");
    d.docker_ok(&["rm", "-f", "owner"]);

    // Prune: every volume no container uses.
    let df = d.docker_ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Local Volumes 2"), "{df}");
    let pruned = d.docker_ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains("etc") && pruned.contains("shared"),
        "{pruned}"
    );
    assert!(volume_names(&d, &[]).is_empty());
    d.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_ls_filters_and_forced_removal_in_use() {
    let (d, reg, _rt) = daemon_with(&["busybox"]).await;
    let image = reg.image("busybox");
    d.docker_ok(&["volume", "create", "--label", "tier=a", "alpha"]);
    d.docker_ok(&[
        "volume", "create", "--label", "tier=b", "--label", "x", "beta",
    ]);
    d.docker_ok(&["volume", "create", "gamma"]);
    d.docker_ok(&[
        "run", "-d", "--name", "user", "-v", "alpha:/a", &image, "sleep", "600",
    ]);

    let f = |filter: &str| volume_names(&d, &["--filter", filter]);
    assert_eq!(f("name=alp"), ["alpha"]);
    assert_eq!(f("name=a"), ["alpha", "beta", "gamma"], "a substring");
    assert_eq!(f("label=tier"), ["alpha", "beta"]);
    assert_eq!(f("label=tier=b"), ["beta"]);
    assert_eq!(f("label=x"), ["beta"]);
    assert_eq!(f("driver=local"), ["alpha", "beta", "gamma"]);
    assert!(f("driver=nfs").is_empty());
    assert_eq!(f("dangling=false"), ["alpha"]);
    assert_eq!(f("dangling=true"), ["beta", "gamma"]);
    let labels = d.docker_ok(&["volume", "inspect", "-f", "{{json .Labels}}", "beta"]);
    assert_eq!(labels.trim(), r#"{"tier":"b","x":""}"#);
    // Two filters of one kind: either; of two kinds: both.
    assert_eq!(
        volume_names(&d, &["--filter", "name=alp", "--filter", "name=gam"]),
        ["alpha", "gamma"]
    );
    assert_eq!(
        volume_names(&d, &["--filter", "label=tier", "--filter", "dangling=true"]),
        ["beta"]
    );
    let bad = d.docker(&["volume", "ls", "--filter", "colour=red"]);
    assert!(
        bad.stderr.contains("Invalid filter 'colour'"),
        "{}",
        bad.stderr
    );

    // `rm -f` does not remove a volume in use either (dockerd's 409).
    let rm = d.docker(&["volume", "rm", "-f", "alpha"]);
    assert_eq!(rm.status, Some(1));
    assert!(rm.stderr.contains("volume is in use"), "{}", rm.stderr);
    assert!(d.root.join("volumes/alpha/_data").is_dir());
    // ...and makes a missing one fine.
    d.docker_ok(&["volume", "rm", "-f", "no-such-volume"]);

    // `system df` counts them, the one in use as active.
    let df = d.docker_ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert!(df.contains("Local Volumes 3 1"), "{df}");

    d.docker_ok(&["rm", "-f", "user"]);
    d.docker_ok(&["volume", "rm", "alpha", "beta", "gamma"]);
    d.assert_no_leaks();
}
