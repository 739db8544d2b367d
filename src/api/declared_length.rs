//! Refuses a request whose declared `Content-Length` is over its route's body limit at once,
//! before any of the body is read.
//!
//! Without it, a request declaring 99,999,999,999 bytes and sending one sat waiting for a body
//! that never came: the limits (`DefaultBodyLimit`, the ingest handler's own) apply only while
//! the body is read. The answer is 413 with the JSON error body and `Connection: close` (the
//! rest of the body is never read).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Largest internal request (a snapshot chunk plus framing).
pub const INTERNAL_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest heartbeat body.
pub const HEARTBEAT_BODY_LIMIT: usize = 4096;

/// The body limit of the route `path` on a node configured with `max_body` for operator routes.
pub fn limit_of(path: &str, max_body: usize) -> usize {
    if path.starts_with("/internal/") {
        INTERNAL_BODY_LIMIT
    } else if path == "/api/v1/ingest" {
        monsys_proto::agent::MAX_INGEST_BODY_BYTES
    } else if path.starts_with("/api/v1/agents/") && path.ends_with("/heartbeat") {
        HEARTBEAT_BODY_LIMIT
    } else {
        max_body
    }
}

/// Middleware: 413 at once when the declared length is over the route's limit (`max_body`:
/// the node's limit of operator routes).
pub async fn refuse_oversized(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = limit_of(req.uri().path(), max_body);
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_family_has_its_limit() {
        assert_eq!(limit_of("/internal/v1/raft/append", 10), INTERNAL_BODY_LIMIT);
        assert_eq!(limit_of("/api/v1/ingest", 10), monsys_proto::agent::MAX_INGEST_BODY_BYTES);
        assert_eq!(limit_of("/api/v1/agents/a1/heartbeat", 10), HEARTBEAT_BODY_LIMIT);
        assert_eq!(limit_of("/api/v1/settings", 10), 10);
    }
}
