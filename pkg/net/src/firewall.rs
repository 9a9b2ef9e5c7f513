//! The bridge network's iptables rules: masquerading of pod traffic that
//! leaves the subnet, forwarding to and from the bridge, and host ports.
//!
//! Every chain is named after the bridge (`BERTH-<bridge>-*`), so two
//! berthds with different bridges never touch each other's rules. Changes
//! go through one `iptables-restore --noflush` per call, which is atomic.
//! Host-port rules carry a `berth:<sandbox id>` comment: that is how they
//! are found again after a restart, with no record needed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use berth_errdefs::{Error, Result};

use crate::{PortMapping, Subnet};

/// The commands, configurable so tests and odd hosts can pick a variant.
const IPTABLES_SAVE: &str = "iptables-save";
const IPTABLES_RESTORE: &str = "iptables-restore";

pub struct Firewall {
    bridge: String,
}

impl Firewall {
    pub fn new(bridge: &str) -> Firewall {
        Firewall {
            bridge: bridge.to_string(),
        }
    }

    fn chain(&self, suffix: &str) -> String {
        format!("BERTH-{}-{suffix}", self.bridge)
    }

    /// The comment that marks the rules of one pod.
    fn mark(sandbox_id: &str) -> String {
        format!("berth:{sandbox_id}")
    }

    /// Makes the network's chains and jumps if missing; refreshes the rules
    /// that hold no pod state. Idempotent.
    pub fn ensure(&self, subnet: Subnet) -> Result<()> {
        self.ensure_with(subnet, true, None)
    }

    /// Like [`ensure`](Firewall::ensure); without `outbound` (an internal
    /// network) nothing is masqueraded and nothing is forwarded in or out
    /// of the bridge: its members reach only each other. With
    /// `isolated_from` (an iptables interface pattern, `br-+`), nothing is
    /// forwarded between this bridge and the others it matches, as
    /// dockerd isolates its user networks from each other.
    pub fn ensure_with(
        &self,
        subnet: Subnet,
        outbound: bool,
        isolated_from: Option<&str>,
    ) -> Result<()> {
        let (nat, filter) = (save("nat")?, save("filter")?);
        let (hostports, masq, forward) = (self.chain("HP"), self.chain("MASQ"), self.chain("FWD"));
        let tag = format!("berth-{}", self.bridge);
        let jump = |chain: &str, target: &str, matches: &str| {
            format!("-A {chain} {matches}-m comment --comment {tag} -j {target}")
        };
        let mut rules = String::from("*nat\n");
        if !has_chain(&nat, &hostports) {
            rules += &format!(":{hostports} - [0:0]\n");
        }
        // Declaring a chain in a --noflush restore flushes it: fine for
        // MASQ, which is rebuilt whole here.
        rules += &format!(":{masq} - [0:0]\n");
        if outbound {
            rules += &format!("-A {masq} -s {subnet} ! -d {subnet} -j MASQUERADE\n");
        }
        // Host ports on 127.0.0.1 reach the pod with a loopback source:
        // give it the bridge's address so the reply can come back.
        rules += &format!(
            "-A {masq} -s 127.0.0.0/8 -o {} -j MASQUERADE\n",
            self.bridge
        );
        for (chain, target, matches) in [
            ("POSTROUTING", masq.as_str(), ""),
            (
                "PREROUTING",
                hostports.as_str(),
                "-m addrtype --dst-type LOCAL ",
            ),
            (
                "OUTPUT",
                hostports.as_str(),
                "-m addrtype --dst-type LOCAL ",
            ),
        ] {
            if !has_jump(&nat, chain, target) {
                rules += &(jump(chain, target, matches) + "\n");
            }
        }
        rules += "COMMIT\n*filter\n";
        rules += &format!(":{forward} - [0:0]\n");
        let bridge = &self.bridge;
        if let Some(others) = isolated_from {
            rules += &format!("-A {forward} -i {bridge} -o {bridge} -j ACCEPT\n");
            rules += &format!("-A {forward} -i {others} -o {bridge} -j DROP\n");
            rules += &format!("-A {forward} -i {bridge} -o {others} -j DROP\n");
        }
        if outbound {
            rules += &format!("-A {forward} -i {bridge} -j ACCEPT\n");
            rules += &format!("-A {forward} -o {bridge} -j ACCEPT\n");
        } else {
            rules += &format!("-A {forward} -i {bridge} -o {bridge} -j ACCEPT\n");
            rules += &format!("-A {forward} -i {bridge} -j DROP\n");
            rules += &format!("-A {forward} -o {bridge} -j DROP\n");
        }
        if !has_jump(&filter, "FORWARD", &forward) {
            rules += &(jump("FORWARD", &forward, "") + "\n");
        }
        rules += "COMMIT\n";
        restore(&rules)
    }

    /// Adds the DNAT rules of one pod's host ports.
    pub fn add_ports(
        &self,
        sandbox_id: &str,
        pod_ip: Ipv4Addr,
        ports: &[PortMapping],
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let chain = self.chain("HP");
        let mark = Self::mark(sandbox_id);
        let mut rules = String::from("*nat\n");
        for p in ports {
            let dest = p
                .host_ip
                .map(|ip| format!("-d {ip}/32 "))
                .unwrap_or_default();
            rules += &format!(
                "-A {chain} {dest}-p {proto} -m {proto} --dport {hp} -m comment --comment {mark} -j DNAT --to-destination {pod_ip}:{cp}\n",
                proto = p.protocol,
                hp = p.host_port,
                cp = p.container_port,
            );
        }
        rules += "COMMIT\n";
        restore(&rules)
    }

