//! Container listing and inspection (`docker ps`, `docker inspect`), in
//! dockerd's JSON shapes (see ps-a.txt and inspect.txt in the reference
//! traces).

use berth_core::{ContainerState, Core, PortMapping, RestartPolicy};
use hyper::Response;
use serde_json::{json, Map, Value};

use crate::clock::{human_duration, now_ns, rfc3339_nano};
use crate::error::ApiResult;
use crate::filters::Filters;
use crate::http::{ok_json, Body, Query};
use crate::view::{self, ContainerView};

/// The filters `GET /containers/json` accepts.
const LIST_FILTERS: &[&str] = &[
    "id",
    "name",
    "label",
    "status",
    "ancestor",
    "exited",
    "before",
    "since",
    "network",
    "health",
    "isolation",
    "is-task",
    "publish",
    "expose",
    "volume",
];
const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// `GET /containers/json`.
pub fn list(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let filters = Filters::parse(query.get("filters"), LIST_FILTERS)?;
    filters.check_values("status", STATUSES)?;
    let all = query.flag("all") || filters.has("status") || filters.has("exited");
    let limit = query.int("limit")?.filter(|n| *n > 0);
    let views: Vec<Value> = view::all(core)
        .into_iter()
        .filter(|v| all || v.record.state == ContainerState::Running)
        .filter(|v| matches(v, &filters))
        .take(limit.map_or(usize::MAX, |n| n as usize))
        .map(|v| {
            let size = query.flag("size").then(|| size_of(core, &v)).flatten();
            summary(core, &v, size)
        })
        .collect();
    ok_json(&views)
}

fn matches(v: &ContainerView, f: &Filters) -> bool {
    f.any("id", |id| v.record.id.starts_with(id))
        && f.any("name", |n| v.name.contains(n.trim_start_matches('/')))
        && f.any("status", |s| s == v.state())
        && f.any("exited", |code| {
            v.record.state.has_exited() && code.parse() == Ok(v.record.exit_code)
        })
        && f.any("ancestor", |image| {
            v.record.config.image == image
                || v.record.image_ref == image
                || v.record
                    .image_id
                    .trim_start_matches("sha256:")
                    .starts_with(image.trim_start_matches("sha256:"))
        })
        && (!f.has("network")
            || networks(v).iter().any(|(name, n)| {
                let id = n["NetworkID"].as_str().unwrap_or_default();
                f.any("network", |x| {
                    x == name || (!x.is_empty() && id.starts_with(x))
                })
            }))
        && f.labels_match(&v.record.config.labels)
}

