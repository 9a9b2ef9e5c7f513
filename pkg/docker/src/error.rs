//! The Docker door's one error mapping: a core error kind becomes an HTTP
//! status and dockerd's `{"message": "..."}` body.

use berth_core::{Error, ErrorKind};
use hyper::StatusCode;

/// An answer other than success: a status and dockerd-worded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// dockerd's wording for a container reference that matches nothing.
    pub fn no_such_container(reference: &str) -> ApiError {
        ApiError::not_found(format!("No such container: {reference}"))
    }

    /// dockerd's wording for an image reference that matches nothing.
    pub fn no_such_image(reference: &str) -> ApiError {
        ApiError::not_found(format!("No such image: {reference}"))
    }
}

/// The mapping of docs/dev/architecture.md's error table: dockerd's own
/// (`errdefs` → HTTP) where it has the kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // dockerd has no kinds of its own for these: its 500.
        ErrorKind::DeadlineExceeded | ErrorKind::ResourceExhausted => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError::new(status_of(e.kind), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_dockerd_statuses() {
        let e: ApiError = Error::new(ErrorKind::AlreadyExists, "name in use").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.message, "name in use");
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(ErrorKind::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
