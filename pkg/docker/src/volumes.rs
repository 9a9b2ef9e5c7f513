//! `/volumes`: create, list (filters `dangling`, `name`, `label`,
//! `driver`), inspect, remove and prune, in dockerd's shapes; and what
//! `docker create` needs to turn `-v name:/path`, `-v /path` and an
//! image's `VOLUME`s into mounts of the core's volumes.

use std::collections::BTreeMap;

use berth_core::{Core, ErrorKind, MountConfig, Volume, VolumeSpec};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::rfc3339_nano;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::http::{json, no_content, ok_json, Body, Query};

const FILTERS: &[&str] = &["dangling", "name", "label", "driver"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub name: String,
    pub driver: String,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A volume as `docker volume inspect` shows it.
pub fn volume_json(v: &Volume) -> Value {
    let r = &v.record;
    // dockerd writes whole seconds here.
    let created = r.created_at_ns - r.created_at_ns % 1_000_000_000;
    json!({
        "CreatedAt": rfc3339_nano(created),
        "Driver": "local",
        "Labels": if r.labels.is_empty() { Value::Null } else { json!(r.labels) },
        "Mountpoint": v.mountpoint,
        "Name": r.name,
        "Options": if r.options.is_empty() { Value::Null } else { json!(r.options) },
        "Scope": "local",
    })
}

/// `POST /volumes/create`: 201 with the volume (an existing one of that
/// name as it is).
pub fn create(core: &Core, body: CreateBody) -> ApiResult<Response<Body>> {
    check_driver(&body.driver)?;
    let volume = core.volumes().create(VolumeSpec {
        name: body.name,
        labels: body.labels.unwrap_or_default(),
        options: body.driver_opts.unwrap_or_default(),
    })?;
    Ok(json(StatusCode::CREATED, &volume_json(&volume)))
}

/// Only the `local` driver is here; another is a plugin dockerd would
/// look for, in its words.
fn check_driver(driver: &str) -> ApiResult<()> {
    match driver {
        "" | "local" => Ok(()),
        other => Err(ApiError::not_found(format!(
            "error looking up volume plugin {other}: plugin \"{other}\" not found"
        ))),
    }
}

/// `GET /volumes`.
pub fn list(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let f = Filters::parse(query.get("filters"), FILTERS)?;
    f.check_values("dangling", &["true", "false", "1", "0"])?;
    let volumes: Vec<Value> = core
        .volumes()
        .list()?
        .iter()
        .filter(|v| {
            let dangling = v.users.is_empty();
            f.any("dangling", |d| matches!(d, "true" | "1") == dangling)
                && f.any("name", |n| v.record.name.contains(n))
                && f.any("driver", |d| d == "local")
                && f.any("label", |l| match l.split_once('=') {
                    Some((k, val)) => v.record.labels.get(k).is_some_and(|x| x == val),
                    None => v.record.labels.contains_key(l),
                })
        })
        .map(volume_json)
        .collect();
    ok_json(&json!({ "Volumes": volumes, "Warnings": null }))
}

/// `GET /volumes/{name}`.
pub fn inspect(core: &Core, name: &str) -> ApiResult<Response<Body>> {
    ok_json(&volume_json(&core.volumes().inspect(name)?))
}

/// `DELETE /volumes/{name}?force=`: 409 while a container uses it.
pub fn remove(core: &Core, name: &str, query: &Query) -> ApiResult<Response<Body>> {
    core.volumes()
        .remove(name, query.flag("force"))
        .map_err(in_use)?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune`: every volume no container uses.
pub fn prune(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    Filters::parse(query.get("filters"), &["label", "all"])?;
    let (names, bytes) = core.volumes().prune().map_err(in_use)?;
    ok_json(&json!({ "VolumesDeleted": names, "SpaceReclaimed": bytes }))
}

fn in_use(e: berth_core::Error) -> ApiError {
    match e.kind {
        ErrorKind::FailedPrecondition => ApiError::conflict(e.message),
        _ => e.into(),
    }
}

/// The mounts a create asks for beyond host binds: named volumes (made
/// if missing), anonymous ones for `Volumes` entries and the image's
/// `VOLUME`s not already covered. Returns them with the names of the
/// volumes this call made, for undoing a failed create.
pub struct VolumeMounts {
    pub mounts: Vec<MountConfig>,
    pub made: Vec<String>,
}

/// A named volume a container mounts (`-v name:/path`, `--mount
/// type=volume`), and how to make it if it is not there yet.
#[derive(Debug, Default)]
pub struct NamedVolume<'a> {
    pub name: &'a str,
    pub target: &'a str,
    pub readonly: bool,
    pub no_copy: bool,
    pub driver: &'a str,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl VolumeMounts {
    /// A named volume, made if it is not there yet (one that is keeps
    /// its own options, as with dockerd).
    pub fn named(&mut self, core: &Core, want: NamedVolume) -> ApiResult<()> {
        check_driver(want.driver)?;
        let existed = core.volumes().inspect(want.name).is_ok();
        let v = core.volumes().create(VolumeSpec {
            name: want.name.to_string(),
            labels: want.labels,
            options: want.options,
        })?;
        if !existed {
            self.made.push(want.name.to_string());
        }
        self.push(&v, want.target, want.readonly);
        if let Some(m) = self.mounts.last_mut() {
            m.no_copy = want.no_copy;
        }
        Ok(())
    }

    /// An anonymous volume at `target` unless a mount is there already.
    pub fn anonymous(&mut self, core: &Core, target: &str, taken: &[MountConfig]) -> ApiResult<()> {
        let covered = |m: &MountConfig| {
            m.container_path.trim_end_matches('/') == target.trim_end_matches('/')
        };
        if taken.iter().chain(&self.mounts).any(covered) {
            return Ok(());
        }
        let v = core.volumes().create(VolumeSpec::default())?;
        self.made.push(v.record.name.clone());
        self.push(&v, target, false);
        Ok(())
    }

    fn push(&mut self, v: &Volume, target: &str, readonly: bool) {
        self.mounts.push(MountConfig {
            host_path: v.mountpoint.display().to_string(),
            container_path: target.to_string(),
            readonly,
            ..Default::default()
        });
    }

    /// Removes what this create made (it failed).
    pub fn undo(&self, core: &Core) {
        for name in &self.made {
            if let Err(e) = core.volumes().remove(name, true) {
                tracing::warn!(volume = %name, "undo a volume made for a failed create: {e}");
            }
        }
    }
}
