//! `linux.resources` from the CRI limits, checked the way the kernel would
//! check them so a bad value fails at CreateContainer with a message naming
//! the field, not later inside the runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use berth_errdefs::{Error, Result};
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources,
};

use crate::spec::Resources;

/// The kernel's cpu.shares bounds (v1), which kubelet also uses.
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
/// CFS period and quota bounds, in microseconds.
const MIN_CFS: u64 = 1_000;
const MAX_CFS_PERIOD: u64 = 1_000_000;

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> Error {
    Error::invalid(format!("resources {field} {value}: {why}"))
}

/// `0-3,5,7-8`.
fn valid_cpuset(list: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    list.split(',').all(|part| match part.split_once('-') {
        Some((a, b)) => number(a) && number(b) && a.parse::<u64>().ok() <= b.parse::<u64>().ok(),
        None => number(part),
    })
}

/// `2MB`, `1GB`, `64KB`.
fn valid_page_size(size: &str) -> bool {
    ["KB", "MB", "GB", "TB", "PB"].iter().any(|unit| {
        size.strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether the node accounts swap, so `memory.swap` can be set (containerd's
/// `SwapControllerAvailable`): `memory.memsw.*` on v1, `memory.swap.max`
/// in this process's cgroup on v2.
pub fn swap_controller_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("memory/memory.memsw.limit_in_bytes").exists() {
            return true;
        }
        std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
            })
            .is_some_and(|p| {
                root.join(p.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            })
    })
}

