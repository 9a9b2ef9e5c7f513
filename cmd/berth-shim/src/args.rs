//! The command line (see the crate documentation for the contract).

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub id: OsString,
    pub bundle: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub runtime: OsString,
    pub runtime_args: Vec<OsString>,
    pub runtime_root: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// Run the runtime in a private mount namespace whose
    /// `/sys/fs/cgroup/unified` is an empty tmpfs (crun on hybrid hosts).
    pub hide_cgroup2: bool,
    /// With `hide_cgroup2`: the container has mounts whose propagation
    /// must reach the host, so only the hidden mount is made private.
    pub mount_propagation: bool,
    /// The `cgroup.procs` file of the cgroup the shim starts in, written
    /// with its own pid once the runtime runs (see `shim::prime_cgroup_lock`).
    pub own_cgroup_procs: Option<PathBuf>,
}

/// Parses the arguments after the program name. Values may follow their
/// flag as the next argument or after `=`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Config, String> {
    let mut cfg = Config::default();
    let (mut id, mut bundle, mut dir, mut log, mut runtime, mut root) =
        (None, None, None, None, None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((f, _)) if f.starts_with("--") => {
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(arg.as_os_str());
                let value = bytes.get(f.len() + 1..).unwrap_or_default();
                (
                    f.to_string(),
                    Some(std::os::unix::ffi::OsStringExt::from_vec(value.to_vec())),
                )
            }
            _ => (text.into_owned(), None),
        };
        let mut value = |name: &str| -> Result<OsString, String> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--id" => id = Some(value("--id")?),
            "--bundle" => bundle = Some(PathBuf::from(value("--bundle")?)),
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--log" => log = Some(PathBuf::from(value("--log")?)),
            "--runtime" => runtime = Some(value("--runtime")?),
            "--runtime-arg" => cfg.runtime_args.push(value("--runtime-arg")?),
            "--runtime-root" => root = Some(PathBuf::from(value("--runtime-root")?)),
            "--own-cgroup-procs" => {
                cfg.own_cgroup_procs = Some(PathBuf::from(value("--own-cgroup-procs")?))
            }
            "--tty" | "--stdin" | "--stdin-once" | "--hide-cgroup2" | "--mount-propagation"
                if inline.is_some() =>
            {
                return Err(format!("{flag} takes no value"))
            }
            "--tty" => cfg.tty = true,
            "--stdin" => cfg.stdin = true,
            "--stdin-once" => cfg.stdin_once = true,
            "--hide-cgroup2" => cfg.hide_cgroup2 = true,
            "--mount-propagation" => cfg.mount_propagation = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    fn required<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("{name} is required"))
    }
    cfg.id = required(id, "--id")?;
    cfg.bundle = required(bundle, "--bundle")?;
    cfg.dir = required(dir, "--dir")?;
    cfg.log = required(log, "--log")?;
    cfg.runtime = required(runtime, "--runtime")?;
    cfg.runtime_root = required(root, "--runtime-root")?;
    if cfg.id.is_empty() || cfg.runtime.is_empty() {
        return Err("--id and --runtime must not be empty".into());
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn full_command_line() {
        let cfg = parse(args(&[
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--dir=/s",
            "--log",
            "/l/0.log",
            "--runtime",
            "/usr/bin/unshare",
            "--runtime-arg",
            "--mount",
            "--runtime-arg=sh",
            "--runtime-arg",
            "-c",
            "--runtime-root",
            "/r",
            "--tty",
            "--stdin",
            "--stdin-once",
            "--hide-cgroup2",
            "--mount-propagation",
            "--own-cgroup-procs=/sys/fs/cgroup/memory/x/cgroup.procs",
        ]))
        .unwrap();
        assert!(cfg.hide_cgroup2 && cfg.mount_propagation);
        assert_eq!(
            cfg.own_cgroup_procs.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/memory/x/cgroup.procs"))
        );
        assert_eq!(cfg.id, "c1");
        assert_eq!(cfg.dir, PathBuf::from("/s"));
        assert_eq!(cfg.runtime_args, args(&["--mount", "sh", "-c"]));
        assert!(cfg.tty && cfg.stdin && cfg.stdin_once);
    }

    #[test]
    fn errors() {
        let base = [
            "--id",
            "c",
            "--bundle",
            "/b",
            "--dir",
            "/s",
            "--log",
            "/l",
            "--runtime",
            "r",
        ];
        let e = parse(args(&base)).unwrap_err();
        assert!(e.contains("--runtime-root"), "{e}");
        let mut more = base.to_vec();
        more.extend(["--runtime-root", "/r", "--bogus"]);
        assert!(parse(args(&more)).unwrap_err().contains("--bogus"));
        assert!(parse(args(&["--id"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(args(&["--tty=1"])).unwrap_err().contains("no value"));
    }
}