    /// Removes every host-port rule of one pod. Idempotent.
    pub fn remove_ports(&self, sandbox_id: &str) -> Result<()> {
        let mark = Self::mark(sandbox_id);
        self.remove_rules_where(|comment| comment == mark)
    }

    /// The sandbox ids that have host-port rules.
    pub fn sandboxes_with_ports(&self) -> Result<Vec<String>> {
        let nat = save("nat")?;
        let chain = self.chain("HP");
        let mut ids: Vec<String> = rules_of(&nat, &chain)
            .filter_map(comment_of)
            .filter_map(|c| c.strip_prefix("berth:").map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn remove_rules_where(&self, pick: impl Fn(&str) -> bool) -> Result<()> {
        let nat = save("nat")?;
        let chain = self.chain("HP");
        let doomed: Vec<String> = rules_of(&nat, &chain)
            .filter(|r| comment_of(r).is_some_and(&pick))
            .map(|r| format!("-D{}", &r[2..]))
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        restore(&format!("*nat\n{}\nCOMMIT\n", doomed.join("\n")))
    }

    /// Removes the network's chains and jumps (not done in normal
    /// operation: the network outlives berthd; tests and uninstall use it).
    pub fn remove_network(&self) -> Result<()> {
        let prefix = format!("BERTH-{}-", self.bridge);
        let mut rules = String::new();
        for table in ["nat", "filter"] {
            let dump = save(table)?;
            let jumps: Vec<String> = dump
                .lines()
                .filter(|l| l.starts_with("-A ") && l.contains(&format!("-j {prefix}")))
                .map(|l| format!("-D{}", &l[2..]))
                .collect();
            let chains: Vec<&str> = dump
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| c.starts_with(&prefix))
                .collect();
            if jumps.is_empty() && chains.is_empty() {
                continue;
            }
            rules += &format!("*{table}\n");
            for j in &jumps {
                rules += &format!("{j}\n");
            }
            for c in &chains {
                rules += &format!("-F {c}\n");
            }
            for c in &chains {
                rules += &format!("-X {c}\n");
            }
            rules += "COMMIT\n";
        }
        if rules.is_empty() {
            return Ok(());
        }
        restore(&rules)
    }

    /// Every rule line that mentions this network (for leak checks).
    pub fn rules(&self) -> Result<Vec<String>> {
        let needle = format!("BERTH-{}-", self.bridge);
        let mut out = Vec::new();
        for table in ["nat", "filter"] {
            out.extend(
                save(table)?
                    .lines()
                    .filter(|l| l.contains(&needle))
                    .map(str::to_string),
            );
        }
        Ok(out)
    }
}

fn rules_of<'a>(dump: &'a str, chain: &str) -> impl Iterator<Item = &'a str> {
    let prefix = format!("-A {chain} ");
    dump.lines().filter(move |l| l.starts_with(&prefix))
}

/// The `--comment` value of a saved rule, unquoted.
fn comment_of(rule: &str) -> Option<&str> {
    let rest = rule.split("--comment ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    Some(word.trim_matches('"'))
}

fn has_chain(dump: &str, chain: &str) -> bool {
    dump.lines().any(|l| {
        l.strip_prefix(':')
            .and_then(|l| l.split_whitespace().next())
            == Some(chain)
    })
}

fn has_jump(dump: &str, chain: &str, target: &str) -> bool {
    rules_of(dump, chain).any(|r| r.ends_with(&format!("-j {target}")))
}

fn save(table: &str) -> Result<String> {
    let out = Command::new(IPTABLES_SAVE)
        .args(["-t", table])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::from(e).context(format!("run {IPTABLES_SAVE}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{IPTABLES_SAVE} -t {table}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn restore(rules: &str) -> Result<()> {
    let mut child = Command::new(IPTABLES_RESTORE)
        .args(["--noflush", "-w", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from(e).context(format!("run {IPTABLES_RESTORE}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| Error::from(e).context(format!("write to {IPTABLES_RESTORE}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::from(e).context(format!("wait for {IPTABLES_RESTORE}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{IPTABLES_RESTORE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_rules_are_read_back() {
        let dump = "*nat\n:BERTH-b0-HP - [0:0]\n-A BERTH-b0-HP -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment berth:abc -j DNAT --to-destination 10.1.0.2:80\n-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment berth-b0 -j BERTH-b0-HP\nCOMMIT\n";
        assert!(has_chain(dump, "BERTH-b0-HP"));
        assert!(!has_chain(dump, "BERTH-b0-MASQ"));
        assert!(has_jump(dump, "OUTPUT", "BERTH-b0-HP"));
        assert!(!has_jump(dump, "PREROUTING", "BERTH-b0-HP"));
        let rule = rules_of(dump, "BERTH-b0-HP").next().unwrap();
        assert_eq!(comment_of(rule), Some("berth:abc"));
        assert_eq!(
            comment_of("-A X -m comment --comment \"berth:x\" -j Y"),
            Some("berth:x")
        );
    }
}
