//! The CNI backend: hands a pod's network to the plugins of a CNI network
//! configuration list, per the CNI spec 1.0 (<https://www.cni.dev/docs/spec/>),
//! as containerd and CRI-O do through `libcni`.
//!
//! The config is read from the conf dir on every `ready` and `attach`: a CNI
//! daemonset (flannel, calico) drops it in after berthd starts. What `attach`
//! used — the config list, the final result and the CNI_ARGS — is kept in the
//! attachment, so that `detach` undoes exactly that even if the conf dir has
//! changed since.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_errdefs::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::network::{AttachRequest, Attachment, NotReady, PodNetwork, PortMapping};

const BACKEND: &str = "cni";
/// The interface every plugin is asked to make inside the pod.
const IFNAME: &str = "eth0";
const NOT_READY_REASON: &str = "NetworkPluginNotReady";
/// File extensions libcni reads from the conf dir.
const CONFIG_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];
/// How long one plugin call may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a finished plugin's output pipes may stay open.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// Longest pause between two looks at a running plugin.
const MAX_POLL: Duration = Duration::from_millis(20);
/// Results are a few KiB; anything past this is a broken plugin.
const STDOUT_LIMIT: usize = 1 << 20;
/// How much plugin stderr (or unparsable stdout) goes into an error.
const DIAGNOSTIC_LIMIT: usize = 2048;

/// Where the CNI backend finds network configs and plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// The network config directory, usually `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin binaries (`/opt/cni/bin`).
    pub plugin_dirs: Vec<PathBuf>,
}

/// Pod networking by CNI plugins.
#[derive(Debug)]
pub struct CniNetwork {
    config: CniConfig,
    timeout: Duration,
}

impl CniNetwork {
    pub fn new(config: CniConfig) -> CniNetwork {
        CniNetwork {
            config,
            timeout: PLUGIN_TIMEOUT,
        }
    }

    /// Runs CHECK for every plugin, in order, against what `attach` recorded
    /// (spec 0.4.0 and later): whether the pod's network is still as made.
    pub fn check(&self, sandbox_id: &str, netns: &Path, attachment: &Attachment) -> Result<()> {
        validate_container_id(sandbox_id)?;
        let context = || format!("check network of sandbox {sandbox_id}");
        let stored = StoredState::from_attachment(attachment).ok_or_else(|| {
            Error::new(
                ErrorKind::FailedPrecondition,
                "no CNI result recorded with its attachment",
            )
            .context(context())
        })?;
        let list = NetworkList::from_value(stored.config.clone()).map_err(|why| {
            Error::invalid(format!("recorded CNI config: {why}")).context(context())
        })?;
        if list.version < Version::CHAINED_RESULTS {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "CHECK needs cniVersion 0.4.0 or later; network {:?} has {}",
                    list.name, list.cni_version
                ),
            )
            .context(context()));
        }
        if list.disable_check {
            tracing::debug!(network = %list.name, "CNI CHECK disabled by the network config");
            return Ok(());
        }
        let cni_args = stored
            .cni_args
            .clone()
            .unwrap_or_else(|| teardown_cni_args(sandbox_id));
        let call = Call {
            container_id: sandbox_id,
            netns: netns.as_os_str(),
            cni_args: &cni_args,
            ports: &attachment.ports,
        };
        for plugin in &list.plugins {
            let input = plugin_input(&list, plugin, Some(&stored.result), call.ports);
            self.invoke(Verb::Check, &list, plugin, &call, &input)
                .map_err(|e| e.context(context()))?;
        }
        Ok(())
    }

    /// The network list to use now: the first config file, validated, with
    /// every plugin present.
    fn load(&self) -> Result<NetworkList> {
        let list = read_network_list(&first_config_file(&self.config.conf_dir)?)?;
        match list
            .plugins
            .iter()
            .find(|p| self.find_plugin(&p.kind).is_none())
        {
            Some(missing) => Err(self.plugin_not_found(&missing.kind, &list.name)),
            None => Ok(list),
        }
    }

    fn find_plugin(&self, kind: &str) -> Option<PathBuf> {
        self.config
            .plugin_dirs
            .iter()
            .map(|dir| dir.join(kind))
            .find(|path| is_executable_file(path))
    }

    fn plugin_not_found(&self, kind: &str, network: &str) -> Error {
        let dirs: Vec<String> = self
            .config
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        Error::not_found(format!(
            "CNI plugin {kind:?} (network {network:?}) not found in {}",
            dirs.join(", ")
        ))
    }

    /// `CNI_PATH`: the plugin dirs, so that plugins find their delegates
    /// (bridge runs host-local).
    fn cni_path(&self) -> OsString {
        let mut joined = OsString::new();
        for (i, dir) in self.config.plugin_dirs.iter().enumerate() {
            if i > 0 {
                joined.push(":");
            }
            joined.push(dir);
        }
        joined
    }

    /// ADD for every plugin, each given the previous one's result. On a
    /// failure, DEL for the whole list undoes what the others did.
    fn add_list(&self, list: &NetworkList, call: &Call) -> Result<Value> {
        let mut previous: Option<Value> = None;
        for plugin in &list.plugins {
            match self.add_one(list, plugin, call, previous.as_ref()) {
                Ok(result) => previous = Some(result),
                Err(e) => {
                    if let Err(undo) = self.del_list(list, call, previous.as_ref()) {
                        tracing::warn!(
                            container = call.container_id,
                            network = %list.name,
                            error = %undo,
                            "CNI: undoing a failed ADD left something behind"
                        );
                    }
                    return Err(e);
                }
            }
        }
        previous
            .ok_or_else(|| Error::internal(format!("CNI network {:?} has no plugins", list.name)))
    }

    fn add_one(
        &self,
        list: &NetworkList,
        plugin: &Plugin,
        call: &Call,
        previous: Option<&Value>,
    ) -> Result<Value> {
        let input = plugin_input(list, plugin, previous, call.ports);
        let output = self.invoke(Verb::Add, list, plugin, call, &input)?;
        match serde_json::from_slice::<Value>(&output) {
            Ok(result) if result.is_object() => Ok(result),
            Ok(_) => Err(format!(
                "{:?} is not a result object",
                bounded_text(&output)
            )),
            Err(e) => Err(format!("unreadable result: {e}")),
        }
        .map_err(|why| Error::internal(why).context(plugin_call(list, plugin, Verb::Add)))
    }

    /// DEL for every plugin in reverse order. Carries on past failures so
    /// that one broken plugin does not leave the others' work behind, and
    /// returns the first failure.
    fn del_list(&self, list: &NetworkList, call: &Call, result: Option<&Value>) -> Result<()> {
        // DEL gets the ADD result from 0.4.0 on (as libcni does).
        let previous = result.filter(|_| list.version >= Version::CHAINED_RESULTS);
        let mut first_failure = None;
        for plugin in list.plugins.iter().rev() {
            let input = plugin_input(list, plugin, previous, call.ports);
            if let Err(e) = self.invoke(Verb::Del, list, plugin, call, &input) {
                tracing::warn!(container = call.container_id, error = %e, "CNI DEL failed");
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Runs one plugin and returns its stdout, or its failure as an error
    /// naming the plugin, the network and the plugin's message.
    fn invoke(
        &self,
        verb: Verb,
        list: &NetworkList,
        plugin: &Plugin,
        call: &Call,
        input: &Value,
    ) -> Result<Vec<u8>> {
        let what = || plugin_call(list, plugin, verb);
        let binary = self
            .find_plugin(&plugin.kind)
            .ok_or_else(|| self.plugin_not_found(&plugin.kind, &list.name))?;
        let stdin = serde_json::to_vec(input)
            .map_err(|e| Error::internal(format!("encode plugin config: {e}")).context(what()))?;
        tracing::debug!(
            plugin = %plugin.kind,
            network = %list.name,
            command = verb.as_str(),
            container = call.container_id,
            "running CNI plugin"
        );
        let mut command = Command::new(&binary);
        command
            .env("CNI_COMMAND", verb.as_str())
            .env("CNI_CONTAINERID", call.container_id)
            .env("CNI_NETNS", call.netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_ARGS", call.cni_args)
            .env("CNI_PATH", self.cni_path());
        let finished = run_bounded(command, stdin, self.timeout).map_err(|e| e.context(what()))?;
        if finished.status.success() {
            Ok(finished.stdout)
        } else {
            Err(plugin_failure(&finished).context(what()))
        }
    }
}

impl PodNetwork for CniNetwork {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn ready(&self) -> std::result::Result<(), NotReady> {
        self.load().map(drop).map_err(|e| NotReady {
            reason: NOT_READY_REASON.to_string(),
            message: e.message,
        })
    }

    fn attach(&self, req: &AttachRequest) -> Result<Attachment> {
        let context = || format!("attach sandbox {}", req.sandbox_id);
        validate_container_id(&req.sandbox_id).map_err(|e| e.context(context()))?;
        let cni_args = pod_cni_args(req).map_err(|e| e.context(context()))?;
        let list = self.load().map_err(|e| e.context(context()))?;
        let call = Call {
            container_id: &req.sandbox_id,
            netns: req.netns.as_os_str(),
            cni_args: &cni_args,
            ports: &req.ports,
        };
        let result = self
            .add_list(&list, &call)
            .map_err(|e| e.context(context()))?;
        let summary = ResultSummary::of(&result);
        let stored = StoredState {
            config: list.raw,
            result,
            cni_args: Some(cni_args),
        };
        Ok(Attachment {
            backend: BACKEND.to_string(),
            interface: IFNAME.to_string(),
            ips: summary.ips,
            gateway: summary.gateway,
            host_interface: summary.host_interface,
            ports: req.ports.clone(),
            backend_state: Some(stored.to_value()),
        })
    }

    fn detach(
        &self,
        sandbox_id: &str,
        netns: Option<&Path>,
        attachment: Option<&Attachment>,
    ) -> Result<()> {
        let context = || format!("detach sandbox {sandbox_id}");
        validate_container_id(sandbox_id).map_err(|e| e.context(context()))?;
        let stored = attachment.and_then(StoredState::from_attachment);
        let Some(list) = self.teardown_list(sandbox_id, stored.as_ref()) else {
            return Ok(());
        };
        let cni_args = stored
            .as_ref()
            .and_then(|s| s.cni_args.clone())
            .unwrap_or_else(|| teardown_cni_args(sandbox_id));
        // The spec lets DEL run without a namespace; plugins must cope.
        let netns = netns
            .filter(|p| is_netns(p))
            .map_or(OsStr::new(""), Path::as_os_str);
        let call = Call {
            container_id: sandbox_id,
            netns,
            cni_args: &cni_args,
            ports: attachment.map_or(&[], |a| a.ports.as_slice()),
        };
        let result = stored.as_ref().map(|s| &s.result);
        self.del_list(&list, &call, result)
            .map_err(|e| e.context(context()))
    }
}

impl CniNetwork {
    /// The list a DEL runs: the one recorded at ADD, else the current one
    /// (plugins are looked up only when run). `None`: nothing to undo with.
    fn teardown_list(&self, sandbox_id: &str, stored: Option<&StoredState>) -> Option<NetworkList> {
        if let Some(stored) = stored {
            match NetworkList::from_value(stored.config.clone()) {
                Ok(list) => return Some(list),
                Err(why) => tracing::warn!(
                    sandbox = sandbox_id,
                    "CNI: recorded network config is unusable ({why}); using the current one"
                ),
            }
        }
        let current = first_config_file(&self.config.conf_dir).and_then(|f| read_network_list(&f));
        match current {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!(
                    sandbox = sandbox_id,
                    error = %e,
                    "CNI: no network config to tear the pod's network down with; nothing undone"
                );
                None
            }
        }
    }
}

/// The three commands a runtime sends (VERSION is not needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
    Check,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
        }
    }
}

