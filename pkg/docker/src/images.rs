//! Images as Docker shows them: `docker images`, `image inspect`,
//! `history`, `tag`, `rmi` and `image prune`, in dockerd's shapes and
//! words (images.txt, inspect-image.txt, history.txt, tag.txt, rmi.txt).
//! Names are resolved as a pull would (`busybox` is
//! `docker.io/library/busybox:latest`) and shown familiar.

use berth_core::{Core, ImageInfo};
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::clock::parse_timestamp_ns;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::http::{no_content, ok_json, Body, Query};
use crate::names::{familiar, glob};

const LIST_FILTERS: &[&str] = &["reference", "dangling", "label", "before", "since"];

/// The image `name` names: a reference, a full id, or (as the CLI allows)
/// a unique prefix of an id.
pub fn resolve(core: &Core, name: &str) -> ApiResult<Option<ImageInfo>> {
    if let Ok(Some(found)) = core.images().status(name) {
        return Ok(Some(found));
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.is_empty()
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        // A name that is no id: a malformed one is the client's error.
        core.images().qualify(name)?;
        return Ok(None);
    }
    let mut matches = core
        .images()
        .list(None)?
        .into_iter()
        .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
    match (matches.next(), matches.next()) {
        (Some(one), None) => Ok(Some(one)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "multiple IDs found with provided prefix: {hex}"
        ))),
        _ => Ok(None),
    }
}

fn must_resolve(core: &Core, name: &str) -> ApiResult<ImageInfo> {
    resolve(core, name)?.ok_or_else(|| missing_image(core, name))
}

/// dockerd's 404 for a name that matches no image: the name as it
/// reads it, tagged `latest` if untagged (`bb` → `No such image:
/// bb:latest`); an id or a malformed name as given.
pub(crate) fn missing_image(core: &Core, name: &str) -> ApiError {
    match core.images().qualify(name) {
        Ok(q) => ApiError::no_such_image(&familiar(&qualified(&q))),
        Err(_) => ApiError::no_such_image(name),
    }
}

fn created_secs(info: &ImageInfo) -> i64 {
    info.created
        .as_deref()
        .and_then(parse_timestamp_ns)
        .map_or(0, |ns| ns / 1_000_000_000)
}

/// `GET /images/json`.
pub fn list(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let filters = Filters::parse(query.get("filters"), LIST_FILTERS)?;
    filters.check_values("dangling", &["true", "false", "1", "0"])?;
    let images = core.images().list(None)?;
    let bound = |key: &str| -> ApiResult<Option<i64>> {
        match filters.values(key).first() {
            None => Ok(None),
            Some(name) => Ok(Some(created_secs(&must_resolve(core, name)?))),
        }
    };
    let (before, since) = (bound("before")?, bound("since")?);
    let intermediate = match query.flag("all") {
        true => Default::default(),
        false => core.intermediate_images()?,
    };
    let mut shown: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| {
            let dangling = i.repo_tags.is_empty();
            if dangling && intermediate.contains(&i.id) {
                return false;
            }
            filters.any("dangling", |d| matches!(d, "true" | "1") == dangling)
                && filters.any("reference", |pattern| references(i, pattern))
                && filters.labels_match(&i.config.labels)
                && before.is_none_or(|t| created_secs(i) < t)
                && since.is_none_or(|t| created_secs(i) > t)
        })
        .collect();
    shown.sort_by_key(|i| std::cmp::Reverse(created_secs(i)));
    let out: Vec<Value> = shown.into_iter().map(summary).collect();
    ok_json(&out)
}

/// A `reference` filter: a pattern over `repository` or `repository:tag`,
/// familiar or whole.
fn references(info: &ImageInfo, pattern: &str) -> bool {
    info.repo_tags.iter().any(|tag| {
        let short = familiar(tag);
        [tag.as_str(), short.as_str()].iter().any(|name| {
            let repo = name.rsplit_once(':').map_or(
                *name,
                |(r, t)| {
                    if t.contains('/') {
                        name
                    } else {
                        r
                    }
                },
            );
            glob(pattern, name) || glob(pattern, repo)
        })
    })
}

fn names(list: &[String], none: &str) -> Vec<String> {
    if list.is_empty() {
        vec![none.to_string()]
    } else {
        list.iter().map(|n| familiar(n)).collect()
    }
}

