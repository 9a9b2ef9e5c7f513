//! Attach: a running container's stdio through its monitor's attach socket
//! (`<state>/c/<id>/attach.sock`). The framing, `[kind: u8][len: u32
//! big-endian][payload]` both ways, is documented with the monitor in
//! `cmd/berth-shim/src/main.rs`.

use berth_errdefs::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::model::ContainerRecord;
use crate::{monitor, Containers};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const CLOSE_STDIN: u8 = 4;
const HEAD: usize = 5;

/// Stdin goes out in frames of at most this much (the monitor takes up to
/// 1 MiB per frame).
const STDIN_FRAME: usize = 32 * 1024;
/// The monitor's output frames hold one read (32 KiB); a longer length
/// means the stream is not what we think it is.
const MAX_FRAME: usize = 1024 * 1024;
/// Room made in the receive buffer before each read.
const READ_AHEAD: usize = 32 * 1024;

/// What an attached client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutput {
    Stdout(Vec<u8>),
    /// Never for a tty container: its output is all stdout.
    Stderr(Vec<u8>),
    /// The container exited with this code (as CRI reports it); the monitor
    /// then closes the connection.
    Exited(i32),
}

/// A connection to a running container's monitor. Only output written
/// after it connected arrives (the log has the rest).
pub struct Attached {
    /// The container has a tty: output is all stdout, resize applies.
    pub tty: bool,
    /// The container was created with stdin open; otherwise what is written
    /// is dropped by the monitor.
    pub stdin: bool,
    stream: UnixStream,
    frames: Frames,
}

/// The receiving half of an [`Attached`].
pub struct AttachReader {
    half: OwnedReadHalf,
    frames: Frames,
}

/// The sending half of an [`Attached`]. Dropping it tells the monitor this
/// client sends no more, like [`AttachWriter::close_stdin`]; the reader
/// still gets output.
pub struct AttachWriter {
    half: OwnedWriteHalf,
}

impl Containers {
    /// Connects to the created or running container's monitor. Errors:
    /// NotFound (no such container), FailedPrecondition (exited).
    /// A created container can be attached before it starts (`docker run`
    /// does): its monitor is already there, so no output is missed.
    pub async fn attach(&self, id: &str) -> Result<Attached> {
        let record = self.status(id)?;
        if record.state != crate::ContainerState::Created {
            record.state.check_running(id)?;
        }
        let path = monitor::attach_socket(&self.container_state_dir(id));
        let stream = UnixStream::connect(&path).await.map_err(|e| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!("cannot attach to container {id}: its monitor does not answer: {e}"),
            )
        })?;
        Ok(Attached {
            tty: record.config.tty,
            stdin: record.config.stdin,
            stream,
            frames: Frames::default(),
        })
    }

    /// Sets the size of a running tty container's terminal.
    pub async fn resize_tty(&self, id: &str, cols: u16, rows: u16) -> Result<()> {
        let record = self.running_container(id)?;
        if !record.config.tty {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} has no tty to resize"),
            ));
        }
        let dir = self.container_state_dir(id);
        let (cid, command) = (id.to_string(), format!("resize {cols} {rows}"));
        let monitors = self.monitors.clone();
        tokio::task::spawn_blocking(move || monitors.control(&dir, &cid, &command))
            .await
            .map_err(|e| Error::internal(format!("resize task: {e}")))?
    }

    fn running_container(&self, id: &str) -> Result<ContainerRecord> {
        let record = self.status(id)?;
        record.state.check_running(id)?;
        Ok(record)
    }
}

impl Attached {
    /// The next output; `None` once the monitor closed the connection.
    /// Cancel-safe: a partly received frame waits for the next call.
    pub async fn next_output(&mut self) -> Option<AttachOutput> {
        self.frames.next(&mut self.stream).await
    }

    /// Separate halves, so that a server can read and write concurrently.
    pub fn split(self) -> (AttachReader, AttachWriter) {
        let (read, write) = self.stream.into_split();
        (
            AttachReader {
                half: read,
                frames: self.frames,
            },
            AttachWriter { half: write },
        )
    }
}