/// What is the same for every plugin of one ADD, DEL or CHECK.
struct Call<'a> {
    container_id: &'a str,
    netns: &'a OsStr,
    cni_args: &'a str,
    ports: &'a [PortMapping],
}

fn plugin_call(list: &NetworkList, plugin: &Plugin, verb: Verb) -> String {
    format!(
        "CNI plugin {:?} (network {:?}) {}",
        plugin.kind,
        list.name,
        verb.as_str()
    )
}

// ---------------------------------------------------------------------------
// network configuration

/// A CNI version, `1.0.0`, comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version([u64; 3]);

impl Version {
    /// From here on DEL and CHECK get the ADD result as `prevResult`.
    const CHAINED_RESULTS: Version = Version([0, 4, 0]);

    fn parse(text: &str) -> Option<Version> {
        let mut parts = [0; 3];
        let mut fields = text.split('.');
        for (i, field) in fields.by_ref().take(3).enumerate() {
            parts[i] = field.parse().ok()?;
        }
        fields.next().is_none().then_some(Version(parts))
    }
}

/// One plugin of a list: its `type` and its whole config object.
#[derive(Debug, Clone)]
struct Plugin {
    kind: String,
    conf: Map<String, Value>,
}

impl Plugin {
    fn from_value(index: usize, value: &Value) -> std::result::Result<Plugin, String> {
        let conf = value
            .as_object()
            .ok_or_else(|| format!("plugins[{index}] is not an object"))?;
        let kind = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("plugins[{index}] has no \"type\""))?;
        // A type is a file name in a plugin dir, never a path.
        if kind.is_empty() || kind == "." || kind == ".." || kind.contains('/') {
            return Err(format!("plugins[{index}] has an invalid type {kind:?}"));
        }
        Ok(Plugin {
            kind: kind.to_string(),
            conf: conf.clone(),
        })
    }

    fn wants(&self, capability: &str) -> bool {
        self.conf
            .get("capabilities")
            .and_then(|c| c.get(capability))
            .and_then(Value::as_bool)
            == Some(true)
    }
}

/// A validated network configuration list, with the JSON it came from.
#[derive(Debug, Clone)]
struct NetworkList {
    name: String,
    cni_version: String,
    version: Version,
    disable_check: bool,
    plugins: Vec<Plugin>,
    /// The whole list, recorded in the attachment.
    raw: Value,
}