/// The one-line command `docker ps` shows: the path and its arguments,
/// those with spaces in single quotes (as dockerd joins them).
fn command_line(args: &[String]) -> String {
    args.iter()
        .enumerate()
        .map(|(i, a)| match i > 0 && a.contains(' ') {
            true => format!("'{a}'"),
            false => a.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Up 2 seconds`, `Up 1 minute (Paused)`, `Exited (0) 3 seconds ago`,
/// `Created`.
fn status_text(v: &ContainerView) -> String {
    let r = &v.record;
    match r.state {
        ContainerState::Created => "Created".to_string(),
        ContainerState::Running => {
            let up = human_duration(now_ns() - r.started_at_ns);
            match r.paused {
                true => format!("Up {up} (Paused)"),
                false => format!("Up {up}"),
            }
        }
        ContainerState::Exited | ContainerState::Unknown => format!(
            "Exited ({}) {} ago",
            r.exit_code,
            human_duration(now_ns() - r.finished_at_ns)
        ),
    }
}

fn ports_summary(ports: &[PortMapping]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            let mut port = Map::new();
            if let Some(ip) = p.host_ip {
                port.insert("IP".into(), json!(ip.to_string()));
            } else if p.host_port.is_some() {
                port.insert("IP".into(), json!("0.0.0.0"));
            }
            port.insert("PrivatePort".into(), json!(p.container_port));
            if let Some(hp) = p.host_port {
                port.insert("PublicPort".into(), json!(hp));
            }
            port.insert("Type".into(), json!(p.protocol.as_str()));
            Value::Object(port)
        })
        .collect()
}

fn port_mappings(v: &ContainerView) -> &[PortMapping] {
    v.sandbox
        .as_ref()
        .map(|s| s.config.port_mappings.as_slice())
        .unwrap_or(&[])
}

/// The networks a container is on, as `NetworkSettings.Networks` shows
/// them: the built-in one it was made on, then its user networks.
fn networks(v: &ContainerView) -> Map<String, Value> {
    let mut networks = Map::new();
    let mode = v.network_mode();
    let builtin = match mode.as_str() {
        "host" => Some("host"),
        "none" => Some("none"),
        // dockerd lists no network of its own for `container:<id>`.
        m if m.starts_with("container:") => return networks,
        "default" | "bridge" => Some("bridge"),
        _ => None,
    };
    let running = v.record.state == ContainerState::Running;
    let sandbox = v.sandbox.as_ref();
    if let Some(name) = builtin {
        let attachment = sandbox.and_then(|s| s.network.as_ref()).filter(|_| running);
        let ip = attachment
            .and_then(|a| a.ips.first())
            .map(|ip| ip.to_string());
        let gateway = attachment.and_then(|a| a.gateway).map(|g| g.to_string());
        networks.insert(
            name.to_string(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null,
                "NetworkID": berth_core::builtin_network_id(name),
                "EndpointID": if attachment.is_some() { v.record.sandbox_id.as_str() } else { "" },
                "Gateway": gateway.unwrap_or_default(),
                "IPAddress": ip.clone().unwrap_or_default(),
                "IPPrefixLen": if ip.is_some() { 16 } else { 0 },
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "", "DriverOpts": null,
            }),
        );
    }
    for e in sandbox.map(|s| s.endpoints.as_slice()).unwrap_or_default() {
        let shown = running.then_some(e);
        let mut aliases = e.aliases.clone();
        aliases.push(v.record.id[..12.min(v.record.id.len())].to_string());
        networks.insert(
            e.network_name.clone(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": aliases,
                "NetworkID": e.network_id,
                "EndpointID": if running { v.record.sandbox_id.as_str() } else { "" },
                "Gateway": shown.and_then(|e| e.gateway).map(|g| g.to_string()).unwrap_or_default(),
                "IPAddress": shown.and_then(|e| e.address).map(|a| a.to_string()).unwrap_or_default(),
                "IPPrefixLen": shown.map_or(0, |e| e.prefix),
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": shown.map(|e| e.mac.as_str()).unwrap_or_default(),
                "DriverOpts": null,
                "DNSNames": e.names,
            }),
        );
    }
    networks
}

/// (`SizeRw`, `SizeRootFs`): the writable layer, and it plus the image.
pub(crate) fn size_of(core: &Core, v: &ContainerView) -> Option<(u64, u64)> {
    let (rw, _) = core.containers().writable_layer_usage(&v.record.id).ok()?;
    let image = core
        .images()
        .status(&v.record.image_id)
        .ok()
        .flatten()
        .map_or(0, |i| i.size);
    Some((rw, rw + image))
}

pub(crate) fn summary(core: &Core, v: &ContainerView, size: Option<(u64, u64)>) -> Value {
    let r = &v.record;
    let mut s = json!({
        "Id": r.id,
        "Names": [format!("/{}", v.name)],
        "Image": if r.config.image.is_empty() { &r.image_ref } else { &r.config.image },
        "ImageID": r.image_id,
        "Command": command_line(&r.process_args),
        "Created": r.created_at_ns / 1_000_000_000,
        "Ports": ports_summary(port_mappings(v)),
        "Labels": r.config.labels,
        "State": v.state(),
        "Status": status_text(v),
        "HostConfig": { "NetworkMode": v.network_mode() },
        "NetworkSettings": { "Networks": networks(v) },
        "Mounts": mounts(core, v),
    });
    if let Some((rw, root)) = size {
        s["SizeRw"] = json!(rw);
        s["SizeRootFs"] = json!(root);
    }
    s
}

fn mounts(core: &Core, v: &ContainerView) -> Vec<Value> {
    let volumes = core.volumes();
    v.record
        .config
        .mounts
        .iter()
        .map(|m| match volumes.name_of(&m.host_path) {
            _ if m.tmpfs.is_some() => json!({
                "Type": "tmpfs",
                "Source": "",
                "Destination": m.container_path,
                "Mode": "",
                "RW": !m.readonly,
                "Propagation": "",
            }),
            Some(name) => json!({
                "Type": "volume",
                "Name": name,
                "Source": m.host_path,
                "Destination": m.container_path,
                "Driver": "local",
                "Mode": if m.readonly { "ro" } else { "z" },
                "RW": !m.readonly,
                "Propagation": "",
            }),
            None => json!({
                "Type": "bind",
                "Source": m.host_path,
                "Destination": m.container_path,
                "Mode": if m.readonly { "ro" } else { "" },
                "RW": !m.readonly,
                "Propagation": "rprivate",
            }),
        })
        .collect()
}

/// `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": …, "HostPort": …}]}`.
fn port_bindings(ports: &[PortMapping]) -> Map<String, Value> {
    let mut out = Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        let entry = out.entry(key).or_insert_with(|| json!([]));
        if let (Some(list), Some(hp)) = (entry.as_array_mut(), p.host_port) {
            list.push(json!({
                "HostIp": p.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "HostPort": hp.to_string(),
            }));
        }
    }
    out
}

/// `GET /containers/{id}/json`.
pub fn inspect(core: &Core, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    ok_json(&inspect_json(core, &v))
}

pub fn inspect_json(core: &Core, v: &ContainerView) -> Value {
    let r = &v.record;
    let c = &r.config;
    let running = r.state == ContainerState::Running;
    let (path, args) = match r.process_args.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let ports = port_mappings(v);
    let hostname = v
        .sandbox
        .as_ref()
        .map(|s| s.config.hostname.clone())
        .unwrap_or_default();
    let networks = networks(v);
    let primary = networks.values().next().cloned().unwrap_or(json!({}));
    json!({
        "Id": r.id,
        "Created": rfc3339_nano(r.created_at_ns),
        "Path": path,
        "Args": args,
        "State": {
            "Status": v.state(),
            "Running": running,
            "Paused": r.paused,
            "Restarting": false,
            "OOMKilled": r.reason == "OOMKilled",
            "Dead": false,
            "Pid": if running { r.pid } else { 0 },
            "ExitCode": r.exit_code,
            "Error": if r.state.has_exited() && r.exit_code != 0 { r.message.as_str() } else { "" },
            "StartedAt": rfc3339_nano(r.started_at_ns),
            "FinishedAt": rfc3339_nano(r.finished_at_ns),
        },
        "Image": r.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": r.log_path,
        "Name": format!("/{}", v.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "Binds": null,
            "NetworkMode": v.network_mode(),
            "PortBindings": port_bindings(ports),
            "RestartPolicy": restart_policy_json(r.restart_policy),
            "AutoRemove": r.auto_remove,
            "CapAdd": nonempty(&c.security.capabilities_add),
            "CapDrop": nonempty(&c.security.capabilities_drop),
            "Privileged": c.security.privileged,
            "ReadonlyRootfs": c.security.readonly_rootfs,
            "Runtime": if r.runtime_handler.is_empty() { "crun" } else { r.runtime_handler.as_str() },
            "CgroupParent": v.sandbox.as_ref().map(|s| s.cgroup_parent.as_str()).unwrap_or(""),
            "Memory": c.resources.memory_limit_in_bytes,
            "CpuShares": c.resources.cpu_shares,
            "CpuPeriod": c.resources.cpu_period,
            "CpuQuota": c.resources.cpu_quota,
            "CpusetCpus": c.resources.cpuset_cpus,
            "CpusetMems": c.resources.cpuset_mems,
            "NanoCpus": 0,
            "PidsLimit": (c.resources.pids_limit > 0).then_some(c.resources.pids_limit),
            "LogConfig": { "Type": "json-file", "Config": {} },
        },
        "GraphDriver": { "Name": "overlay", "Data": null },
        "Mounts": mounts(core, v),
        "Config": {
            "Hostname": hostname,
            "Domainname": "",
            "User": "",
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": c.tty,
            "OpenStdin": c.stdin,
            "StdinOnce": c.stdin_once,
            "Env": env,
            "Cmd": if c.args.is_empty() { Value::Null } else { json!(c.args) },
            "Image": if c.image.is_empty() { &r.image_ref } else { &c.image },
            "Volumes": null,
            "WorkingDir": c.working_dir,
            "Entrypoint": if c.command.is_empty() { Value::Null } else { json!(c.command) },
            "OnBuild": null,
            "Labels": c.labels,
            "StopSignal": berth_core::signal_name(r.stop_signal),
            "StopTimeout": r.stop_timeout_s,
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": r.sandbox_id,
            "HairpinMode": false,
            "Ports": port_bindings(ports),
            "SandboxKey": v.sandbox.as_ref().and_then(|s| s.namespaces.net.clone()).unwrap_or_default(),
            "EndpointID": primary["EndpointID"],
            "Gateway": primary["Gateway"],
            "IPAddress": primary["IPAddress"],
            "IPPrefixLen": primary["IPPrefixLen"],
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": "",
            "Networks": networks,
        },
    })
}

fn nonempty(list: &[String]) -> Value {
    match list.is_empty() {
        true => Value::Null,
        false => json!(list),
    }
}

/// `HostConfig.RestartPolicy` as dockerd shows it.
fn restart_policy_json(policy: RestartPolicy) -> Value {
    let (name, max) = match policy {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::UnlessStopped => ("unless-stopped", 0),
        RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries),
    };
    json!({ "Name": name, "MaximumRetryCount": max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_arguments_with_spaces() {
        let args: Vec<String> = ["sh", "-c", "echo hi"].map(String::from).to_vec();
        assert_eq!(command_line(&args), "sh -c 'echo hi'");
        assert_eq!(command_line(&[]), "");
    }
}