/// Converts and checks the limits; `devices` are the device cgroup rules.
/// `swap` says whether the node accounts swap: when it does and only a
/// memory limit is set, swap is limited to the same value, so the
/// container cannot swap (containerd's behaviour).
pub fn resources(
    r: &Resources,
    devices: Vec<LinuxDeviceCgroup>,
    swap: bool,
) -> Result<LinuxResources> {
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(shares) = r.cpu_shares.filter(|s| *s != 0) {
        if !(MIN_SHARES..=MAX_SHARES).contains(&shares) {
            return Err(invalid(
                "cpu_shares",
                shares,
                &format!("must be between {MIN_SHARES} and {MAX_SHARES}"),
            ));
        }
        cpu.set_shares(Some(shares));
        cpu_set = true;
    }
    if let Some(quota) = r.cpu_quota.filter(|q| *q != 0) {
        // -1 is "no limit"; without a period the kernel's (100ms) applies.
        if quota != -1 && (quota < 0 || (quota as u64) < MIN_CFS) {
            return Err(invalid(
                "cpu_quota",
                quota,
                &format!("must be -1 (no limit) or at least {MIN_CFS} microseconds"),
            ));
        }
        cpu.set_quota(Some(quota));
        cpu_set = true;
    }
    if let Some(period) = r.cpu_period.filter(|p| *p != 0) {
        if !(MIN_CFS..=MAX_CFS_PERIOD).contains(&period) {
            return Err(invalid(
                "cpu_period",
                period,
                &format!("must be between {MIN_CFS} and {MAX_CFS_PERIOD} microseconds"),
            ));
        }
        cpu.set_period(Some(period));
        cpu_set = true;
    }
    for (field, value) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        if !valid_cpuset(v) {
            return Err(invalid(
                field,
                format!("{v:?}"),
                "must be a list such as 0-3,5",
            ));
        }
        if field == "cpuset_cpus" {
            cpu.set_cpus(Some(v.to_string()));
        } else {
            cpu.set_mems(Some(v.to_string()));
        }
        cpu_set = true;
    }

    let mut memory = LinuxMemory::default();
    let mut memory_set = false;
    let limit = r.memory_limit.filter(|l| *l != 0);
    if let Some(limit) = limit {
        if limit < 0 {
            return Err(invalid("memory_limit", limit, "must not be negative"));
        }
        memory.set_limit(Some(limit));
        if swap {
            memory.set_swap(Some(limit));
        }
        memory_set = true;
    }
    if let Some(swap_limit) = r.memory_swap_limit.filter(|s| *s != 0) {
        if swap_limit < -1 {
            return Err(invalid(
                "memory_swap_limit",
                swap_limit,
                "must be -1 (no limit) or positive",
            ));
        }
        if let Some(limit) = limit {
            if swap_limit != -1 && swap_limit < limit {
                return Err(invalid(
                    "memory_swap_limit",
                    swap_limit,
                    &format!("must not be below memory_limit {limit} (it counts memory plus swap)"),
                ));
            }
        }
        if swap {
            memory.set_swap(Some(swap_limit));
            memory_set = true;
        }
    }

    let mut pids = None;
    if let Some(p) = r.pids_limit.filter(|p| *p != 0) {
        if p < -1 {
            return Err(invalid(
                "pids_limit",
                p,
                "must be -1 (no limit) or positive",
            ));
        }
        let mut l = LinuxPids::default();
        l.set_limit(p);
        pids = Some(l);
    }

    let mut hugepages = Vec::new();
    for (size, limit) in &r.hugepage_limits {
        if !valid_page_size(size) {
            return Err(invalid(
                "hugepage_limits page size",
                format!("{size:?}"),
                "must be a size such as 2MB or 1GB",
            ));
        }
        let limit =
            i64::try_from(*limit).map_err(|_| invalid("hugepage_limits", limit, "is too large"))?;
        let mut h = LinuxHugepageLimit::default();
        h.set_page_size(size.clone());
        h.set_limit(limit);
        hugepages.push(h);
    }

    let mut unified = HashMap::new();
    for (k, v) in &r.unified {
        if k.is_empty() || k.contains('/') || k.starts_with('.') {
            return Err(invalid(
                "unified key",
                format!("{k:?}"),
                "must be a cgroup file name",
            ));
        }
        unified.insert(k.clone(), v.clone());
    }

    let mut out = LinuxResources::default();
    out.set_devices(Some(devices));
    out.set_cpu(cpu_set.then_some(cpu));
    out.set_memory(memory_set.then_some(memory));
    out.set_pids(pids);
    out.set_hugepage_limits(Some(hugepages).filter(|h| !h.is_empty()));
    out.set_unified(Some(unified).filter(|u| !u.is_empty()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_errdefs::ErrorKind;

    fn ok(r: &Resources, swap: bool) -> LinuxResources {
        resources(r, Vec::new(), swap).unwrap()
    }

    fn err(r: &Resources) -> Error {
        let e = resources(r, Vec::new(), true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        e
    }

    #[test]
    fn nothing_set_means_no_limits() {
        let out = ok(&Resources::default(), true);
        assert!(out.cpu().is_none() && out.memory().is_none() && out.pids().is_none());
        assert!(out.hugepage_limits().is_none() && out.unified().is_none());
        let zeros = Resources {
            cpu_shares: Some(0),
            cpu_quota: Some(0),
            memory_limit: Some(0),
            pids_limit: Some(0),
            ..Resources::default()
        };
        let out = ok(&zeros, true);
        assert!(out.cpu().is_none() && out.memory().is_none() && out.pids().is_none());
    }

    #[test]
    fn limits_convert() {
        let r = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            pids_limit: Some(100),
            hugepage_limits: [("2MB".to_string(), 4u64 << 20)].into(),
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Resources::default()
        };
        let out = ok(&r, true);
        let cpu = out.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = out.memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20), "swap = limit: no swapping");
        assert_eq!(out.pids().unwrap().limit(), 100);
        let h = &out.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!((h.page_size().as_str(), h.limit()), ("2MB", 4 << 20));
        assert_eq!(out.unified().as_ref().unwrap()["memory.high"], "1000000");
    }

    #[test]
    fn swap_follows_containerd() {
        let limit = Resources {
            memory_limit: Some(100 << 20),
            ..Resources::default()
        };
        assert_eq!(
            ok(&limit, false).memory().unwrap().swap(),
            None,
            "no swap accounting"
        );
        let explicit = Resources {
            memory_swap_limit: Some(200 << 20),
            ..limit.clone()
        };
        assert_eq!(
            ok(&explicit, true).memory().unwrap().swap(),
            Some(200 << 20)
        );
        assert_eq!(ok(&explicit, false).memory().unwrap().swap(), None);
        let unlimited = Resources {
            memory_swap_limit: Some(-1),
            ..limit.clone()
        };
        assert_eq!(ok(&unlimited, true).memory().unwrap().swap(), Some(-1));
        // Quota without a period: the kernel's default period applies.
        let quota = Resources {
            cpu_quota: Some(20_000),
            ..Resources::default()
        };
        assert_eq!(ok(&quota, true).cpu().as_ref().unwrap().period(), None);
        let unlimited_cpu = Resources {
            cpu_quota: Some(-1),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        assert_eq!(ok(&unlimited_cpu, true).pids().unwrap().limit(), -1);
    }

    #[test]
    fn bad_values_name_the_field_and_value() {
        let cases = [
            (
                Resources {
                    memory_limit: Some(-5),
                    ..Resources::default()
                },
                "memory_limit -5",
            ),
            (
                Resources {
                    memory_limit: Some(100 << 20),
                    memory_swap_limit: Some(1 << 20),
                    ..Resources::default()
                },
                "memory_swap_limit 1048576",
            ),
            (
                Resources {
                    memory_swap_limit: Some(-2),
                    ..Resources::default()
                },
                "memory_swap_limit -2",
            ),
            (
                Resources {
                    cpu_shares: Some(1),
                    ..Resources::default()
                },
                "cpu_shares 1",
            ),
            (
                Resources {
                    cpu_shares: Some(300_000),
                    ..Resources::default()
                },
                "cpu_shares 300000",
            ),
            (
                Resources {
                    cpu_quota: Some(500),
                    ..Resources::default()
                },
                "cpu_quota 500",
            ),
            (
                Resources {
                    cpu_quota: Some(-7),
                    ..Resources::default()
                },
                "cpu_quota -7",
            ),
            (
                Resources {
                    cpu_period: Some(999),
                    ..Resources::default()
                },
                "cpu_period 999",
            ),
            (
                Resources {
                    cpu_period: Some(2_000_000),
                    ..Resources::default()
                },
                "cpu_period 2000000",
            ),
            (
                Resources {
                    cpuset_cpus: Some("0-x".into()),
                    ..Resources::default()
                },
                "cpuset_cpus \"0-x\"",
            ),
            (
                Resources {
                    cpuset_mems: Some("3-1".into()),
                    ..Resources::default()
                },
                "cpuset_mems \"3-1\"",
            ),
            (
                Resources {
                    pids_limit: Some(-3),
                    ..Resources::default()
                },
                "pids_limit -3",
            ),
            (
                Resources {
                    hugepage_limits: [("2M".to_string(), 1)].into(),
                    ..Resources::default()
                },
                "\"2M\"",
            ),
            (
                Resources {
                    unified: [("../x".to_string(), "1".to_string())].into(),
                    ..Resources::default()
                },
                "\"../x\"",
            ),
        ];
        for (r, want) in cases {
            let e = err(&r);
            assert!(e.message.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn cpusets_parse() {
        assert!(valid_cpuset("0"));
        assert!(valid_cpuset("0-3,5,7-8"));
        assert!(!valid_cpuset(""));
        assert!(!valid_cpuset("0,"));
        assert!(!valid_cpuset("a"));
        assert!(valid_page_size("2MB") && valid_page_size("1GB") && valid_page_size("64KB"));
        assert!(!valid_page_size("MB") && !valid_page_size("2mb"));
        let _ = swap_controller_available();
    }
}
