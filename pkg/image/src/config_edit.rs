//! Image configs made on this node (commit, import): the parent's config
//! (or an empty one) with the new layer's diff id and history entry, and
//! the defaults a caller changes (Docker's `--change`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_errdefs::{Error, Result};
use serde_json::{json, Map, Value};

use crate::manifest::Platform;

/// Defaults for containers an image config gets; `None`/empty leaves the
/// parent's as they are. Env entries replace the parent's of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEdit {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `port/protocol`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    pub volumes: Vec<String>,
    /// Other `config` keys set as given (a builder's `Shell`,
    /// `Healthcheck`, `OnBuild`); `null` removes the key.
    pub raw: BTreeMap<String, Value>,
}

/// What a new one-layer step records about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewLayerInfo {
    pub edit: ConfigEdit,
    pub author: String,
    pub comment: String,
    /// The history entry's `created_by`.
    pub created_by: String,
}

/// The config of a new image: `parent`'s (an OCI/Docker image config) or
/// an empty one for this node's platform, with `info`'s edits and the
/// layer `diff_id` on top; with no layer, the history entry says
/// `empty_layer` (a builder's metadata step).
pub fn derive_config(
    parent: Option<&[u8]>,
    diff_id: Option<&str>,
    info: &NewLayerInfo,
) -> Result<Vec<u8>> {
    let mut config: Value = match parent {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed parent image config: {e}")))?,
        None => {
            let p = Platform::host();
            json!({"architecture": p.architecture, "os": p.os, "config": {},
                   "rootfs": {"type": "layers", "diff_ids": []}})
        }
    };
    let Some(top) = config.as_object_mut() else {
        return Err(Error::invalid("parent image config is not a JSON object"));
    };
    let created = rfc3339_now();
    top.insert("created".into(), json!(created));
    // Docker's image JSON keeps the step's author and comment on top too.
    for (key, value) in [("author", &info.author), ("comment", &info.comment)] {
        if value.is_empty() {
            top.remove(key);
        } else {
            top.insert(key.into(), json!(value));
        }
    }
    // Fields of the build that made the parent do not describe this image.
    for stale in ["container", "container_config", "parent", "id"] {
        top.remove(stale);
    }
    let run = object(top, "config");
    apply_edit(run, &info.edit);
    let rootfs = object(top, "rootfs");
    rootfs.insert("type".into(), json!("layers"));
    let diff_ids = array(rootfs, "diff_ids");
    let mut entry = Map::new();
    match diff_id {
        Some(diff_id) => diff_ids.push(json!(diff_id)),
        None => {
            entry.insert("empty_layer".into(), json!(true));
        }
    }
    entry.insert("created".into(), json!(created));
    for (key, value) in [
        ("author", &info.author),
        ("comment", &info.comment),
        ("created_by", &info.created_by),
    ] {
        if !value.is_empty() {
            entry.insert(key.into(), json!(value));
        }
    }
    array(top, "history").push(Value::Object(entry));
    serde_json::to_vec(&config).map_err(|e| Error::internal(e.to_string()))
}

fn apply_edit(run: &mut Map<String, Value>, edit: &ConfigEdit) {
    if let Some(cmd) = &edit.cmd {
        run.insert("Cmd".into(), json!(cmd));
    }
    if let Some(entrypoint) = &edit.entrypoint {
        run.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(dir) = &edit.working_dir {
        run.insert("WorkingDir".into(), json!(dir));
    }
    if let Some(user) = &edit.user {
        run.insert("User".into(), json!(user));
    }
    if let Some(signal) = &edit.stop_signal {
        run.insert("StopSignal".into(), json!(signal));
    }
    if !edit.env.is_empty() {
        let env = array(run, "Env");
        for var in &edit.env {
            let name = var.split('=').next().unwrap_or_default();
            env.retain(|v| v.as_str().and_then(|s| s.split('=').next()) != Some(name));
            env.push(json!(var));
        }
    }
    let sets = [
        ("ExposedPorts", &edit.exposed_ports),
        ("Volumes", &edit.volumes),
    ];
    for (key, items) in sets {
        if !items.is_empty() {
            let set = object(run, key);
            for item in items {
                set.insert(item.clone(), json!({}));
            }
        }
    }
    for (key, value) in &edit.raw {
        match value {
            Value::Null => run.remove(key),
            v => run.insert(key.clone(), v.clone()),
        };
    }
    if !edit.labels.is_empty() {
        let labels = object(run, "Labels");
        for (k, v) in &edit.labels {
            labels.insert(k.clone(), json!(v));
        }
    }
}

/// The object at `key`, made (or replacing a null or mistyped value).
fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

/// The array at `key`, made (or replacing a null or mistyped value).
fn array<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = map.entry(key).or_insert_with(|| json!([]));
    if !slot.is_array() {
        *slot = json!([]);
    }
    slot.as_array_mut().expect("made an array above")
}

/// Now, as RFC 3339 UTC with nanoseconds (as Docker writes `created`).
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_798_761_599, 0), "2026-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn a_derived_config_keeps_the_parent_and_applies_the_edit() {
        let parent = br#"{"architecture":"amd64","os":"linux","container":"abc",
            "config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"],"Labels":null},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]},
            "history":[{"created_by":"base"}]}"#;
        let info = NewLayerInfo {
            edit: ConfigEdit {
                cmd: Some(vec!["echo".into(), "x".into()]),
                env: vec!["A=2".into()],
                labels: [("k".to_string(), "v".to_string())].into(),
                exposed_ports: vec!["80/tcp".into()],
                ..Default::default()
            },
            author: "me".into(),
            comment: "msg".into(),
            created_by: String::new(),
        };
        let out: Value =
            serde_json::from_slice(&derive_config(Some(parent), Some("sha256:bb"), &info).unwrap())
                .unwrap();
        assert_eq!(out["config"]["Cmd"], json!(["echo", "x"]));
        assert_eq!(out["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(out["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(out["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(out["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(out["history"][1]["comment"], "msg");
        assert_eq!(out["history"][1]["author"], "me");
        assert_eq!(out["author"], "me");
        assert_eq!(out["comment"], "msg");
        assert!(out.get("container").is_none());
    }

    #[test]
    fn a_malformed_parent_is_refused() {
        let e =
            derive_config(Some(b"[1]"), Some("sha256:bb"), &NewLayerInfo::default()).unwrap_err();
        assert!(e.message.contains("not a JSON object"), "{e}");
    }
}
