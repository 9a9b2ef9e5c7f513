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
    archive, attach, containers, create, df, events, exec, image_io, image_transfer, images,
    lifecycle, logs, observe, stats, system, Door,
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

pub async fn route(door: Arc<Door>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let (version, path) = version::split_version(req.uri().path())?;
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
        (&M::GET | &M::HEAD, ["_ping"]) => version::ping(&method),
        (&M::GET, ["version"]) => version::version(),
        (&M::GET, ["info"]) => system::info(&ctx.core),
        (&M::GET, ["containers", "json"]) => containers::list(&ctx.core, &ctx.query),
        (&M::GET, ["containers", id, "json"]) => containers::inspect(&ctx.core, id),
        (&M::POST, ["containers", "create"]) => {
            let body = crate::http::read_json(ctx.req).await?;
            create::create(&ctx.core, ctx.query.get("name"), body).await
        }
        (&M::POST, ["containers", "prune"]) => lifecycle::prune(&ctx.core).await,
        (&M::POST, ["containers", id, "start"]) => lifecycle::start(&ctx.core, id).await,
        (&M::POST, ["containers", id, "stop"]) => lifecycle::stop(&ctx.core, id, &ctx.query).await,
        (&M::POST, ["containers", id, "kill"]) => lifecycle::kill(&ctx.core, id, &ctx.query).await,
        (&M::POST, ["containers", id, "restart"]) => {
            lifecycle::restart(&ctx.core, id, &ctx.query).await
        }
        (&M::POST, ["containers", id, "update"]) => {
            let id = id.to_string();
            let body = crate::http::read_json(ctx.req).await?;
            lifecycle::update(&ctx.core, &id, body).await
        }
        (&M::POST, ["containers", id, "pause"]) => lifecycle::pause(&ctx.core, id, true).await,
        (&M::POST, ["containers", id, "unpause"]) => lifecycle::pause(&ctx.core, id, false).await,
        (&M::POST, ["containers", id, "wait"]) => lifecycle::wait(&ctx.core, id, &ctx.query).await,
        (&M::POST, ["containers", id, "rename"]) => {
            lifecycle::rename(&ctx.core, id, &ctx.query).await
        }
        (&M::DELETE, ["containers", id]) => lifecycle::remove(&ctx.core, id, &ctx.query).await,
        (&M::GET, ["events"]) => events::events(&ctx.core, &ctx.query),
        (&M::GET, ["system", "df"]) => df::df(&ctx.core),
        (&M::GET, ["containers", id, "stats"]) => stats::stats(&ctx.core, id, &ctx.query).await,
        (&M::GET, ["containers", id, "top"]) => observe::top(&ctx.core, id, &ctx.query),
        (&M::GET, ["containers", id, "changes"]) => observe::changes(&ctx.core, id),
        (&M::GET | &M::HEAD, ["containers", id, "archive"]) => archive::get(ctx, id).await,
        (&M::PUT, ["containers", id, "archive"]) => archive::put(ctx, id).await,
        (&M::GET, ["containers", id, "logs"]) => logs::logs(&ctx, id),
        (&M::POST, ["containers", id, "attach"]) => attach::attach(ctx, id).await,
        (&M::POST, ["containers", id, "resize"]) => attach::resize(&ctx, id).await,
        (&M::POST, ["containers", id, "exec"]) => exec::create(ctx, id).await,
        (&M::POST, ["exec", id, "start"]) => exec::start(ctx, id).await,
        (&M::POST, ["exec", id, "resize"]) => exec::resize(&ctx, id),
        (&M::GET, ["exec", id, "json"]) => exec::inspect(&ctx, id),
        (&M::GET, ["images", "json"]) => images::list(&ctx.core, &ctx.query),
        (&M::POST, ["images", "create"])
            if ctx.query.get("fromSrc").is_some_and(|s| !s.is_empty()) =>
        {
            image_io::import(ctx).await
        }
        (&M::POST, ["images", "create"]) => image_transfer::pull(ctx).await,
        (&M::POST, ["images", "load"]) => image_io::load(ctx).await,
        (&M::GET, ["images", "get"]) => image_io::save(&ctx, None),
        (&M::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            image_io::save(&ctx, Some(joined(name)))
        }
        (&M::POST, ["commit"]) => image_io::commit(ctx).await,
        (&M::GET, ["containers", id, "export"]) => image_io::export(&ctx, id),
        (&M::POST, ["images", "prune"]) => images::prune(&ctx.core, &ctx.query).await,
        (&M::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(&ctx.core, &joined(name))
        }
        (&M::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(&ctx.core, &joined(name))
        }
        (&M::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(&ctx.core, &joined(name), &ctx.query).await
        }
        (&M::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            let name = joined(name);
            image_transfer::push(ctx, name).await
        }
        (&M::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::delete(&ctx.core, &joined(name), &ctx.query).await
        }
        _ => Err(ApiError::not_found("page not found")),
    }
}

/// Joins the segments of an image name matched by `name @ ..`.
pub fn joined(parts: &[&str]) -> String {
    parts.join("/")
}
