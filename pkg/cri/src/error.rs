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

    /// Every kind, once. `documented` below has no wildcard arm, so a new
    /// kind stops this module compiling until it is listed with its code.
    const ALL: [ErrorKind; 13] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::NotModified,
        ErrorKind::InvalidArgument,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotImplemented,
        ErrorKind::Internal,
    ];

    /// The code each kind must become, with its place in `ALL`.
    fn documented(kind: ErrorKind) -> (usize, Code) {
        match kind {
            ErrorKind::NotFound => (0, Code::NotFound),
            ErrorKind::AlreadyExists => (1, Code::AlreadyExists),
            ErrorKind::Conflict => (2, Code::FailedPrecondition),
            ErrorKind::NotModified => (3, Code::Ok),
            ErrorKind::InvalidArgument => (4, Code::InvalidArgument),
            ErrorKind::FailedPrecondition => (5, Code::FailedPrecondition),
            ErrorKind::Unavailable => (6, Code::Unavailable),
            ErrorKind::DeadlineExceeded => (7, Code::DeadlineExceeded),
            ErrorKind::ResourceExhausted => (8, Code::ResourceExhausted),
            ErrorKind::Unauthenticated => (9, Code::Unauthenticated),
            ErrorKind::PermissionDenied => (10, Code::PermissionDenied),
            ErrorKind::NotImplemented => (11, Code::Unimplemented),
            ErrorKind::Internal => (12, Code::Internal),
        }
    }

    #[test]
    fn every_kind_maps_to_its_documented_code() {
        for (i, kind) in ALL.into_iter().enumerate() {
            let (place, want) = documented(kind);
            assert_eq!(place, i, "{kind} is listed out of place or twice");
            assert_eq!(code(kind), want, "{kind}");
            // Through `status`, with the message as it was.
            let s = status(Error::new(kind, format!("object {kind} failed")));
            assert_eq!(s.code(), want, "{kind}");
            assert_eq!(s.message(), format!("object {kind} failed"));
        }
        let s = status(Error::invalid("bad reference"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad reference");
    }

    #[test]
    fn io_errors_keep_their_kind_on_the_wire() {
        use std::io;
        for (io_kind, want) in [
            (io::ErrorKind::NotFound, Code::NotFound),
            (io::ErrorKind::AlreadyExists, Code::AlreadyExists),
            (io::ErrorKind::PermissionDenied, Code::PermissionDenied),
            (io::ErrorKind::Other, Code::Internal),
        ] {
            let e = Error::from(io::Error::new(io_kind, "x")).context("open /run/berth/x");
            let s = status(e);
            assert_eq!(s.code(), want, "{io_kind:?}");
            assert_eq!(s.message(), "open /run/berth/x: x");
        }
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

    #[test]
    fn a_quoted_value_at_the_limit_is_kept_and_one_more_is_cut() {
        let at = "q".repeat(MAX_QUOTED);
        let m = format!("name {at:?} taken");
        assert_eq!(bounded(&m), m);
        let over = "q".repeat(MAX_QUOTED + 1);
        assert_eq!(
            bounded(&format!("name {over:?} taken")),
            format!("name \"{at}…\" (1 more bytes) taken")
        );
    }

    #[test]
    fn quoted_values_count_characters_and_report_bytes() {
        // 200 two-byte characters: 128 kept, 72 dropped (144 bytes).
        let v = "é".repeat(200);
        let b = bounded(&format!("label {v:?}"));
        assert_eq!(
            b,
            format!("label \"{}…\" (144 more bytes)", "é".repeat(MAX_QUOTED))
        );
        // An escaped quote is one character and does not end the value.
        let v = format!("{}\"{}", "a".repeat(100), "b".repeat(100));
        let b = bounded(&format!("{v:?} and \"short\""));
        assert!(
            b.starts_with(&format!("\"{}\\\"{}…\"", "a".repeat(100), "b".repeat(27))),
            "{b}"
        );
        assert!(b.ends_with("(73 more bytes) and \"short\""), "{b}");
    }

    #[test]
    fn every_quoted_value_is_cut_on_its_own() {
        let (a, b) = ("a".repeat(500), "b".repeat(300));
        let out = bounded(&format!("{a:?} vs {b:?}"));
        assert_eq!(
            out,
            format!(
                "\"{}…\" (372 more bytes) vs \"{}…\" (172 more bytes)",
                "a".repeat(MAX_QUOTED),
                "b".repeat(MAX_QUOTED)
            )
        );
        // An unclosed long value is cut too (and closed by the marker).
        let out = bounded(&format!("path \"{}", "c".repeat(1000)));
        assert!(out.ends_with("…\" (872 more bytes)"), "{out}");
    }

    #[test]
    fn a_message_at_the_limit_is_kept_and_any_message_is_bounded() {
        let at = "m".repeat(MAX_MESSAGE);
        assert_eq!(bounded(&at), at);
        let over = "m".repeat(MAX_MESSAGE + 1);
        assert_eq!(
            bounded(&over),
            format!("{at}… (message cut from {} bytes)", MAX_MESSAGE + 1)
        );
        // Many short quoted values: each under the quote limit, the whole
        // still bounded, and no character split.
        let many = (0..100)
            .map(|i| format!("{:?}", format!("ø{i}").repeat(10)))
            .collect::<Vec<_>>()
            .join(", ");
        let out = bounded(&many);
        assert!(out.len() <= MAX_MESSAGE + 64, "{} bytes", out.len());
        assert!(out.ends_with(&format!("(message cut from {} bytes)", many.len())));
        assert_eq!(status(Error::internal(many)).message(), out);
    }
}