impl NetworkList {
    fn from_value(raw: Value) -> std::result::Result<NetworkList, String> {
        let object = raw.as_object().ok_or("not a JSON object")?;
        let cni_version = required_string(object, "cniVersion")?;
        let version = Version::parse(&cni_version)
            .ok_or_else(|| format!("cniVersion {cni_version:?} is not a version like 1.0.0"))?;
        let name = required_string(object, "name")?;
        if !is_network_name(&name) {
            return Err(format!(
                "name {name:?} must be letters, digits, '_', '.', '-', starting alphanumeric"
            ));
        }
        let plugins = match object.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins
                .iter()
                .enumerate()
                .map(|(i, p)| Plugin::from_value(i, p))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            _ => return Err("\"plugins\" must be a non-empty list".to_string()),
        };
        // Older configs spell the boolean as a string.
        let disable_check = matches!(object.get("disableCheck"), Some(Value::Bool(true)))
            || object.get("disableCheck").and_then(Value::as_str) == Some("true");
        Ok(NetworkList {
            name,
            cni_version,
            version,
            disable_check,
            plugins,
            raw,
        })
    }
}

fn required_string(object: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match object.get(key).and_then(Value::as_str) {
        Some(value) if !value.is_empty() => Ok(value.to_string()),
        _ => Err(format!("{key:?} is missing or empty")),
    }
}

/// The spec's network name: alphanumeric first, then also `_`, `.`, `-`.
fn is_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The first config file of `dir` in lexical order.
fn first_config_file(dir: &Path) -> Result<PathBuf> {
    let no_config = || Error::unavailable(format!("no CNI network config in {}", dir.display()));
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_config()),
        Err(e) => {
            return Err(Error::from(e).context(format!("read CNI config dir {}", dir.display())))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| is_config_file(path))
        .collect();
    files.sort();
    files.into_iter().next().ok_or_else(no_config)
}

fn is_config_file(path: &Path) -> bool {
    let known_extension = path
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext));
    // is_file follows symlinks: ConfigMap mounts are symlinks.
    known_extension && path.is_file()
}

