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

use crate::replica::error::{Rejected, WriteError};

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
    /// An upgrade cannot be finalized: a member is down or runs a build without a newer
    /// cluster version.
    #[error("{0}")]
    UpgradeBlocked(String),
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
            ApiError::UpgradeBlocked(_) => (StatusCode::CONFLICT, "not_all_members_support"),
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
                Some(serde_json::json!({ "retry_after_secs": whole_secs(*retry_after) }))
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
            let secs = whole_secs(*retry_after).to_string();
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
            h.insert("x-ratelimit-reset", HeaderValue::from(whole_secs(*retry_after)));
        }
        resp
    }
}

/// A delay in whole seconds for `Retry-After`, rounded up (a client that waits exactly that
/// long must not be refused again) and at least 1.
fn whole_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// The code of `GET /api/v1/ready`'s 503 (not an [`ApiError`]: that answer carries details of
/// its own).
pub const NOT_READY: &str = "not_ready";

/// Every `code` an error answer can carry (the OpenAPI document's `Error.code` enum lists the
/// same set; a test compares them).
pub const CODES: &[&str] = &[
    NOT_READY,
    "bad_request",
    "invalid_body",
    "validation_failed",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "revision_mismatch",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "unavailable",
    "outcome_unknown",
    "internal",
    "forbidden",
    "signature_missing",
    "signature_invalid",
    "replay_rejected",
    "seq_conflict",
    "not_all_members_support",
    "signing_key_mismatch",
    "rate_limited",
];

/// The `code` of an error answer that did not come from an [`ApiError`], by its status.
fn code_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "outcome_unknown",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Gives an error answer that is not JSON — an extractor's plain-text rejection (a path
/// segment that does not parse, a WebSocket route called without an upgrade, a body over the
/// route's limit) — the API's `{"error","code","details"}` body, keeping its status and
/// headers. Answers that are not errors, or are JSON already, pass unchanged.
pub async fn json_error_body(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 8 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error =
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let body = ErrorBody { error, code: code_of_status(status).into(), details: None };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bytes = serde_json::to_vec(&body).expect("an error body serialises");
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

impl From<WriteError> for ApiError {
    /// The one mapping of a replicated write's outcome to HTTP.
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotApplied { reason, retry_after } => ApiError::Unavailable { reason, retry_after },
            WriteError::OutcomeUnknown(reason) => ApiError::Indeterminate(reason),
            WriteError::Rejected(Rejected::Invalid(reason)) => ApiError::BadRequest(reason),
            WriteError::Rejected(Rejected::TooLarge { limit }) => ApiError::PayloadTooLarge { limit },
            WriteError::Rejected(Rejected::Conflict(reason)) => ApiError::Conflict(reason),
        }
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
    fn retry_after_rounds_up_so_a_client_waiting_that_long_is_not_refused_again() {
        let limited = ApiError::RateLimited { retry_after: Duration::from_millis(5_001), limit: 10 };
        let resp = limited.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "6");
        assert_eq!(resp.headers()["x-ratelimit-reset"], "6");
        let exact = ApiError::Unavailable { reason: String::new(), retry_after: Duration::from_secs(720) };
        assert_eq!(exact.into_response().headers()[header::RETRY_AFTER], "720");
        let short = ApiError::Unavailable { reason: String::new(), retry_after: Duration::from_millis(10) };
        assert_eq!(short.into_response().headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_body_too_large_closes_the_connection() {
        let resp = ApiError::PayloadTooLarge { limit: 10 }.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }

    /// One error of each variant: the match has no wildcard, so a new variant does not compile
    /// until it is added here (and its code to [`CODES`]).
    fn one_of_each() -> Vec<ApiError> {
        let all = vec![
            ApiError::BadRequest(String::new()),
            ApiError::InvalidBody(String::new()),
            ApiError::Validation(Vec::new()),
            ApiError::Unauthorized(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::RevisionMismatch { current: 1 },
            ApiError::Conflict(String::new()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::unavailable(""),
            ApiError::Indeterminate(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::SignatureMissing,
            ApiError::SignatureInvalid(String::new()),
            ApiError::Replay(String::new()),
            ApiError::SeqConflict(String::new()),
            ApiError::UpgradeBlocked(String::new()),
            ApiError::SigningKeyMismatch,
            ApiError::RateLimited { retry_after: Duration::from_secs(1), limit: 1 },
            ApiError::Internal(String::new()),
        ];
        for e in &all {
            match e {
                ApiError::BadRequest(_)
                | ApiError::InvalidBody(_)
                | ApiError::Validation(_)
                | ApiError::Unauthorized(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed
                | ApiError::RevisionMismatch { .. }
                | ApiError::Conflict(_)
                | ApiError::PayloadTooLarge { .. }
                | ApiError::UnsupportedMediaType(_)
                | ApiError::Unavailable { .. }
                | ApiError::Indeterminate(_)
                | ApiError::Forbidden(_)
                | ApiError::SignatureMissing
                | ApiError::SignatureInvalid(_)
                | ApiError::Replay(_)
                | ApiError::SeqConflict(_)
                | ApiError::UpgradeBlocked(_)
                | ApiError::SigningKeyMismatch
                | ApiError::RateLimited { .. }
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn codes_lists_the_code_of_every_variant_once() {
        let mut codes: std::collections::BTreeSet<&str> =
            one_of_each().iter().map(|e| e.status_and_code().1).collect();
        codes.insert(NOT_READY);
        let listed: std::collections::BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(codes, listed);
        assert_eq!(listed.len(), CODES.len(), "a code listed twice");
        for status in [400u16, 401, 403, 404, 405, 409, 413, 415, 422, 426, 429, 500, 502, 503, 504] {
            let code = code_of_status(StatusCode::from_u16(status).unwrap());
            assert!(listed.contains(code), "{status} maps to unlisted {code}");
        }
    }

    #[tokio::test]
    async fn plain_text_error_answers_become_json_and_keep_their_status() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: Cannot parse `abc` to a `u64`").into_response();
        let resp = json_error_body(plain).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "bad_request");
        assert_eq!(v["error"], "Invalid URL: Cannot parse `abc` to a `u64`");

        let empty = StatusCode::UPGRADE_REQUIRED.into_response();
        let resp = json_error_body(empty).await;
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["code"].as_str(), v["error"].as_str()),
            (Some("bad_request"), Some("upgrade required"))
        );

        // JSON errors and successes pass unchanged
        let api = ApiError::SeqConflict("seq 3".into()).into_response();
        let resp = json_error_body(api).await;
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], "seq_conflict");
        let ok = json_error_body((StatusCode::OK, "plain success").into_response()).await;
        let body = axum::body::to_bytes(ok.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], b"plain success");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let resp = ApiError::Internal("sled exploded at /secret/path".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal");
        assert_eq!(body["error"], "internal error");
        assert!(!body.to_string().contains("secret"), "the cause stays in the logs: {body}");
    }
}
