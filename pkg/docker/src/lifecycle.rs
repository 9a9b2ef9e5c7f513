//! A Docker container's lifecycle verbs (start, stop, kill, restart,
//! wait, rename, remove, prune), answered like dockerd (see stop.txt,
//! kill.txt, restart.txt, rename.txt, rm*.txt, wait.txt and
//! container-prune.txt in the reference traces). The state machine is the
//! core's (`Containers::*_standalone`, `kill`, `wait`, `restart`, `rename`).

use berth_core::{ContainerState, Core, ErrorKind, Owner, WaitCondition};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::create::name_in_use;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, json_line, no_content, ok_json, Body, Query};
use crate::view::{self, ContainerView};

/// dockerd's stop timeout when neither the request nor the container
/// sets one.
const DEFAULT_STOP_TIMEOUT_S: i64 = 10;

/// A timeout of -1 waits for the exit (dockerd); the core takes seconds.
const FOREVER_S: i64 = 365 * 24 * 3600;

/// `t`, else the container's `StopTimeout`, else dockerd's default.
fn stop_timeout(query: &Query, v: &ContainerView) -> ApiResult<i64> {
    Ok(match query.int("t")?.or(v.record.stop_timeout_s) {
        None => DEFAULT_STOP_TIMEOUT_S,
        Some(t) if t < 0 => FOREVER_S,
        Some(t) => t,
    })
}

/// Docker's verbs change only Docker's containers: kubelet owns the rest.
fn docker_owned(v: &ContainerView) -> ApiResult<()> {
    match v.record.owner {
        Owner::Docker => Ok(()),
        Owner::Kubernetes => Err(ApiError::conflict(format!(
            "container {} belongs to a Kubernetes pod: kubelet manages it",
            v.record.id
        ))),
    }
}

/// A core error about `v`, in dockerd's words where they differ.
fn about(v: &ContainerView) -> impl Fn(berth_core::Error) -> ApiError + '_ {
    move |e| match e.kind {
        ErrorKind::NotFound => ApiError::no_such_container(&v.record.id),
        _ => e.into(),
    }
}

