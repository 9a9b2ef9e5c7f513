//! The commit and compiler berthd was built from, for `berth_build_info`.
//! Either is "unknown" when it cannot be found (a source tarball, no git).

use std::process::Command;

fn main() {
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"]);
    let rustc = output(
        &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
        &["--version"],
    );
    println!("cargo:rustc-env=BERTH_COMMIT={commit}");
    println!("cargo:rustc-env=BERTH_RUSTC={rustc}");
    // A new commit changes HEAD or the branch it names (worktrees keep
    // their HEAD apart: ask git where each is).
    let branch = output("git", &["rev-parse", "--symbolic-full-name", "HEAD"]);
    for name in ["HEAD", branch.as_str()] {
        let path = output("git", &["rev-parse", "--git-path", name]);
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
