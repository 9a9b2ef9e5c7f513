//! `HostConfig.Mounts` (`--mount type=bind|volume|tmpfs,...`) and
//! `HostConfig.Tmpfs` (`--tmpfs /path:opts`) into the core's mounts,
//! checked as dockerd checks them and refused in its words (400
//! `invalid mount config for type "...": ...`).

use std::collections::BTreeMap;

use berth_core::{Core, MountConfig, Propagation};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::volumes::{NamedVolume, VolumeMounts};

/// One `--mount`. docker-py sends a null `Source` for a tmpfs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountBody {
    #[serde(rename = "Type", deserialize_with = "null_as_empty")]
    pub kind: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub source: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub target: String,
    pub read_only: bool,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<VolumeOptions>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    pub propagation: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    pub no_copy: bool,
    pub labels: Option<BTreeMap<String, String>>,
    pub driver_config: Option<DriverConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    pub name: String,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: i64,
    pub mode: u32,
}

/// The `--mount`s, into `mounts` (binds, tmpfs) and `volumes`.
pub fn add_mounts(
    core: &Core,
    given: &[MountBody],
    mounts: &mut Vec<MountConfig>,
    volumes: &mut VolumeMounts,
) -> ApiResult<()> {
    // All are checked before any volume is made.
    for m in given {
        check(m).map_err(|why| {
            ApiError::bad_request(format!("invalid mount config for type {:?}: {why}", m.kind))
        })?;
    }
    for m in given {
        match m.kind.as_str() {
            "bind" => mounts.push(MountConfig {
                host_path: m.source.clone(),
                container_path: m.target.clone(),
                readonly: m.read_only,
                propagation: propagation(m),
                ..Default::default()
            }),
            "tmpfs" => mounts.push(MountConfig {
                container_path: m.target.clone(),
                tmpfs: Some(tmpfs_options(m.tmpfs_options.as_ref(), m.read_only)),
                ..Default::default()
            }),
            _ if m.source.is_empty() => volumes.anonymous(core, &m.target, mounts)?,
            _ => {
                let opts = m.volume_options.as_ref();
                let driver = opts.and_then(|o| o.driver_config.as_ref());
                volumes.named(
                    core,
                    NamedVolume {
                        name: &m.source,
                        target: &m.target,
                        readonly: m.read_only,
                        no_copy: opts.is_some_and(|o| o.no_copy),
                        driver: driver.map_or("", |d| d.name.as_str()),
                        options: driver.and_then(|d| d.options.clone()).unwrap_or_default(),
                        labels: opts.and_then(|o| o.labels.clone()).unwrap_or_default(),
                    },
                )?
            }
        }
    }
    Ok(())
}

/// `HostConfig.Tmpfs`: `{"/run": "size=64m,mode=1770"}`.
pub fn add_tmpfs(given: &BTreeMap<String, String>, mounts: &mut Vec<MountConfig>) -> ApiResult<()> {
    for (target, options) in given {
        absolute(target).map_err(ApiError::bad_request)?;
        mounts.push(MountConfig {
            container_path: target.clone(),
            tmpfs: Some(options.split(',').map(str::to_string).collect()),
            ..Default::default()
        });
    }
    Ok(())
}

