//! A benchmark floor for listings: a unix socket that answers the docker
//! CLI with a reply recorded from a real daemon, doing no work of its own.
//! `docker ps -a` against it costs what the CLI itself spends (start-up,
//! the round trips, decoding and printing the rows), so a daemon's own
//! part of `ps` is its time minus this one's.
//!
//! Only what `docker ps` sends is answered: `HEAD`/`GET /_ping` and
//! `GET` of the recorded path, on keep-alive connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A daemon's reply to one `GET`, as recorded.
#[derive(Clone)]
pub struct Recorded {
    /// The API version the daemon announced (`Api-Version`).
    pub api_version: String,
    pub body: Vec<u8>,
}

/// Sends `GET path` to the daemon at `socket` and keeps its reply.
pub fn record(socket: &Path, path: &str) -> Recorded {
    let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP reply");
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = reply[split + 4..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Recorded {
        api_version: header("api-version").expect("the daemon names its API version"),
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A socket serving one recorded reply until dropped.
pub struct Replay {
    socket: PathBuf,
}

impl Replay {
    /// Serves `recorded` for `GET` of any path under the socket `socket`.
    pub fn serve(socket: &Path, recorded: Recorded) -> Replay {
        let listener = UnixListener::bind(socket).expect("bind the replay socket");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                std::thread::spawn(move || answer(stream, &recorded));
            }
        });
        Replay {
            socket: socket.to_path_buf(),
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        // The accept loop ends with the process; the socket file goes now.
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn answer(stream: UnixStream, recorded: &Recorded) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        // Headers to the blank line; the CLI's GET and HEAD have no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let common = format!(
            "Api-Version: {}\r\nOstype: linux\r\nDocker-Experimental: false\r\n",
            recorded.api_version
        );
        let reply = if request.contains(" /_ping ") {
            let body: &[u8] = if request.starts_with("HEAD") {
                b""
            } else {
                b"OK"
            };
            let mut r = format!(
                "HTTP/1.1 200 OK\r\n{common}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                2
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        } else {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\n{common}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                recorded.body.len()
            )
            .into_bytes();
            r.extend_from_slice(&recorded.body);
            r
        };
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}
