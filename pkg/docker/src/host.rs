//! Facts about the host that `/version` and `/info` report.

use std::ffi::CStr;

/// `uname -r`.
pub fn kernel_version() -> String {
    uname_field(|u| &u.release)
}

/// `uname -n`.
pub fn hostname() -> String {
    uname_field(|u| &u.nodename)
}

/// `uname -m` (`x86_64`), which `/info` shows as Architecture.
pub fn machine() -> String {
    uname_field(|u| &u.machine)
}

/// Go's GOARCH name for this machine, which `/version` shows.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn uname_field(pick: impl Fn(&libc::utsname) -> &[libc::c_char; 65]) -> String {
    // SAFETY: uname fills the zeroed struct we own; its fields are
    // NUL-terminated C strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        CStr::from_ptr(pick(&u).as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// `PRETTY_NAME` and `VERSION_ID` of /etc/os-release.
pub fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("PRETTY_NAME"), field("VERSION_ID"))
}

/// Total memory in bytes (`MemTotal` of /proc/meminfo).
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_reports_itself() {
        assert!(!super::kernel_version().is_empty());
        assert!(super::mem_total() > 0);
        assert!(super::cpus() >= 1);
    }
}