/// dockerd's `validateMountConfig`: why `m` is refused, if it is.
fn check(m: &MountBody) -> Result<(), String> {
    let extra = |field: &str| Err(format!("field {field} must not be specified"));
    if m.target.is_empty() {
        return Err("field Target must not be empty".into());
    }
    absolute(&m.target)?;
    match m.kind.as_str() {
        "bind" => {
            if m.source.is_empty() {
                return Err("field Source must not be empty".into());
            }
            if let Some(p) = m.bind_options.as_ref().map(|b| b.propagation.as_str()) {
                if !p.is_empty() && !PROPAGATIONS.contains(&p) {
                    return Err(format!("invalid propagation mode: {p}"));
                }
            }
            if m.volume_options.is_some() {
                return extra("VolumeOptions");
            }
            if m.tmpfs_options.is_some() {
                return extra("TmpfsOptions");
            }
            absolute(&m.source)?;
            if std::fs::symlink_metadata(&m.source).is_err() {
                return Err(format!("bind source path does not exist: {}", m.source));
            }
        }
        "volume" => {
            if m.bind_options.is_some() {
                return extra("BindOptions");
            }
            if m.tmpfs_options.is_some() {
                return extra("TmpfsOptions");
            }
            if m.source.is_empty() && m.read_only {
                return Err("must not set ReadOnly mode when using anonymous volumes".into());
            }
        }
        "tmpfs" => {
            if m.bind_options.is_some() {
                return extra("BindOptions");
            }
            if m.volume_options.is_some() {
                return extra("VolumeOptions");
            }
            if !m.source.is_empty() {
                return extra("Source");
            }
        }
        _ => return Err("mount type unknown".into()),
    }
    Ok(())
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn absolute(path: &str) -> Result<(), String> {
    match path {
        "/" => Err("invalid specification: destination can't be '/'".into()),
        p if p.starts_with('/') => Ok(()),
        p => Err(format!(
            "invalid mount path: '{p}' mount path must be absolute"
        )),
    }
}

/// The core's propagations: a slave sees the host's new mounts, a shared
/// one shows its own to the host too.
fn propagation(m: &MountBody) -> Propagation {
    match m.bind_options.as_ref().map(|b| b.propagation.as_str()) {
        Some("shared" | "rshared") => Propagation::Bidirectional,
        Some("slave" | "rslave") => Propagation::HostToContainer,
        _ => Propagation::Private,
    }
}

/// dockerd's `ConvertTmpfsOptions`: `ro`, `mode=` in octal, `size=` in
/// the largest unit that divides it.
fn tmpfs_options(opts: Option<&TmpfsOptions>, readonly: bool) -> Vec<String> {
    let mut out = Vec::new();
    if readonly {
        out.push("ro".to_string());
    }
    let Some(o) = opts else {
        return out;
    };
    if o.mode != 0 {
        out.push(format!("mode={:o}", o.mode));
    }
    if o.size_bytes != 0 {
        let (mut size, mut suffix) = (o.size_bytes, "");
        for unit in ["k", "m", "g"] {
            if size % 1024 != 0 {
                break;
            }
            size /= 1024;
            suffix = unit;
        }
        out.push(format!("size={size}{suffix}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, source: &str, target: &str) -> MountBody {
        MountBody {
            kind: kind.into(),
            source: source.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_mounts_are_refused_in_dockerds_words() {
        assert_eq!(
            check(&body("bind", "/no/such/dir/here", "/x")).unwrap_err(),
            "bind source path does not exist: /no/such/dir/here"
        );
        assert_eq!(
            check(&body("tmpfs", "x", "/x")).unwrap_err(),
            "field Source must not be specified"
        );
        assert_eq!(
            check(&body("volume", "v", "rel")).unwrap_err(),
            "invalid mount path: 'rel' mount path must be absolute"
        );
        assert_eq!(
            check(&body("bind", "/tmp", "")).unwrap_err(),
            "field Target must not be empty"
        );
        assert_eq!(
            check(&body("nfs", "", "/x")).unwrap_err(),
            "mount type unknown"
        );
        let mut ro_anon = body("volume", "", "/x");
        ro_anon.read_only = true;
        assert!(check(&ro_anon).unwrap_err().contains("anonymous volumes"));
        assert!(check(&body("bind", "/tmp", "/x")).is_ok());
    }

    #[test]
    fn a_null_source_is_none() {
        let m: MountBody =
            serde_json::from_str(r#"{"Type":"tmpfs","Source":null,"Target":"/m"}"#).unwrap();
        assert_eq!((m.kind.as_str(), m.source.as_str()), ("tmpfs", ""));
    }

    #[test]
    fn tmpfs_options_convert_like_dockerd() {
        let o = TmpfsOptions {
            size_bytes: 64 << 20,
            mode: 0o1770,
        };
        assert_eq!(
            tmpfs_options(Some(&o), true),
            ["ro", "mode=1770", "size=64m"]
        );
        let odd = TmpfsOptions {
            size_bytes: 1000,
            mode: 0,
        };
        assert_eq!(tmpfs_options(Some(&odd), false), ["size=1000"]);
        assert!(tmpfs_options(None, false).is_empty());
    }
}
