//! One-time URLs: the CRI `Exec`/`Attach`/`PortForward` calls store what
//! was asked under a random token, and the streaming server takes it out
//! once. Tokens expire, like kubelet's request cache, so an unused URL is
//! worthless after a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Exec {
        container_id: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Attach {
        container_id: String,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    PortForward {
        sandbox_id: String,
    },
}

impl Request {
    /// The URL path segment the request is served under.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}

/// kubelet's default; long enough for any client to connect.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Bounds the memory a flood of unused requests can take.
const MAX_PENDING: usize = 4096;

pub struct Tokens {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, Request)>>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `request` and returns its fresh token (32 hex digits from
    /// the kernel's random source), or `None` when too many are pending.
    pub fn insert(&self, request: Request) -> Option<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let token = random_hex(16);
        pending.insert(token.clone(), (now, request));
        Some(token)
    }

    /// Takes the request of `token` out: a second use finds nothing, and
    /// neither does an expired token or one for another kind of request.
    pub fn take(&self, token: &str, kind: &str) -> Option<Request> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (at, request) = pending.remove(token)?;
        (at.elapsed() < self.ttl && request.kind() == kind).then_some(request)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom(2) cannot fail for small buffers on Linux >= 3.17.
    // SAFETY: writes at most buf.len() bytes into buf.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> Request {
        Request::PortForward {
            sandbox_id: "p".into(),
        }
    }

    #[test]
    fn a_token_is_used_once_for_its_own_kind() {
        let tokens = Tokens::new(TOKEN_TTL);
        let a = tokens.insert(forward()).unwrap();
        let b = tokens.insert(forward()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(tokens.take(&a, "exec"), None, "wrong kind");
        assert_eq!(tokens.take(&b, "portforward"), Some(forward()));
        assert_eq!(tokens.take(&b, "portforward"), None, "used");
        assert_eq!(tokens.take("nope", "portforward"), None);
    }

    #[test]
    fn tokens_expire() {
        let tokens = Tokens::new(Duration::from_millis(1));
        let a = tokens.insert(forward()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tokens.take(&a, "portforward"), None);
    }
}
