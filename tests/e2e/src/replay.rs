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
    let answer = crate::scrape::parse_answer(&reply);
    assert_eq!(
        answer.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    Recorded {
        api_version: answer
            .header("api-version")
            .expect("the daemon names its API version")
            .to_string(),
        body: answer.body,
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
        let (content_type, body): (&str, &[u8]) = if request.contains(" /_ping ") {
            ("text/plain; charset=utf-8", b"OK")
        } else {
            ("application/json", &recorded.body)
        };
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\n{common}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        // A HEAD answer announces the body's length but sends none.
        if !request.starts_with("HEAD") {
            reply.extend_from_slice(body);
        }
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}