impl AttachReader {
    /// As [`Attached::next_output`].
    pub async fn next_output(&mut self) -> Option<AttachOutput> {
        self.frames.next(&mut self.half).await
    }
}

impl AttachWriter {
    /// Sends bytes to the container's stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(STDIN_FRAME) {
            self.half.write_all(&frame(STDIN, chunk)).await?;
        }
        Ok(())
    }

    /// Tells the monitor this client is done with stdin; with `stdin_once`
    /// the container's stdin then closes if this client was its first user.
    pub async fn close_stdin(&mut self) -> std::io::Result<()> {
        self.half.write_all(&frame(CLOSE_STDIN, &[])).await
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + payload.len());
    out.push(kind);
    // Callers keep payloads far below 4 GiB.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Received bytes not yet returned as frames.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

/// What the buffer holds at its front.
enum Parsed {
    Output(AttachOutput),
    /// A frame of a kind this side does not know: skipped.
    Skipped,
    Incomplete,
    Malformed,
}

impl Frames {
    async fn next(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> Option<AttachOutput> {
        loop {
            match self.parse() {
                Parsed::Output(out) => return Some(out),
                Parsed::Skipped => continue,
                Parsed::Malformed => {
                    tracing::warn!("malformed frame from a container monitor; detaching");
                    return None;
                }
                Parsed::Incomplete => {}
            }
            self.buf.reserve(READ_AHEAD);
            // read_buf is cancel-safe: bytes read are in `buf`.
            match reader.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn parse(&mut self) -> Parsed {
        let Some(&[kind, a, b, c, d]) = self.buf.get(..HEAD) else {
            return Parsed::Incomplete;
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > MAX_FRAME {
            return Parsed::Malformed;
        }
        let Some(payload) = self.buf.get(HEAD..HEAD + len) else {
            return Parsed::Incomplete;
        };
        let parsed = match kind {
            STDOUT => Parsed::Output(AttachOutput::Stdout(payload.to_vec())),
            STDERR => Parsed::Output(AttachOutput::Stderr(payload.to_vec())),
            EXIT => match std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(code) => Parsed::Output(AttachOutput::Exited(code)),
                None => Parsed::Malformed,
            },
            _ => Parsed::Skipped,
        };
        self.buf.drain(..HEAD + len);
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_across_reads_and_halves() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut attached = Attached {
            tty: false,
            stdin: true,
            stream: ours,
            frames: Frames::default(),
        };
        let mut bytes = frame(STDOUT, b"hello");
        bytes.extend(frame(9, b"from the future"));
        bytes.extend(frame(STDERR, b""));
        bytes.extend(frame(EXIT, b"137"));
        let (first, rest) = bytes.split_at(7);
        theirs.write_all(first).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(out) = attached.next_output().await {
                got.push(out);
            }
            got
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        theirs.write_all(rest).await.unwrap();
        drop(theirs);
        assert_eq!(
            reader.await.unwrap(),
            vec![
                AttachOutput::Stdout(b"hello".to_vec()),
                AttachOutput::Stderr(Vec::new()),
                AttachOutput::Exited(137),
            ]
        );
    }

    #[tokio::test]
    async fn writer_frames_stdin_and_close() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let attached = Attached {
            tty: true,
            stdin: true,
            stream: ours,
            frames: Frames::default(),
        };
        let (mut reader, mut writer) = attached.split();
        let big = vec![b'x'; STDIN_FRAME + 3];
        writer.write_stdin(b"").await.unwrap();
        writer.write_stdin(&big).await.unwrap();
        writer.close_stdin().await.unwrap();
        drop(writer);
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.unwrap();
        let mut want = frame(STDIN, &big[..STDIN_FRAME]);
        want.extend(frame(STDIN, b"xxx"));
        want.extend(frame(CLOSE_STDIN, b""));
        assert_eq!(sent, want);
        // A malformed stream ends the output.
        theirs.write_all(&[STDOUT, 0xff, 0, 0, 0]).await.unwrap();
        assert_eq!(reader.next_output().await, None);
    }
}