/// Reads a `.conflist`, or a single-plugin `.conf`/`.json` wrapped into a
/// list of one (as libcni's ConfListFromConf does).
fn read_network_list(path: &Path) -> Result<NetworkList> {
    let invalid = |why: String| {
        Error::invalid(format!(
            "invalid CNI network config {}: {why}",
            path.display()
        ))
    };
    let bytes = fs::read(path).map_err(|e| {
        Error::from(e).context(format!("read CNI network config {}", path.display()))
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    // A list saved as .conf is still a list.
    let is_list =
        path.extension() == Some(OsStr::new("conflist")) || value.get("plugins").is_some();
    let raw = if is_list { value } else { wrap_single(value) };
    NetworkList::from_value(raw).map_err(invalid)
}

fn wrap_single(conf: Value) -> Value {
    json!({
        "cniVersion": conf.get("cniVersion").cloned(),
        "name": conf.get("name").cloned(),
        "plugins": [conf],
    })
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a plugin reads on stdin: its own config with the list's `name` and
/// `cniVersion`, the previous result, and the runtime values it declared a
/// capability for.
fn plugin_input(
    list: &NetworkList,
    plugin: &Plugin,
    previous: Option<&Value>,
    ports: &[PortMapping],
) -> Value {
    let mut conf = plugin.conf.clone();
    conf.insert("name".to_string(), Value::from(list.name.clone()));
    conf.insert(
        "cniVersion".to_string(),
        Value::from(list.cni_version.clone()),
    );
    if let Some(previous) = previous {
        conf.insert("prevResult".to_string(), previous.clone());
    }
    if plugin.wants("portMappings") {
        let mut runtime = match conf.remove("runtimeConfig") {
            Some(Value::Object(runtime)) => runtime,
            _ => Map::new(),
        };
        runtime.insert("portMappings".to_string(), port_mappings_json(ports));
        conf.insert("runtimeConfig".to_string(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// The `portMappings` capability argument (CNI CONVENTIONS.md).
fn port_mappings_json(ports: &[PortMapping]) -> Value {
    ports
        .iter()
        .map(|p| {
            let mut entry = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_str(),
            });
            if let (Some(ip), Some(fields)) = (p.host_ip, entry.as_object_mut()) {
                fields.insert("hostIP".to_string(), Value::from(ip.to_string()));
            }
            entry
        })
        .collect()
}

// ---------------------------------------------------------------------------
// arguments

/// CNI container ids: "alphanumeric, underscore, hyphen or period" (spec).
fn validate_container_id(id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !id.is_empty() && id.chars().all(allowed) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "sandbox id {id:?} is not a CNI container id (letters, digits, '_', '-', '.')"
        )))
    }
}

/// `CNI_ARGS` for a pod, as kubelet's runtimes pass them.
fn pod_cni_args(req: &AttachRequest) -> Result<String> {
    let pairs = [
        ("K8S_POD_NAMESPACE", req.pod_namespace.as_str()),
        ("K8S_POD_NAME", req.pod_name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", req.sandbox_id.as_str()),
        ("K8S_POD_UID", req.pod_uid.as_str()),
    ];
    let mut args = String::from("IgnoreUnknown=1");
    for (key, value) in pairs {
        // ';' and '=' are CNI_ARGS' separators, with no escaping.
        if value.contains([';', '=', '\0']) {
            return Err(Error::invalid(format!(
                "{key} {value:?} cannot be passed in CNI_ARGS (no ';', '=' allowed)"
            )));
        }
        args.push_str(&format!(";{key}={value}"));
    }
    Ok(args)
}

/// `CNI_ARGS` for a teardown that has no pod record.
fn teardown_cni_args(sandbox_id: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID={sandbox_id}")
}

/// Whether `path` is a network namespace (a pin or `/proc/<pid>/ns/net`),
/// not a leftover file where one was.
fn is_netns(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer statfs fills in.
    if unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs succeeded, so the buffer is filled in.
    let stat = unsafe { stat.assume_init() };
    stat.f_type == libc::NSFS_MAGIC
}

// ---------------------------------------------------------------------------
// results and errors

/// The attachment fields a CNI result gives.
#[derive(Debug, Default, PartialEq)]
struct ResultSummary {
    ips: Vec<IpAddr>,
    gateway: Option<IpAddr>,
    host_interface: Option<String>,
}

impl ResultSummary {
    fn of(result: &Value) -> ResultSummary {
        let mut addresses = result_addresses(result);
        // Stable: IPv4 first, the plugin's order otherwise.
        addresses.sort_by_key(|(ip, _)| !ip.is_ipv4());
        ResultSummary {
            gateway: addresses.iter().find_map(|(_, gateway)| *gateway),
            ips: addresses.into_iter().map(|(ip, _)| ip).collect(),
            host_interface: host_interface(result),
        }
    }
}

/// The result's addresses with their gateways: `ips` from 0.3.0 on, `ip4`
/// and `ip6` before.
fn result_addresses(result: &Value) -> Vec<(IpAddr, Option<IpAddr>)> {
    match result.get("ips").and_then(Value::as_array) {
        Some(ips) => ips
            .iter()
            .filter_map(|entry| address_and_gateway(entry, "address"))
            .collect(),
        None => ["ip4", "ip6"]
            .iter()
            .filter_map(|key| result.get(key))
            .filter_map(|entry| address_and_gateway(entry, "ip"))
            .collect(),
    }
}

fn address_and_gateway(entry: &Value, key: &str) -> Option<(IpAddr, Option<IpAddr>)> {
    let cidr = entry.get(key)?.as_str()?;
    let ip = cidr.split('/').next()?.parse().ok()?;
    let gateway = entry
        .get("gateway")
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok());
    Some((ip, gateway))
}

/// The host end of the pod's link: the last interface outside the sandbox
/// (the bridge plugin lists the bridge itself before the veth).
fn host_interface(result: &Value) -> Option<String> {
    result
        .get("interfaces")?
        .as_array()?
        .iter()
        .filter(|i| {
            i.get("sandbox")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .filter_map(|i| i.get("name").and_then(Value::as_str))
        .next_back()
        .map(str::to_string)
}

/// The CNI error a failing plugin prints on stdout.
#[derive(Debug, Deserialize)]
struct PluginError {
    #[serde(default)]
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

fn plugin_failure(finished: &Finished) -> Error {
    let (kind, mut message) = match serde_json::from_slice::<PluginError>(&finished.stdout) {
        Ok(error) if !error.msg.is_empty() => {
            let mut message = error.msg.trim().to_string();
            if !error.details.trim().is_empty() {
                message.push_str(&format!(": {}", bounded_text(error.details.as_bytes())));
            }
            message.push_str(&format!(" (code {})", error.code));
            (kind_of_code(error.code), message)
        }
        _ => {
            let mut message = format!("failed with {}", finished.status);
            let stdout = bounded_text(&finished.stdout);
            if !stdout.is_empty() {
                message.push_str(&format!(": {stdout}"));
            }
            (ErrorKind::Internal, message)
        }
    };
    let stderr = bounded_text(&finished.stderr);
    if !stderr.is_empty() {
        message.push_str(&format!("; stderr: {stderr}"));
    }
    Error::new(kind, message)
}

/// The error kinds of the spec's well-known error codes.
fn kind_of_code(code: u64) -> ErrorKind {
    match code {
        1 => ErrorKind::FailedPrecondition, // incompatible CNI version
        2 | 4 | 6 | 7 => ErrorKind::InvalidArgument, // bad field, env, JSON, config
        3 => ErrorKind::NotFound,           // container unknown
        11 => ErrorKind::Unavailable,       // try again later
        _ => ErrorKind::Internal,
    }
}

/// Plugin output for a message: lossy UTF-8, trimmed, at most
/// `DIAGNOSTIC_LIMIT` bytes.
fn bounded_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= DIAGNOSTIC_LIMIT {
        return text.to_string();
    }
    let mut end = DIAGNOSTIC_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What `attach` records for `detach` and `check`.
#[derive(Debug, Deserialize)]
struct StoredState {
    /// The network list the pod was added with.
    config: Value,
    /// The final ADD result.
    result: Value,
    /// The CNI_ARGS of the ADD; DEL gets the same (Calico, for one, needs
    /// the pod's name there).
    #[serde(default, rename = "cniArgs")]
    cni_args: Option<String>,
}

impl StoredState {
    fn from_attachment(attachment: &Attachment) -> Option<StoredState> {
        serde_json::from_value(attachment.backend_state.clone()?).ok()
    }

    fn to_value(&self) -> Value {
        json!({ "config": self.config, "result": self.result, "cniArgs": self.cni_args })
    }
}

// ---------------------------------------------------------------------------
// running a plugin

/// A plugin run to its end.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `command` with `input` on stdin, in its own process group, for at
/// most `timeout`. When it returns, the plugin and anything it started in
/// its group are dead.
fn run_bounded(mut command: Command, input: Vec<u8>, timeout: Duration) -> Result<Finished> {
    let deadline = Instant::now() + timeout;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| Error::from(e).context("start"))?;
    let mut reaper = Reaper::new(child);
    let child = reaper.child_mut();
    let io_error = |what: &'static str| move |e: io::Error| Error::from(e).context(what);
    feed(child.stdin.take(), input).map_err(io_error("write stdin"))?;
    let stdout = collect(child.stdout.take(), STDOUT_LIMIT + 1).map_err(io_error("read stdout"))?;
    let stderr =
        collect(child.stderr.take(), DIAGNOSTIC_LIMIT + 1).map_err(io_error("read stderr"))?;

    let exited = wait_for_exit(reaper.pid(), deadline).map_err(io_error("wait"))?;
    let status = reaper.finish().map_err(io_error("wait"))?;
    let stderr = stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
    if !exited {
        let mut message = format!("timed out after {timeout:?}; killed");
        let stderr = bounded_text(&stderr);
        if !stderr.is_empty() {
            message.push_str(&format!("; stderr: {stderr}"));
        }
        return Err(Error::new(ErrorKind::DeadlineExceeded, message));
    }
    let stdout = stdout.recv_timeout(OUTPUT_GRACE).map_err(|_| {
        Error::internal("its stdout stayed open after it exited (a process it started escaped?)")
    })?;
    if stdout.len() > STDOUT_LIMIT {
        return Err(Error::internal(format!(
            "its output is over {STDOUT_LIMIT} bytes"
        )));
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Owns a started plugin: whatever path leaves `run_bounded` (an error, a
/// panic), the plugin's process group is killed and the plugin reaped.
struct Reaper {
    child: Child,
    reaped: bool,
}

impl Reaper {
    fn new(child: Child) -> Reaper {
        Reaper {
            child,
            reaped: false,
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills what is left of the group, then reaps the plugin. The plugin is
    /// not reaped before the kill, so its pid — the group id — cannot have
    /// been reused by an unrelated process.
    fn finish(&mut self) -> io::Result<ExitStatus> {
        kill_group(self.child.id());
        let status = self.child.wait();
        self.reaped = true;
        status
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.finish();
        }
    }
}

/// Writes the plugin's stdin from a thread: a plugin that does not read it
/// must not block us on a full pipe. Closing it is the plugin's EOF.
fn feed(stdin: Option<impl Write + Send + 'static>, input: Vec<u8>) -> io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    thread::Builder::new()
        .name("cni-stdin".to_string())
        .spawn(move || {
            // A plugin may exit without reading everything (EPIPE): fine.
            let _ = stdin.write_all(&input);
        })
        .map(drop)
}

/// Reads a pipe to its end from a thread, keeping the first `keep` bytes
/// and draining the rest, so that a chatty plugin never blocks on it.
fn collect(
    pipe: Option<impl Read + Send + 'static>,
    keep: usize,
) -> io::Result<mpsc::Receiver<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel();
    thread::Builder::new()
        .name("cni-output".to_string())
        .spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let limit = u64::try_from(keep).unwrap_or(u64::MAX);
                let _ = pipe.by_ref().take(limit).read_to_end(&mut kept);
                let _ = io::copy(&mut pipe, &mut io::sink());
            }
            let _ = sender.send(kept);
        })?;
    Ok(receiver)
}

/// Waits until the plugin exits or `deadline` passes; `false` on timeout.
/// Leaves the plugin unreaped (a zombie) for `Reaper::finish`.
fn wait_for_exit(pid: u32, deadline: Instant) -> io::Result<bool> {
    let mut pause = Duration::from_millis(1);
    loop {
        if has_exited(pid)? {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_POLL);
    }
}

fn has_exited(pid: u32) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: waitid only writes into `info`.
    if unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) } != 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    // With WNOHANG and nothing to report, waitid leaves si_pid zero.
    // SAFETY: the pid field is valid for the SIGCHLD info waitid fills in.
    Ok(unsafe { info.si_pid() } != 0)
}

