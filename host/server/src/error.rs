//! API errors, turned into responses in exactly one place.

use hyper::StatusCode;

/// An error answered to a client. Default is deny.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is not signed, badly signed, stale or replayed.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The signer may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The policy decision point denied the request, with its stable code.
    #[error("denied: {0}")]
    Denied(cleanroom_proto::Reason),
    /// The thing asked for does not exist (or the caller may not know it does).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request conflicts with current state (e.g. an old policy version).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// The run queue is full.
    #[error("busy: {0}")]
    Busy(String),
    /// State at rest was modified outside the enclave: the request fails closed.
    #[error("tampered state: {0}")]
    Tampered(String),
    /// Something failed inside the service.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Stable machine-readable type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Denied(_) => "denied",
            Self::NotFound(_) => "not-found",
            Self::BadRequest(_) => "bad-request",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too-large",
            Self::Busy(_) => "busy",
            Self::Tampered(_) => "tampered",
            Self::Internal(_) => "internal",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Tampered(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `{"type": ..., "message": ...}`, plus `code` for a policy denial.
    pub fn body(&self) -> cleanroom_proto::api::ErrorBody {
        cleanroom_proto::api::ErrorBody {
            kind: self.kind().into(),
            code: match self {
                Self::Denied(reason) => Some(reason.code),
                _ => None,
            },
            message: self.to_string(),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("storage: {e}"))
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        if matches!(self, Self::Internal(_)) {
            tracing::error!("{self}");
        } else {
            tracing::info!(kind = self.kind(), "refused: {self}");
        }
        crate::wire::typed_response(self.status(), &self.body()).map(axum::body::Body::new)
    }
}
