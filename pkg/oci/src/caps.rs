//! Linux capabilities: names, the default set, and the CRI add/drop rules.
//!
//! Sets are bit masks indexed by the kernel's capability numbers, so set
//! operations are exact and the order of the output is stable.

use std::collections::HashSet;

use berth_errdefs::{Error, Result};
use oci_spec::runtime::{Capabilities, Capability};

/// Every capability the OCI runtime spec names, by kernel number.
const TABLE: [(Capability, &str); 41] = [
    (Capability::Chown, "CHOWN"),
    (Capability::DacOverride, "DAC_OVERRIDE"),
    (Capability::DacReadSearch, "DAC_READ_SEARCH"),
    (Capability::Fowner, "FOWNER"),
    (Capability::Fsetid, "FSETID"),
    (Capability::Kill, "KILL"),
    (Capability::Setgid, "SETGID"),
    (Capability::Setuid, "SETUID"),
    (Capability::Setpcap, "SETPCAP"),
    (Capability::LinuxImmutable, "LINUX_IMMUTABLE"),
    (Capability::NetBindService, "NET_BIND_SERVICE"),
    (Capability::NetBroadcast, "NET_BROADCAST"),
    (Capability::NetAdmin, "NET_ADMIN"),
    (Capability::NetRaw, "NET_RAW"),
    (Capability::IpcLock, "IPC_LOCK"),
    (Capability::IpcOwner, "IPC_OWNER"),
    (Capability::SysModule, "SYS_MODULE"),
    (Capability::SysRawio, "SYS_RAWIO"),
    (Capability::SysChroot, "SYS_CHROOT"),
    (Capability::SysPtrace, "SYS_PTRACE"),
    (Capability::SysPacct, "SYS_PACCT"),
    (Capability::SysAdmin, "SYS_ADMIN"),
    (Capability::SysBoot, "SYS_BOOT"),
    (Capability::SysNice, "SYS_NICE"),
    (Capability::SysResource, "SYS_RESOURCE"),
    (Capability::SysTime, "SYS_TIME"),
    (Capability::SysTtyConfig, "SYS_TTY_CONFIG"),
    (Capability::Mknod, "MKNOD"),
    (Capability::Lease, "LEASE"),
    (Capability::AuditWrite, "AUDIT_WRITE"),
    (Capability::AuditControl, "AUDIT_CONTROL"),
    (Capability::Setfcap, "SETFCAP"),
    (Capability::MacOverride, "MAC_OVERRIDE"),
    (Capability::MacAdmin, "MAC_ADMIN"),
    (Capability::Syslog, "SYSLOG"),
    (Capability::WakeAlarm, "WAKE_ALARM"),
    (Capability::BlockSuspend, "BLOCK_SUSPEND"),
    (Capability::AuditRead, "AUDIT_READ"),
    (Capability::Perfmon, "PERFMON"),
    (Capability::Bpf, "BPF"),
    (Capability::CheckpointRestore, "CHECKPOINT_RESTORE"),
];

/// Docker's (and containerd's) default set for containers.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A set of capabilities as a mask of kernel capability numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn of(caps: &[Capability]) -> CapSet {
        CapSet(caps.iter().fold(0, |m, c| m | (1 << number(*c))))
    }

    /// Every capability the spec knows.
    pub fn known() -> CapSet {
        CapSet((1u64 << TABLE.len()) - 1)
    }

    pub fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << number(cap)) != 0
    }

    pub fn insert(&mut self, cap: Capability) {
        self.0 |= 1 << number(cap);
    }

    pub fn remove(&mut self, cap: Capability) {
        self.0 &= !(1 << number(cap));
    }

    /// The members, in kernel order.
    pub fn to_vec(self) -> Vec<Capability> {
        TABLE
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, (c, _))| *c)
            .collect()
    }

    pub fn to_oci(self) -> Capabilities {
        self.to_vec().into_iter().collect()
    }

    pub fn from_oci(caps: &HashSet<Capability>) -> CapSet {
        let v: Vec<Capability> = caps.iter().copied().collect();
        CapSet::of(&v)
    }
}

/// The kernel number of a capability.
pub fn number(cap: Capability) -> usize {
    TABLE
        .iter()
        .position(|(c, _)| *c == cap)
        .expect("every Capability variant is in TABLE")
}

/// Parses a capability name with or without `CAP_`, in any case.
pub fn parse(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    TABLE.iter().find(|(_, n)| *n == bare).map(|(c, _)| *c)
}

fn is_all(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    upper == "ALL" || upper == "CAP_ALL"
}

/// What this process may hand to a container: its effective set as
/// `/proc/self/status` reports it, limited to the capabilities the spec
/// names (containerd's `cap.Current()`). A host whose bounding set lacks
/// some capability cannot give it to a privileged container either.
pub fn current() -> CapSet {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_status_mask(&s, "CapEff"))
        .map(|m| CapSet(m & CapSet::known().0))
        .unwrap_or_else(CapSet::known)
}

/// The hexadecimal mask of one `Cap*:` line of `/proc/<pid>/status`.
pub fn parse_status_mask(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() == field {
            u64::from_str_radix(v.trim(), 16).ok()
        } else {
            None
        }
    })
}

