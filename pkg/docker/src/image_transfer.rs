//! `POST /images/create` (pull) and `POST /images/{name}/push`: the core's
//! pull and push with their progress as Docker's JSON streams (pull.txt
//! and push.txt in the reference traces).

use berth_core::{LayerProgress, PullProgress, PullRequest, PushLayerProgress, PushProgress};
use hyper::Response;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::http::{Body, Query};
use crate::names::{familiar, path_of};
use crate::progress::{self, layer, layer_bytes, status};
use crate::registry_auth;
use crate::router::Ctx;

/// `POST /images/create?fromImage=&tag=`.
pub async fn pull(ctx: Ctx) -> ApiResult<Response<Body>> {
    let reference = pull_reference(&ctx.query)?;
    let credentials = registry_auth::credentials(ctx.req.headers())?;
    let platform = platform(&ctx.query)?;
    let core = ctx.core.clone();
    progress::respond(
        move |tx| async move {
            let request = PullRequest {
                reference,
                credentials,
                platform,
            };
            let pulled = core.images().pull(request, Some(tx)).await?;
            let _ = pulled;
            Ok(Vec::new())
        },
        |p| matches!(p, PullProgress::Started { .. }),
        render_pull,
    )
    .await
}

/// `fromImage` with `tag` (a tag, or a digest) when it names neither.
fn pull_reference(query: &Query) -> ApiResult<String> {
    let from = query.get("fromImage").unwrap_or("").trim();
    if from.is_empty() {
        return Err(ApiError::bad_request("fromImage is required"));
    }
    let tag = query.get("tag").unwrap_or("").trim();
    let last = from.rsplit('/').next().unwrap_or(from);
    Ok(
        if tag.is_empty() || last.contains(':') || from.contains('@') {
            from.to_string()
        } else if tag.contains(':') {
            format!("{from}@{tag}")
        } else {
            format!("{from}:{tag}")
        },
    )
}

/// `platform=os/arch[/variant]`; empty is this node's.
fn platform(query: &Query) -> ApiResult<Option<berth_core::Platform>> {
    let Some(p) = query.get("platform").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
            Ok(Some(berth_core::Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }))
        }
        _ => Err(ApiError::bad_request(format!(
            "\"{p}\": unknown operating system or architecture: invalid argument"
        ))),
    }
}

fn render_pull(p: &PullProgress) -> Vec<Value> {
    match p {
        PullProgress::Started { repository, tag } => {
            vec![json!({"status": format!("Pulling from {}", path_of(repository)), "id": tag})]
        }
        PullProgress::Layer { id, state } => vec![match state {
            LayerProgress::Downloading { current, total } => {
                layer_bytes(id, state.docker_status(), *current, *total)
            }
            other => layer(id, other.docker_status()),
        }],
        PullProgress::Finished {
            reference,
            digest,
            updated,
        } => {
            let outcome = if *updated {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            vec![
                status(format!("Digest: {digest}")),
                status(format!("Status: {outcome} {}", familiar(reference))),
            ]
        }
    }
}

/// `POST /images/{name}/push?tag=`.
pub async fn push(ctx: Ctx, name: String) -> ApiResult<Response<Body>> {
    let tag = ctx.query.get("tag").unwrap_or("").trim().to_string();
    let reference = if tag.is_empty() {
        name.clone()
    } else {
        format!("{name}:{tag}")
    };
    let credentials = registry_auth::credentials(ctx.req.headers())?;
    if ctx.core.images().status(&reference)?.is_none() {
        return Err(ApiError::not_found(format!(
            "An image does not exist locally with the tag: {reference}"
        )));
    }
    let core = ctx.core.clone();
    progress::respond(
        move |tx| async move {
            let pushed = core
                .images()
                .push(&reference, credentials, Some(tx))
                .await?;
            let tag = pushed.reference.rsplit(':').next().unwrap_or_default();
            Ok(vec![json!({
                "progressDetail": {},
                "aux": {"Tag": tag, "Digest": pushed.digest, "Size": pushed.size},
            })])
        },
        |p| matches!(p, PushProgress::Started { .. }),
        render_push,
    )
    .await
}

fn render_push(p: &PushProgress) -> Vec<Value> {
    match p {
        PushProgress::Started { repository } => vec![status(format!(
            "The push refers to repository [{}]",
            familiar(repository)
        ))],
        PushProgress::Layer { id, state } => vec![match state {
            PushLayerProgress::Pushing { current, total } => {
                layer_bytes(id, state.docker_status(), *current, *total)
            }
            other => layer(id, other.docker_status()),
        }],
        PushProgress::Finished { tag, digest, size } => {
            vec![status(format!("{tag}: digest: {digest} size: {size}"))]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_references_take_the_tag_parameter() {
        let q = |s: &str| Query::parse(Some(s));
        assert_eq!(
            pull_reference(&q("fromImage=127.0.0.1%3A5001%2Fanchor%2Fapp&tag=1")).unwrap(),
            "127.0.0.1:5001/anchor/app:1"
        );
        assert_eq!(
            pull_reference(&q("fromImage=busybox&tag=sha256%3Aab")).unwrap(),
            "busybox@sha256:ab"
        );
        assert_eq!(
            pull_reference(&q("fromImage=localhost%3A5000%2Fa")).unwrap(),
            "localhost:5000/a"
        );
        assert!(pull_reference(&q("tag=1")).is_err());
    }

    #[test]
    fn a_pull_renders_like_dockerd() {
        let lines = render_pull(&PullProgress::Started {
            repository: "127.0.0.1:5001/anchor/app".into(),
            tag: "1".into(),
        });
        assert_eq!(
            lines[0],
            json!({"status": "Pulling from anchor/app", "id": "1"})
        );
        let lines = render_pull(&PullProgress::Finished {
            reference: "docker.io/library/busybox:latest".into(),
            digest: "sha256:d".into(),
            updated: false,
        });
        assert_eq!(
            lines[1]["status"],
            "Status: Image is up to date for busybox:latest"
        );
    }
}
