//! `GET /containers/{id}/logs`: the core's log lines framed as dockerd
//! frames them (multiplexed unless the container has a tty), optionally
//! prefixed with their RFC3339Nano time, in a chunked body without a
//! content type.

use berth_core::{LogEntry, LogOptions, LogStream};
use bytes::Bytes;
use hyper::Response;

use crate::clock::{parse_timestamp_ns, rfc3339_nano};
use crate::error::{ApiError, ApiResult};
use crate::hijack::{frame_header, STDERR, STDOUT};
use crate::http::{streamed, Body, Query};
use crate::router::Ctx;
use crate::view;

/// Chunks queued between the reader and a slow client.
const QUEUE: usize = 16;
/// A chunk is cut once it holds this much: the lines one read of the file
/// gave go out together, not one write (and one client read) per line.
const CHUNK: usize = 64 * 1024;

pub fn logs(ctx: &Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let container = view::find(&ctx.core, reference)?;
    let options = options(&ctx.query)?;
    let timestamps = ctx.query.flag("timestamps");
    let tty = container.record.config.tty;
    let mut reader = ctx.core.containers().logs(&container.record.id, options)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        while let Some(entry) = reader.next_entry().await {
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut next = Some(entry);
            while let Some(entry) = next {
                append(&mut chunk, &entry, tty, timestamps);
                next = match chunk.len() < CHUNK {
                    true => reader.next_ready(),
                    false => None,
                };
            }
            // The client went away: stop reading.
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Response::new(streamed(chunks)))
}

/// One line as dockerd sends it: optionally after its time, framed
/// unless the container has a tty.
fn append(chunk: &mut Vec<u8>, entry: &LogEntry, tty: bool, timestamps: bool) {
    let time = timestamps.then(|| rfc3339_nano(entry.timestamp_ns) + " ");
    let time = time.as_deref().unwrap_or("").as_bytes();
    if !tty {
        let stream = match entry.stream {
            LogStream::Stdout => STDOUT,
            LogStream::Stderr => STDERR,
        };
        chunk.extend_from_slice(&frame_header(stream, time.len() + entry.bytes.len()));
    }
    chunk.extend_from_slice(time);
    chunk.extend_from_slice(&entry.bytes);
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
    fn lines_are_framed_one_after_another_in_a_chunk() {
        let line = |stream, bytes: &[u8]| LogEntry {
            stream,
            timestamp_ns: 1_796_393_304_500_000_000,
            bytes: bytes.to_vec(),
        };
        let mut chunk = Vec::new();
        append(&mut chunk, &line(LogStream::Stdout, b"a\n"), false, false);
        append(&mut chunk, &line(LogStream::Stderr, b"bc\n"), false, false);
        assert_eq!(chunk, b"\x01\0\0\0\0\0\0\x02a\n\x02\0\0\0\0\0\0\x03bc\n");

        let mut chunk = Vec::new();
        append(&mut chunk, &line(LogStream::Stdout, b"a\n"), true, true);
        let time = rfc3339_nano(1_796_393_304_500_000_000);
        assert_eq!(chunk, format!("{time} a\n").into_bytes());
    }

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
