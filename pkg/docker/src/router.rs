//! Routing: the version prefix, then one table of (method, path) →
//! handler. Paths are matched as segments; image names keep their slashes
//! (`/images/127.0.0.1:5000/busybox/json`) through `name @ ..` patterns.

use berth_core::Core;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::error::{ApiError, ApiResult};
use crate::http::{percent_decode, Body, Query};
use crate::version::{self, ApiVersion};
use crate::{
    archive, attach, build, containers, create, df, events, exec, image_io, image_transfer, images,
    lifecycle, logs, networks, observe, stats, system, volumes, Door,
};
use std::sync::Arc;

/// One request as a handler sees it.
pub struct Ctx {
    pub core: Core,
    pub door: Arc<Door>,
    pub version: ApiVersion,
    pub query: Query,
    /// The request itself: its body, headers and, for attach and exec,
    /// the connection to hijack.
    pub req: Request<Incoming>,
}

/// Answers `req`, with the name of the route that took it: Docker's
/// operation id (`ContainerList`, `ImagePull`…), or `unknown` for a path
/// no route matches. The name is the `operation` label of its figures, so
/// it is a fixed string, never the path.
pub async fn route(
    door: Arc<Door>,
    req: Request<Incoming>,
) -> (&'static str, ApiResult<Response<Body>>) {
    let (version, path) = match version::split_version(req.uri().path()) {
        Ok(split) => split,
        Err(e) => return ("unknown", Err(e)),
    };
    let path = path.to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let ctx = Ctx {
        core: door.core.clone(),
        door,
        version,
        query: Query::parse(req.uri().query()),
        req,
    };
    use Method as M;
    match (&method, segs.as_slice()) {
        (&M::GET | &M::HEAD, ["_ping"]) => ("SystemPing", version::ping(&method)),
        (&M::GET, ["version"]) => ("SystemVersion", version::version()),
        (&M::GET, ["info"]) => ("SystemInfo", system::info(&ctx.core)),
        (&M::GET, ["containers", "json"]) => {
            ("ContainerList", containers::list(&ctx.core, &ctx.query))
        }
        (&M::GET, ["containers", id, "json"]) => {
            ("ContainerInspect", containers::inspect(&ctx.core, id))
        }
        (&M::POST, ["containers", "create"]) => (
            "ContainerCreate",
            async {
                let body = crate::http::read_json(ctx.req).await?;
                create::create(&ctx.core, ctx.query.get("name"), body).await
            }
            .await,
        ),
        (&M::POST, ["containers", "prune"]) => {
            ("ContainerPrune", lifecycle::prune(&ctx.core).await)
        }
        (&M::POST, ["containers", id, "start"]) => {
            ("ContainerStart", lifecycle::start(&ctx.core, id).await)
        }
        (&M::POST, ["containers", id, "stop"]) => (
            "ContainerStop",
            lifecycle::stop(&ctx.core, id, &ctx.query).await,
        ),
        (&M::POST, ["containers", id, "kill"]) => (
            "ContainerKill",
            lifecycle::kill(&ctx.core, id, &ctx.query).await,
        ),
        (&M::POST, ["containers", id, "restart"]) => ("ContainerRestart", {
            lifecycle::restart(&ctx.core, id, &ctx.query).await
        }),
        (&M::POST, ["containers", id, "update"]) => (
            "ContainerUpdate",
            async {
                let id = id.to_string();
                let body = crate::http::read_json(ctx.req).await?;
                lifecycle::update(&ctx.core, &id, body).await
            }
            .await,
        ),
        (&M::POST, ["containers", id, "pause"]) => (
            "ContainerPause",
            lifecycle::pause(&ctx.core, id, true).await,
        ),
        (&M::POST, ["containers", id, "unpause"]) => (
            "ContainerUnpause",
            lifecycle::pause(&ctx.core, id, false).await,
        ),
        (&M::POST, ["containers", id, "wait"]) => (
            "ContainerWait",
            lifecycle::wait(&ctx.core, id, &ctx.query).await,
        ),
        (&M::POST, ["containers", id, "rename"]) => ("ContainerRename", {
            lifecycle::rename(&ctx.core, id, &ctx.query).await
        }),
        (&M::DELETE, ["containers", id]) => (
            "ContainerDelete",
            lifecycle::remove(&ctx.core, id, &ctx.query).await,
        ),
        (&M::GET, ["events"]) => ("SystemEvents", events::events(&ctx.core, &ctx.query)),
        (&M::GET, ["system", "df"]) => ("SystemDataUsage", df::df(&ctx.core)),
        (&M::GET, ["networks"]) => ("NetworkList", networks::list(&ctx.core, &ctx.query)),
        (&M::POST, ["networks", "create"]) => (
            "NetworkCreate",
            async {
                let body = crate::http::read_json(ctx.req).await?;
                networks::create(&ctx.core, body).await
            }
            .await,
        ),
        (&M::POST, ["networks", "prune"]) => {
            ("NetworkPrune", networks::prune(&ctx.core, &ctx.query).await)
        }
        (&M::GET, ["networks", id]) => ("NetworkInspect", networks::inspect(&ctx.core, id)),
        (&M::DELETE, ["networks", id]) => ("NetworkDelete", networks::remove(&ctx.core, id).await),
        (&M::POST, ["networks", id, "connect"]) => (
            "NetworkConnect",
            async {
                let id = id.to_string();
                let body = crate::http::read_json(ctx.req).await?;
                networks::connect(&ctx.core, &id, body).await
            }
            .await,
        ),
        (&M::POST, ["networks", id, "disconnect"]) => (
            "NetworkDisconnect",
            async {
                let id = id.to_string();
                let body = crate::http::read_json(ctx.req).await?;
                networks::disconnect(&ctx.core, &id, body).await
            }
            .await,
        ),
        (&M::GET, ["volumes"]) => ("VolumeList", volumes::list(&ctx.core, &ctx.query)),
        (&M::POST, ["volumes", "create"]) => (
            "VolumeCreate",
            async {
                let body = crate::http::read_json(ctx.req).await?;
                volumes::create(&ctx.core, body)
            }
            .await,
        ),
        (&M::POST, ["volumes", "prune"]) => ("VolumePrune", volumes::prune(&ctx.core, &ctx.query)),
        (&M::GET, ["volumes", name]) => ("VolumeInspect", volumes::inspect(&ctx.core, name)),
        (&M::DELETE, ["volumes", name]) => {
            ("VolumeDelete", volumes::remove(&ctx.core, name, &ctx.query))
        }
        (&M::GET, ["containers", id, "stats"]) => (
            "ContainerStats",
            stats::stats(&ctx.core, id, &ctx.query).await,
        ),
        (&M::GET, ["containers", id, "top"]) => {
            ("ContainerTop", observe::top(&ctx.core, id, &ctx.query))
        }
        (&M::GET, ["containers", id, "changes"]) => {
            ("ContainerChanges", observe::changes(&ctx.core, id))
        }
        (&M::GET | &M::HEAD, ["containers", id, "archive"]) => {
            ("ContainerArchive", archive::get(ctx, id).await)
        }
        (&M::PUT, ["containers", id, "archive"]) => {
            ("PutContainerArchive", archive::put(ctx, id).await)
        }
        (&M::GET, ["containers", id, "logs"]) => ("ContainerLogs", logs::logs(&ctx, id)),
        (&M::POST, ["containers", id, "attach"]) => {
            ("ContainerAttach", attach::attach(ctx, id).await)
        }
        (&M::POST, ["containers", id, "resize"]) => {
            ("ContainerResize", attach::resize(&ctx, id).await)
        }
        (&M::POST, ["containers", id, "exec"]) => ("ContainerExec", exec::create(ctx, id).await),
        (&M::POST, ["exec", id, "start"]) => ("ExecStart", exec::start(ctx, id).await),
        (&M::POST, ["exec", id, "resize"]) => ("ExecResize", exec::resize(&ctx, id)),
        (&M::GET, ["exec", id, "json"]) => ("ExecInspect", exec::inspect(&ctx, id)),
        (&M::GET, ["images", "json"]) => ("ImageList", images::list(&ctx.core, &ctx.query)),
        (&M::POST, ["images", "create"])
            if ctx.query.get("fromSrc").is_some_and(|s| !s.is_empty()) =>
        {
            ("ImageCreate", image_io::import(ctx).await)
        }
        (&M::POST, ["images", "create"]) => ("ImageCreate", image_transfer::pull(ctx).await),
        (&M::POST, ["images", "load"]) => ("ImageLoad", image_io::load(ctx).await),
        (&M::GET, ["images", "get"]) => ("ImageGetAll", image_io::save(&ctx, None)),
        (&M::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            ("ImageGet", image_io::save(&ctx, Some(joined(name))))
        }
        (&M::POST, ["build"]) => ("ImageBuild", build::build(ctx).await),
        (&M::POST, ["build", "prune"]) => ("BuildPrune", build::prune(&ctx).await),
        (&M::POST, ["commit"]) => ("ImageCommit", image_io::commit(ctx).await),
        (&M::GET, ["containers", id, "export"]) => ("ContainerExport", image_io::export(&ctx, id)),
        (&M::POST, ["images", "prune"]) => {
            ("ImagePrune", images::prune(&ctx.core, &ctx.query).await)
        }
        (&M::GET, ["images", name @ .., "json"]) if !name.is_empty() => ("ImageInspect", {
            images::inspect(&ctx.core, &joined(name))
        }),
        (&M::GET, ["images", name @ .., "history"]) if !name.is_empty() => ("ImageHistory", {
            images::history(&ctx.core, &joined(name))
        }),
        (&M::POST, ["images", name @ .., "tag"]) if !name.is_empty() => ("ImageTag", {
            images::tag(&ctx.core, &joined(name), &ctx.query).await
        }),
        (&M::POST, ["images", name @ .., "push"]) if !name.is_empty() => ("ImagePush", {
            let name = joined(name);
            image_transfer::push(ctx, name).await
        }),
        (&M::DELETE, ["images", name @ ..]) if !name.is_empty() => ("ImageDelete", {
            images::delete(&ctx.core, &joined(name), &ctx.query).await
        }),
        _ => ("unknown", Err(ApiError::not_found("page not found"))),
    }
}

/// Joins the segments of an image name matched by `name @ ..`.
pub fn joined(parts: &[&str]) -> String {
    parts.join("/")
}
