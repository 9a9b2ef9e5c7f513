//! Images from containers and files: `POST /commit`, `GET
//! /containers/{id}/export`, `POST /images/create?fromSrc=-` (import),
//! `GET /images/get` and `/images/{name}/get` (save), `POST /images/load`
//! (commit.txt, save.txt, load.txt in the reference traces). The core
//! does the work; this module reads Docker's parameters and writes its
//! answers.

use berth_core::NewImage;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::archive::{tar_response, with_body_reader};
use crate::error::{ApiError, ApiResult};
use crate::http::{json, json_line, json_stream, Body, Query};
use crate::image_changes::parse_changes;
use crate::names::familiar;
use crate::router::Ctx;
use crate::view;

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`.
pub async fn commit(ctx: Ctx) -> ApiResult<Response<Body>> {
    let container = ctx.query.get("container").unwrap_or("");
    let v = view::find(&ctx.core, container)?;
    let new = NewImage {
        pause: bool_or(&ctx.query, "pause", true),
        ..new_image(&ctx.query, "")?
    };
    let image = ctx.core.containers().commit(&v.record.id, new).await?;
    Ok(json(StatusCode::CREATED, &json!({"Id": image.id})))
}

/// dockerd's `BoolValueOrDefault`: absent is `default`; empty, `0`,
/// `no`, `false` and `none` are false; anything else true.
fn bool_or(query: &Query, key: &str, default: bool) -> bool {
    match query.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => default,
        Some(v) => !matches!(v.as_str(), "" | "0" | "no" | "false" | "none"),
    }
}

/// `repo`/`tag`, `changes`, `author` and the comment (`comment` for
/// commit, `message` for import).
fn new_image(query: &Query, default_comment: &str) -> ApiResult<NewImage> {
    let repo = query.get("repo").unwrap_or("").trim();
    let tag = query.get("tag").unwrap_or("").trim();
    let tag = match (repo, tag) {
        ("", "") => None,
        ("", _) => return Err(ApiError::bad_request("tag given without a repository")),
        (repo, "") => Some(repo.to_string()),
        (repo, tag) => Some(format!("{repo}:{tag}")),
    };
    let comment = query
        .get("comment")
        .or_else(|| query.get("message"))
        .unwrap_or(default_comment);
    Ok(NewImage {
        changes: parse_changes(&query.get_all("changes"))?,
        author: query.get("author").unwrap_or("").to_string(),
        comment: comment.to_string(),
        tag,
        pause: false,
    })
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar.
pub fn export(ctx: &Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(&ctx.core, reference)?;
    let core = ctx.core.clone();
    let id = v.record.id.clone();
    Ok(tar_response(
        move |out| core.containers().export(&id, out),
        format!("export of container {}", v.record.id),
    ))
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=`: the body,
/// a root filesystem tar, as a one-layer image.
pub async fn import(ctx: Ctx) -> ApiResult<Response<Body>> {
    let source = ctx.query.get("fromSrc").unwrap_or("");
    if source != "-" {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "berth imports only from the request body (fromSrc=-), not from a URL",
        ));
    }
    let new = new_image(&ctx.query, "")?;
    let core = ctx.core.clone();
    let image = with_body_reader(ctx.req, move |reader| async move {
        core.images().import(reader, new, "-").await
    })
    .await?;
    let line = json_line(&json!({"status": image.id}));
    Ok(json_stream(futures::stream::iter([line])))
}

/// `GET /images/get?names=…` (several) and `GET /images/{name}/get`.
pub fn save(ctx: &Ctx, name: Option<String>) -> ApiResult<Response<Body>> {
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => ctx
            .query
            .get_all("names")
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names to save"));
    }
    let set = ctx.core.images().prepare_save(&names)?;
    let core = ctx.core.clone();
    Ok(tar_response(
        move |out| core.images().save(&set, out),
        format!("save of {}", names.join(", ")),
    ))
}

/// `POST /images/load?quiet=`: every image of the tarball in the body;
/// one `Loaded image` line each (no per-layer progress).
pub async fn load(ctx: Ctx) -> ApiResult<Response<Body>> {
    let core = ctx.core.clone();
    let loaded = with_body_reader(ctx.req, move |reader| async move {
        core.images().load(reader).await
    })
    .await?;
    let mut lines = Vec::new();
    for image in loaded {
        if image.tags.is_empty() {
            lines.push(format!("Loaded image ID: {}\n", image.id));
        }
        for tag in &image.tags {
            lines.push(format!("Loaded image: {}\n", familiar(tag)));
        }
    }
    let lines: Vec<_> = lines
        .into_iter()
        .map(|l| json_line(&json!({ "stream": l })))
        .collect();
    Ok(json_stream(futures::stream::iter(lines)))
}
