//! `GET /containers/{id}/logs`: the core's log lines framed as dockerd
//! frames them (multiplexed unless the container has a tty), optionally
//! prefixed with their RFC3339Nano time, in a chunked body without a
//! content type.

use berth_core::{LogOptions, LogStream};
use bytes::Bytes;
use hyper::Response;

use crate::clock::{parse_timestamp_ns, rfc3339_nano};
use crate::error::{ApiError, ApiResult};
use crate::hijack::{frame, STDERR, STDOUT};
use crate::http::{streamed, Body, Query};
use crate::router::Ctx;
use crate::view;

/// Lines queued between the reader and a slow client.
const QUEUE: usize = 64;

pub fn logs(ctx: &Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let container = view::find(&ctx.core, reference)?;
    let options = options(&ctx.query)?;
    let timestamps = ctx.query.flag("timestamps");
    let tty = container.record.config.tty;
    let mut reader = ctx.core.containers().logs(&container.record.id, options)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        while let Some(entry) = reader.next_entry().await {
            let mut payload = Vec::with_capacity(entry.bytes.len() + 32);
            if timestamps {
                payload.extend_from_slice(rfc3339_nano(entry.timestamp_ns).as_bytes());
                payload.push(b' ');
            }
            payload.extend_from_slice(&entry.bytes);
            let chunk = match (tty, entry.stream) {
                (true, _) => payload,
                (false, LogStream::Stdout) => frame(STDOUT, &payload),
                (false, LogStream::Stderr) => frame(STDERR, &payload),
            };
            // The client went away: stop reading.
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Response::new(streamed(chunks)))
}

fn options(query: &Query) -> ApiResult<LogOptions> {
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let time = |key: &str| -> ApiResult<Option<i64>> {
        match query.get(key) {
            None | Some("") | Some("0") => Ok(None),
            Some(v) => parse_timestamp_ns(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    };
    let tail = match query.get("tail") {
        None | Some("") | Some("all") => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for tail: {v:?}"
                )))
            }
        },
    };
    Ok(LogOptions {
        stdout,
        stderr,
        since_ns: time("since")?,
        until_ns: time("until")?,
        tail,
        follow: query.flag("follow"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_like_dockerd() {
        let o = options(&Query::parse(Some(
            "follow=1&stderr=1&stdout=1&tail=all&since=1796393304.5",
        )))
        .unwrap();
        assert!(o.follow && o.stdout && o.stderr);
        assert_eq!(o.tail, None);
        assert_eq!(o.since_ns, Some(1_796_393_304_500_000_000));
        let o = options(&Query::parse(Some("stdout=1&tail=3&since=0"))).unwrap();
        assert_eq!((o.tail, o.since_ns, o.stderr), (Some(3), None, false));
        let e = options(&Query::parse(Some("tail=3"))).unwrap_err();
        assert!(e.message.contains("at least one stream"));
        assert!(options(&Query::parse(Some("stdout=1&tail=x"))).is_err());
    }
}