/// `POST /containers/{id}/start`: 304 when it runs already.
pub async fn start(core: &Core, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    if v.record.state == ContainerState::Running {
        return no_content(StatusCode::NOT_MODIFIED);
    }
    core.containers()
        .start(&v.record.id)
        .await
        .map_err(about(&v))?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/stop?t=`: 304 when it is not running.
pub async fn stop(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    let timeout = stop_timeout(query, &v)?;
    docker_owned(&v)?;
    if v.record.state != ContainerState::Running {
        return no_content(StatusCode::NOT_MODIFIED);
    }
    core.containers()
        .stop(&v.record.id, timeout)
        .await
        .map_err(about(&v))?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    let signal = query.get("signal").unwrap_or("");
    berth_core::parse_signal(signal)
        .map_err(|_| ApiError::bad_request(format!("Invalid signal: {signal}")))?;
    core.containers()
        .kill(&v.record.id, signal)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::FailedPrecondition if v.record.paused => ApiError::conflict(format!(
                "Container {} is paused. Unpause the container before stopping or killing",
                v.record.id
            )),
            ErrorKind::FailedPrecondition => {
                ApiError::conflict(format!("Container {} is not running", v.record.id))
            }
            _ => about(&v)(e),
        })?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/pause` (`freeze`) and `/unpause`.
pub async fn pause(core: &Core, reference: &str, freeze: bool) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    let containers = core.containers();
    let id = &v.record.id;
    let done = match freeze {
        true => containers.pause(id).await,
        false => containers.unpause(id).await,
    };
    done.map_err(|e| match e.kind {
        ErrorKind::FailedPrecondition => ApiError::conflict(match (v.record.state, freeze) {
            (ContainerState::Running, true) => format!("Container {id} is already paused"),
            (ContainerState::Running, false) => format!("Container {id} is not paused"),
            _ => format!("Container {id} is not running"),
        }),
        _ => about(&v)(e),
    })?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    let timeout = stop_timeout(query, &v)?;
    docker_owned(&v)?;
    core.containers()
        .restart(&v.record.id, timeout)
        .await
        .map_err(about(&v))?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait?condition=`: the headers at once, the
/// status when the condition is met (the CLI sends this before start).
pub async fn wait(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let condition = match query.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: \"{other}\""
            )))
        }
    };
    let v = view::find(core, reference)?;
    let (containers, id) = (core.containers(), v.record.id.clone());
    let outcome = async move {
        let body = match containers.wait(&id, condition).await {
            Ok(code) => json!({ "Error": null, "StatusCode": code }),
            Err(e) => json!({ "Error": { "Message": e.message }, "StatusCode": -1 }),
        };
        json_line(&body)
    };
    let chunks = futures::stream::once(outcome);
    let body: Body = http::streamed(chunks);
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .map_err(|e| ApiError::internal(format!("wait response: {e}")))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let new_name = query.get("name").unwrap_or("");
    let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
    crate::create::check_name(new_name)?;
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    if let Ok(holder) = view::find(core, new_name) {
        if holder.name == new_name && holder.record.id != v.record.id {
            return Err(name_in_use(new_name, &holder.record.id));
        }
    }
    core.containers()
        .rename(&v.record.id, new_name)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::AlreadyExists => {
                name_in_use(new_name, e.message.rsplit(' ').next().unwrap_or_default())
            }
            _ => about(&v)(e),
        })?;
    no_content(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    let force = query.flag("force");
    if !force && v.record.state == ContainerState::Running {
        return Err(running(&v.record.id));
    }
    core.containers()
        .remove_standalone(&v.record.id, force)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::FailedPrecondition => running(&v.record.id),
            _ => about(&v)(e),
        })?;
    // `-v`: its anonymous volumes go too, unless another container
    // mounts one (then it stays, as with dockerd).
    if query.flag("v") {
        let volumes = core.volumes();
        for m in &v.record.config.mounts {
            let Some(name) = volumes.name_of(&m.host_path) else {
                continue;
            };
            if volumes.inspect(&name).is_ok_and(|vol| vol.record.anonymous) {
                if let Err(e) = volumes.remove(&name, true) {
                    tracing::info!(volume = %name, "rm -v keeps a volume: {e}");
                }
            }
        }
    }
    no_content(StatusCode::NO_CONTENT)
}

fn running(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
    ))
}

/// `POST /containers/prune`: every Docker container that is not running.
pub async fn prune(core: &Core) -> ApiResult<Response<Body>> {
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for v in view::all(core) {
        let r = &v.record;
        if r.owner != Owner::Docker || r.state == ContainerState::Running {
            continue;
        }
        let size = core
            .containers()
            .writable_layer_usage(&r.id)
            .map_or(0, |(bytes, _)| bytes);
        match core.containers().remove_standalone(&r.id, false).await {
            Ok(()) => {
                deleted.push(r.id.clone());
                reclaimed += size;
            }
            // Started or removed meanwhile: not ours to prune.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::FailedPrecondition) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deleted = (!deleted.is_empty()).then_some(deleted);
    ok_json(&json!({ "ContainersDeleted": deleted, "SpaceReclaimed": reclaimed }))
}

/// `POST /containers/{id}/update`: the restart policy and the resource
/// limits given (the others stay as they are).
pub async fn update(
    core: &Core,
    reference: &str,
    body: crate::create::HostConfig,
) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    docker_owned(&v)?;
    let id = &v.record.id;
    // The CLI sends an empty policy when it changes only limits.
    if body
        .restart_policy
        .as_ref()
        .is_some_and(|p| !p.name.is_empty())
    {
        let policy = crate::create::restart_policy(body.restart_policy.as_ref())?;
        core.containers()
            .set_restart_policy(id, policy)
            .await
            .map_err(about(&v))?;
    }
    let given = crate::create::resources(&body)?;
    let old = &v.record.config.resources;
    let pick = |new: i64, old: i64| if new != 0 { new } else { old };
    let merged = berth_core::Resources {
        cpu_shares: pick(given.cpu_shares, old.cpu_shares),
        cpu_quota: pick(given.cpu_quota, old.cpu_quota),
        cpu_period: pick(given.cpu_period, old.cpu_period),
        memory_limit_in_bytes: pick(given.memory_limit_in_bytes, old.memory_limit_in_bytes),
        memory_swap_limit_in_bytes: pick(
            given.memory_swap_limit_in_bytes,
            old.memory_swap_limit_in_bytes,
        ),
        pids_limit: pick(given.pids_limit, old.pids_limit),
        ..old.clone()
    };
    if merged != *old {
        core.containers()
            .update_resources(id, merged)
            .await
            .map_err(about(&v))?;
    }
    ok_json(&json!({ "Warnings": [] }))
}
