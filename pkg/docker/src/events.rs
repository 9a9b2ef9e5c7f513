//! `GET /events`: the core's event bus as dockerd's JSON lines
//! (events.txt, events-since-until.txt). Past events come from the bus's
//! history (`since`), live ones follow; with `until` the stream ends at
//! that time, at once when it is already past.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_core::events::Event;
use berth_core::{attr, Core, ObjectKind, Received};
use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use crate::clock::{now_ns, parse_timestamp_ns};
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::http::{json_line, json_stream, Body, Query};
use crate::view;

const EVENT_FILTERS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "label",
    "scope",
    "volume",
    "network",
    "daemon",
    "plugin",
    "node",
    "service",
    "secret",
    "config",
];

/// How many events wait for a slow client before the stream stops reading
/// the bus (the bus then counts the loss).
const CHANNEL: usize = 256;

/// `GET /events?since=&until=&filters=`.
pub fn events(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let filters = Filters::parse(query.get("filters"), EVENT_FILTERS)?;
    let since = timestamp(query, "since")?;
    let until = timestamp(query, "until")?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::bad_request(
                "`since` time must be before `until` time",
            ));
        }
    }
    let mut sub = core.events().subscribe(since);
    let core = core.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL);
    tokio::spawn(async move {
        loop {
            let wait = async {
                match until {
                    Some(u) => {
                        // Replayed events are queued already: drain them first.
                        let left = u.saturating_sub(now_ns()).max(0) as u64;
                        match sub.try_next() {
                            Some(r) => Some(r),
                            None if left == 0 => None,
                            None => tokio::time::timeout(Duration::from_nanos(left), sub.next())
                                .await
                                .ok()
                                .flatten(),
                        }
                    }
                    None => sub.next().await,
                }
            };
            // A client that went away ends the subscription at once, not
            // at the next event.
            let next = tokio::select! {
                next = wait => next,
                () = tx.closed() => break,
            };
            let event = match next {
                Some(Received::Event(e)) => e,
                Some(Received::Lagged(n)) => {
                    tracing::warn!("docker events: a slow client lost {n} events");
                    continue;
                }
                None => break,
            };
            if until.is_some_and(|u| event.at_ns > u) {
                break;
            }
            if let Some(line) = render(&core, &event, &filters) {
                if tx.send(json_line(&line)).await.is_err() {
                    break;
                }
            }
        }
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    Ok(json_stream(lines))
}

fn timestamp(query: &Query, key: &str) -> ApiResult<Option<i64>> {
    match query.get(key) {
        None | Some("") => Ok(None),
        Some(v) => parse_timestamp_ns(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
    }
}

/// One event in dockerd's shape, or `None` when the filters drop it (or
/// Docker has no such object: sandboxes are berth's own).
pub fn render(core: &Core, event: &Event, filters: &Filters) -> Option<Value> {
    if event.kind == ObjectKind::Sandbox {
        return None;
    }
    let mut attributes: BTreeMap<String, String> = event
        .attributes
        .iter()
        .filter(|(k, _)| k.as_str() != attr::OWNER && k.as_str() != attr::SANDBOX_ID)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if event.kind == ObjectKind::Container {
        // Kubernetes containers go by their dockershim names in docker.
        if let Ok(v) = view::find(core, &event.id) {
            attributes.insert(attr::NAME.to_string(), v.name);
        }
    }
    let kind = event.kind.as_str();
    let action = event.action.as_str();
    let name = attributes.get(attr::NAME).cloned().unwrap_or_default();
    let image = attributes.get(attr::IMAGE).cloned().unwrap_or_default();
    let keep = filters.any("type", |t| t == kind)
        && filters.any("event", |a| a == action)
        && filters.any("container", |c| {
            event.kind == ObjectKind::Container
                && (event.id.starts_with(c) || name == c.trim_start_matches('/'))
        })
        && filters.any("image", |i| {
            (event.kind == ObjectKind::Image && (event.id == i || name == i)) || image == i
        })
        && filters.labels_match(&attributes)
        && filters.any("scope", |s| s == "local");
    if !keep {
        return None;
    }
    let mut line = json!({});
    if matches!(event.kind, ObjectKind::Container | ObjectKind::Image) {
        // The pre-1.22 fields dockerd still writes for these two.
        line["status"] = json!(action);
        line["id"] = json!(event.id);
        if event.kind == ObjectKind::Container {
            line["from"] = json!(image);
        }
    }
    line["Type"] = json!(kind);
    line["Action"] = json!(action);
    line["Actor"] = json!({ "ID": event.id, "Attributes": attributes });
    line["scope"] = json!("local");
    line["time"] = json!(event.at_ns / 1_000_000_000);
    line["timeNano"] = json!(event.at_ns);
    Some(line)
}
