//! The one place where berth error kinds become gRPC status codes, and
//! where every message is bounded before it leaves berthd.

use berth_errdefs::{Error, ErrorKind};
use tonic::{Code, Status};

/// The longest quoted value a message keeps. Messages quote what the
/// caller sent (`{:?}`); a 10 KB hostname must not come back as 10 KB of
/// `grpc-message` metadata, which clients refuse as a transport error.
pub const MAX_QUOTED: usize = 128;
/// The longest message, whatever it holds (remote text, paths).
pub const MAX_MESSAGE: usize = 1024;

pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Conflict | ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::NotModified => Code::Ok,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status a caller sees; logged once here so every failed call leaves a
/// line (inside the call's span, which names the method). Rejected requests
/// are the caller's business: debug, not info.
pub fn status(e: Error) -> Status {
    let message = bounded(&e.message);
    match e.kind {
        ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => {
            tracing::error!(kind = %e.kind, "{message}")
        }
        _ => tracing::debug!(kind = %e.kind, "{message}"),
    }
    Status::new(code(e.kind), message)
}

/// `message` with every double-quoted value cut to [`MAX_QUOTED`] characters
/// (noting how long it was), and the whole cut to [`MAX_MESSAGE`].
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 16));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // Inside a quoted value (Rust `{:?}` escapes inner quotes as \").
        let mut kept = 0usize;
        let mut dropped = 0usize;
        let mut closed = false;
        while let Some(c) = chars.next() {
            let escaped = c == '\\';
            let piece: String = match (escaped, chars.peek()) {
                (true, Some(&n)) => {
                    chars.next();
                    ['\\', n].iter().collect()
                }
                _ => c.to_string(),
            };
            if !escaped && c == '"' {
                closed = true;
                break;
            }
            if kept < MAX_QUOTED {
                out.push_str(&piece);
                kept += 1;
            } else {
                dropped += piece.len();
            }
        }
        if dropped > 0 {
            out.push_str(&format!("…\" ({dropped} more bytes)"));
        } else if closed {
            out.push('"');
        }
    }
    if out.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = out.len();
        out.truncate(cut);
        out.push_str(&format!("… (message cut from {total} bytes)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_documented_code() {
        let table = [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::Conflict, Code::FailedPrecondition),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::NotModified, Code::Ok),
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::ResourceExhausted, Code::ResourceExhausted),
            (ErrorKind::Unauthenticated, Code::Unauthenticated),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::NotImplemented, Code::Unimplemented),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, want) in table {
            assert_eq!(code(kind), want, "{kind}");
        }
        let s = status(Error::invalid("bad reference"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad reference");
    }

    #[test]
    fn long_quoted_values_are_cut_and_say_so() {
        let host = "a".repeat(10_000);
        let s = status(Error::invalid(format!("hostname {host:?} is not valid")));
        assert!(s.message().len() < 300, "{} bytes", s.message().len());
        assert!(s
            .message()
            .starts_with(&format!("hostname \"{}", "a".repeat(MAX_QUOTED))));
        assert!(
            s.message().ends_with("…\" (9872 more bytes) is not valid"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn short_quotes_and_escapes_are_kept_exactly() {
        let m = format!("name {:?} and {:?}", "x\"y", "line\nbreak");
        assert_eq!(bounded(&m), m);
        assert_eq!(bounded("an \"unclosed quote"), "an \"unclosed quote");
    }

    #[test]
    fn long_unquoted_messages_are_cut() {
        let m = format!("registry said: {}", "é".repeat(5_000));
        let b = bounded(&m);
        assert!(b.len() <= MAX_MESSAGE + 64, "{}", b.len());
        assert!(b.ends_with(&format!("(message cut from {} bytes)", m.len())));
    }
}