/// The container's capability set (bounding = effective = permitted).
///
/// Follows containerd's CRI plugin: a privileged container gets every
/// capability the host can give (`all`) and add/drop do not apply; else the
/// default set, then `ALL` in add (every capability), then `ALL` in drop
/// (none), then each named addition, then each named drop, so a drop wins
/// over an add of the same capability.
pub fn compute(privileged: bool, add: &[String], drop: &[String], all: CapSet) -> Result<CapSet> {
    let parse_list = |field: &str, list: &[String]| -> Result<Vec<Capability>> {
        list.iter()
            .filter(|n| !is_all(n))
            .map(|n| {
                parse(n).ok_or_else(|| Error::invalid(format!("{field}: unknown capability {n:?}")))
            })
            .collect()
    };
    // Names are checked even when privileged makes them moot.
    let added = parse_list("capabilities add", add)?;
    let dropped = parse_list("capabilities drop", drop)?;
    if privileged {
        return Ok(all);
    }
    let mut set = CapSet::of(&DEFAULT_CAPS);
    if add.iter().any(|n| is_all(n)) {
        set = all;
    }
    if drop.iter().any(|n| is_all(n)) {
        set = CapSet::default();
    }
    for c in added {
        set.insert(c);
    }
    for c in dropped {
        set.remove(c);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn table_follows_kernel_numbers() {
        assert_eq!(number(Capability::Chown), 0);
        assert_eq!(number(Capability::NetRaw), 13);
        assert_eq!(number(Capability::SysAdmin), 21);
        assert_eq!(number(Capability::SysResource), 24);
        assert_eq!(number(Capability::Setfcap), 31);
        assert_eq!(number(Capability::CheckpointRestore), 40);
    }

    #[test]
    fn names_parse_with_or_without_prefix_in_any_case() {
        assert_eq!(parse("NET_ADMIN"), Some(Capability::NetAdmin));
        assert_eq!(parse("cap_net_admin"), Some(Capability::NetAdmin));
        assert_eq!(parse("Sys_Ptrace"), Some(Capability::SysPtrace));
        assert_eq!(parse("CAP_NOPE"), None);
        assert_eq!(parse("ALL"), None);
    }

    #[test]
    fn default_set_is_dockers() {
        let set = compute(false, &[], &[], CapSet::known()).unwrap();
        assert_eq!(set, CapSet::of(&DEFAULT_CAPS));
        assert_eq!(set.to_vec().len(), 14);
        // The mask runc reports in CapBnd for this set.
        assert_eq!(set.0, 0xa80425fb);
    }

    #[test]
    fn add_and_drop_follow_containerd_order() {
        let all = CapSet::known();
        let set = compute(false, &s(&["net_admin"]), &s(&["CAP_NET_RAW"]), all).unwrap();
        assert!(set.contains(Capability::NetAdmin));
        assert!(!set.contains(Capability::NetRaw));
        assert!(set.contains(Capability::Chown));

        // A drop wins over an add of the same capability.
        let set = compute(false, &s(&["SYS_ADMIN"]), &s(&["sys_admin"]), all).unwrap();
        assert!(!set.contains(Capability::SysAdmin));

        // ALL in add: everything the host gives, minus the drops.
        let host = CapSet(all.0 & !(1 << 24));
        let set = compute(false, &s(&["ALL"]), &s(&["CHOWN"]), host).unwrap();
        assert_eq!(set.0, host.0 & !1);

        // ALL in drop: nothing, plus the named additions.
        let set = compute(false, &s(&["NET_BIND_SERVICE"]), &s(&["all"]), all).unwrap();
        assert_eq!(set.to_vec(), vec![Capability::NetBindService]);

        // Both: drop ALL applies after add ALL.
        let set = compute(false, &s(&["ALL"]), &s(&["ALL"]), all).unwrap();
        assert_eq!(set, CapSet::default());
    }

    #[test]
    fn privileged_gets_every_host_capability() {
        let host = CapSet(0x1fffeffffff);
        let set = compute(true, &[], &s(&["CHOWN"]), host).unwrap();
        assert_eq!(set, host);
        assert!(!set.contains(Capability::SysResource));
    }

    #[test]
    fn unknown_names_are_invalid_arguments_naming_them() {
        let e = compute(false, &s(&["NET_FLY"]), &[], CapSet::known()).unwrap_err();
        assert_eq!(e.kind, berth_errdefs::ErrorKind::InvalidArgument);
        assert!(e.message.contains("NET_FLY"), "{e}");
        assert!(e.message.contains("add"), "{e}");
        let e = compute(true, &[], &s(&["bogus"]), CapSet::known()).unwrap_err();
        assert!(
            e.message.contains("drop") && e.message.contains("bogus"),
            "{e}"
        );
    }

    #[test]
    fn status_masks_parse() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_status_mask(status, "CapEff"), Some(0x1fffeffffff));
        assert_eq!(parse_status_mask(status, "CapBnd"), None);
        assert_eq!(current().0 & !CapSet::known().0, 0);
    }

    #[test]
    fn oci_round_trip() {
        let set = CapSet::of(&DEFAULT_CAPS);
        assert_eq!(CapSet::from_oci(&set.to_oci()), set);
    }
}
