//! The one place where berth error kinds become gRPC status codes.

use berth_errdefs::{Error, ErrorKind};
use tonic::{Code, Status};

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
/// line (inside the call's span, which names the method).
pub fn status(e: Error) -> Status {
    match e.kind {
        ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => {
            tracing::error!(kind = %e.kind, "{}", e.message)
        }
        _ => tracing::info!(kind = %e.kind, "{}", e.message),
    }
    Status::new(code(e.kind), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_codes() {
        assert_eq!(code(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(code(ErrorKind::Unavailable), Code::Unavailable);
        let s = status(Error::invalid("bad reference"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad reference");
    }
}
