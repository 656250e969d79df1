//! Errors as RFC 9457 problem details (`application/problem+json`): one place maps each kind
//! to its status.

use crate::wire::HuntError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// Malformed request: bad JSON (with its position), bad parameters.
    BadRequest(String),
    /// The hunt is not valid: every problem with its line and column.
    InvalidHunt(Vec<HuntError>),
    Unauthorized(String),
    Forbidden(String),
    /// Also for other owners' jobs: a researcher cannot tell them from missing ones.
    NotFound(String),
    Conflict(String),
    TooLarge(usize),
    UnsupportedMediaType,
    /// Intake is closed for now (backlog too large): try again after the given seconds.
    Busy {
        detail: String,
        retry_after: u64,
    },
    /// The database cannot be reached: try again.
    Unavailable(String),
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            StoreError::NotReady(m) => ApiError::Unavailable(m),
            StoreError::Closed(detail) => ApiError::Busy {
                detail,
                retry_after: 60,
            },
            e if e.is_transient() => ApiError::Unavailable(sluice_core::error_line(&e)),
            e => ApiError::Internal(sluice_core::error_line(&e)),
        }
    }
}

impl ApiError {
    /// Whether asking again later may succeed (the database, the checks or intake are busy
    /// or away) rather than the request itself being refused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Busy { .. } | ApiError::Unavailable(_) | ApiError::Internal(_)
        )
    }

    /// What went wrong, in one line (an invalid hunt's problems with their positions).
    pub fn detail(&self) -> String {
        match self {
            ApiError::InvalidHunt(errors) => errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            e => e.parts().2,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        use ApiError::*;
        match self {
            BadRequest(m) => (StatusCode::BAD_REQUEST, "bad-request", m.clone()),
            InvalidHunt(errors) => (
                StatusCode::BAD_REQUEST,
                "invalid-hunt",
                format!("the hunt has {} problem(s)", errors.len()),
            ),
            Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            NotFound(m) => (StatusCode::NOT_FOUND, "not-found", m.clone()),
            Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            TooLarge(n) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the request body is over the {n}-byte limit"),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as Content-Type: application/json".into(),
            ),
            Busy { detail, .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy", detail.clone()),
            Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
            Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, detail) = self.parts();
        if status.is_server_error() && !matches!(self, ApiError::Busy { .. }) {
            tracing::warn!(status = status.as_u16(), %detail, "request failed");
        }
        let mut body = serde_json::json!({
            "type": format!("urn:sluice:problem:{kind}"),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::InvalidHunt(errors) = &self {
            body["errors"] = serde_json::to_value(errors).unwrap_or_default();
        }
        let mut resp = (status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Unauthorized(_) => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Busy { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}