/// SIGKILLs the process group `pid` leads (plugins run with
/// `process_group(0)`).
fn kill_group(pid: u32) {
    match libc::pid_t::try_from(pid) {
        // SAFETY: kill touches no memory; a negative pid names the group.
        Ok(group) if group > 1 => unsafe {
            libc::kill(-group, libc::SIGKILL);
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Protocol;
    use crate::subnet::{host_routes, Subnet};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::os::unix::process::ExitStatusExt;
    use tempfile::TempDir;

    const SYSTEM_PLUGINS: &str = "/usr/lib/cni";
    const HOSTPORT_CHAINS: [&str; 3] = [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ];

    fn output(program: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn request(sandbox_id: &str, netns: PathBuf, ports: Vec<PortMapping>) -> AttachRequest {
        AttachRequest {
            sandbox_id: sandbox_id.to_string(),
            netns,
            pod_name: "web".to_string(),
            pod_namespace: "shop".to_string(),
            pod_uid: "uid-1".to_string(),
            ports,
        }
    }

    fn tcp_port(host_ip: Option<IpAddr>, host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            container_port,
            host_port,
            host_ip,
        }
    }

    fn localhost() -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet), within 2 s.
    fn process_ends(pid: &str) -> bool {
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match fs::read_to_string(&stat) {
                Err(_) => return true,
                Ok(s)
                    if s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true
                }
                Ok(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    // -----------------------------------------------------------------------
    // Fake plugins: shell scripts that log their stdin, env and calls.

    const RESULT_A: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"veth1"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"fd00::5/64","gateway":"fd00::1","interface":2},{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":2}]}"#;
    const RESULT_B: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"veth1"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"fd00::5/64","gateway":"fd00::1","interface":2},{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":2}],"dns":{"nameservers":["10.9.0.1"]}}"#;

    struct Fake {
        td: TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let fake = Fake {
                td: tempfile::tempdir().unwrap(),
            };
            fs::create_dir_all(fake.log()).unwrap();
            fake
        }

        fn log(&self) -> PathBuf {
            self.td.path().join("log")
        }

        fn plugins(&self) -> PathBuf {
            self.td.path().join("plugins")
        }

        fn conf_dir(&self) -> PathBuf {
            self.td.path().join("conf")
        }

        /// A plugin that logs everything, runs `on_add` for ADD and
        /// succeeds silently otherwise.
        fn plugin(&self, name: &str, on_add: &str) {
            let script = format!(
                "#!/bin/sh\n\
                 log='{log}'\n\
                 me=$(basename \"$0\")\n\
                 cat > \"$log/$me.$CNI_COMMAND.stdin\"\n\
                 env | grep '^CNI_' | sort > \"$log/$me.$CNI_COMMAND.env\"\n\
                 echo \"$me $CNI_COMMAND\" >> \"$log/calls\"\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then\n{on_add}\nfi\n\
                 exit 0\n",
                log = self.log().display()
            );
            let path = self.plugins().join(name);
            write(&path, &script);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn conflist(&self, file: &str, list: &Value) {
            write(&self.conf_dir().join(file), &list.to_string());
        }

        fn network(&self) -> CniNetwork {
            CniNetwork::new(CniConfig {
                conf_dir: self.conf_dir(),
                plugin_dirs: vec![self.plugins()],
            })
        }

        fn stdin(&self, plugin: &str, verb: &str) -> Value {
            let path = self.log().join(format!("{plugin}.{verb}.stdin"));
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
        }

        fn env(&self, plugin: &str, verb: &str) -> Vec<String> {
            let path = self.log().join(format!("{plugin}.{verb}.env"));
            fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }

        fn calls(&self) -> Vec<String> {
            fs::read_to_string(self.log().join("calls"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn fake_list() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "fakenet",
            "plugins": [
                {"type": "fakea", "answer": 42},
                {"type": "fakeb", "capabilities": {"portMappings": true}}
            ]
        })
    }

    fn answer(result: &str) -> String {
        format!("printf '%s' '{result}'")
    }

    #[test]
    fn cni_add_del_check_follow_the_spec() {
        let fake = Fake::new();
        fake.plugin("fakea", &answer(RESULT_A));
        fake.plugin("fakeb", &answer(RESULT_B));
        fake.conflist("10-fake.conflist", &fake_list());
        let cni = fake.network();
        let netns = fake.td.path().join("no-such-netns");
        let ports = vec![
            tcp_port(localhost(), 8080, 80),
            PortMapping {
                protocol: Protocol::Udp,
                container_port: 53,
                host_port: 5353,
                host_ip: None,
            },
        ];
        let req = request("sb1", netns.clone(), ports.clone());

        let att = cni.attach(&req).unwrap();
        assert_eq!(cni.name(), "cni");
        assert_eq!(att.backend, "cni");
        assert_eq!(att.interface, "eth0");
        let v4: IpAddr = "10.9.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(att.ips, vec![v4, v6], "IPv4 first");
        assert_eq!(att.gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(att.host_interface.as_deref(), Some("veth1"));
        assert_eq!(att.ports, ports);
        let state = att.backend_state.clone().unwrap();
        assert_eq!(state["config"], fake_list());
        assert_eq!(
            state["result"],
            serde_json::from_str::<Value>(RESULT_B).unwrap()
        );

        // ADD: name and cniVersion injected; prevResult chained; the port
        // mappings only for the plugin with the capability.
        let a = fake.stdin("fakea", "ADD");
        assert_eq!(a["name"], "fakenet");
        assert_eq!(a["cniVersion"], "1.0.0");
        assert_eq!(a["answer"], 42);
        assert!(a.get("prevResult").is_none() && a.get("runtimeConfig").is_none());
        let b = fake.stdin("fakeb", "ADD");
        assert_eq!(
            b["prevResult"],
            serde_json::from_str::<Value>(RESULT_A).unwrap()
        );
        assert_eq!(
            b["runtimeConfig"],
            json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
            ]})
        );
        let plugin_dir = fake.plugins().display().to_string();
        assert_eq!(
            fake.env("fakea", "ADD"),
            vec![
                "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;\
                 K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1"
                    .to_string(),
                "CNI_COMMAND=ADD".to_string(),
                "CNI_CONTAINERID=sb1".to_string(),
                "CNI_IFNAME=eth0".to_string(),
                format!("CNI_NETNS={}", netns.display()),
                format!("CNI_PATH={plugin_dir}"),
            ]
        );

        // The conf dir changes; DEL still uses what ADD used, in reverse,
        // with the final result, the same CNI_ARGS and no missing netns.
        fake.conflist(
            "01-other.conflist",
            &json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "gone"}]}),
        );
        cni.detach("sb1", Some(&netns), Some(&att)).unwrap();
        assert_eq!(
            fake.calls(),
            ["fakea ADD", "fakeb ADD", "fakeb DEL", "fakea DEL"]
        );
        let del = fake.stdin("fakea", "DEL");
        assert_eq!(del["name"], "fakenet");
        assert_eq!(del["prevResult"], state["result"]);
        let del_env = fake.env("fakeb", "DEL");
        assert!(del_env.contains(&"CNI_NETNS=".to_string()), "{del_env:?}");
        assert!(del_env.iter().any(|e| e.contains("K8S_POD_NAME=web")));
        assert_eq!(
            fake.stdin("fakeb", "DEL")["runtimeConfig"],
            b["runtimeConfig"]
        );

        // CHECK: in order, against the recorded result.
        cni.check("sb1", &netns, &att).unwrap();
        assert_eq!(fake.calls()[4..], ["fakea CHECK", "fakeb CHECK"]);
        assert_eq!(fake.stdin("fakeb", "CHECK")["prevResult"], state["result"]);

        // Before 0.4.0 there is no CHECK, and DEL gets no prevResult.
        let mut old = att.clone();
        if let Some(state) = old.backend_state.as_mut() {
            state["config"]["cniVersion"] = json!("0.3.1");
        }
        let e = cni.check("sb1", &netns, &old).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
        cni.detach("sb1", None, Some(&old)).unwrap();
        assert!(fake.stdin("fakea", "DEL").get("prevResult").is_none());

        // No record: the current config, and CNI_ARGS with the id only.
        fs::remove_file(fake.conf_dir().join("01-other.conflist")).unwrap();
        cni.detach("sb2", None, None).unwrap();
        assert!(fake
            .env("fakea", "DEL")
            .contains(&"CNI_ARGS=IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=sb2".to_string()));
    }

    #[test]
    fn cni_failed_add_is_undone_and_names_the_plugin() {
        let fake = Fake::new();
        fake.plugin("fakea", &answer(RESULT_A));
        fake.plugin(
            "fakeb",
            "echo '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bad port config\",\"details\":\"hostPort 0\"}'\n\
             echo 'some diagnostics' >&2\n\
             exit 1",
        );
        fake.conflist("10-fake.conflist", &fake_list());
        let cni = fake.network();
        let req = request("sb1", fake.td.path().join("ns"), vec![]);

        let e = cni.attach(&req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        for part in [
            "attach sandbox sb1",
            "\"fakeb\"",
            "\"fakenet\"",
            "bad port config",
            "hostPort 0",
            "some diagnostics",
        ] {
            assert!(e.message.contains(part), "{part:?} not in {e}");
        }
        // All or nothing: the whole list is deleted, in reverse order, with
        // the partial result.
        assert_eq!(
            fake.calls(),
            ["fakea ADD", "fakeb ADD", "fakeb DEL", "fakea DEL"]
        );
        assert_eq!(
            fake.stdin("fakea", "DEL")["prevResult"],
            serde_json::from_str::<Value>(RESULT_A).unwrap()
        );
    }

    #[test]
    fn cni_plugin_processes_never_outlive_a_call() {
        let fake = Fake::new();
        let log = fake.log().display().to_string();
        // Leaves a child behind that holds its stdout open.
        fake.plugin(
            "fakea",
            &format!(
                "sleep 30 &\necho $! > '{log}/straggler.pid'\n{}",
                answer(RESULT_A)
            ),
        );
        fake.conflist(
            "10-a.conflist",
            &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fakea"}]}),
        );
        let started = Instant::now();
        let att = fake
            .network()
            .attach(&request("sb1", fake.td.path().join("ns"), vec![]));
        assert!(att.is_ok(), "{att:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let straggler = fs::read_to_string(fake.log().join("straggler.pid")).unwrap();
        assert!(process_ends(&straggler), "straggler {straggler} survived");

        // Hangs: killed at the timeout, with its children.
        fake.plugin(
            "fakeslow",
            &format!("echo $$ > '{log}/slow.pid'\nsleep 30 &\necho $! > '{log}/sleep.pid'\nwait"),
        );
        fake.conflist(
            "01-slow.conflist",
            &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fakeslow"}]}),
        );
        let mut cni = fake.network();
        cni.timeout = Duration::from_millis(500);
        let started = Instant::now();
        let e = cni
            .attach(&request("sb2", fake.td.path().join("ns"), vec![]))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
        assert!(
            e.message.contains("\"fakeslow\"") && e.message.contains("timed out"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        for pid_file in ["slow.pid", "sleep.pid"] {
            let pid = fs::read_to_string(fake.log().join(pid_file)).unwrap();
            assert!(process_ends(&pid), "{pid_file} {pid} survived");
        }
        // The undo DEL ran too (ADD failed).
        assert!(fake.calls().contains(&"fakeslow DEL".to_string()));
    }

    #[test]
    fn cni_config_files_are_picked_in_lexical_order_and_conf_is_wrapped() {
        let td = tempfile::tempdir().unwrap();
        let dir = td.path();
        let single = json!({"cniVersion": "0.4.0", "name": "a", "type": "bridge"});
        write(&dir.join("10-a.conf"), &single.to_string());
        write(
            &dir.join("20-b.conflist"),
            &json!({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]})
                .to_string(),
        );
        write(&dir.join("05-notes.txt"), "not a config");
        fs::create_dir_all(dir.join("07-dir.conf")).unwrap();

        let first = first_config_file(dir).unwrap();
        assert_eq!(first, dir.join("10-a.conf"));
        let list = read_network_list(&first).unwrap();
        assert_eq!(list.name, "a");
        assert_eq!(list.version, Version([0, 4, 0]));
        assert_eq!(list.raw["plugins"], json!([single]));
        assert_eq!(list.plugins.len(), 1);

        let cases = [
            ("{not json", "01-bad.conflist", "key must be a string"),
            (
                r#"{"name":"x","plugins":[{"type":"bridge"}]}"#,
                "01-bad.conflist",
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
                "01-bad.conflist",
                "plugins",
            ),
            (
                r#"{"cniVersion":"one","name":"x","type":"bridge"}"#,
                "01-bad.conf",
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"-x y","type":"bridge"}"#,
                "01-bad.conf",
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"../sh"}"#,
                "01-bad.conf",
                "type",
            ),
        ];
        for (text, file, why) in cases {
            write(&dir.join(file), text);
            let e = read_network_list(&first_config_file(dir).unwrap()).unwrap_err();
            assert!(
                e.message.contains(file) && e.message.contains(why),
                "{text}: {e}"
            );
            fs::remove_file(dir.join(file)).unwrap();
        }
    }

    #[test]
    fn cni_results_errors_and_versions_are_read() {
        let old = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1"}, "ip6": {"ip": "fd00::2/64"}});
        assert_eq!(
            ResultSummary::of(&old),
            ResultSummary {
                ips: vec!["10.1.0.5".parse().unwrap(), "fd00::2".parse().unwrap()],
                gateway: Some("10.1.0.1".parse().unwrap()),
                host_interface: None,
            }
        );

        let garbage = Finished {
            status: ExitStatus::from_raw(3 << 8),
            stdout: b"panic: oops\n".to_vec(),
            stderr: "x".repeat(10_000).into_bytes(),
        };
        let e = plugin_failure(&garbage);
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.contains("exit status: 3") && e.message.contains("panic: oops"),
            "{e}"
        );
        assert!(e.message.len() < 2 * DIAGNOSTIC_LIMIT, "stderr is bounded");
        let later = Finished {
            status: ExitStatus::from_raw(1 << 8),
            stdout: br#"{"code":11,"msg":"try again"}"#.to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(plugin_failure(&later).kind, ErrorKind::Unavailable);

        assert_eq!(Version::parse("1.0.0"), Some(Version([1, 0, 0])));
        assert!(Version::parse("0.3.1") < Some(Version::CHAINED_RESULTS));
        for bad in ["", "1.0.0.0", "1.x", "v1"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(validate_container_id("abc-1_2.3").is_ok());
        assert!(validate_container_id("a;b").is_err() && validate_container_id("").is_err());
        let mut req = request("sb", PathBuf::from("/x"), vec![]);
        req.pod_name = "a;K8S_POD_NAMESPACE=kube-system".to_string();
        assert_eq!(
            pod_cni_args(&req).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn cni_detach_with_nothing_to_undo_succeeds() {
        let td = tempfile::tempdir().unwrap();
        let cni = CniNetwork::new(CniConfig {
            conf_dir: td.path().join("missing"),
            plugin_dirs: vec![PathBuf::from(SYSTEM_PLUGINS)],
        });
        cni.detach("sb1", Some(Path::new("/nonexistent")), None)
            .unwrap();
        let foreign = Attachment {
            backend: "bridge".to_string(),
            ..Default::default()
        };
        cni.detach("sb1", None, Some(&foreign)).unwrap();
    }

    // -----------------------------------------------------------------------
    // Debian's plugins in /usr/lib/cni, in a namespace of our own (root).

    /// One test's bridge, subnet, network name, netns and host port, all
    /// unique to this process and test; removed on drop.
    struct RealNet {
        td: TempDir,
        case: u32,
        name: String,
        bridge: String,
        subnet: Subnet,
        host_port: u16,
        pin_dir: PathBuf,
        netns: PathBuf,
        hostport_chains_before: Vec<String>,
        cleaned: bool,
        /// portmap's CNI-HOSTPORT-* chains are shared: one test at a time.
        _serial: std::sync::MutexGuard<'static, ()>,
    }

    static REAL_PLUGINS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    impl RealNet {
        fn new(case: u32) -> RealNet {
            let serial = REAL_PLUGINS.lock().unwrap_or_else(|e| e.into_inner());
            let pid = std::process::id();
            let bridge = format!("bcni{}{case}", pid % 10000);
            assert!(bridge.len() <= 15);
            assert!(!output("ip", &["-o", "link"]).contains(&format!(" {bridge}:")));
            let td = tempfile::tempdir().unwrap();
            let pin_dir = td.path().join("pod/ns");
            let netns = berth_ns::pin_netns(&pin_dir).unwrap();
            let nat = nat_chains();
            RealNet {
                netns,
                pin_dir,
                td,
                case,
                name: format!("berth-cni-test-{pid}-{case}"),
                bridge,
                subnet: free_subnet(pid, case),
                host_port: 20000 + u16::try_from(pid % 10000).unwrap() * 4 + case as u16,
                hostport_chains_before: HOSTPORT_CHAINS
                    .iter()
                    .filter(|c| nat.contains(&c.to_string()))
                    .map(|c| c.to_string())
                    .collect(),
                cleaned: false,
                _serial: serial,
            }
        }

        fn sandbox_id(&self) -> String {
            format!("cnitest{}x{}", self.case, std::process::id())
        }

        fn data_dir(&self) -> PathBuf {
            self.td.path().join("ipam")
        }

        fn bridge_plugin(&self) -> Value {
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet.to_string()}]],
                    "dataDir": self.data_dir(),
                }
            })
        }

        /// Writes bridge + `second` as the network list.
        fn write_conflist(&self, conf_dir: &Path, second: Value) {
            let list = json!({
                "cniVersion": "1.0.0",
                "name": self.name,
                "plugins": [self.bridge_plugin(), second],
            });
            write(&conf_dir.join("10-test.conflist"), &list.to_string());
        }

        fn network(&self) -> CniNetwork {
            self.write_conflist(
                &self.conf_dir(),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            );
            self.network_from_conf_dir()
        }

        fn conf_dir(&self) -> PathBuf {
            self.td.path().join("net.d")
        }

        fn network_from_conf_dir(&self) -> CniNetwork {
            CniNetwork::new(CniConfig {
                conf_dir: self.conf_dir(),
                plugin_dirs: vec![PathBuf::from(SYSTEM_PLUGINS), PathBuf::from("/opt/cni/bin")],
            })
        }

        fn request(&self) -> AttachRequest {
            request(
                &self.sandbox_id(),
                self.netns.clone(),
                vec![tcp_port(localhost(), self.host_port, 8080)],
            )
        }

        /// The addresses host-local has leased (one file per address).
        fn leases(&self) -> Vec<String> {
            let Ok(entries) = fs::read_dir(self.data_dir().join(&self.name)) else {
                return Vec::new();
            };
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|f| f.parse::<IpAddr>().is_ok())
                .collect()
        }

        fn veths(&self) -> String {
            output("ip", &["-o", "link", "show", "master", &self.bridge])
                .trim()
                .to_string()
        }

        /// Strings that only this test's rules and links contain.
        fn markers(&self) -> Vec<String> {
            let network = self.subnet.network().octets();
            vec![
                self.name.clone(),
                self.bridge.clone(),
                format!("{}.{}.{}.", network[0], network[1], network[2]),
            ]
        }

        /// Removes the bridge, the netns, and the nat rules and chains the
        /// plugins left: the per-pod ones naming us, and portmap's shared
        /// CNI-HOSTPORT-* chains if they were not there before.
        fn cleanup(&mut self) {
            if std::mem::replace(&mut self.cleaned, true) {
                return;
            }
            let _ = berth_ns::unpin(&self.pin_dir);
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
            let made: Vec<String> = HOSTPORT_CHAINS
                .iter()
                .map(|c| c.to_string())
                .filter(|c| !self.hostport_chains_before.contains(c))
                .collect();
            remove_nat_leftovers(&self.markers(), made);
        }

        fn assert_no_trace(&self) {
            let links = output("ip", &["-o", "link"]);
            assert!(!links.contains(&self.bridge), "{links}");
            let rules = output("iptables-save", &[]);
            for marker in self.markers() {
                assert!(!rules.contains(&marker), "{marker} left in\n{rules}");
            }
            let chains = nat_chains();
            for chain in HOSTPORT_CHAINS {
                let before = self.hostport_chains_before.contains(&chain.to_string());
                assert_eq!(chains.contains(&chain.to_string()), before, "{chain}");
            }
        }
    }

    impl Drop for RealNet {
        fn drop(&mut self) {
            self.cleanup();
        }
    }

    /// A /24 in 10.211.0.0/16 that no host route or address touches.
    fn free_subnet(pid: u32, case: u32) -> Subnet {
        let routes = host_routes(&fs::read_to_string("/proc/net/route").unwrap_or_default());
        let addresses = output("ip", &["-o", "addr"]);
        let start = (pid % 50) * 4 + case;
        (0..200)
            .map(|k| (start + k) % 200 + 1)
            .map(|octet| Subnet::new(Ipv4Addr::new(10, 211, octet as u8, 0), 24).unwrap())
            .find(|s| {
                let prefix = s.to_string().trim_end_matches("0/24").to_string();
                !routes.iter().any(|(_, r)| r.overlaps(s)) && !addresses.contains(&prefix)
            })
            .expect("a free /24 in 10.211.0.0/16")
    }

    fn nat_rules() -> Vec<String> {
        output("iptables-save", &["-t", "nat"])
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_string)
            .collect()
    }

    fn nat_chains() -> Vec<String> {
        output("iptables-save", &["-t", "nat"])
            .lines()
            .filter_map(|l| l.strip_prefix(':')?.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// One nat table change in iptables-save syntax (which handles the
    /// quoted comments the plugins write).
    fn nat_restore(line: &str) {
        let child = std::process::Command::new("iptables-restore")
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "*nat\n{line}\nCOMMIT");
            }
            let _ = child.wait();
        }
    }

    fn remove_nat_leftovers(markers: &[String], mut chains: Vec<String>) {
        let rules = nat_rules();
        let mentions = |rule: &str| markers.iter().any(|m| rule.contains(m.as_str()));
        for rule in rules.iter().filter(|r| mentions(r)) {
            if let Some(chain) = rule.split_whitespace().nth(1) {
                if chain.starts_with("CNI-") && !chains.iter().any(|c| c == chain) {
                    chains.push(chain.to_string());
                }
            }
        }
        for rule in &rules {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let jumps_to_ours = words
                .windows(2)
                .any(|w| w[0] == "-j" && chains.iter().any(|c| c == w[1]));
            if mentions(rule) || jumps_to_ours {
                nat_restore(&format!("-D{}", &rule[2..]));
            }
        }
        for chain in &chains {
            nat_restore(&format!("-F {chain}"));
            nat_restore(&format!("-X {chain}"));
        }
    }

    fn mentions_ip(text: &str, ip: Ipv4Addr) -> bool {
        text.contains(&format!("{ip}/")) || text.contains(&format!("{ip}:"))
    }

    fn in_pod(net: &RealNet, args: &'static [&'static str]) -> String {
        berth_ns::in_netns(&net.netns, move || output("ip", args)).unwrap()
    }

    #[test]
    fn cni_ready_reports_missing_config_and_plugins() {
        let net = RealNet::new(1);
        let cni = net.network_from_conf_dir();
        let e = cni.ready().unwrap_err();
        assert_eq!(e.reason, "NetworkPluginNotReady");
        let conf_dir = net.conf_dir().display().to_string();
        assert_eq!(e.message, format!("no CNI network config in {conf_dir}"));

        net.write_conflist(&net.conf_dir(), json!({"type": "nosuchplugin"}));
        let e = cni.ready().unwrap_err();
        assert_eq!(e.reason, "NetworkPluginNotReady");
        assert_eq!(
            e.message,
            format!(
                "CNI plugin \"nosuchplugin\" (network \"{}\") not found in /usr/lib/cni, /opt/cni/bin",
                net.name
            )
        );
        // attach says the same, and makes nothing.
        let e = cni.attach(&net.request()).unwrap_err();
        assert!(e.message.contains("nosuchplugin"), "{e}");
        assert!(net.leases().is_empty());

        write(&net.conf_dir().join("05-broken.conf"), "{");
        let e = cni.ready().unwrap_err();
        assert!(e.message.contains("05-broken.conf"), "{}", e.message);
        fs::remove_file(net.conf_dir().join("05-broken.conf")).unwrap();

        assert_eq!(net.network().ready(), Ok(()));
    }

    #[test]
    fn cni_bridge_portmap_attach_and_detach_leave_nothing_behind() {
        let mut net = RealNet::new(2);
        let cni = net.network();
        let sandbox = net.sandbox_id();
        let att = cni.attach(&net.request()).unwrap();

        assert_eq!(att.ips.len(), 1, "{att:?}");
        let IpAddr::V4(ip) = att.ips[0] else {
            panic!("not IPv4: {att:?}")
        };
        assert!(net.subnet.contains(ip), "{ip} not in {}", net.subnet);
        assert_eq!(att.gateway, Some(IpAddr::V4(net.subnet.gateway())));
        let veth = att.host_interface.clone().unwrap();
        assert!(
            net.veths().contains(&format!(" {veth}@")),
            "{}",
            net.veths()
        );
        let inside = in_pod(&net, &["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(inside.contains(&format!("inet {ip}/24")), "{inside}");
        let nat = output("iptables-save", &["-t", "nat"]);
        assert!(
            nat.contains(&format!("--to-destination {ip}:8080")),
            "{nat}"
        );
        assert_eq!(net.leases(), vec![ip.to_string()]);
        // Debian's portmap 1.1.1 fails CHECK for IPv4-only pods (looks for
        // an IPv6 chain, containernetworking/plugins#819): check the bridge.
        let mut bridge_only = att.clone();
        if let Some(plugins) = bridge_only
            .backend_state
            .as_mut()
            .and_then(|s| s["config"]["plugins"].as_array_mut())
        {
            plugins.truncate(1);
        }
        cni.check(&sandbox, &net.netns, &bridge_only).unwrap();

        // The host port reaches a listener in the pod.
        let listener = berth_ns::in_netns(&net.netns, || TcpListener::bind("0.0.0.0:8080"))
            .unwrap()
            .unwrap();
        let host = SocketAddr::from((Ipv4Addr::LOCALHOST, net.host_port));
        let mut client = TcpStream::connect_timeout(&host, Duration::from_secs(5)).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut served, _) = listener.accept().unwrap();
        let mut greeting = [0u8; 2];
        served.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"hi");
        drop((client, served, listener));

        cni.detach(&sandbox, Some(&net.netns), Some(&att)).unwrap();
        assert_eq!(net.veths(), "");
        let rules = output("iptables-save", &[]);
        assert!(!mentions_ip(&rules, ip), "{rules}");
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        // Idempotent; and CHECK now sees that eth0 is gone.
        cni.detach(&sandbox, Some(&net.netns), Some(&att)).unwrap();
        let e = cni.check(&sandbox, &net.netns, &bridge_only).unwrap_err();
        assert!(
            e.message.contains("\"bridge\"") && e.message.contains("CHECK"),
            "{e}"
        );

        net.cleanup();
        net.assert_no_trace();
    }

    #[test]
    fn cni_failing_second_plugin_leaves_nothing_behind() {
        let mut net = RealNet::new(3);
        // portmap refuses a mark bit past 31, on ADD and on DEL.
        net.write_conflist(
            &net.conf_dir(),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "markMasqBit": 99}),
        );
        let cni = net.network_from_conf_dir();
        let e = cni.attach(&net.request()).unwrap_err();
        assert!(
            e.message.contains("\"portmap\"") && e.message.contains("ADD"),
            "{e}"
        );
        assert!(e.message.contains("MasqMarkBit"), "{e}");

        assert_eq!(net.veths(), "");
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        let inside = in_pod(&net, &["-o", "link"]);
        assert!(!inside.contains("eth0"), "{inside}");
        let rules = output("iptables-save", &[]);
        assert!(!rules.contains(&net.name), "{rules}");

        net.cleanup();
        net.assert_no_trace();
    }

    #[test]
    fn cni_detach_after_the_netns_is_gone() {
        let mut net = RealNet::new(4);
        let cni = net.network();
        let sandbox = net.sandbox_id();
        let att = cni.attach(&net.request()).unwrap();
        let IpAddr::V4(ip) = att.ips[0] else {
            panic!("not IPv4: {att:?}")
        };
        berth_ns::unpin(&net.pin_dir).unwrap();
        assert!(!net.netns.exists());

        cni.detach(&sandbox, Some(&net.netns), Some(&att)).unwrap();
        assert!(net.leases().is_empty(), "{:?}", net.leases());
        let nat = output("iptables-save", &["-t", "nat"]);
        assert!(!nat.contains(&format!("{ip}:8080")), "DNAT left: {nat}");
        // The kernel removes the veth with the namespace, asynchronously.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !net.veths().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(net.veths(), "");
        cni.detach(&sandbox, None, Some(&att)).unwrap();

        net.cleanup();
        net.assert_no_trace();
    }
}