fn labels(info: &ImageInfo) -> Value {
    if info.config.labels.is_empty() {
        Value::Null
    } else {
        json!(info.config.labels)
    }
}

fn summary(info: &ImageInfo) -> Value {
    json!({
        "Containers": -1,
        "Created": created_secs(info),
        "Id": info.id,
        "Labels": labels(info),
        "ParentId": "",
        "RepoDigests": names(&info.repo_digests, "<none>@<none>"),
        "RepoTags": names(&info.repo_tags, "<none>:<none>"),
        "SharedSize": -1,
        "Size": info.unpacked_size,
        "VirtualSize": info.unpacked_size,
    })
}

/// `GET /images/{name}/json`.
pub fn inspect(core: &Core, name: &str) -> ApiResult<Response<Body>> {
    let info = must_resolve(core, name)?;
    let raw: Value = core
        .images()
        .config_json(&info.id)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let (os, arch) = info.platform.split_once('/').unwrap_or(("linux", ""));
    let text = |k: &str| raw[k].as_str().unwrap_or_default().to_string();
    ok_json(&json!({
        "Id": info.id,
        "RepoTags": info.repo_tags.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
        "RepoDigests": info.repo_digests.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": text("comment"),
        "Created": info.created.clone().unwrap_or_else(|| crate::clock::ZERO_TIME.into()),
        "Container": text("container"),
        "ContainerConfig": container_config(&raw["container_config"]),
        "DockerVersion": text("docker_version"),
        "Author": text("author"),
        "Config": container_config(&raw["config"]),
        "Architecture": raw["architecture"].as_str().unwrap_or(arch),
        "Variant": raw["variant"],
        "Os": raw["os"].as_str().unwrap_or(os),
        "Size": info.unpacked_size,
        "VirtualSize": info.unpacked_size,
        "GraphDriver": {"Data": null, "Name": "overlay"},
        "RootFS": {
            "Type": "layers",
            "Layers": info.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": crate::clock::ZERO_TIME},
    }))
}

/// Docker's container config object, every key present, from the image
/// config's (absent keys as dockerd shows them).
fn container_config(raw: &Value) -> Value {
    let mut out = Map::new();
    for (key, empty) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("ExposedPorts", Value::Null),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
        ("StopSignal", Value::Null),
    ] {
        let value = raw.get(key).cloned().unwrap_or(empty.clone());
        // dockerd omits these two when unset.
        if matches!(key, "ExposedPorts" | "StopSignal") && value.is_null() {
            continue;
        }
        out.insert(key.to_string(), value);
    }
    Value::Object(out)
}

/// `GET /images/{name}/history`.
pub fn history(core: &Core, name: &str) -> ApiResult<Response<Body>> {
    let info = must_resolve(core, name)?;
    let entries = core
        .images()
        .history(&info.id)?
        .ok_or_else(|| missing_image(core, name))?;
    let out: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "Comment": e.comment,
                "Created": e.created.as_deref().and_then(parse_timestamp_ns).map_or(0, |ns| ns / 1_000_000_000),
                "CreatedBy": e.created_by,
                "Id": e.id.clone().unwrap_or_else(|| "<missing>".into()),
                "Size": e.size,
                "Tags": if e.tags.is_empty() { Value::Null } else {
                    json!(e.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>())
                },
            })
        })
        .collect();
    ok_json(&out)
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(core: &Core, name: &str, query: &Query) -> ApiResult<Response<Body>> {
    let repo = query.get("repo").unwrap_or("").trim();
    if repo.is_empty() {
        return Err(ApiError::bad_request(
            "repository name must have at least one component",
        ));
    }
    let tag = query.get("tag").unwrap_or("").trim();
    let target = if tag.is_empty() {
        repo.to_string()
    } else {
        format!("{repo}:{tag}")
    };
    let info = must_resolve(core, name)?;
    core.images().tag(&info.id, &target).await?;
    no_content(StatusCode::CREATED)
}

