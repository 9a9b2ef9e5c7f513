//! `GET /info`: the node as `docker info` shows it.

use berth_core::{CgroupDriver, ContainerState, Core};
use hyper::Response;
use serde_json::{json, Map};

use crate::clock::{now_ns, rfc3339_nano};
use crate::error::ApiResult;
use crate::host;
use crate::http::{ok_json, Body};
use crate::version::SERVER_VERSION;
use crate::view;

pub fn info(core: &Core) -> ApiResult<Response<Body>> {
    let containers = view::all(core);
    let running = containers
        .iter()
        .filter(|c| c.record.state == ContainerState::Running)
        .count();
    let images = core.images().list(None)?.len();
    let node = core.node();
    let mut runtimes = Map::new();
    let mut default_runtime = String::new();
    let programs = node.runtime_programs();
    for (name, program) in &programs {
        if name.is_empty() {
            // The default handler is a copy of a named one: show its name.
            default_runtime = programs
                .iter()
                .find(|(n, p)| !n.is_empty() && p == program)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| program.display().to_string());
        } else {
            runtimes.insert(name.clone(), json!({ "path": program }));
        }
    }
    let (os, os_version) = host::os_release();
    ok_json(&json!({
        "ID": "",
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": null,
            "Log": ["k8s-file"],
        },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": rfc3339_nano(now_ns()),
        "LoggingDriver": "k8s-file",
        "CgroupDriver": match node.cgroup_driver() {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        },
        "CgroupVersion": node.cgroup_version().to_string(),
        "NEventsListener": 0,
        "KernelVersion": host::kernel_version(),
        "OperatingSystem": os,
        "OSVersion": os_version,
        "OSType": "linux",
        "Architecture": host::machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": null,
        "NCPU": host::cpus(),
        "MemTotal": host::mem_total(),
        "GenericResources": null,
        "DockerRootDir": node.root(),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": host::hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": SERVER_VERSION,
        "Runtimes": runtimes,
        "DefaultRuntime": default_runtime,
        "Swarm": { "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                   "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": null,
    }))
}
