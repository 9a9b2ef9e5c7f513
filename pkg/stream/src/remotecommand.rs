//! The remotecommand protocol (exec and attach) over either transport:
//! versions, stream roles, terminal sizes and the final status, as
//! kubelet's `remotecommand` server and client-go's executor define them.

use std::future::Future;
use std::io;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::Process;

/// Protocol versions, newest first (the server's preference order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`: errors as text, no resize.
    V1,
    /// `v2.channel.k8s.io`: streams may be left out.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a `Status` JSON.
    V4,
    /// `v5.channel.k8s.io`: v4 plus closing stdin on WebSocket.
    V5,
}

pub const SUPPORTED: [Version; 5] = [
    Version::V5,
    Version::V4,
    Version::V3,
    Version::V2,
    Version::V1,
];

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "channel.k8s.io",
            Version::V2 => "v2.channel.k8s.io",
            Version::V3 => "v3.channel.k8s.io",
            Version::V4 => "v4.channel.k8s.io",
            Version::V5 => "v5.channel.k8s.io",
        }
    }

    pub fn from_name(name: &str) -> Option<Version> {
        SUPPORTED.into_iter().find(|v| v.name() == name.trim())
    }

    pub fn has_resize(self) -> bool {
        self >= Version::V3
    }
}

/// The first protocol the client offers that this server speaks, in the
/// client's order (kubelet's `httpstream.Handshake` picks the same way).
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Version> {
    offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .find_map(Version::from_name)
}

/// The names of every supported version, for error messages.
pub fn supported_names() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.name()).collect()
}

/// A place the server writes one kind of output to.
pub trait Sink: Send + Sync + 'static {
    fn write(&self, data: Bytes) -> crate::backend::BoxFuture<io::Result<()>>;
    fn close(&self) -> crate::backend::BoxFuture<io::Result<()>>;
}

/// The server's outputs for one command.
pub struct Outputs {
    pub stdout: Option<Box<dyn Sink>>,
    pub stderr: Option<Box<dyn Sink>>,
    pub error: Box<dyn Sink>,
}

/// What the error stream says at the end.
pub fn final_status(
    version: Version,
    outcome: &Result<i32, String>,
    cmd: &[String],
) -> Option<Bytes> {
    let text = match outcome {
        Ok(0) => None,
        Ok(code) => Some(format!(
            "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
        )),
        Err(message) => Some(message.clone()),
    };
    if version < Version::V4 {
        return text.map(Bytes::from);
    }
    let status = match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": text,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(Bytes::from(status.to_string()))
}

/// Longest resize message buffered while incomplete.
const MAX_RESIZE_MESSAGE: usize = 4096;

/// Terminal sizes from the resize stream: JSON objects (`{"Width":80,
/// "Height":24}`), one after another, split anywhere across frames.
#[derive(Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

impl ResizeDecoder {
    /// Feeds bytes; returns every complete size, in order.
    pub fn feed(&mut self, data: &[u8]) -> Vec<(u16, u16)> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut stream =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push((size.width, size.height));
                    consumed = stream.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                // Garbage: drop what we have rather than wedge the stream.
                Some(Err(_)) => {
                    consumed = self.pending.len();
                    break;
                }
                None => {
                    consumed = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        // A size is a few dozen bytes: an unfinished one this long is
        // garbage, not worth buffering without end.
        if self.pending.len() > MAX_RESIZE_MESSAGE {
            self.pending.clear();
        }
        sizes
    }
}

/// Runs `process` to the end against `outputs`: copies its output, waits
/// for its exit, writes the final status and closes everything. Returns
/// early (dropping, and so killing, the process) if `gone` resolves first:
/// the client went away.
pub async fn drive(
    mut process: Process,
    outputs: Outputs,
    version: Version,
    cmd: &[String],
    gone: impl Future<Output = ()>,
) {
    let copy = |rx: Option<mpsc::Receiver<Bytes>>, sink: Option<Box<dyn Sink>>| async move {
        let (Some(mut rx), Some(sink)) = (rx, sink) else {
            return;
        };
        while let Some(chunk) = rx.recv().await {
            if sink.write(chunk).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    };
    let stdout = copy(process.stdout.take(), outputs.stdout);
    let stderr = copy(process.stderr.take(), outputs.stderr);
    let finished = async {
        let ((), (), code) = tokio::join!(stdout, stderr, &mut process.exit);
        code
    };
    tokio::pin!(gone);
    let outcome = tokio::select! {
        code = finished => code.map_err(|e| e.to_string()),
        () = &mut gone => return,
    };
    if let Some(status) = final_status(version, &outcome, cmd) {
        let _ = outputs.error.write(status).await;
    }
    let _ = outputs.error.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_supported_choice() {
        assert_eq!(
            negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Version::V5)
        );
        assert_eq!(negotiate(["x", "v4.channel.k8s.io"]), Some(Version::V4));
        assert_eq!(
            negotiate(["v3.channel.k8s.io, v2.channel.k8s.io"]),
            Some(Version::V3)
        );
        assert_eq!(negotiate(["v9.channel.k8s.io"]), None);
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn statuses_follow_the_version() {
        let cmd = vec!["sh".to_string()];
        assert_eq!(
            final_status(Version::V4, &Ok(0), &cmd).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let failed: serde_json::Value =
            serde_json::from_slice(&final_status(Version::V5, &Ok(3), &cmd).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(final_status(Version::V2, &Ok(0), &cmd), None);
        assert!(
            String::from_utf8_lossy(&final_status(Version::V3, &Ok(2), &cmd).unwrap())
                .contains("exit code 2")
        );
    }

    #[test]
    fn resize_messages_split_anywhere_are_decoded() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(br#"{"Width":80,"He"#), vec![]);
        assert_eq!(
            d.feed(b"ight\":24}\n{\"Width\":100,\"Height\":30}\n"),
            vec![(80, 24), (100, 30)]
        );
        assert_eq!(d.feed(b"not json"), vec![]);
        assert_eq!(d.feed(br#"{"Width":1,"Height":2}"#), vec![(1, 2)]);
    }

    #[test]
    fn an_endless_resize_message_is_not_buffered_without_bound() {
        let mut d = ResizeDecoder::default();
        d.feed(br#"{"Width":1"#);
        for _ in 0..1000 {
            assert_eq!(d.feed(&[b'0'; 1024]), vec![]);
            assert!(
                d.pending.len() <= MAX_RESIZE_MESSAGE + 1024,
                "{}",
                d.pending.len()
            );
        }
        // Whatever came before, a well-formed size then still gets through.
        assert_eq!(d.feed(br#"{"Width":3,"Height":4}"#), vec![(3, 4)]);
    }
}
