//! Docker's JSON progress streams (pull, push): one JSON message a line,
//! with per-layer `progressDetail`, and an error mid-stream as
//! `{"errorDetail":{"message":…},"error":…}`, as the CLI's jsonmessage
//! renders them.
//!
//! An operation that fails before it reported anything worth showing is
//! answered as a plain error (status and `{"message"}`), as dockerd does
//! for a pull of a missing image: headers are sent only once the stream
//! has something to say.

use std::future::Future;

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::http::{json_line, json_stream, Body};

/// Reports in flight between the operation and the stream.
const DEPTH: usize = 64;

/// Runs `op` with a report channel and answers with its stream: `render`
/// turns each report into lines, the operation's own result adds the last
/// ones (or the error line). Reports for which `holds` is true are kept
/// back until a report that is not arrives, so that a failure before any
/// of those is a plain error answer.
pub async fn respond<P, Fut>(
    op: impl FnOnce(mpsc::Sender<P>) -> Fut,
    holds: fn(&P) -> bool,
    render: fn(&P) -> Vec<Value>,
) -> ApiResult<Response<Body>>
where
    P: Send + 'static,
    Fut: Future<Output = ApiResult<Vec<Value>>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<P>(DEPTH);
    let task = tokio::spawn(op(tx));
    let mut held = Vec::new();
    let first = loop {
        match rx.recv().await {
            Some(p) if holds(&p) => held.push(p),
            other => break other,
        }
    };
    let finish = |r: Result<ApiResult<Vec<Value>>, tokio::task::JoinError>| match r {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(format!("operation failed: {e}"))),
    };
    let (out, lines) = mpsc::channel::<Bytes>(DEPTH);
    let Some(first) = first else {
        // Nothing but held reports: the operation is over.
        let last = finish(task.await)?;
        let lines_out: Vec<Value> = held.iter().flat_map(render).chain(last).collect();
        tokio::spawn(async move { send_all(&out, lines_out).await });
        return Ok(json_stream(receive(lines)));
    };
    let opening: Vec<Value> = held.iter().chain(Some(&first)).flat_map(render).collect();
    drop((held, first));
    tokio::spawn(async move {
        send_all(&out, opening).await;
        // Read to the end even when the client left: the operation waits
        // for room otherwise.
        while let Some(p) = rx.recv().await {
            send_all(&out, render(&p)).await;
        }
        match finish(task.await) {
            Ok(last) => send_all(&out, last).await,
            Err(e) => send_all(&out, vec![error_message(&e.message)]).await,
        }
    });
    Ok(json_stream(receive(lines)))
}

async fn send_all(out: &mpsc::Sender<Bytes>, values: Vec<Value>) {
    for v in values {
        let _ = out.send(json_line(&v)).await;
    }
}

fn receive(rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> + Send + Sync {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// An error in the middle of a stream.
pub fn error_message(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

/// `{"status": …}`.
pub fn status(text: impl Into<String>) -> Value {
    json!({ "status": text.into() })
}

/// A layer's state with no byte count.
pub fn layer(id: &str, status: &str) -> Value {
    json!({"status": status, "progressDetail": {}, "id": id})
}

/// A layer's byte count, with the bar the CLI shows when it cannot draw
/// its own.
pub fn layer_bytes(id: &str, status: &str, current: u64, total: u64) -> Value {
    json!({
        "status": status,
        "progressDetail": {"current": current, "total": total},
        "progress": bar(current, total),
        "id": id,
    })
}

/// jsonmessage's progress text: a 50-wide bar and the counts.
fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let filled = ((current.min(total) as f64 / total as f64) * 50.0) as usize;
    let arrow = if filled < 50 {
        format!("{}>{}", "=".repeat(filled), " ".repeat(49 - filled))
    } else {
        format!("{}>", "=".repeat(50))
    };
    format!("[{arrow}] {:>8}/{}", human_size(current), human_size(total))
}

/// go-units' `HumanSize`: decimal units, four significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v < 10.0 => 3,
        v if v < 100.0 => 2,
        v if v < 1000.0 => 1,
        _ => 0,
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_go_units() {
        assert_eq!(human_size(168), "168B");
        assert_eq!(human_size(2560), "2.56kB");
        assert_eq!(human_size(3584), "3.584kB");
        assert_eq!(human_size(6_776_289), "6.776MB");
        assert_eq!(human_size(0), "0B");
    }

    #[test]
    fn bars_fill_to_the_count() {
        assert_eq!(
            bar(168, 168),
            format!("[{}>]     168B/168B", "=".repeat(50))
        );
        assert!(bar(0, 10).starts_with("[>"));
    }
}
