//! Issue 11 regressions for the monitor, against the built `berth-shim`
//! and real runtimes: the log path is never followed through a symlink,
//! every file the monitor makes is private, and a root-only test run
//! without root fails instead of passing.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use support::{need_root, runtimes, Container, Entry};

fn is(stream: &str, msg: &str) -> impl Fn(&Entry) -> bool {
    let (stream, msg) = (stream.to_string(), msg.to_string());
    move |e: &Entry| e.stream == stream && e.msg == msg
}

/// Plants `<dir>/elsewhere` ("precious") and a symlink to it at the log path.
fn plant_symlink(c: &Container) -> std::path::PathBuf {
    let target = c.dir.join("elsewhere");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, c.log_path()).unwrap();
    target
}

#[test]
fn a_symlink_at_the_log_path_is_refused_on_create() {
    need_root();
    let rt = &runtimes()[0];
    let mut c = Container::new(rt, &["echo", "hello"], false);
    let target = plant_symlink(&c);
    let report = c.spawn_shim();
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("create must fail: {report}"));
    let path = c.log_path().display().to_string();
    assert!(msg.contains(&path), "names the log path: {msg}");
    assert!(msg.contains("symbolic link"), "says why: {msg}");
    assert!(msg.contains("ELOOP"), "says why: {msg}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(c.log_path())
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left as it was"
    );
    // The failed start cleaned up after itself.
    assert!(!c.state().join("shim.pid").exists());
    c.finish();
}

#[test]
fn a_symlink_at_the_log_path_is_refused_on_reopen() {
    need_root();
    let rt = &runtimes()[0];
    let script = "echo one; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two";
    let mut c = Container::new(rt, &["sh", "-c", script], false);
    c.create();
    c.start();
    c.wait_log("line one", is("stdout", "one"));
    let rotated = c.dir.join("logs/0.log.1");
    std::fs::rename(c.log_path(), &rotated).unwrap();
    let target = plant_symlink(&c);
    let answer = c.control(&["reopen-log"]);
    let path = c.log_path().display().to_string();
    assert!(
        answer[0].starts_with("error reopen-log: ")
            && answer[0].contains(&path)
            && answer[0].contains("symbolic link"),
        "{answer:?}"
    );
    std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
    c.wait_exit();
    // The old file stayed in use; the link's target was never written.
    let old = support::parse_log(&std::fs::read_to_string(&rotated).unwrap());
    assert!(old.iter().any(is("stdout", "two")), "{old:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    c.finish();
}

/// Every file and directory under `dir` (and `dir` itself unless
/// `skip_root`) with its mode, for the files that are group or world
/// accessible.
fn exposed(dir: &Path, skip_root: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 && !(skip_root && p == dir) {
            bad.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    bad
}

#[test]
fn the_monitors_files_are_private() {
    need_root();
    for rt in runtimes() {
        for tty in [false, true] {
            let what = format!("{} tty={tty}", rt.name);
            let script = "umask; while [ ! -e /tmp/go ]; do sleep 0.02; done";
            let mut c = Container::new(&rt, &["sh", "-c", script], tty);
            c.shim_flags.push("--stdin".into());
            c.create();
            c.start();
            // The monitor's umask is not the container's.
            c.wait_log("the container's umask", is("stdout", "0022"));
            for name in ["shim.pid", "control.sock", "attach.sock", "runtime.log"] {
                assert!(c.state().join(name).exists(), "{what}: {name}");
            }
            // STATEDIR itself is the caller's; everything in it, and the
            // log, is the monitor's (or the runtime's at its request).
            let mut bad = exposed(&c.state(), true);
            bad.extend(exposed(&c.log_path(), false));
            assert!(bad.is_empty(), "{what}: group/world access: {bad:?}");

            std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
            assert_eq!(c.wait_exit()["exit_code"], 0, "{what}");
            support::wait_for("the monitor to leave", || {
                (!c.state().join("attach.sock").exists()).then_some(())
            });
            let bad = exposed(&c.state(), true);
            assert!(bad.is_empty(), "{what}: after exit: {bad:?}");
            let exit = c.state().join("exit.json");
            assert_eq!(
                std::fs::metadata(&exit).unwrap().permissions().mode() & 0o777,
                0o600,
                "{what}"
            );
            c.finish();
        }
    }
}

/// Run only by `a_root_test_without_root_fails_loudly`, as another user.
#[test]
#[ignore = "run as nobody by a_root_test_without_root_fails_loudly"]
fn need_root_probe() {
    need_root();
}

#[test]
fn a_root_test_without_root_fails_loudly() {
    need_root();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "need_root_probe", "--nocapture"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 filtered out") || text.contains("running 1 test"),
        "{text}"
    );
    assert!(!out.status.success(), "passed without root: {text}");
    assert!(text.contains("needs root: run the suite as root"), "{text}");
}