/// `DELETE /images/{name}?force=`: a name is untagged (with the digest
/// names of its repository when it was the repository's last tag); the
/// image goes when no name is left and no container uses it. An id
/// deletes the image and every name, unless several repositories name it
/// (without force) or a container uses it.
pub async fn delete(core: &Core, name: &str, query: &Query) -> ApiResult<Response<Body>> {
    let force = query.flag("force");
    let info = must_resolve(core, name)?;
    let short = |id: &str| {
        id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    let user = core.images().user_of(&info.id);
    let by_id = !info.repo_tags.iter().chain(&info.repo_digests).any(|n| {
        core.images()
            .qualify(name)
            .is_ok_and(|q| qualified(&q) == *n)
    });
    let mut report = Vec::new();
    let mut untag = |n: &str| {
        report.push(json!({"Untagged": familiar(n)}));
    };
    if by_id {
        if let Some(c) = &user {
            return Err(ApiError::conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                short(&info.id),
                short(c)
            )));
        }
        let repos: std::collections::BTreeSet<&str> =
            info.repo_tags.iter().map(|t| repository_of(t)).collect();
        if repos.len() > 1 && !force {
            return Err(ApiError::conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short(&info.id)
            )));
        }
        for n in info.repo_tags.iter().chain(&info.repo_digests) {
            untag(n);
        }
    } else {
        if let (Some(c), false) = (&user, force) {
            return Err(ApiError::conflict(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                short(c),
                short(&info.id)
            )));
        }
        let removed = qualified(&core.images().qualify(name)?);
        let mut now = core.images().untag(&removed).await?;
        untag(&removed);
        let repo = repository_of(&removed).to_string();
        if !now.repo_tags.iter().any(|t| repository_of(t) == repo) {
            for d in now.repo_digests.clone() {
                if repository_of(&d) == repo {
                    now = core.images().untag(&d).await?;
                    untag(&d);
                }
            }
        }
        let names_left = !now.repo_tags.is_empty() || !now.repo_digests.is_empty();
        if names_left || user.is_some() {
            return ok_json(&report);
        }
    }
    core.images().remove(&info.id).await?;
    report.push(json!({"Deleted": info.id}));
    ok_json(&report)
}

pub(crate) fn qualified(q: &berth_core::QualifiedName) -> String {
    match (&q.digest, &q.tag) {
        (Some(d), _) => format!("{}@{d}", q.repository),
        (None, Some(t)) => format!("{}:{t}", q.repository),
        (None, None) => format!("{}:latest", q.repository),
    }
}

/// `registry/repository` of a `…:tag` or `…@digest` name.
fn repository_of(name: &str) -> &str {
    if let Some((repo, _)) = name.split_once('@') {
        return repo;
    }
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// `POST /images/prune`: unused images; only dangling ones unless the
/// filter says `dangling=false` (`docker image prune -a`).
pub async fn prune(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let filters = Filters::parse(query.get("filters"), &["dangling", "label", "until"])?;
    filters.check_values("dangling", &["true", "false", "1", "0"])?;
    if filters.has("label") || filters.has("until") {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "image prune filters other than dangling are not supported by berth",
        ));
    }
    let dangling_only = !filters
        .values("dangling")
        .iter()
        .any(|d| matches!(d.as_str(), "false" | "0"));
    let report = core.images().prune(dangling_only).await?;
    let mut deleted = Vec::new();
    for image in &report.removed {
        for n in &image.names {
            deleted.push(json!({"Untagged": familiar(n)}));
        }
        deleted.push(json!({"Deleted": image.id}));
    }
    ok_json(&json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { Value::Array(deleted) },
        "SpaceReclaimed": report.reclaimed_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_of_names() {
        assert_eq!(repository_of("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a");
        assert_eq!(
            repository_of("127.0.0.1:5000/a@sha256:x"),
            "127.0.0.1:5000/a"
        );
        assert_eq!(repository_of("127.0.0.1:5000/a"), "127.0.0.1:5000/a");
    }

    #[test]
    fn config_objects_have_dockers_keys() {
        let c = container_config(&json!({"Cmd": ["/bin/sh"], "User": "1"}));
        assert_eq!(c["Cmd"], json!(["/bin/sh"]));
        assert_eq!(c["User"], "1");
        assert_eq!(c["Env"], Value::Null);
        assert!(c.get("ExposedPorts").is_none());
        assert_eq!(c.as_object().unwrap().len(), 17);
    }
}
