//! `POST /build` as the CLI's classic builder uses it (`DOCKER_BUILDKIT=0
//! docker build`; build.txt and build-cached.txt in the reference traces)
//! and `POST /build/prune`. The core builds; this module reads Docker's
//! parameters and words the core's build events as dockerd's JSON stream.

use std::collections::BTreeMap;

use berth_core::{BuildEvent, BuildRequest, NetworkMode};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::archive::with_body_reader;
use crate::error::{ApiError, ApiResult};
use crate::http::{json_line, json_stream, ok_json, Body, Query};
use crate::names::familiar;
use crate::progress::error_message;
use crate::router::Ctx;

/// Events and lines in flight.
const DEPTH: usize = 64;

/// `POST /build?dockerfile=&t=&buildargs=&target=&nocache=&pull=&labels=&q=&networkmode=&platform=`
/// with the context tar as the body.
pub async fn build(ctx: Ctx) -> ApiResult<Response<Body>> {
    let request = request(&ctx.query)?;
    let quiet = ctx.query.flag("q");
    let (events, mut received) = mpsc::channel::<BuildEvent>(DEPTH);
    let (out, lines) = mpsc::channel::<Bytes>(DEPTH);
    let core = ctx.core.clone();
    let req = ctx.req;
    let build = tokio::spawn(async move {
        with_body_reader(req, move |reader| async move {
            core.build(reader, request, events).await
        })
        .await
    });
    tokio::spawn(async move {
        loop {
            // The client went (the response dropped): dropping `received`
            // stops the build, even while a RUN prints nothing.
            let event = tokio::select! {
                e = received.recv() => e,
                _ = out.closed() => return,
            };
            let Some(event) = event else { break };
            let shown = if quiet { Vec::new() } else { render(&event) };
            for line in shown {
                if out.send(json_line(&line)).await.is_err() {
                    return;
                }
            }
        }
        let last = match build.await {
            Ok(Ok(result)) => finish(&result, quiet),
            Ok(Err(e)) => vec![error_message(&e.message)],
            Err(e) => vec![error_message(&format!("build failed: {e}"))],
        };
        for line in last {
            let _ = out.send(json_line(&line)).await;
        }
    });
    Ok(json_stream(futures::stream::unfold(
        lines,
        |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
    )))
}

/// The build's parameters; what berth does not serve is refused here.
fn request(query: &Query) -> ApiResult<BuildRequest> {
    if query.get("version") == Some("2") {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "berth serves only the classic builder (version=1): BuildKit is not supported; use DOCKER_BUILDKIT=0",
        ));
    }
    if query.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "berth builds only from a context sent in the request body, not from a remote URL",
        ));
    }
    if let Some(platform) = query.get("platform").filter(|p| !p.is_empty()) {
        berth_core::check_build_platform(platform)?;
    }
    let network = match query.get("networkmode").unwrap_or("") {
        "" | "default" | "bridge" => NetworkMode::Default,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        other => {
            return Err(ApiError::bad_request(format!(
                "network mode {other:?} is not supported for builds (default, bridge, host or none)"
            )))
        }
    };
    Ok(BuildRequest {
        dockerfile: query.get("dockerfile").unwrap_or("").to_string(),
        tags: query
            .get_all("t")
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        build_args: json_param::<BTreeMap<String, Option<String>>>(query, "buildargs")?,
        target: query
            .get("target")
            .filter(|t| !t.is_empty())
            .map(String::from),
        no_cache: query.flag("nocache"),
        pull: query.flag("pull"),
        labels: json_param::<BTreeMap<String, String>>(query, "labels")?,
        network,
        credentials: Default::default(),
    })
}

/// A JSON-encoded parameter (`buildargs`, `labels`); absent is empty.
fn json_param<T: serde::de::DeserializeOwned + Default>(query: &Query, key: &str) -> ApiResult<T> {
    match query.get(key) {
        None | Some("") => Ok(T::default()),
        Some(v) => serde_json::from_str(v)
            .map_err(|e| ApiError::bad_request(format!("invalid {key}: {e}"))),
    }
}

/// An image id as dockerd shows it in the stream (12 hex digits).
fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..12.min(hex.len())]
}

fn stream(text: impl Into<String>) -> Value {
    json!({ "stream": text.into() })
}

/// One event as dockerd's classic builder words it.
fn render(event: &BuildEvent) -> Vec<Value> {
    match event {
        BuildEvent::Note(text) => vec![stream(format!("{text}\n"))],
        BuildEvent::Step { n, total, text } => {
            vec![stream(format!("Step {n}/{total} : {text}")), stream("\n")]
        }
        BuildEvent::Triggers(1) => vec![stream("# Executing 1 build trigger\n")],
        BuildEvent::Triggers(k) => vec![stream(format!("# Executing {k} build triggers\n"))],
        BuildEvent::Cached => vec![stream(" ---> Using cache\n")],
        BuildEvent::Running(id) => vec![stream(format!(" ---> Running in {}\n", short(id)))],
        BuildEvent::Output(bytes) => vec![stream(String::from_utf8_lossy(bytes))],
        BuildEvent::Removed(id) => vec![stream(format!(
            "Removing intermediate container {}\n",
            short(id)
        ))],
        BuildEvent::Done(id) => vec![stream(format!(" ---> {}\n", short(id)))],
    }
}

/// The lines after the last step.
fn finish(result: &berth_core::BuildResult, quiet: bool) -> Vec<Value> {
    let mut lines = vec![json!({"aux": {"ID": result.image_id}})];
    if quiet {
        lines.push(stream(format!("{}\n", result.image_id)));
        return lines;
    }
    lines.push(stream(format!(
        "Successfully built {}\n",
        short(&result.image_id)
    )));
    for tag in &result.tags {
        lines.push(stream(format!("Successfully tagged {}\n", familiar(tag))));
    }
    lines
}

/// `POST /build/prune`: the build cache and the step images only it kept.
pub async fn prune(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let (removed, bytes) = ctx.core.prune_build_cache().await?;
    ok_json(&json!({
        "CachesDeleted": if removed.is_empty() { Value::Null } else { json!(removed) },
        "SpaceReclaimed": bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_ids_read_like_dockerd() {
        let step = render(&BuildEvent::Step {
            n: 1,
            total: 6,
            text: "FROM bb".into(),
        });
        assert_eq!(
            step,
            vec![
                json!({"stream": "Step 1/6 : FROM bb"}),
                json!({"stream": "\n"})
            ]
        );
        let done = render(&BuildEvent::Done(format!(
            "sha256:a3699261bc77{}",
            "0".repeat(52)
        )));
        assert_eq!(done, vec![json!({"stream": " ---> a3699261bc77\n"})]);
        let cached = json_line(&render(&BuildEvent::Cached)[0]);
        assert_eq!(&cached[..], b"{\"stream\":\" ---> Using cache\\n\"}\n");
    }

    #[test]
    fn buildkit_and_remote_contexts_are_refused() {
        let e = request(&Query::parse(Some("version=2"))).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        let e = request(&Query::parse(Some("remote=https%3A%2F%2Fx"))).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        let r = request(&Query::parse(Some(
            "t=a&t=b%3A1&buildargs=%7B%22X%22%3A%221%22%7D&nocache=1&target=s",
        )))
        .unwrap();
        assert_eq!(r.tags, vec!["a", "b:1"]);
        assert_eq!(r.build_args.get("X"), Some(&Some("1".to_string())));
        assert!(r.no_cache);
        assert_eq!(r.target.as_deref(), Some("s"));
    }
}
