//! The one place errors become HTTP.
//!
//! Every handler returns `Result<_, ApiError>`; [`ApiError`] maps each variant once to a status
//! and a stable `code`, and renders the JSON body `{"error", "code", "details"}`. Internal errors
//! never leak their text to clients: they are logged with the request span and answered with a
//! generic message.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use monsys_proto::ErrorBody;
use monsys_proto::settings::FieldError;

/// Errors a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (bad JSON, wrong types, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed JSON of the wrong shape (wrong types, missing or unknown fields).
    #[error("{0}")]
    InvalidBody(String),
    /// Well-formed but invalid values.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// No route or no such resource.
    #[error("{0}")]
    NotFound(String),
    /// Method not allowed on this route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `If-Match` did not match the current revision.
    #[error("revision mismatch: current revision is {current}")]
    RevisionMismatch {
        /// Current revision of the resource.
        current: u64,
    },
    /// Conflicting state (e.g. a one-time action already done).
    #[error("{0}")]
    Conflict(String),
    /// Body over the size limit.
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Unsupported `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The cluster cannot serve the request right now (no leader, churn, forwarding failed);
    /// safe to retry after the given delay.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// Suggested delay before retrying.
        retry_after: Duration,
    },
    /// The outcome is unknown (e.g. the leader was lost after the write was proposed).
    #[error("{0}")]
    Indeterminate(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A key is pinned for the agent and the batch carries no signature.
    #[error("X-Monsys-Signature is required: this agent has a pinned signing key")]
    SignatureMissing,
    /// The batch signature does not verify.
    #[error("{0}")]
    SignatureInvalid(String),
    /// A captured or stale batch was replayed.
    #[error("{0}")]
    Replay(String),
    /// A used `seq` came with a different body.
    #[error("{0}")]
    SeqConflict(String),
    /// The host registered again with a different signing key than the pinned one.
    #[error("this host is registered with a different signing key; an admin must clear the pin first")]
    SigningKeyMismatch,
    /// Too many requests for this key; retry after the delay.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
        /// The limit, requests per window.
        limit: u32,
    },
    /// A bug or a storage failure; details only in the logs.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The same failure for each of several requests that shared one outcome (a group or
    /// batch commit).
    pub fn duplicate(&self) -> ApiError {
        match self {
            ApiError::Unavailable { reason, retry_after } => {
                ApiError::Unavailable { reason: reason.clone(), retry_after: *retry_after }
            }
            ApiError::Indeterminate(m) => ApiError::Indeterminate(m.clone()),
            ApiError::BadRequest(m) => ApiError::BadRequest(m.clone()),
            other => ApiError::Internal(other.to_string()),
        }
    }

    /// A retryable 503 with a one-second `Retry-After`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ApiError::Unavailable { reason: reason.into(), retry_after: Duration::from_secs(1) }
    }

    /// Status and stable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::RevisionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "revision_mismatch"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Indeterminate(_) => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::SignatureMissing => (StatusCode::FORBIDDEN, "signature_missing"),
            ApiError::SignatureInvalid(_) => (StatusCode::FORBIDDEN, "signature_invalid"),
            ApiError::Replay(_) => (StatusCode::FORBIDDEN, "replay_rejected"),
            ApiError::SeqConflict(_) => (StatusCode::CONFLICT, "seq_conflict"),
            ApiError::SigningKeyMismatch => (StatusCode::CONFLICT, "signing_key_mismatch"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            ApiError::Validation(fields) => Some(serde_json::json!({ "fields": fields })),
            ApiError::RevisionMismatch { current } => {
                Some(serde_json::json!({ "current_revision": current }))
            }
            ApiError::PayloadTooLarge { limit } => Some(serde_json::json!({ "limit_bytes": limit })),
            ApiError::Unavailable { retry_after, .. } | ApiError::RateLimited { retry_after, .. } => {
                Some(serde_json::json!({ "retry_after_secs": retry_after.as_secs().max(1) }))
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%status, code, error = %self, "request failed");
        } else {
            tracing::debug!(%status, code, error = %self, "request refused");
        }
        let message = match &self {
            ApiError::Internal(_) => "internal error".to_string(),
            e => e.to_string(),
        };
        let body = ErrorBody { error: message, code: code.to_string(), details: self.details() };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::Unavailable { retry_after, .. } | ApiError::RateLimited { retry_after, .. } = &self {
            let secs = retry_after.as_secs().max(1).to_string();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&secs).expect("digits"));
        }
        if let ApiError::PayloadTooLarge { .. } = &self {
            // the rest of the body is never read, so the connection cannot carry another
            // request: say so, or a keep-alive client sends its next request into the close
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited { limit, retry_after } = &self {
            let h = resp.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(*limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("x-ratelimit-reset", HeaderValue::from(retry_after.as_secs().max(1)));
        }
        resp
    }
}

impl From<monsys_raft::Error> for ApiError {
    fn from(e: monsys_raft::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_carries_retry_after() {
        let resp = ApiError::unavailable("no leader").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_body_too_large_closes_the_connection() {
        let resp = ApiError::PayloadTooLarge { limit: 10 }.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let (status, code) = ApiError::Internal("sled exploded at /secret/path".into()).status_and_code();
        assert_eq!((status, code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    }
}
